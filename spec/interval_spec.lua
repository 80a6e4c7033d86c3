-- tidal.interval, tidal.sleep_until, tidal.timeout_at: the time utilities
-- Tokio users expect (deadlines are tidal.now() values).
local tidal = require("tidal")
local support = require("support")

local EPS = 1e-6 -- deadlines are exact ns; only the float conversion rounds

local function spin_until(t)
  while tidal.now() < t do end -- holds the thread: no task, no timer runs
end

local function timers()
  return tidal.stats().timers
end

-- support.run's watchdog arms its timer once it first runs
local function settle()
  tidal.yield()
  return timers()
end

describe("tidal.interval", function()
  it("completes the first tick at once, at its start", function()
    support.run(function()
      local t0 = tidal.now()
      local iv = tidal.interval(10)
      local d, missed = iv:tick()
      assert.is_true(tidal.now() - t0 < 1, "the first tick waited")
      assert.is_true(d >= t0 and d <= tidal.now())
      assert.are.equal(0, missed)
      assert.are.equal(10, iv:period())
      assert.matches("^tidal.Interval %(every 10%.?0? s, missed: skip%)$", tostring(iv))
    end)
  end)

  it("ticks on the grid start + k * period without drift", function()
    local r = support.run(function()
      local iv = tidal.interval(0.02)
      local start = iv:tick()
      local out = { start = start, d = {}, at = {} }
      for k = 1, 10 do
        local d, missed = iv:tick()
        out.d[k], out.at[k] = d, tidal.now()
        assert.are.equal(0, missed)
        tidal.sleep(0.007) -- work between ticks: does not push the grid
      end
      return out
    end)
    for k = 1, 10 do
      assert.is_true(math.abs(r.d[k] - (r.start + k * 0.02)) < EPS,
        "tick " .. k .. " deadline " .. (r.d[k] - r.start))
      assert.is_true(r.at[k] >= r.d[k], "tick " .. k .. " came early")
    end
    -- lateness does not accumulate: the tenth tick is on its grid point
    assert.is_true(r.at[10] - r.d[10] < 0.5, "late by " .. (r.at[10] - r.d[10]))
  end)

  it("waits for a start in the future", function()
    support.run(function()
      local start = tidal.now() + 0.05
      local iv = tidal.interval(1, { start = start })
      local d = iv:tick()
      assert.is_true(tidal.now() >= start)
      assert.is_true(math.abs(d - start) < EPS)
    end)
  end)

  it("skips missed ticks by default, reporting how many", function()
    support.run(function()
      local iv = tidal.interval(0.05)
      local start = iv:tick()
      spin_until(start + 0.05 * 3.5) -- a stall: ticks 1, 2 and 3 are due
      local d, missed = iv:tick()
      assert.is_true(math.abs(d - (start + 0.05)) < EPS) -- the late one, at once
      assert.are.equal(2, missed)                          -- 2 and 3 skipped
      d, missed = iv:tick()                               -- waits for 4
      assert.is_true(math.abs(d - (start + 0.05 * 4)) < EPS)
      assert.is_true(tidal.now() >= d)
      assert.are.equal(0, missed)
    end)
  end)

  it("delivers every missed tick at once with missed = 'burst'", function()
    support.run(function()
      local iv = tidal.interval(0.05, { missed = "burst" })
      local start = iv:tick()
      spin_until(start + 0.05 * 3.5)
      local t0 = tidal.now()
      for k = 1, 3 do
        local d, missed = iv:tick()
        assert.is_true(math.abs(d - (start + k * 0.05)) < EPS)
        assert.are.equal(0, missed)
      end
      assert.is_true(tidal.now() - t0 < 0.04, "the burst waited")
      local d = iv:tick() -- on the grid again
      assert.is_true(math.abs(d - (start + 4 * 0.05)) < EPS)
      assert.is_true(tidal.now() >= d)
    end)
  end)

  it("starts a new grid from a late tick with missed = 'delay'", function()
    support.run(function()
      local iv = tidal.interval(0.05, { missed = "delay" })
      local start = iv:tick()
      spin_until(start + 0.05 * 3.5)
      local before = tidal.now()
      local d, missed = iv:tick()
      local after = tidal.now()
      assert.is_true(math.abs(d - (start + 0.05)) < EPS)
      assert.are.equal(0, missed)
      d = iv:tick() -- one period after the late tick was taken
      assert.is_true(d >= before + 0.05 - EPS and d <= after + 0.05 + EPS,
        "next deadline " .. (d - before) .. " after the late tick")
      assert.is_true(tidal.now() >= d)
    end)
  end)

  it("moves the next tick with reset", function()
    support.run(function()
      local iv = tidal.interval(0.05)
      iv:tick()
      local t0 = tidal.now()
      iv:reset()                             -- one period from now
      local t1 = tidal.now()
      local d = iv:tick()
      assert.is_true(d >= t0 + 0.05 - EPS and d <= t1 + 0.05 + EPS)
      local at = tidal.now() + 0.02
      iv:reset(at)                           -- at a given deadline
      assert.is_true(math.abs(iv:tick() - at) < EPS)
      assert.is_true(math.abs(iv:tick() - (at + 0.05)) < EPS)
      -- a ticker already waiting follows the reset
      local h = tidal.spawn(function() return iv:tick() end)
      tidal.yield()
      at = tidal.now() + 0.01
      iv:reset(at)
      local got = h:await()
      assert.is_true(math.abs(got - at) < EPS)
    end)
  end)

  it("keeps the tick when the wait in tick() is cancelled", function()
    support.run(function()
      local iv = tidal.interval(0.1)
      local start = iv:tick()
      local ok, err = tidal.timeout(0.01, iv.tick, iv)
      assert.is_false(ok)
      assert.are.equal("timeout", err.kind)
      local d, missed = iv:tick() -- the tick the cancelled call waited for
      assert.is_true(math.abs(d - (start + 0.1)) < EPS)
      assert.are.equal(0, missed)
    end)
  end)

  it("keeps the tick when the ticker is cancelled after its wake", function()
    support.run(function()
      local iv = tidal.interval(0.1)
      local D = iv:tick() + 0.1
      local ticker = tidal.spawn(function() return iv:tick() end)
      local other = tidal.spawn(function()
        tidal.sleep_until(D - 0.02) -- due before the ticker: woken first
        ticker:abort()              -- the ticker is woken, and not run yet
        tidal.yield()               -- it runs: raises, takes nothing
        return iv:tick()
      end)
      tidal.sleep_until(D - 0.05)
      spin_until(D + 0.01) -- both timers come due in one poll
      local ok, err = ticker:join()
      assert.is_false(ok)
      assert.are.equal("cancelled", err.kind)
      local d, missed = other:await()
      assert.is_true(math.abs(d - D) < EPS, "got " .. (d - D))
      assert.are.equal(0, missed)
    end)
  end)

  it("gives each tick to one of several tasks ticking at once", function()
    local got = support.run(function()
      local iv = tidal.interval(0.01)
      local start = iv:tick()
      local seen = {}
      local g = tidal.group()
      for _ = 1, 3 do
        g:spawn(function()
          for _ = 1, 4 do
            local d = iv:tick()
            seen[#seen + 1] = d - start
          end
        end)
      end
      g:wait()
      return seen
    end)
    table.sort(got)
    assert.are.equal(12, #got)
    for k = 1, 12 do
      assert.is_true(math.abs(got[k] - k * 0.01) < EPS, "tick " .. k .. ": " .. got[k])
    end
  end)

  it("works as a select branch with tick_op, losing without taking", function()
    support.run(function()
      local iv = tidal.interval(0.2)
      local tx, rx = tidal.channel()
      local op = iv:tick_op()
      assert.matches("tidal.Op %(Interval:tick%)", tostring(op))
      local which, d = tidal.select({ op, rx:recv_op() }) -- due: at once
      assert.are.equal(1, which)
      local start = d
      tx:send("msg")
      which = tidal.select({ op, rx:recv_op() }) -- the message wins
      assert.are.equal(2, which)
      which, d = tidal.select({ op, rx:recv_op() }) -- nothing else: the tick
      assert.are.equal(1, which)
      assert.is_true(math.abs(d - (start + 0.2)) < EPS)
    end)
  end)

  it("counts tick() against the budget when ticks are due at once", function()
    local r = support.run(function()
      -- a grid that began long ago: burst makes every tick due at once
      local iv = tidal.interval(0.001, { missed = "burst", start = tidal.now() - 100 })
      local other = 0
      local h = tidal.spawn(function() while true do other = other + 1; tidal.yield() end end)
      for _ = 1, 1000 do iv:tick() end
      h:abort()
      return other
    end)
    assert.is_true(r > 0, "the loop of due ticks starved the other task")
  end)

  describe("closed", function()
    it("wakes a task waiting in tick() with nil, err of kind closed", function()
      support.run(function()
        local iv = tidal.interval(10)
        iv:tick()
        local h = tidal.spawn(function() return iv:tick() end)
        tidal.yield()
        iv:close()
        local v, err = h:await()
        assert.is_nil(v)
        assert.are.equal("closed", err.kind)
        assert.matches("Interval:tick: the interval was closed", err.message)
        v, err = iv:tick() -- and every later tick
        assert.is_nil(v)
        assert.are.equal("closed", err.kind)
        iv:close() -- idempotent
        assert.are.equal("tidal.Interval (closed)", tostring(iv))
        local ok, e = pcall(iv.reset, iv)
        assert.is_false(ok)
        assert.matches("Interval:reset: attempt to use a closed interval", e)
      end)
    end)

    it("ends a `while iv:tick()` loop, and closes as a <close> variable", function()
      local n = support.run(function()
        local count = 0
        local iv
        local h = tidal.spawn(function()
          local it <close> = tidal.interval(0.01)
          iv = it
          while it:tick() do count = count + 1 end
          return count
        end)
        tidal.sleep(0.055)
        iv:close()
        local c = h:await()
        -- a scope that ends closes it too
        do
          local iv2 <close> = tidal.interval(1)
          iv = iv2
        end
        assert.is_nil(iv:tick())
        return c
      end)
      assert.is_true(n >= 1 and n <= 8, "ticked " .. n)
    end)

    it("holds no timer while nobody waits, and none once collected", function()
      support.run(function()
        local base = settle()
        local iv = tidal.interval(0.01)
        iv:tick()
        assert.are.equal(base, timers())
        local h = tidal.spawn(function() return iv:tick() end)
        tidal.yield()
        assert.are.equal(base + 1, timers()) -- armed while h waits
        h:abort()
        h:join()
        assert.are.equal(base, timers())     -- released by the cancel
        -- only the waiting task's stack holds this one
        local d = tidal.interval(0.01, { start = tidal.now() + 0.01 }):tick()
        collectgarbage()
        collectgarbage()
        assert.is_number(d)
        assert.are.equal(base, timers())
        local weak = setmetatable({}, { __mode = "v" })
        weak[1] = tidal.interval(0.01)
        collectgarbage()
        collectgarbage()
        assert.is_nil(weak[1])
      end)
    end)
  end)

  it("is not a deadlock while a task waits for a tick", function()
    local n = support.run(function()
      local iv = tidal.interval(0.01)
      local c = 0
      for _ = 1, 3 do iv:tick(); c = c + 1 end -- main alone, parked on it
      return c
    end)
    assert.are.equal(3, n)
  end)

  it("refuses bad arguments, naming the function and the fix", function()
    local function err_of(f, ...)
      local ok, e = pcall(f, ...)
      assert.is_false(ok)
      return e
    end
    for _, p in ipairs({ 0, -1, 0 / 0, math.huge }) do
      assert.matches("tidal.interval: the period must be a number of seconds > 0",
        err_of(tidal.interval, p))
    end
    assert.matches("got no value", err_of(tidal.interval))
    assert.matches("got nil", err_of(tidal.interval, nil))
    assert.matches("got string", err_of(tidal.interval, "1"))
    assert.matches("at least 1 ns", err_of(tidal.interval, 1e-12))
    assert.matches("options must be a table, got number", err_of(tidal.interval, 1, 5))
    assert.matches("unknown option 'mised' %(known: missed, start%)",
      err_of(tidal.interval, 1, { mised = "skip" }))
    assert.matches("option 'missed' must be \"skip\", \"burst\" or \"delay\", got 'late'",
      err_of(tidal.interval, 1, { missed = "late" }))
    assert.matches("option 'missed' .* got boolean", err_of(tidal.interval, 1, { missed = true }))
    assert.matches("option 'start' must be a number %(a tidal.now%(%) value%), got string",
      err_of(tidal.interval, 1, { start = "now" }))
    local iv = tidal.interval(1)
    assert.matches("Interval:tick: not inside a tidal task", err_of(iv.tick, iv))
    assert.matches("Interval:tick: expected a Interval as self, got number %(call it with ':'%)",
      err_of(iv.tick, 5))
    assert.matches("Interval:reset: the deadline must be a number", err_of(iv.reset, iv, "x"))
    assert.matches("Interval:tick_op: expected a Interval as self", err_of(iv.tick_op))
    assert.matches("tidal.sleep_until: not inside a tidal task", err_of(tidal.sleep_until, 1))
    assert.matches("tidal.timeout_at: not inside a tidal task",
      err_of(tidal.timeout_at, 1, function() end))
  end)
end)

describe("tidal.sleep_until", function()
  it("waits until the deadline", function()
    support.run(function()
      local at = tidal.now() + 0.05
      tidal.sleep_until(at)
      assert.is_true(tidal.now() >= at)
      assert.is_true(tidal.now() < at + 1)
    end)
  end)

  it("yields once for a deadline in the past", function()
    local log = support.run(function()
      local l = {}
      local h = tidal.spawn(function() l[#l + 1] = "other" end)
      tidal.sleep_until(tidal.now() - 10)
      l[#l + 1] = "main"
      h:await()
      return l
    end)
    assert.are.same({ "other", "main" }, log)
  end)

  it("waits until cancelled for nil or math.huge, and frees its timer", function()
    support.run(function()
      local base = settle()
      for _, d in ipairs({ false, math.huge, tidal.now() + 100 }) do
        local h = tidal.spawn(function()
          if d then tidal.sleep_until(d) else tidal.sleep_until() end
        end)
        tidal.sleep(0.01)
        assert.is_false(h:is_finished())
        h:abort()
        local ok, err = h:join()
        assert.is_false(ok)
        assert.are.equal("cancelled", err.kind)
        assert.are.equal(base, timers())
      end
    end)
  end)

  it("refuses a deadline that is not a number", function()
    support.run(function()
      local ok, err = pcall(tidal.sleep_until, "1")
      assert.is_false(ok)
      assert.matches("tidal.sleep_until: the deadline must be a number %(a tidal.now%(%) value%), got string", err)
      ok, err = pcall(tidal.sleep_until, 0 / 0)
      assert.matches("got nan", err)
    end)
  end)
end)

describe("tidal.timeout_at", function()
  it("returns true and fn's results when fn is done in time", function()
    local r = support.run(function()
      return table.pack(tidal.timeout_at(tidal.now() + 5, function(a, b)
        tidal.sleep(0.01)
        return a + b, "x"
      end, 2, 3))
    end)
    assert.are.same({ n = 3, true, 5, "x" }, r)
  end)

  it("cancels fn's wait when the deadline passes", function()
    local log = {}
    local ok, err, dt = support.run(function()
      local t0 = tidal.now()
      local o, e = tidal.timeout_at(t0 + 0.05, function()
        local c <close> = support.closer(log, "closed")
        tidal.sleep(10)
      end)
      return o, e, tidal.now() - t0
    end)
    assert.is_false(ok)
    assert.are.equal("timeout", err.kind)
    assert.are.equal("tidal.timeout_at: deadline passed", err.message)
    assert.are.same({ "closed" }, log)
    assert.is_true(dt >= 0.05 and dt < 5, "took " .. dt)
  end)

  it("runs fn with a past deadline, raising at its first wait", function()
    local r = support.run(function()
      local steps = {}
      local ok, err = tidal.timeout_at(tidal.now() - 1, function()
        steps[#steps + 1] = "ran"
        tidal.yield()
        steps[#steps + 1] = "not reached"
      end)
      return { ok = ok, kind = err.kind, steps = steps }
    end)
    assert.is_false(r.ok)
    assert.are.equal("timeout", r.kind)
    assert.are.same({ "ran" }, r.steps)
  end)

  it("has no limit with nil or math.huge", function()
    support.run(function()
      assert.are.same({ true, 1 }, { tidal.timeout_at(nil, function() tidal.sleep(0.01); return 1 end) })
      assert.are.same({ true, 2 }, { tidal.timeout_at(math.huge, function() tidal.sleep(0.01); return 2 end) })
    end)
  end)

  it("nests with timeout: the earlier deadline wins, each scope catches its own", function()
    support.run(function()
      local outer_at = tidal.now() + 0.03
      local ok, err = tidal.timeout_at(outer_at, function()
        local ok2, err2 = tidal.timeout(5, tidal.sleep, 10)
        error("the inner scope returned " .. tostring(ok2) .. tostring(err2))
      end)
      assert.is_false(ok)
      assert.are.equal("tidal.timeout_at: deadline passed", err.message)
      ok, err = tidal.timeout(5, function()
        return tidal.timeout_at(tidal.now() + 0.02, tidal.sleep, 10)
      end)
      assert.is_true(ok)
      assert.is_false(err) -- the inner timeout_at's own result
    end)
  end)

  it("refuses a bad deadline or function", function()
    support.run(function()
      local ok, err = pcall(tidal.timeout_at, "soon", function() end)
      assert.is_false(ok)
      assert.matches("tidal.timeout_at: the deadline must be a number %(a tidal.now%(%) value, "
        .. "or nil for no limit%), got string", err)
      ok, err = pcall(tidal.timeout_at, 0 / 0, function() end)
      assert.matches("got nan", err)
      ok, err = pcall(tidal.timeout_at, 1, 42)
      assert.matches("tidal.timeout_at: expected a function to run, got number", err)
    end)
  end)
end)
