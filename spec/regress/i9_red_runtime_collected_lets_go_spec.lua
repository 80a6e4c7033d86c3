-- Issue 9, red team: a runtime collected without rt:close() drops its tasks
-- as they are (no task code runs in a finalizer), but each JoinHandle the
-- program still held kept the task's coroutine -- or, for a task that had
-- not started, its function and arguments -- reachable: a mutex guard or a
-- permit held in the task was never collected, so the lock stayed taken for
-- as long as the handle lived (a deadlock for the next locker), and a
-- channel clone passed as an argument kept its stream open. The handle lets
-- go of them now. A task that had started also reported that it "was
-- cancelled before it started"; it now says the runtime shut down.
local tidal = require("tidal")

-- setup(rt) spawns (after a step when late: the task never starts)
local function dropped_runtime(setup, late)
  local rt = tidal.runtime()
  local kept
  if not late then kept = setup(rt) end
  rt:step(0)
  if late then kept = setup(rt) end
  rt = nil -- luacheck: ignore
  collectgarbage()
  collectgarbage()
  return kept
end

describe("issue 9 red: a collected runtime lets go of what its tasks held",
  function()
  it("releases a lock held by a task whose handle is still kept", function()
    local m = tidal.mutex()
    local h = dropped_runtime(function(rt)
      return rt:spawn(function()
        local g <close> = m:lock()
        tidal.sleep(100)
      end)
    end)
    assert.is_true(h:is_finished())
    local guard = m:try_lock()
    assert.is_not_nil(guard)
    guard:release()
    local ok, err = h:join()
    assert.is_false(ok)
    assert.are.equal("cancelled", err.kind)
    assert.are.equal("task " .. h:id() .. " was cancelled (the runtime shut "
      .. "down)", err.message)
  end)

  it("releases permits held by a task", function()
    local s = tidal.semaphore(2)
    local h = dropped_runtime(function(rt)
      return rt:spawn(function()
        local p <close> = s:acquire(2)
        tidal.sleep(100)
      end)
    end)
    assert.are.equal(2, s:available())
    assert.is_true(h:is_finished())
  end)

  it("closes a sender given to a task that never started", function()
    local tx, rx = tidal.channel()
    local h = dropped_runtime(function(rt)
      return rt:spawn(function(mine) mine:send(1) end, tx:clone())
    end, true)
    tx:close()
    local got = 0
    for _ in rx do got = got + 1 end -- ends: every sender is closed
    assert.are.equal(0, got)
    local ok, err = h:join()
    assert.is_false(ok)
    assert.are.equal("task " .. h:id() .. " was cancelled before it started "
      .. "(the runtime shut down)", err.message)
  end)
end)
