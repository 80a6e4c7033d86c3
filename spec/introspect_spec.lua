local tidal = require("tidal")
local support = require("support")

describe("tidal.tasks", function()
  it("lists live tasks with id, name, state and where they wait", function()
    local list = support.run(function()
      local s = tidal.spawn({ name = "sleeper" }, function()
        tidal.sleep(60) -- the line the listing points at
      end)
      local n = tidal.spawn({ name = "fresh" }, function() end)
      tidal.yield()
      local l = tidal.tasks()
      s:abort()
      return l, n
    end)
    local by_name = {}
    for _, t in ipairs(list) do
      if t.name then by_name[t.name] = t end
    end
    assert.are.equal("parked", by_name.sleeper.state)
    assert.are.equal("tidal.sleep", by_name.sleeper.waiting)
    assert.matches("introspect_spec.lua:%d+$", by_name.sleeper.where)
    assert.are.equal("running", by_name.test.state)
    assert.is_true(by_name.sleeper.id < (by_name.test.id + 10))
    for i = 2, #list do assert.is_true(list[i - 1].id < list[i].id) end
  end)

  it("shows not-started tasks where their function is defined", function()
    local entry = support.run(function()
      tidal.spawn({ name = "later" }, function() end)
      for _, t in ipairs(tidal.tasks()) do
        if t.name == "later" then return t end
      end
    end)
    assert.are.equal("new", entry.state)
    assert.matches("introspect_spec.lua:%d+ %(not started%)", entry.where)
  end)

  it("is refused outside a runtime", function()
    local ok, err = pcall(tidal.tasks)
    assert.is_false(ok)
    assert.matches("tidal.tasks: no runtime is running", err)
  end)
end)

describe("tidal.stats", function()
  it("counts spawned, alive, parked, finished and failed tasks", function()
    local s = support.run(function()
      tidal.yield() -- let the spec helper's watchdog park first
      local before = tidal.stats()
      local hs = {}
      for i = 1, 5 do hs[i] = tidal.spawn(tidal.sleep, 60) end
      hs[6] = tidal.spawn(function() error("x", 0) end)
      tidal.yield()
      local mid = tidal.stats()
      for i = 1, 5 do hs[i]:abort() end
      hs[6]:join()
      for i = 1, 5 do hs[i]:join() end
      local after = tidal.stats()
      return { before = before, mid = mid, after = after }
    end)
    assert.are.equal(6, s.mid.spawned - s.before.spawned)
    assert.are.equal(5, s.mid.parked - s.before.parked)
    assert.are.equal(5, s.mid.timers - s.before.timers)
    assert.are.equal(1, s.mid.failed - s.before.failed)
    assert.are.equal(5, s.after.cancelled - s.before.cancelled)
    assert.are.equal(s.before.alive, s.after.alive)
    assert.is_true(s.after.resumes > s.before.resumes)
    assert.are.equal(s.after.spawned, s.after.workers[1].spawned)
  end)

  it("gives the running task's id", function()
    assert.is_nil(tidal.current_id())
    local ids = support.run(function()
      local h = tidal.spawn(function() return tidal.current_id() end)
      return { h:id(), h:await() }
    end)
    assert.are.equal(ids[1], ids[2])
  end)
end)

describe("a task that runs long without waiting", function()
  it("is reported once, with its name and where it then waited", function()
    local out, status = support.lua([[
      local tidal = require("tidal")
      tidal.run({ slow_task = 0.05 }, function()
        local h = tidal.spawn({ name = "cruncher" }, function()
          for _ = 1, 2 do
            local t0 = tidal.now()
            while tidal.now() - t0 < 0.1 do end -- hogs the thread
            tidal.sleep(0.001)
          end
        end)
        h:await()
      end)
      print("done")
    ]])
    assert.are.equal(0, status, out)
    local n = select(2, out:gsub("ran %d+%.%d+ s without waiting", ""))
    assert.are.equal(1, n, out)
    assert.matches("tidal: task 2 %(cruncher%) ran 0%.%d+ s without waiting", out)
    assert.matches("it then waited at:\nstack traceback:\n.-in function 'tidal.sleep'", out)
  end)

  it("is not reported when slow_task is false", function()
    local out = support.lua([[
      local tidal = require("tidal")
      tidal.run({ slow_task = false }, function()
        local t0 = tidal.now()
        while tidal.now() - t0 < 0.05 do end
        tidal.yield()
      end)
    ]])
    assert.are.equal("", out)
  end)

  it("refuses a bad slow_task option", function()
    assert.matches("option 'slow_task' must be a number of seconds",
      select(2, pcall(tidal.run, { slow_task = "x" }, function() end)))
  end)
end)
