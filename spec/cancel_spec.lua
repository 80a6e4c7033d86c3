local tidal = require("tidal")
local support = require("support")

local closer = support.closer

describe("JoinHandle:abort", function()
  it("cancels a sleep, runs <close> variables, and awaiters get kind 'cancelled'", function()
    local log = {}
    local r = support.run(function()
      tidal.yield()
      local timers_before = tidal.stats().timers
      local h = tidal.spawn(function()
        local a <close> = closer(log, "outer")
        do
          local b <close> = closer(log, "inner")
          tidal.sleep(60)
        end
        log[#log + 1] = "not reached"
      end)
      tidal.sleep(0.01)
      local t0 = tidal.now()
      h:abort()
      local ok, err = pcall(h.await, h)
      return { ok = ok, err = err, dt = tidal.now() - t0, timers = tidal.stats().timers - timers_before }
    end)
    assert.is_false(r.ok)
    assert.are.equal("cancelled", r.err.kind)
    assert.matches("task %d+ was cancelled", tostring(r.err))
    assert.are.same({ "inner", "outer" }, log)
    assert.is_true(r.dt < 1, "abort must not wait for the 60 s sleep")
    assert.are.equal(0, r.timers, "the sleep's timer is withdrawn")
  end)

  it("before the first run means the task never runs", function()
    local ran = false
    local r = support.run(function()
      local h = tidal.spawn(function() ran = true end)
      h:abort()
      assert.is_true(h:is_finished())
      local ok, err = h:join()
      tidal.yield()
      return { ok, err }
    end)
    assert.is_false(ran)
    assert.is_false(r[1])
    assert.are.equal("cancelled", r[2].kind)
    assert.matches("before it started", r[2].message)
  end)

  it("of a finished task is a no-op", function()
    local r = support.run(function()
      local h = tidal.spawn(function() return "fine" end)
      assert.are.equal("fine", h:await())
      h:abort()
      return { h:join() }
    end)
    assert.are.same({ true, "fine" }, r)
  end)

  it("wakes every task awaiting the aborted one", function()
    local r = support.run(function()
      local target = tidal.spawn(tidal.sleep, 60)
      local waiters = {}
      for i = 1, 3 do
        waiters[i] = tidal.spawn(function() local ok, e = target:join(); return ok, e.kind end)
      end
      tidal.yield()
      target:abort()
      local out = {}
      for i = 1, 3 do out[i] = { waiters[i]:await() } end
      return out
    end)
    for i = 1, 3 do assert.are.same({ false, "cancelled" }, r[i]) end
  end)

  it("while awaiting another task withdraws the await", function()
    local r = support.run(function()
      local slow = tidal.spawn(function() tidal.sleep(0.05); return "slow" end)
      local waiter = tidal.spawn(function() return slow:await() end)
      tidal.yield()
      waiter:abort()
      local ok, err = waiter:join()
      -- the awaited task is not affected
      return { ok, err.kind, slow:await() }
    end)
    assert.are.same({ false, "cancelled", "slow" }, r)
  end)

  it("while a task is ready to run raises at its next wait", function()
    local log = {}
    support.run(function()
      local h = tidal.spawn(function()
        log[#log + 1] = "start"
        local ok, err = pcall(tidal.yield)
        log[#log + 1] = ok and "yield returned" or err.kind
      end)
      tidal.yield() -- h runs up to its yield and is queued again
      h:abort()
      h:join()
    end)
    assert.are.same({ "start", "cancelled" }, log)
  end)

  it("is sticky: a task that catches it gets it again at its next wait", function()
    local r = support.run(function()
      local h = tidal.spawn(function()
        local kinds = {}
        for _ = 1, 3 do
          local ok, err = pcall(tidal.sleep, 10)
          kinds[#kinds + 1] = ok and "slept" or err.kind
        end
        return kinds
      end)
      tidal.yield()
      h:abort()
      return h:await()
    end)
    -- the body caught every cancellation and returned normally
    assert.are.same({ "cancelled", "cancelled", "cancelled" }, r)
  end)

  it("from inside the task itself cancels at the next wait", function()
    local r = support.run(function()
      local me
      me = tidal.spawn(function()
        me:abort()
        local x = 1 + 1 -- still running: nothing waits here
        tidal.sleep(1)
        return x
      end)
      return { me:join() }
    end)
    assert.is_false(r[1])
    assert.are.equal("cancelled", r[2].kind)
  end)

  it("keeps an operation that already completed", function()
    local r = support.run(function()
      local h = tidal.spawn(function()
        tidal.sleep(0.001) -- completes; the abort below comes after the wake
        local x = "after sleep"
        local ok, err = pcall(tidal.yield)
        return x, ok, err and err.kind
      end)
      -- wait until h's sleep has fired and h is queued to run
      while tidal.stats().timers > 0 do tidal.yield() end
      tidal.sleep(0.005)
      h:abort()
      return { h:await() }
    end)
    assert.are.equal("after sleep", r[1])
  end)

  it("reports the error a <close> handler raised while unwinding", function()
    local r = support.run(function()
      local h = tidal.spawn(function()
        local g <close> = setmetatable({}, { __close = function() error("close failed", 0) end })
        tidal.sleep(60)
      end)
      tidal.yield()
      h:abort()
      return { h:join() }
    end)
    assert.is_false(r[1])
    assert.are.equal("close failed", r[2])
  end)

  it("survives an abort storm over many tasks", function()
    local n = support.scaled(20000)
    local r = support.run(function()
      local hs = {}
      for i = 1, n do
        hs[i] = tidal.spawn(function()
          if i % 3 == 0 then tidal.yield() end
          tidal.sleep(i % 2 == 1 and 60 or 0) -- the odd ones are aborted
          return i
        end)
      end
      tidal.yield()
      for i = 1, n, 2 do hs[i]:abort() end
      local done, cancelled = 0, 0
      for i = 1, n do
        local ok, v = hs[i]:join()
        if ok then
          assert(v == i)
          done = done + 1
        elseif v.kind == "cancelled" then
          cancelled = cancelled + 1
        end
      end
      return { done = done, cancelled = cancelled, alive = tidal.stats().alive }
    end)
    assert.are.equal(n // 2, r.done)
    assert.are.equal(n - n // 2, r.cancelled)
  end)
end)
