-- Issue 9 item 15: two tasks reading one streamed HTTP body: the second
-- read replaced the first reader's registration, so the first was never
-- woken (not by data, not by close) and the program ended in "deadlock".
-- Now a read while another task waits in one raises a clear error; the
-- first reader keeps its place and gets the body.
local tidal = require("tidal")
local http = require("tidal.http")
local support = require("support")
local fixtures = require("fixtures.http")

if not support.can_spawn then
  describe("issue 9 item 15: two readers of one streamed body", function()
    pending("needs the fixture server (a child process)")
  end)
  return
end

describe("issue 9 item 15: two readers of one streamed body", function()
  local srv, url

  setup(function()
    srv = fixtures.start_server()
    url = srv.url
  end)

  teardown(function()
    fixtures.stop_server(srv)
  end)

  local SLOW = "/slow-body?n=5&size=100&delay=0.1"

  it("the second reader gets an error naming resp:read; the first gets the whole body", function()
    support.run(function()
      local r = assert(http.get(url(SLOW), { stream = true }))
      local first = tidal.spawn(function()
        local parts = {}
        for chunk in r:chunks() do parts[#parts + 1] = chunk end
        return table.concat(parts)
      end)
      tidal.sleep(0.02) -- first now waits for data
      local ok, err = pcall(function()
        local chunk = r:read() -- (not a tail call: this line is named)
        return chunk
      end)
      assert.is_false(ok)
      assert.is_truthy(tostring(err):find(
        "resp:read: another task is already reading this body", 1, true), tostring(err))
      -- the error points at the caller's line, not at the library
      assert.is_truthy(tostring(err):find("i9_15_http_stream_readers_spec.lua", 1, true),
        tostring(err))
      local ok2, body = tidal.timeout(5, first.await, first)
      assert.is_true(ok2, tostring(body))
      assert.are.equal(500, #body)
    end)
  end)

  it("the same through chunks(): the message names resp:chunks", function()
    support.run(function()
      local r = assert(http.get(url(SLOW), { stream = true }))
      local first = tidal.spawn(function()
        local n = 0
        for chunk in r:chunks() do n = n + #chunk end
        return n
      end)
      tidal.sleep(0.02)
      local second = tidal.spawn(function()
        for _ in r:chunks() do end
      end)
      local ok, err = second:join()
      assert.is_false(ok)
      assert.is_truthy(tostring(err):find(
        "resp:chunks: another task is already reading this body", 1, true), tostring(err))
      local ok2, n = tidal.timeout(5, first.await, first)
      assert.is_true(ok2, tostring(n))
      assert.are.equal(500, n)
    end)
  end)

  it("a reader waiting while another task closes the response wakes with an error", function()
    support.run(function()
      local r = assert(http.get(url("/slow-body?n=5&size=100&delay=1"), { stream = true }))
      assert.is_truthy(r:read())
      local reader = tidal.spawn(function() return r:read() end)
      tidal.sleep(0.05)
      r:close()
      local ok, data, err = tidal.timeout(5, reader.await, reader)
      assert.is_true(ok)
      assert.is_nil(data)
      assert.is_true(tidal.is_error(err, "cancelled"), tostring(err))
      assert.is_truthy(tostring(err):find("closed", 1, true), tostring(err))
    end)
  end)

  it("readers taking turns (one after the other) both work", function()
    support.run(function()
      local r = assert(http.get(url(SLOW), { stream = true }))
      local a = tidal.spawn(function() return r:read() end)
      local first = assert(a:await())
      local b = tidal.spawn(function()
        local n = 0
        for chunk in r:chunks() do n = n + #chunk end
        return n
      end)
      assert.are.equal(500, #first + b:await())
    end)
  end)
end)
