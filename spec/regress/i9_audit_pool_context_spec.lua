-- Issue 9 audit (with item 1): a tidal handle copied into a Lua state that
-- never loaded tidal.core (the blocking pool's states) got its metatable
-- through a NULL context: the process died with SIGSEGV. Setting a type's
-- metatable now loads tidal.core into such a state first, so every method
-- has its context there. Run in a child process: a crash fails the test.
local support = require("support")

describe("issue 9 audit: handles in a state without tidal.core", function()
  it("oneshot, channel, mutex and semaphore handles work in the blocking pool", function()
    if not support.can_spawn then return end
    local out, status = support.lua([[
local tidal = require("tidal")
tidal.run(function()
  local tx, rx = tidal.oneshot()
  local h = tidal.spawn_blocking(function(t) return t:send(42) end, tx)
  print("oneshot", rx:recv(), h:await())
  local ctx, crx = tidal.channel()
  local hs = {}
  for i = 1, 20 do
    hs[i] = tidal.spawn_blocking(function(t, k) t:send(k); return tostring(t) end, ctx, i)
  end
  ctx:close()
  local sum = 0
  for _ = 1, 20 do sum = sum + crx:recv() end
  print("channel", sum, hs[1]:await())
  local m, s = tidal.mutex(), tidal.semaphore(2)
  print("locks", tidal.spawn_blocking(function(mm, ss)
    local g = mm:try_lock()
    local p = ss:try_acquire()
    local ok = g ~= nil and p ~= nil
    g:release()
    p:release()
    return ok, tostring(mm), ss:available()
  end, m, s):await())
end)
]])
    assert.are.equal(0, status, out)
    assert.matches("oneshot\t42\ttrue", out)
    assert.matches("channel\t210\ttidal.Sender", out)
    assert.matches("locks\ttrue\ttidal.Mutex (unlocked)\t2", out, nil, true)
  end)
end)
