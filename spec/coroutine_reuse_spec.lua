-- A task's coroutine runs task after task (csrc/kernel/task.c): between two
-- tasks it waits, idle, in the worker's pool. Lua code that kept a finished
-- task's coroutine.running() cannot run anything in it, and closing it
-- only keeps it from being reused.
local support = require("support")

local function run(body)
  local out, status = support.lua([[
    local tidal = require("tidal")
    local function raised(f)
      local ok, err = pcall(f)
      assert(not ok, "no error")
      return tostring(err)
    end
  ]] .. body)
  assert.are.equal(0, status, out)
  assert.matches("finished", out)
  return out
end

describe("a finished task's coroutine", function()
  if not support.can_spawn then
    pending("needs child processes")
    return
  end

  it("refuses a resume by Lua code, and later tasks still run in it", function()
    local out = run([[
      tidal.run(function()
        local co
        tidal.spawn(function() co = coroutine.running() end):await()
        print("status", coroutine.status(co))
        print(raised(function() coroutine.resume(co, "forged") end))
        print(raised(function() coroutine.wrap(function()
          coroutine.resume(co)
        end)() end))
        -- the next tasks take the idle coroutine: they run as usual
        local reused, sum = false, 0
        for i = 1, 50 do
          sum = sum + tidal.spawn(function(x)
            if coroutine.running() == co then reused = true end
            tidal.yield()
            return x
          end, i):await()
        end
        print("sum", sum, "reused", reused)
      end)
      print("finished")
    ]])
    assert.matches("status\tsuspended", out)
    local _, n = out:gsub("coroutine.resume: cannot resume the coroutine of a "
      .. "finished task: tidal keeps it for later tasks", "")
    assert.are.equal(2, n, out)
    assert.matches("sum\t1275\treused\ttrue", out)
  end)

  it("can be closed by Lua code: it is not reused, later tasks run", function()
    local out = run([[
      tidal.run(function()
        local cos = {}
        for i = 1, 5 do
          tidal.spawn(function() cos[i] = coroutine.running() end):await()
        end
        for _, co in ipairs(cos) do print("close", coroutine.close(co)) end
        local sum = 0
        local hs = {}
        for i = 1, 20 do
          hs[i] = tidal.spawn(function(x)
            for _, co in ipairs(cos) do assert(coroutine.running() ~= co) end
            tidal.sleep(0.001)
            return x
          end, i)
        end
        for i = 1, 20 do sum = sum + hs[i]:await() end
        print("sum", sum)
      end)
      print("finished")
    ]])
    assert.matches("close\ttrue", out)
    assert.is_nil(out:find("close\tfalse", 1, true), out)
    assert.matches("sum\t210", out)
  end)

  it("is the coroutine of the next task: closing it then cancels that task", function()
    local out = run([[
      tidal.run(function()
        local co
        tidal.spawn(function() co = coroutine.running() end):await()
        local tx, rx = tidal.channel()
        local h = tidal.spawn(function()
          assert(coroutine.running() == co)
          return rx:recv()
        end)
        tidal.yield()
        print(raised(function() coroutine.close(co) end))
        local ok, err = h:join()
        print("join", ok, err.kind)
      end)
      print("finished")
    ]])
    assert.matches("coroutine.close: closed the coroutine of task 3 while it "
      .. "waited in Receiver:recv: the task is cancelled", out, 1, true)
    assert.matches("join\tfalse\tcancelled", out)
  end)
end)
