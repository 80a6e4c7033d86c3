-- tidal.notify() across workers: a Notify copied to another worker (an
-- argument of spawn_parallel, a message) is the same Notify there.
local support = require("support")
local tidal = require("tidal")

describe("tidal.notify across workers", function()
  it("notify_one wakes a waiter on another worker; a stored permit crosses too", function()
    local r = tidal.run({ workers = 1 }, function()
      local n = tidal.notify()
      local started_tx, started_rx = tidal.oneshot()
      local h = tidal.spawn_parallel(function(n, started)
        started:send(true)
        n:notified()
        return "woken"
      end, n, started_tx)
      started_rx:recv()
      tidal.sleep(0.02) -- (it is waiting now, or about to)
      n:notify_one()
      local first = h:await()
      n:notify_one() -- nobody waits: a permit is stored
      local second = tidal.spawn_parallel(function(n)
        n:notified() -- takes the permit at once
        return tostring(n)
      end, n):await()
      return { first, second, tostring(n) }
    end)
    assert.are.same({ "woken", "tidal.Notify (not notified)", "tidal.Notify (not notified)" }, r)
  end)

  it("notify_waiters wakes the waiters of every worker and counts them", function()
    local r = tidal.run({ workers = 2 }, function()
      local n = tidal.notify()
      local ready_tx, ready_rx = tidal.channel()
      local hs = {}
      for i = 1, 4 do
        hs[i] = tidal.spawn_parallel(function(n, ready, i)
          ready:send(i)
          n:notified()
          return i
        end, n, ready_tx, i)
      end
      hs[5] = tidal.spawn(function() n:notified() return 5 end)
      for _ = 1, 4 do ready_rx:recv() end
      -- every waiter parks right after its send: wait until all are counted
      local count = 0
      tidal.sleep(0.05)
      count = count + n:notify_waiters()
      local ok = true
      for i = 1, 5 do
        local done = tidal.timeout(0.5, hs[i].await, hs[i])
        if not done then -- it parked after the call: wake it again
          count = count + n:notify_waiters()
          ok = tidal.timeout(2, hs[i].await, hs[i]) and ok
        end
      end
      return { count = count, ok = ok }
    end)
    assert.are.same({ count = 5, ok = true }, r)
  end)

  it("a waiter on another worker that timed out is withdrawn: the next notify_one is stored", function()
    local r = tidal.run({ workers = 1 }, function()
      local n = tidal.notify()
      local timed_out = tidal.spawn_parallel(function(n)
        return (tidal.timeout(0.02, n.notified, n))
      end, n):await()
      n:notify_one() -- no waiter left: stored, not given to the dead wait
      local got = tidal.timeout(1, n.notified, n)
      return { timed_out, got }
    end)
    assert.are.same({ false, true }, r)
  end)

  it("a notification given to a waiter aborted on another worker is passed on, never lost", function()
    local rounds = math.max(5, support.scaled(30))
    local r = tidal.run({ workers = 1 }, function()
      local passed, consumed = 0, 0
      for _ = 1, rounds do
        local n = tidal.notify()
        local ready_tx, ready_rx = tidal.oneshot()
        local w = tidal.spawn_parallel(function(n, ready)
          ready:send(true)
          n:notified()
          return "took it"
        end, n, ready_tx)
        ready_rx:recv()
        tidal.sleep(0.01) -- w waits, first in the queue
        local l = tidal.spawn(function() n:notified() return "local" end)
        tidal.yield() -- l waits behind it
        n:notify_one()
        w:abort()
        local ok = w:join()
        local l_got = tidal.timeout(0.3, l.await, l)
        if ok then
          -- w took it before the abort reached it: l must still be waiting
          assert(not l_got, "one notification woke two tasks")
          consumed = consumed + 1
          l:abort()
        else
          assert(l_got, "the notification was lost with the aborted waiter")
          passed = passed + 1
        end
      end
      return passed + consumed
    end)
    assert.equal(rounds, r)
  end)

  it("a Notify sent over a channel to another worker works there", function()
    local r = tidal.run({ workers = 1 }, function()
      local tx, rx = tidal.channel()
      local back_tx, back_rx = tidal.channel()
      local h = tidal.spawn_parallel(function(rx, back)
        local n = rx:recv()
        back:send("got it")
        n:notified()
        return "woken"
      end, rx, back_tx)
      local n = tidal.notify()
      tx:send(n)
      back_rx:recv()
      tidal.sleep(0.02)
      n:notify_one()
      return h:await()
    end)
    assert.equal("woken", r)
  end)

  it("a spawn_blocking job notifies a task; notified() in a job raises", function()
    local r = tidal.run(function()
      local n = tidal.notify()
      local waiter = tidal.spawn(function() n:notified() return "woken" end)
      tidal.yield() -- it waits
      local job = tidal.spawn_blocking(function(n)
        n:notify_one()
        return select(2, pcall(n.notified, n))
      end, n)
      local err = job:await()
      return { waiter:await(), tostring(err):match("cannot wait in a spawn_blocking job") }
    end)
    assert.are.same({ "woken", "cannot wait in a spawn_blocking job" }, r)
  end)

  it("a finalized Notify raises a clear error; its __tostring says closed", function()
    local msg, text = support.run(function()
      local n = tidal.notify()
      getmetatable(n).__gc(n)
      return select(2, pcall(n.notify_one, n)), tostring(n)
    end)
    assert.matches("Notify:notify_one: attempt to use a closed notify", msg, 1, true)
    assert.equal("tidal.Notify (closed)", text)
  end)
end)
