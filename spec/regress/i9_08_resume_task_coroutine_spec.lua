-- Issue 9 item 8: Lua code resuming (or closing) a task's coroutine -- the
-- callback-to-coroutine adapter, coroutine.resume on a captured
-- coroutine.running() -- ran the wait's continuation outside the scheduler:
-- the task was queued twice, the run queue corrupted, the process crashed.
-- A resume by Lua code now raises a clear error in the resumer and leaves
-- the task as it was; coroutine.close cancels the task cleanly (its wait is
-- withdrawn, nothing is handed to it, await reports the cancellation) and
-- raises in the closer.
local support = require("support")

local function child(code, secs)
  return support.lua(code, secs or 20)
end

local prelude = [[
  local tidal = require("tidal")
  -- the error f raises, as a string
  local function raised(f)
    local ok, err = pcall(f)
    assert(not ok, "no error")
    return tostring(err)
  end
]]

local function run(body)
  local out, status = child(prelude .. body)
  assert.are.equal(0, status, out)
  assert.matches("finished", out)
  return out
end

describe("issue 9 item 8: resuming a task's coroutine from Lua", function()
  if not support.can_spawn then
    pending("needs child processes")
    return
  end

  it("raises in the resumer and leaves a waiting task waiting", function()
    local out = run([[
      tidal.run(function()
        local tx, rx = tidal.channel()
        local co
        local h = tidal.spawn(function()
          co = coroutine.running()
          return rx:recv()
        end)
        tidal.yield()
        print(raised(function() coroutine.resume(co, "forged") end))
        print("status", coroutine.status(co))
        tx:send("real")
        print("got", h:await(), #rx)
      end)
      print("finished")
    ]])
    assert.matches("coroutine.resume: cannot resume the coroutine of task 2: "
      .. "it waits in Receiver:recv, and only tidal's scheduler may resume it",
      out, 1, true)
    assert.matches("use a channel, a oneshot or a notify", out, 1, true)
    assert.matches("status\tsuspended", out)
    assert.matches("got\treal\t0", out)
  end)

  it("raises for a task that was woken and waits for its turn", function()
    local out = run([[
      tidal.run(function()
        local tx, rx = tidal.channel()
        local co
        local h = tidal.spawn(function()
          co = coroutine.running()
          return rx:recv()
        end)
        tidal.yield()
        tx:send("v") -- h is runnable now
        print(raised(function() coroutine.resume(co) end))
        print("got", h:await())
      end)
      print("finished")
    ]])
    assert.matches("cannot resume the coroutine of task 2: only tidal's "
      .. "scheduler may resume it", out, 1, true)
    assert.matches("got\tv", out)
  end)

  it("raises for a task that yielded for its budget", function()
    local out = run([[
      tidal.run(function()
        local tx, rx = tidal.channel()
        local co
        local h = tidal.spawn(function()
          co = coroutine.running()
          local sum = 0
          for i = 1, 1000 do tx:send(i); sum = sum + rx:recv() end
          return sum
        end)
        tidal.yield()
        for _ = 1, 5 do
          print(raised(function() coroutine.resume(co) end):match("cannot resume"))
          tidal.yield()
        end
        print("sum", h:await())
      end)
      print("finished")
    ]])
    assert.matches("sum\t500500", out)
    local _, n = out:gsub("cannot resume", "")
    assert.is_true(n >= 1, out)
  end)

  it("raises in a plain coroutine that resumes the task", function()
    local out = run([[
      tidal.run(function()
        local co
        local h = tidal.spawn(function()
          co = coroutine.running()
          tidal.sleep(0.05)
          return "slept"
        end)
        tidal.yield()
        local adapter = coroutine.wrap(function()
          coroutine.resume(co, "value")
          return "adapter went on"
        end)
        print(raised(adapter))
        local inner = coroutine.create(function()
          local ok = coroutine.resume(co)
          return ok
        end)
        print("inner", coroutine.resume(inner))
        print("await", h:await())
      end)
      print("finished")
    ]])
    assert.matches("waits in tidal.sleep", out, 1, true)
    assert.matches("inner\tfalse\t.-cannot resume the coroutine of task 2", out)
    assert.is_nil(out:find("adapter went on", 1, true), out)
    assert.matches("await\tslept", out)
  end)

  it("is refused by Lua for the task that is handing off", function()
    local out = run([[
      tidal.run(function()
        local tx, rx = tidal.channel()
        local main = coroutine.running()
        local h = tidal.spawn(function()
          -- runs nested while main parks in recv below
          print("resume", coroutine.resume(main))
          tx:send("z")
        end)
        print("main got", rx:recv())
        h:await()
      end)
      print("finished")
    ]])
    assert.matches("resume\tfalse\tcannot resume non%-suspended coroutine", out)
    assert.matches("main got\tz", out)
  end)

  it("survives many resumes of many waiting tasks", function()
    local out = run([[
      tidal.run(function()
        local tx, rx = tidal.channel()
        local cos, hs = {}, {}
        for i = 1, 100 do
          hs[i] = tidal.spawn(function()
            cos[i] = coroutine.running()
            return rx:recv()
          end)
        end
        tidal.yield()
        local refused = 0
        for round = 1, 3 do
          for i = 1, 100 do
            if not pcall(coroutine.resume, cos[i], round) then
              refused = refused + 1
            end
          end
          tx:send(round)
        end
        for i = 4, 100 do tx:send(i) end
        local seen = {}
        for i = 1, 100 do
          local v = hs[i]:await()
          assert(not seen[v]); seen[v] = true
        end
        print("values", #rx, refused > 0)
      end)
      print("finished")
    ]])
    assert.matches("values\t0\ttrue", out)
  end)

  it("does not crash for a task of a runtime dropped without close", function()
    local out = run([[
      local co
      local rt = tidal.runtime()
      rt:spawn(function() co = coroutine.running(); tidal.sleep(10) end)
      rt:step(0)
      rt = nil
      collectgarbage(); collectgarbage()
      print(pcall(coroutine.resume, co))
      print(pcall(coroutine.close, co))
      print("finished")
    ]])
    assert.matches("finished", out)
  end)
end)

describe("issue 9 item 8: closing a task's coroutine from Lua", function()
  if not support.can_spawn then
    pending("needs child processes")
    return
  end

  it("cancels a task waiting on a channel; its <close> handlers run", function()
    local out = run([[
      tidal.run(function()
        local tx, rx = tidal.channel()
        local co, log = nil, {}
        local h = tidal.spawn(function()
          co = coroutine.running()
          local _ <close> = setmetatable({}, { __close = function()
            log[#log + 1] = "closed"
          end })
          return rx:recv()
        end)
        tidal.yield()
        print(raised(function() coroutine.close(co) end))
        print("log", table.concat(log, ","))
        local ok, err = h:join()
        print("join", ok, err.kind, err.message)
        tx:send("kept")
        print("left", rx:try_recv())
      end)
      print("finished")
    ]])
    assert.matches("coroutine.close: closed the coroutine of task 2 while it "
      .. "waited in Receiver:recv: the task is cancelled", out, 1, true)
    assert.matches("log\tclosed", out)
    assert.matches("join\tfalse\tcancelled\ttask 2 was cancelled: Lua code "
      .. "closed its coroutine", out, 1, true)
    assert.matches("left\tkept", out)
  end)

  it("does not hand a lock to a closed waiter", function()
    local out = run([[
      tidal.run(function()
        local m = tidal.mutex()
        local g = m:lock()
        local co
        local h = tidal.spawn(function()
          co = coroutine.running()
          return m:lock()
        end)
        tidal.yield()
        pcall(coroutine.close, co)
        g:release()
        print("free", m:try_lock() ~= nil)
        print("join", h:join())
      end)
      print("finished")
    ]])
    assert.matches("free\ttrue", out)
    assert.matches("join\tfalse", out)
  end)

  it("cancels tasks in sleep, timeout, select and runnable", function()
    local out = run([[
      tidal.run(function()
        local tx, rx = tidal.channel()
        local cos, hs = {}, {}
        hs[1] = tidal.spawn(function() cos[1] = coroutine.running(); tidal.sleep(0.05) end)
        hs[2] = tidal.spawn(function()
          cos[2] = coroutine.running()
          return tidal.timeout(0.05, function() tidal.sleep(1) end)
        end)
        hs[3] = tidal.spawn(function()
          cos[3] = coroutine.running()
          return tidal.select({ function() tidal.sleep(0.05) end, rx:recv_op() })
        end)
        hs[4] = tidal.spawn(function() cos[4] = coroutine.running(); return rx:recv() end)
        tidal.yield()
        tx:send("for 3 or 4") -- wakes one of them: runnable now
        for i = 1, 4 do pcall(coroutine.close, cos[i]) end
        tidal.sleep(0.1) -- their timers fire meanwhile
        for i = 1, 4 do
          local ok, err = hs[i]:join()
          print(i, ok, err.kind)
        end
        print("left", rx:try_recv())
        print("tasks", #tidal.tasks())
      end)
      print("finished")
    ]])
    for i = 1, 4 do
      assert.matches(i .. "\tfalse\tcancelled", out)
    end
    assert.matches("left\tfor 3 or 4", out)
    assert.matches("tasks\t1", out)
  end)

  it("cancels main when another task closes its coroutine", function()
    local out = run([[
      local ok, err = pcall(tidal.run, function()
        local main = coroutine.running()
        tidal.spawn(function()
          tidal.sleep(0.01) -- main waits in its sleep by then
          pcall(coroutine.close, main)
        end)
        tidal.sleep(1)
        return "not reached"
      end)
      print("run", ok, tidal.is_error(err, "cancelled"))
      print("finished")
    ]])
    assert.matches("run\tfalse\ttrue", out)
  end)

  it("cancels a task that Lua code ran to its end", function()
    local out = run([[
      tidal.run(function()
        local co
        local h = tidal.spawn(function()
          co = coroutine.running()
          coroutine.yield() -- a plain yield: tidal.yield
          return "ended"
        end)
        tidal.yield()
        print("resume", coroutine.resume(co))
        local ok, err = h:join()
        print("join", ok, err.kind)
      end)
      print("finished")
    ]])
    assert.matches("resume\tfalse\tcoroutine.resume: ran the coroutine of task 2 "
      .. "outside tidal's scheduler to its end", out, 1, true)
    assert.matches("join\tfalse\tcancelled", out)
  end)
end)
