-- Hostile peers and limits (issue 11 item 7, net): each case ends in a
-- clear result, with memory bounded and nothing left open.
local tidal = require("tidal")
local support = require("support")

-- every test ends with the descriptors it began with, and no child
support.guard_io()
local net = tidal.net

local run_io = support.run_io

local function pair(opts)
  local l = assert(net.listen("127.0.0.1", 0, opts))
  local c = assert(net.connect("127.0.0.1", l:port()))
  local s = assert(l:accept())
  l:close()
  return c, s
end

local rss_kb = support.rss_kb

describe("hostile peers", function()
  it("a peer that resets mid-read: the bytes first, then connection_reset", function()
    run_io(function()
      local c, s = pair()
      local r = tidal.spawn(function() return c:read_exactly(100) end)
      tidal.sleep(0.01) -- reading
      assert(s:write(string.rep("r", 50)))
      tidal.sleep(0.01)
      s:set_linger(0)
      s:close() -- RST
      local v, err = r:await()
      assert.is_nil(v)
      assert.equal("connection_reset", err.kind)
      assert.equal("ECONNRESET", err.errno)
      assert.equal(string.rep("r", 50), c:read())
      v, err = c:read()
      assert.is_nil(v)
      assert.equal("connection_reset", err.kind)
      c:close()
    end)
  end)

  it("a peer that half-closes: EOF after its bytes, and we can still write", function()
    run_io(function()
      local c, s = pair()
      assert(s:write("last words"))
      assert(s:shutdown())
      assert(s:shutdown()) -- again: done already
      assert.equal("last words", c:read_all())
      assert.is_nil(c:read())
      local kib = string.rep("k", 1024)
      assert(c:write(kib))
      assert(c:shutdown())
      assert.equal(kib, s:read_all())
      c:close()
      s:close()
    end)
  end)

  it("a peer that never reads: writes wait, memory stays bounded", function()
    run_io(function()
      local c, s = pair()
      local mib = string.rep("m", 1024 * 1024)
      local before = rss_kb()
      local ok, err = tidal.timeout(0.5, function()
        while true do assert(c:write(mib)) end
      end)
      assert.is_false(ok)
      assert.equal("timeout", err.kind)
      -- the cancelled write goes on in the background: the next one waits
      -- before it starts, and times out without queueing anything
      for _ = 1, 20 do
        ok = tidal.timeout(0.01, c.write, c, mib)
        assert.is_false(ok)
      end
      assert.is_true(rss_kb() - before < 16 * 1024, "RSS grew by " .. (rss_kb() - before) .. " KiB")
      c:close()
      s:close()
    end)
  end)

  it("an endless line: too_long, with the buffer bounded", function()
    run_io(function()
      local c, s = pair()
      local chunk = string.rep("e", 64 * 1024)
      local writer = tidal.spawn(function()
        for _ = 1, 160 do -- 10 MiB, no line end
          if not c:write(chunk) then return end
        end
      end)
      local v, err = s:read_line({ max = 1024 })
      assert.is_nil(v)
      assert.equal("too_long", err.kind)
      assert.equal("Stream:read_line: no line end within 1024 bytes", err.message)
      tidal.sleep(0.1)
      assert.is_true(s:buffered() <= 1024 + 2 * 64 * 1024, "buffered " .. s:buffered())
      assert.is_false(writer:is_finished()) -- its writes wait: we stopped reading
      s:close()
      writer:await()
      c:close()
    end)
  end)

  it("a flooding peer nobody reads: reading pauses at read_buffer", function()
    run_io(function()
      local c, s = pair()
      local chunk = string.rep("f", 1024 * 1024)
      local before = rss_kb()
      assert(c:write("f"))
      assert.equal("", s:read(0)) -- reading is on from here
      local ok = tidal.timeout(0.5, function()
        for _ = 1, 50 do assert(c:write(chunk)) end -- 50 MiB
      end)
      assert.is_false(ok) -- blocked: the reader's side stopped reading
      assert.is_true(s:buffered() >= 64 * 1024, "buffered " .. s:buffered())
      assert.is_true(s:buffered() <= 2 * 64 * 1024, "buffered " .. s:buffered())
      assert.is_true(rss_kb() - before < 16 * 1024)
      -- reading resumes when the reader takes the bytes
      local got = 0
      while got < 4 * 1024 * 1024 do got = got + #s:read() end
      c:close()
      s:close()
    end)
  end)

  it("a peer that connects and says nothing: a timeout around the read", function()
    run_io(function()
      local c, s = pair()
      local ok, err = tidal.timeout(0.2, s.read, s)
      assert.is_false(ok)
      assert.equal("timeout", err.kind)
      assert(c:write("late"))
      assert.equal("late", s:read()) -- still usable
      c:close()
      s:close()
    end)
  end)

  it("writing to a peer that is gone: broken_pipe or connection_reset, no SIGPIPE", function()
    if not support.can_spawn then return end
    -- in a fresh process: SIGPIPE has its default action there until the
    -- io layer ignores it
    local out, status = support.lua([[
      local tidal = require("tidal")
      tidal.run(function()
        local l = assert(tidal.net.listen("127.0.0.1", 0))
        local c = assert(tidal.net.connect("127.0.0.1", l:port()))
        local s = assert(l:accept())
        s:close()
        tidal.sleep(0.01)
        for _ = 1, 100 do
          local ok, err = c:write(string.rep("p", 65536))
          if not ok then print(err.kind, err.errno) break end
          tidal.sleep(0.001)
        end
      end)
      print("alive")
    ]])
    assert.equal(0, status, out)
    assert.is_truthy(out:match("^broken_pipe\tEPIPE\nalive\n$") or
      out:match("^connection_reset\tECONNRESET\nalive\n$"), out)
  end)
end)

describe("limits", function()
  it("running out of descriptors while accepting: reported, no busy loop, no lost client", function()
    if not support.can_spawn then return end
    local clients = 40
    local p = assert(io.popen("sh -c 'ulimit -n 32; exec lua5.4 spec/fixtures/emfile.lua " ..
      clients .. "' 2>&1", "r"))
    local first = p:read("l")
    local port = tonumber(first and first:match("^port (%d+)$"))
    assert.is_not_nil(port, first)
    local echoed = support.run(function()
      local hs = {}
      for i = 1, clients do
        hs[i] = tidal.spawn(function()
          local c <close> = assert(net.connect("127.0.0.1", port))
          assert(c:write("client " .. i .. "\n"))
          return c:read_line()
        end)
      end
      local n = 0
      for i = 1, clients do
        if hs[i]:await() == "client " .. i then n = n + 1 end
      end
      return n
    end)
    local rest = p:read("a")
    p:close()
    assert.equal(clients, echoed)
    local kind, errno, errors, cpu, served =
      rest:match("kind=(%S+) errno=(%S+) errors_1s=(%d+) cpu_1s=(%S+) served=(%d+)")
    assert.equal("too_many_open_files", kind, rest)
    assert.equal("EMFILE", errno)
    -- backoff 10, 20, 40, ... ms: a handful of errors in 1 s, little CPU
    assert.is_true(tonumber(errors) >= 1 and tonumber(errors) <= 12, rest)
    assert.is_true(tonumber(cpu) < 0.1, rest)
    assert.equal(clients, tonumber(served))
  end)
end)
