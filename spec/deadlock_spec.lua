local tidal = require("tidal")

describe("deadlock detection", function()
  it("reports two tasks awaiting each other instead of hanging", function()
    local ok, err = pcall(tidal.run, function()
      local a, b
      a = tidal.spawn({ name = "alpha" }, function() tidal.yield(); return b:await() end)
      b = tidal.spawn({ name = "beta" }, function() tidal.yield(); return a:await() end)
      return a:await()
    end)
    assert.is_false(ok)
    assert.are.equal("deadlock", err.kind)
    local msg = tostring(err)
    assert.matches("^deadlock: every task is waiting and nothing can wake them", msg)
    assert.matches("task 1 %(main%) waits in JoinHandle:await at .*deadlock_spec.lua:%d+", msg)
    assert.matches("task 2 %(alpha%) waits in JoinHandle:await at .*deadlock_spec.lua:%d+", msg)
    assert.matches("task 3 %(beta%) waits in JoinHandle:await", msg)
  end)

  it("reports main sleeping forever with nothing else alive", function()
    local ok, err = pcall(tidal.run, function() tidal.sleep() end)
    assert.is_false(ok)
    assert.are.equal("deadlock", err.kind)
    assert.matches("task 1 %(main%) waits in tidal.sleep%(forever%)", err.message)
  end)

  it("is not reported while a timer can still wake someone", function()
    local r = tidal.run(function()
      local sleeper = tidal.spawn(function() tidal.sleep(0.05); return "woke" end)
      return sleeper:await()
    end)
    assert.are.equal("woke", r)
  end)

  it("fails main where it waits, so its <close> variables run", function()
    local closed = false
    local ok, err = pcall(tidal.run, function()
      local g <close> = setmetatable({}, { __close = function() closed = true end })
      tidal.sleep()
    end)
    assert.is_false(ok)
    assert.are.equal("deadlock", err.kind)
    assert.is_true(closed)
  end)

  it("is sticky: main catching it and waiting again still ends", function()
    local ok, err = pcall(tidal.run, function()
      local caught = 0
      for _ = 1, 3 do
        local ok2 = pcall(tidal.sleep)
        if not ok2 then caught = caught + 1 end
      end
      return caught
    end)
    assert.is_true(ok)
    assert.are.equal(3, err)
  end)

  it("collects garbage first, so finalizers get a chance to wake tasks", function()
    -- a finalizer that wakes the sleeper by aborting it: only a full
    -- collection runs it, and then there is no deadlock
    local r = tidal.run(function()
      local sleeper = tidal.spawn(function() tidal.sleep() end)
      do
        setmetatable({}, { __gc = function() sleeper:abort() end })
      end
      local ok, e = sleeper:join()
      return e.kind
    end)
    assert.are.equal("cancelled", r)
  end)
end)
