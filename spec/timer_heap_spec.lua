-- The deadline heap (csrc/kernel/timer.c) under load: thousands of timers
-- armed at once, fired in deadline order, withdrawn from the middle of the
-- heap by timeouts and aborts, and their slots reused by later timers.
local tidal = require("tidal")
local support = require("support")

-- a small deterministic generator (the same deadlines on every run)
local function lcg(seed)
  local x = seed
  return function(n)
    x = (x * 1103515245 + 12345) % 2147483648
    return x % n
  end
end

-- n sleepers with pseudo-random deadlines up to max_ms; every third one is
-- inside a timeout that expires first, every seventh is aborted. Returns
-- what each did and the wake log.
local function round(n, max_ms, seed)
  local rnd = lcg(seed)
  local log, res, hs = {}, {}, {}
  for i = 1, n do
    -- (from 1 ms: a zero sleep arms no timer, it yields once and wakes in
    -- the same tick, before timers that fell due during a long tick)
    local d = (1 + rnd(max_ms)) / 1000
    local kind = (i % 3 == 0) and "timeout" or (i % 7 == 0) and "abort" or "sleep"
    hs[i] = tidal.spawn(function()
      local t0 = tidal.now()
      if kind == "timeout" then
        local ok, err = tidal.timeout(d / 2, tidal.sleep, d + 1)
        res[i] = { kind = kind, ok = ok, err = err and err.kind,
                   slept = tidal.now() - t0, d = d / 2 }
      else
        tidal.sleep(d)
        res[i] = { kind = kind, slept = tidal.now() - t0, d = d }
        log[#log + 1] = { due = t0 + d, i = i }
      end
    end)
  end
  return hs, res, log
end

describe("the deadline heap", function()
  it("fires thousands of timers in deadline order, each not before its deadline", function()
    local n = support.scaled(3000)
    local res, log, aborted = support.run(function()
      local hs, res, log = round(n, 60, 7)
      local aborted = {}
      -- abort every seventh sleeper while it waits: withdrawn from wherever
      -- it sits in the heap
      tidal.sleep(0.005)
      for i = 7, n, 7 do
        if i % 3 ~= 0 and not hs[i]:is_finished() then
          hs[i]:abort()
          aborted[i] = true
        end
      end
      for i = 1, n do hs[i]:join() end
      return res, log, aborted
    end)
    local woke = 0
    for i = 1, n do
      local r = res[i]
      if aborted[i] then
        assert.is_nil(r, "aborted sleeper " .. i .. " finished its sleep")
      else
        assert.is_table(r, "task " .. i .. " did not finish")
        if r.kind == "timeout" then
          assert.is_false(r.ok)
          assert.are.equal("timeout", r.err)
        else
          woke = woke + 1
        end
        -- (the clock is read after the deadline passed: 1 ms of slack for
        -- the coarse resolution of tidal.now)
        assert.is_true(r.slept >= r.d - 0.001,
          ("task %d slept %.4f s of %.4f"):format(i, r.slept, r.d))
      end
    end
    assert.are.equal(woke, #log)
    -- deadline order: no sleeper wakes before one whose deadline is earlier
    -- (by more than the clock's slack)
    local maxdue = -math.huge
    for k, e in ipairs(log) do
      assert.is_true(e.due >= maxdue - 0.002,
        ("wake %d (task %d) came after a later deadline"):format(k, e.i))
      if e.due > maxdue then maxdue = e.due end
    end
  end)

  it("reuses the slots of fired and withdrawn timers in later rounds", function()
    local n = support.scaled(2000)
    local counts = support.run(function()
      local counts = {}
      tidal.yield() -- (support.run's watchdog sleeps first)
      local base = tidal.stats().timers
      for r = 1, 3 do
        local hs, res = round(n, 20, r)
        for i = 1, n do hs[i]:join() end
        local c = 0
        for i = 1, n do if res[i] then c = c + 1 end end
        counts[r] = c
        assert.are.equal(base, tidal.stats().timers)
      end
      return counts
    end)
    assert.are.same({ n, n, n }, counts)
  end)

  it("withdraws timers in any order (aborting sleepers from the last one armed to the first)", function()
    local n = support.scaled(2000)
    local left = support.run(function()
      local hs = {}
      tidal.yield() -- (support.run's watchdog sleeps first)
      local base = tidal.stats().timers
      for i = 1, n do hs[i] = tidal.spawn(tidal.sleep, 10 + (i * 7919 % n) / n) end
      tidal.yield() -- they all sleep now
      assert.are.equal(base + n, tidal.stats().timers)
      for i = n, 1, -2 do hs[i]:abort() end
      for i = 1, n, 2 do hs[i]:abort() end
      for i = 1, n do
        local ok, err = hs[i]:join()
        assert.is_false(ok)
        assert.are.equal("cancelled", err.kind)
      end
      return tidal.stats().timers - base
    end)
    assert.are.equal(0, left)
  end)
end)
