local tidal = require("tidal")
local support = require("support")

describe("tidal.sleep", function()
  it("waits at least the given time", function()
    local dt = support.run(function()
      local t0 = tidal.now()
      tidal.sleep(0.05)
      return tidal.now() - t0
    end)
    assert.is_true(dt >= 0.05, "slept " .. dt)
    assert.is_true(dt < 2, "slept " .. dt)
  end)

  it("overlaps the sleeps of concurrent tasks", function()
    local dt = support.run(function()
      local t0 = tidal.now()
      local hs = {}
      for i = 1, 20 do hs[i] = tidal.spawn(tidal.sleep, 0.1) end
      for i = 1, 20 do hs[i]:await() end
      return tidal.now() - t0
    end)
    -- twenty 0.1 s sleeps in sequence would take 2 s
    assert.is_true(dt >= 0.1 and dt < 1.0, "took " .. dt)
  end)

  it("wakes sleepers in deadline order", function()
    local order = support.run(function()
      local log = {}
      local hs = {}
      for _, d in ipairs({ 0.03, 0.01, 0.02, 0 }) do
        hs[#hs + 1] = tidal.spawn(function() tidal.sleep(d); log[#log + 1] = d end)
      end
      for _, h in ipairs(hs) do h:await() end
      return log
    end)
    assert.are.same({ 0, 0.01, 0.02, 0.03 }, order)
  end)

  it("treats zero and negative durations as a yield", function()
    local log = support.run(function()
      local l = {}
      local h = tidal.spawn(function() l[#l + 1] = "other" end)
      tidal.sleep(-5)
      l[#l + 1] = "main"
      h:await()
      return l
    end)
    assert.are.same({ "other", "main" }, log)
  end)

  it("sleeps until cancelled with nil or math.huge", function()
    support.run(function()
      for _, d in ipairs({ false, math.huge }) do
        local h = tidal.spawn(function() if d then tidal.sleep(d) else tidal.sleep() end end)
        tidal.sleep(0.01)
        assert.is_false(h:is_finished())
        h:abort()
        local ok, err = h:join()
        assert.is_false(ok)
        assert.are.equal("cancelled", err.kind)
      end
    end)
  end)

  it("refuses bad durations", function()
    support.run(function()
      local ok, err = pcall(tidal.sleep, "1")
      assert.matches("tidal.sleep: seconds must be a number, got string", err)
      ok, err = pcall(tidal.sleep, 0 / 0)
      assert.matches("got nan", err)
      ok, err = pcall(tidal.sleep, {})
      assert.matches("got table", err)
    end)
  end)

  it("handles 100,000 concurrent sleepers", function()
    local n = support.scaled(100000)
    local count, dt = support.run(function()
      local c = 0
      local t0 = tidal.now()
      local hs = {}
      for i = 1, n do
        hs[i] = tidal.spawn(function() tidal.sleep(0.2 + (i % 100) / 1000); c = c + 1 end)
      end
      for i = 1, n do hs[i]:await() end
      return c, tidal.now() - t0
    end)
    assert.are.equal(n, count)
    assert.is_true(dt >= 0.2 and dt < 15, "took " .. dt)
  end)
end)

describe("tidal.yield", function()
  it("lets every other ready task run first", function()
    local log = support.run(function()
      local l = {}
      for i = 1, 3 do tidal.spawn(function() l[#l + 1] = i end) end
      tidal.yield()
      l[#l + 1] = "main"
      return l
    end)
    assert.are.same({ 1, 2, 3, "main" }, log)
  end)
end)

describe("tidal.now", function()
  it("is monotonic seconds as a float", function()
    local a = tidal.now()
    local b = tidal.now()
    assert.is_number(a)
    assert.is_true(b >= a)
    assert.is_true(math.type(a) == "float")
  end)
end)

describe("waiting outside a task", function()
  it("raises an error naming the function and the fix", function()
    local ok, err = pcall(tidal.sleep, 0.01)
    assert.is_false(ok)
    assert.matches("tidal.sleep: not inside a tidal task %(wrap the code in tidal.run%)", err)
    ok, err = pcall(tidal.yield)
    assert.matches("tidal.yield: not inside a tidal task", err)
  end)

  it("raises from a plain coroutine nested inside a task", function()
    local err = support.run(function()
      local co = coroutine.create(function() tidal.sleep(0.01) end)
      local ok, e = coroutine.resume(co)
      assert.is_false(ok)
      return e
    end)
    assert.matches("tidal.sleep: called from a plain coroutine inside a task", err)
    assert.matches("tidal.spawn instead of coroutine.create", err)
  end)

  it("raises where Lua cannot yield (a table.sort callback)", function()
    local err = support.run(function()
      local ok, e = pcall(table.sort, { 3, 2, 1 }, function(a, b) tidal.sleep(0); return a < b end)
      assert.is_false(ok)
      return e
    end)
    assert.matches("tidal.sleep: cannot wait here", err)
    assert.matches("table.sort", err)
  end)

  it("raises at a module's top level run by require", function()
    local err = support.run(function()
      package.preload["tidal_spec_waits_in_require"] = function() tidal.sleep(0.01) end
      local ok, e = pcall(require, "tidal_spec_waits_in_require")
      assert.is_false(ok)
      return e
    end)
    assert.matches("cannot wait here", err)
    assert.matches("require", err)
  end)
end)

describe("the cooperative budget", function()
  it("keeps a loop of always-ready waits from starving timers and tasks", function()
    local r = support.run(function()
      local done = tidal.spawn(function() return true end)
      done:await()
      local flag = false
      tidal.spawn(function() tidal.sleep(0.01); flag = true end)
      local t0 = tidal.now()
      local spins = 0
      -- every await here completes at once; without a budget this loop would
      -- never give the sleeper a turn
      while not flag and tidal.now() - t0 < 5 do
        done:await()
        spins = spins + 1
      end
      return { flag = flag, spins = spins }
    end)
    assert.is_true(r.flag)
    assert.is_true(r.spins > 0)
  end)
end)
