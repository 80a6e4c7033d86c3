-- Issue 9 item 2: an HTTP client closed (<close>) or finalized while a task
-- waited on one of its requests freed the request without waking the
-- task; cancelling the task later touched freed memory (SIGBUS, ASan
-- heap-use-after-free). Now a request owns its transfer and keeps its
-- client referenced: close() and <close> are graceful (no new requests,
-- requests in flight and streamed bodies run to their end), a client is not
-- collected while a request or a streamed body uses it, and when its pool
-- is torn down anyway (lua_close finalizing everything) a waiting task is
-- woken and finds it gone: nothing touches freed memory.
local tidal = require("tidal")
local http = require("tidal.http")
local support = require("support")
local fixtures = require("fixtures.http")

if not support.can_spawn then
  describe("issue 9 item 2: HTTP client closed under a waiting request", function()
    pending("needs the fixture server (a child process)")
  end)
  return
end

describe("issue 9 item 2: HTTP client closed under a waiting request", function()
  local srv, url

  setup(function()
    srv = fixtures.start_server()
    url = srv.url
  end)

  teardown(function()
    fixtures.stop_server(srv)
  end)

  -- a child script with tidal, http and the server's base URL
  local function child(body)
    return fixtures.child(([[
      local tidal = require("tidal")
      local http = tidal.http
      local BASE = %q
    ]]):format(srv.base) .. body)
  end

  local function assert_clean(out, status)
    assert.is_falsy(out:find("AddressSanitizer", 1, true), out)
    assert.is_falsy(out:find("runtime error", 1, true), out) -- UBSan
    assert.are.equal(0, status, out)
  end

  it("<close> while a task waits: the request completes; cancelling it later is safe", function()
    local out, status = child([[
      tidal.run(function()
        local h, h2
        do
          local c <close> = http.client()
          h = tidal.spawn(function() return c:get(BASE .. "/delay/0.3") end)
          h2 = tidal.spawn(function() return c:get(BASE .. "/delay/5") end)
          tidal.sleep(0.1)
          -- the scope ends: c is closed while both wait
        end
        local ok, r = tidal.timeout(5, h.await, h)
        print("first", ok, r and r.status, r and r.body)
        h2:abort() -- the task waits on a request of a closed client
        local ok2, err = h2:join()
        print("second", ok2, tidal.is_error(err, "cancelled"))
      end)
      print("done")
    ]])
    assert_clean(out, status)
    assert.is_truthy(out:find("first\ttrue\t200\tdelayed 0.3", 1, true), out)
    assert.is_truthy(out:find("second\tfalse\ttrue", 1, true), out)
    assert.is_truthy(out:find("done", 1, true), out)
  end)

  it("a closed client raises on new requests; in-flight requests and aborts work", function()
    support.run(function()
      local c = http.client()
      local slow = tidal.spawn(function() return c:get(url("/delay/5")) end)
      local fast = tidal.spawn(function() return c:get(url("/delay/0.2")) end)
      tidal.sleep(0.05)
      c:close()
      assert.is_truthy(tostring(c):find("closed", 1, true))
      local ok, err = pcall(c.get, c, url("/hello"))
      assert.is_false(ok)
      assert.is_truthy(tostring(err):find("client:get: the client is closed", 1, true), tostring(err))
      -- cancelling a request of the closed client (its pool closes when
      -- the last transfer ends)
      slow:abort()
      local ok2, err2 = slow:join()
      assert.is_false(ok2)
      assert.is_true(tidal.is_error(err2, "cancelled"))
      assert.are.equal("delayed 0.2", assert(fast:await()).body)
      -- closing twice is harmless
      c:close()
      assert.is_nil(getmetatable(c).__close(c))
    end)
  end)

  it("a client only a waiting task references is not collected under it", function()
    support.run(function()
      local done = false
      local h = tidal.spawn(function()
        local r = http.client():get(url("/delay/0.3"))
        done = true
        return r
      end)
      while not done do
        collectgarbage()
        collectgarbage()
        tidal.sleep(0.02)
      end
      assert.are.equal("delayed 0.3", assert(h:await()).body)
    end)
  end)

  it("a streamed response outlives its client (closed, or dropped and collected)", function()
    support.run(function()
      local r
      do
        local c <close> = http.client()
        r = assert(c:get(url("/slow-body?n=5&size=100&delay=0.05"), { stream = true }))
      end
      local parts = {}
      for chunk in r:chunks() do parts[#parts + 1] = chunk end
      assert.are.equal(500, #table.concat(parts))

      local r2 = assert(http.client():get(url("/slow-body?n=5&size=100&delay=0.05"),
        { stream = true }))
      local n = 0
      for chunk in r2:chunks() do
        collectgarbage()
        n = n + #chunk
      end
      assert.are.equal(500, n)
      -- and a reader parked while the client is closed keeps reading
      local c3 = http.client()
      local r3 = assert(c3:get(url("/slow-body?n=4&size=10&delay=0.1"), { stream = true }))
      local reader = tidal.spawn(function()
        local got = 0
        for chunk in r3:chunks() do got = got + #chunk end
        return got
      end)
      tidal.sleep(0.05)
      c3:close()
      assert.are.equal(40, reader:await())
    end)
  end)

  it("a streamed body whose runtime closed reads as cancelled, naming why", function()
    local r = tidal.run(function()
      return assert(http.get(url("/slow-body?n=10&size=10&delay=0.2"), { stream = true }))
    end)
    support.run(function()
      local data, err
      repeat data, err = r:read() until data == nil
      assert.is_true(tidal.is_error(err, "cancelled"), tostring(err))
      assert.is_truthy(tostring(err):find("runtime was closed", 1, true), tostring(err))
      assert.are.equal(url("/slow-body?n=10&size=10&delay=0.2"), err.url)
    end)
    r:close()
  end)

  it("lua_close with a runtime open and requests waiting (client made after the runtime)", function()
    -- lua_close finalizes the client first (the reverse order of creation),
    -- then the runtime, which withdraws the waits
    local out, status = child([[
      local rt = tidal.runtime()
      local c = http.client()
      for i = 1, 3 do rt:spawn(function() return c:get(BASE .. "/delay/3") end) end
      local s
      rt:spawn(function()
        s = assert(c:get(BASE .. "/slow-body?n=20&size=10&delay=0.2", { stream = true }))
        return s:read()
      end)
      for _ = 1, 10 do rt:step(0.05) end
      print("exiting")
    ]])
    assert_clean(out, status)
    assert.is_truthy(out:find("exiting", 1, true), out)
  end)

  it("lua_close with a runtime open and requests waiting (client made before the runtime)", function()
    local out, status = child([[
      local c = http.client()
      local rt = tidal.runtime()
      for i = 1, 3 do rt:spawn(function() return c:get(BASE .. "/delay/3") end) end
      for _ = 1, 6 do rt:step(0.05) end
      print("exiting")
    ]])
    assert_clean(out, status)
    assert.is_truthy(out:find("exiting", 1, true), out)
  end)
end)
