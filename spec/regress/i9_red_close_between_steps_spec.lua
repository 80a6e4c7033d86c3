-- Issue 9, red team: coroutine.close on a task's coroutine (item 8) when
-- the task's runtime is not the one running: between two rt:step calls, or
-- from a task of another runtime of the same Lua state. The closer looked
-- for the task on the running worker only, found nothing and stayed quiet:
-- no error for the closer, and the task stayed registered in its wait with
-- a dead coroutine, so the next message or lock handed to it was lost (the
-- other receiver never got the message, the other locker never got the
-- lock: a silent hang). The task is now found on any open runtime: its wait
-- is withdrawn, it ends as cancelled, and the closer gets the error.
local tidal = require("tidal")

describe("issue 9 red: closing a task's coroutine outside its runtime",
  function()
  it("between steps: the wait is withdrawn, nothing handed to it is lost",
    function()
    local rt <close> = tidal.runtime()
    local tx, rx = tidal.channel()
    local m = tidal.mutex()
    local hold = m:try_lock()
    local co1, co2
    local got = {}
    local h1 = rt:spawn(function()
      co1 = coroutine.running()
      got[#got + 1] = "r1:" .. tostring(rx:recv())
    end)
    rt:spawn(function() got[#got + 1] = "r2:" .. tostring(rx:recv()) end)
    rt:spawn(function()
      co2 = coroutine.running()
      local g <close> = m:lock()
      got[#got + 1] = "l1"
    end)
    rt:spawn(function()
      local g <close> = m:lock()
      got[#got + 1] = "l2"
    end)
    rt:step(0)
    local ok, err = pcall(coroutine.close, co1)
    assert.is_false(ok)
    assert.matches("coroutine.close: closed the coroutine of task 1 while it "
      .. "waited in Receiver:recv: the task is cancelled", err, 1, true)
    ok, err = pcall(coroutine.close, co2)
    assert.is_false(ok)
    assert.matches("waited in Mutex:lock", err, 1, true)
    tx:send("msg")
    hold:release()
    for _ = 1, 10 do
      if not rt:step(0.01) then break end
    end
    table.sort(got)
    assert.are.same({ "l2", "r2:msg" }, got)
    assert.is_false(rt:step(0))
    local jok, jerr = h1:join()
    assert.is_false(jok)
    assert.are.equal("cancelled", jerr.kind)
  end)

  it("from a task of another runtime", function()
    local rt <close> = tidal.runtime()
    local tx, rx = tidal.channel()
    local co
    local got = {}
    rt:spawn(function()
      co = coroutine.running()
      got[#got + 1] = "r1:" .. tostring(rx:recv())
    end)
    rt:spawn(function() got[#got + 1] = "r2:" .. tostring(rx:recv()) end)
    rt:step(0)
    local ok, err = tidal.run(function()
      return pcall(coroutine.close, co)
    end)
    assert.is_false(ok)
    assert.matches("closed the coroutine of task 1", err, 1, true)
    tx:send("msg")
    for _ = 1, 10 do
      if not rt:step(0.01) then break end
    end
    assert.are.same({ "r2:msg" }, got)
  end)
end)
