-- Issue 9 item 17: a message on a shared channel that could not be rebuilt
-- on the receiving worker (its function's upvalue is a module that state
-- cannot load) was removed from the channel and then raised: lost, against
-- "received exactly once". Now it stays in the channel (or the oneshot):
-- recv raises, naming the cause, and the next recv -- here once the module
-- can be loaded, or on another worker where it can -- gets it.
local tidal = require("tidal")

local MOD = "i9_17_only_main"

-- Runs fn(...) as main of a runtime with one worker thread, with a deadline.
local function run2(fn, ...)
  return tidal.run({ workers = 1 }, function(...)
    local r = table.pack(tidal.timeout(20, fn, ...))
    assert(r[1], r[2])
    return table.unpack(r, 2, r.n)
  end, ...)
end

describe("issue 9 item 17: an undecodable message is not lost", function()
  before_each(function()
    package.loaded[MOD] = nil
    package.preload[MOD] = function() return { tag = "main's" } end
  end)
  after_each(function()
    package.loaded[MOD] = nil
    package.preload[MOD] = nil
  end)

  it("stays in the channel and the oneshot until this worker can rebuild it", function()
    local only = require(MOD)
    local log = run2(function()
      local tx, rx = tidal.channel()
      local otx, orx = tidal.oneshot()
      local h = tidal.spawn_parallel(function(crx, oneshot_rx, mod)
        local log = { package.preload[mod] == nil and "another state" or "same state" }
        for _ = 1, 2 do -- the error repeats: the message is still first
          local ok, err = pcall(crx.recv, crx)
          log[#log + 1] = ok and "got it" or tostring(err)
        end
        local ok, err = pcall(crx.try_recv, crx)
        log[#log + 1] = ok and "got it" or tostring(err)
        ok, err = pcall(oneshot_rx.recv, oneshot_rx)
        log[#log + 1] = ok and "got it" or tostring(err)
        package.preload[mod] = function() return { tag = "the worker's" } end
        log[#log + 1] = crx:recv()()
        log[#log + 1] = crx:recv()
        log[#log + 1] = oneshot_rx:recv()()
        return log
      end, rx, orx, MOD)
      tx:send(function() return only.tag end)
      tx:send("second")
      otx:send(function() return only.tag .. " too" end)
      return h:await()
    end)
    assert.equal("another state", log[1])
    for i = 2, 4 do
      assert.matches("Receiver:[%w_]+: cannot rebuild the message in this Lua state: module '"
        .. MOD .. "' not found", log[i])
      assert.matches("it stays in the channel", log[i], 1, true)
    end
    assert.matches("OneshotReceiver:recv: cannot rebuild the value in this Lua state: module '"
      .. MOD .. "' not found", log[5])
    assert.same({ "the worker's", "second", "the worker's too" }, { log[6], log[7], log[8] })
  end)

  it("stays for a receiver on another worker that can rebuild it", function()
    local only = require(MOD)
    local got, failed, rest = run2(function()
      local tx, rx = tidal.channel()
      local ftx, frx = tidal.oneshot()
      local h = tidal.spawn_parallel(function(crx, report)
        local ok, err = pcall(crx.recv, crx)
        report:send(ok and "got it" or tostring(err))
      end, rx, ftx)
      tx:send(function() return only.tag end)
      tx:send("second")
      local failed = frx:recv() -- the worker could not rebuild it
      h:await()
      local f = rx:recv() -- main can: the message is still there, first
      tx:close()
      local rest = {}
      for v in rx do rest[#rest + 1] = v end
      return f(), failed, table.concat(rest, ",")
    end)
    assert.matches("cannot rebuild the message", failed, 1, true)
    assert.equal("main's", got)
    assert.equal("second", rest)
  end)
end)
