-- Issue 9 item 11: a task waits on a channel (semaphore, oneshot, lock);
-- then the object is handed to another worker, which completes the wait
-- later. The waiter had parked while the object was still local, so its
-- worker did not count it as waiting on another thread, and failed main
-- with a false "deadlock". Every object with a shared mode now accounts
-- its existing waiters as external when it becomes shared. (Locks do too,
-- but their waiters cannot be served from another thread: a guard taken
-- before the lock was shared is released on its own thread.)
local tidal = require("tidal")

-- Runs fn as main of a runtime with one worker thread. No other timer may
-- run beside it (a watchdog's sleep would hide the false deadlock).
local function run(fn)
  return tidal.run({ workers = 1 }, fn)
end

describe("issue 9 item 11: a wait that began before its object was shared", function()
  it("is completed by a worker sending on the channel", function()
    local got, n = run(function()
      local tx, rx = tidal.channel()
      local h = tidal.spawn(function() return rx:recv() end)
      tidal.yield() -- h waits in recv, the channel still local
      local p = tidal.spawn_parallel(function(far_tx)
        tidal.sleep(0.05)
        return far_tx:send("hello")
      end, tx)
      local v = h:await()
      p:await()
      return v, #rx
    end)
    assert.are.equal("hello", got)
    assert.are.equal(0, n)
  end)

  it("is completed by a worker receiving from a full channel", function()
    local sent, a, b = run(function()
      local tx, rx = tidal.channel(1)
      assert(tx:send(1))
      local h = tidal.spawn(function() return tx:send(2) end)
      tidal.yield() -- h waits for room
      local p = tidal.spawn_parallel(function(far_rx)
        tidal.sleep(0.05)
        return far_rx:recv(), far_rx:recv()
      end, rx)
      local ok = h:await()
      return ok, p:await()
    end)
    assert.is_true(sent)
    assert.are.equal(1, a)
    assert.are.equal(2, b)
  end)

  it("is completed by a worker sending on the oneshot", function()
    assert.are.equal("once", run(function()
      local tx, rx = tidal.oneshot()
      local h = tidal.spawn(function() return rx:recv() end)
      tidal.yield()
      local p = tidal.spawn_parallel(function(far_tx)
        tidal.sleep(0.05)
        far_tx:send("once")
      end, tx)
      local v = h:await() -- main waits on h, which waits on the worker
      p:await()
      return v
    end))
  end)

  it("is completed by a worker adding permits", function()
    local got, left = run(function()
      local s = tidal.semaphore(0)
      local h = tidal.spawn(function()
        local permit = assert(s:acquire(2))
        permit:release()
        return "acquired"
      end)
      tidal.yield() -- h waits for 2 permits, the semaphore still local
      local p = tidal.spawn_parallel(function(far_s)
        tidal.sleep(0.05)
        far_s:add_permits(2)
      end, s)
      local v = h:await() -- main waits on h, which waits on the worker
      p:await()
      return v, s:available()
    end)
    assert.are.equal("acquired", got)
    assert.are.equal(2, left)
  end)
end)
