-- Cancellation of tidal.net waits (issue 11 item 6): a cancelled read
-- loses no bytes, a cancelled accept no connection; a write cancelled
-- before it started sent nothing, one cancelled after it started completes
-- in the background; cancelled connects and lookups leak nothing.
local tidal = require("tidal")
local support = require("support")

-- every test ends with the descriptors it began with, and no child
support.guard_io()
local net = tidal.net

local run_io = support.run_io

local function pair()
  local l = assert(net.listen("127.0.0.1", 0))
  local c = assert(net.connect("127.0.0.1", l:port()))
  local s = assert(l:accept())
  l:close()
  return c, s
end

-- Reads from s until EOF; returns everything.
local function drain(s)
  local parts = {}
  while true do
    local d, err = s:read()
    assert(d or not err, err)
    if not d then break end
    parts[#parts + 1] = d
  end
  return table.concat(parts)
end

describe("cancelled net waits", function()
  it("a read cancelled while waiting consumed nothing", function()
    run_io(function()
      local c, s = pair()
      local r = tidal.spawn(function() return c:read() end)
      tidal.sleep(0.01)
      r:abort()
      assert.is_false((r:join()))
      assert(s:write("abc"))
      assert.equal("abc", c:read_exactly(3))
      local ok, err = tidal.timeout(0.01, c.read_exactly, c, 5)
      assert.is_false(ok)
      assert.equal("timeout", err.kind)
      assert(s:write("defgh"))
      assert.equal("defgh", c:read_exactly(5))
      c:close()
      s:close()
    end)
  end)

  it("a read woken by data but cancelled before it ran loses no byte", function()
    run_io(function()
      local c, s = pair()   -- the reader's stream
      local c2, s2 = pair() -- becomes readable first: its task aborts the reader
      local reader = tidal.spawn(function() return c:read() end)
      local killer = tidal.spawn(function()
        local d = c2:read()
        reader:abort()
        return d
      end)
      tidal.sleep(0.01)
      -- both arrive before the next poll: killer is woken first, then the
      -- reader; killer runs first and aborts the reader, already woken
      assert(s2:write("go"))
      assert(s:write("payload"))
      assert.equal("go", killer:await())
      local ok, err = reader:join()
      assert.is_false(ok)
      assert.equal("cancelled", err.kind)
      assert.equal("payload", c:read())
      for _, o in ipairs({ c, s, c2, s2 }) do o:close() end
    end)
  end)

  it("a second reader takes the bytes when the woken first one is cancelled", function()
    run_io(function()
      local c, s = pair()
      local c2, s2 = pair()
      local first = tidal.spawn(function() return c:read_exactly(4) end)
      local second = tidal.spawn(function() return c:read_exactly(4) end)
      local killer = tidal.spawn(function()
        c2:read()
        first:abort()
      end)
      tidal.sleep(0.01)
      assert(s2:write("go"))
      assert(s:write("1234"))
      killer:await()
      assert.is_false((first:join()))
      assert.equal("1234", second:await())
      for _, o in ipairs({ c, s, c2, s2 }) do o:close() end
    end)
  end)

  it("an accept cancelled (waiting, or woken) loses no connection", function()
    run_io(function()
      local l <close> = assert(net.listen("127.0.0.1", 0))
      local a = tidal.spawn(function() return l:accept() end)
      tidal.sleep(0.01)
      a:abort()
      assert.is_false((a:join()))
      local c1 = assert(net.connect("127.0.0.1", l:port()))
      local s1 = assert(l:accept())
      -- woken by the connection, then cancelled before it ran
      local c2, s2 = pair()
      local b = tidal.spawn(function() return l:accept() end)
      local killer = tidal.spawn(function()
        c2:read()
        b:abort()
      end)
      tidal.sleep(0.01)
      assert(s2:write("go"))
      local c3 = assert(net.connect("127.0.0.1", l:port()))
      killer:await()
      assert.is_false((b:join()))
      local s3 = assert(l:accept())
      assert(c3:write("3"))
      assert.equal("3", s3:read())
      for _, o in ipairs({ c1, s1, c2, s2, c3, s3 }) do o:close() end
    end)
  end)

  it("a write cancelled before it started sends nothing", function()
    run_io(function()
      local c, s = pair()
      local big = string.rep("b", 8 * 1024 * 1024)
      -- the peer does not read: most of big waits in the queue
      local w = tidal.spawn(function() return c:write(big) end)
      tidal.sleep(0.01)
      local ok, err = tidal.timeout(0.05, c.write, c, "NOT SENT")
      assert.is_false(ok)
      assert.equal("timeout", err.kind)
      local reader = tidal.spawn(drain, s)
      assert.is_true(w:await())
      assert(c:write("END"))
      c:shutdown()
      local got = reader:await()
      assert.equal(#big + 3, #got)
      assert.is_nil(got:find("NOT SENT", 1, true))
      assert.equal("END", got:sub(-3))
      c:close()
      s:close()
    end)
  end)

  it("a write cancelled after it started completes in the background, in order", function()
    run_io(function()
      local c, s = pair()
      local big = string.rep("x", 8 * 1024 * 1024)
      local ok, err = tidal.timeout(0.05, c.write, c, big)
      assert.is_false(ok)
      assert.equal("timeout", err.kind)
      local reader = tidal.spawn(drain, s)
      assert(c:write("END")) -- after the background write, in order
      assert(c:shutdown())
      local got = reader:await()
      assert.equal(#big + 3, #got)
      assert.equal("xEND", got:sub(-4))
      c:close()
      s:close()
    end)
  end)

  it("a write in the background is dropped when the stream is closed", function()
    run_io(function()
      local c, s = pair()
      local ok = tidal.timeout(0.05, c.write, c, string.rep("y", 8 * 1024 * 1024))
      assert.is_false(ok)
      c:close()
      local got = drain(s)
      assert.is_true(#got < 8 * 1024 * 1024)
      s:close()
    end)
  end)

  it("a cancelled connect or lookup leaves nothing open", function()
    run_io(function()
      local l <close> = assert(net.listen("127.0.0.1", 0))
      for _ = 1, 20 do
        local h = tidal.spawn(net.connect, "127.0.0.1", l:port())
        h:abort()
        assert.is_false((h:join()))
        local ok = tidal.timeout(0, net.resolve, "localhost")
        assert.is_false(ok)
        ok = tidal.timeout(0, net.connect, "localhost", l:port())
        assert.is_false(ok)
      end
      -- lookups cancelled on the pool finish in the background
      tidal.sleep(0.05)
    end)
  end)
end)
