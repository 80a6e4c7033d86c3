local tidal = require("tidal")

describe("deadlock detection with channels and locks", function()
  it("reports a lock cycle as a deadlock naming Mutex:lock", function()
    local ok, err = pcall(tidal.run, function()
      local m1, m2 = tidal.mutex(), tidal.mutex()
      local a = tidal.spawn({ name = "alpha" }, function()
        local g1 <close> = m1:lock()
        tidal.yield()
        local g2 <close> = m2:lock()
      end)
      local b = tidal.spawn({ name = "beta" }, function()
        local g2 <close> = m2:lock()
        tidal.yield()
        local g1 <close> = m1:lock()
      end)
      a:await()
      b:await()
    end)
    assert.is_false(ok)
    assert.are.equal("deadlock", err.kind)
    local msg = tostring(err)
    assert.matches("^deadlock: every task is waiting and nothing can wake them", msg)
    assert.matches("task %d+ %(alpha%) waits in Mutex:lock at .*deadlock_sync_spec.lua:%d+", msg)
    assert.matches("task %d+ %(beta%) waits in Mutex:lock at .*deadlock_sync_spec.lua:%d+", msg)
    assert.matches("task 1 %(main%) waits in JoinHandle:await", msg)
  end)

  it("lets the tasks of a lock cycle unwind: their <close> guards release", function()
    local released = {}
    local m1, m2 = tidal.mutex(), tidal.mutex()
    local ok, err = pcall(tidal.run, function()
      local function locker(first, second, tag)
        return function()
          local g1 <close> = first:lock()
          local mark <close> = setmetatable({}, { __close = function() released[#released + 1] = tag end })
          tidal.yield()
          local g2 <close> = second:lock()
        end
      end
      local a = tidal.spawn(locker(m1, m2, "a"))
      local b = tidal.spawn(locker(m2, m1, "b"))
      a:await()
      b:await()
    end)
    assert.is_false(ok)
    assert.are.equal("deadlock", err.kind)
    table.sort(released)
    assert.are.same({ "a", "b" }, released)
    assert.is_false(m1:is_locked())
    assert.is_false(m2:is_locked())
  end)

  it("names the wait of other primitives in the report", function()
    local ok, err = pcall(tidal.run, function()
      local rw = tidal.rwlock()
      local s = tidal.semaphore(0)
      local n = tidal.notify()
      local keep_tx, rx = tidal.channel()
      local held = rw:read()
      local hs = {
        tidal.spawn({ name = "writer" }, function() return rw:write() end),
        tidal.spawn({ name = "acquirer" }, function() return s:acquire() end),
        tidal.spawn({ name = "notified" }, function() return n:notified() end),
        tidal.spawn({ name = "receiver" }, function() return rx:recv() end),
      }
      for _, h in ipairs(hs) do h:await() end
      return keep_tx, held
    end)
    assert.is_false(ok)
    assert.are.equal("deadlock", err.kind)
    local msg = tostring(err)
    assert.matches("%(writer%) waits in RwLock:write", msg)
    assert.matches("%(acquirer%) waits in Semaphore:acquire", msg)
    assert.matches("%(notified%) waits in Notify:notified", msg)
    assert.matches("%(receiver%) waits in Receiver:recv", msg)
  end)

  it("is not reported for a receiver whose only sender was dropped: the GC closes it and recv gives nil", function()
    local r = tidal.run(function()
      -- the sender is unreachable once this returns, but nothing collected it yet
      local rx = (function()
        local tx, r = tidal.channel()
        tx:send("last")
        return r
      end)()
      local out = {}
      while true do
        local v = rx:recv()
        if v == nil then break end
        out[#out + 1] = v
      end
      return out
    end)
    assert.are.same({ "last" }, r)
  end)

  it("is not reported for a oneshot receiver whose sender was dropped", function()
    local r = tidal.run(function()
      local rx = select(2, tidal.oneshot())
      local v, err = rx:recv()
      return { v, err.kind }
    end)
    assert.are.same({ nil, "closed" }, r)
  end)

  it("is not reported for a task waiting on a lock whose guard was dropped", function()
    local r = tidal.run(function()
      local m = tidal.mutex()
      ;(function() m:lock() end)() -- the guard is unreachable, still held
      local g = m:lock()
      return g:is_held()
    end)
    assert.is_true(r)
  end)
end)
