-- Issue 9, red team: a finalizer (__gc) that resumes or closes a task's
-- coroutine. The refusal (item 8) is raised by a return hook on the thread
-- that resumed, but Lua runs finalizers with hooks off: the hook fired
-- later, at the next return in the interrupted task, so innocent code (a
-- loop that allocated and so ran the collector) failed with an error about
-- a coroutine.resume it never made. As with any error in a finalizer, the
-- message now goes to stderr and the interrupted code runs on.
local support = require("support")

local function child(code)
  return support.lua(code, 30)
end

local function body(call)
  return [[
local tidal = require("tidal")
io.stdout:setvbuf("no")
tidal.run(function()
  local co
  local h = tidal.spawn(function()
    co = coroutine.running()
    tidal.sleep(10)
  end)
  tidal.sleep(0.01)
  setmetatable({}, { __gc = function() ]] .. call .. [[ end })
  local ok, e = pcall(function()
    local t = {}
    for i = 1, 1e5 do t[i] = { i } end -- the collector runs in here
    return "loop done"
  end)
  print("innocent code:", ok, e)
  h:abort()
  print("join", h:join())
end)
print("finished")
]]
end

describe("issue 9 red: a finalizer resuming a task's coroutine", function()
  if not support.can_spawn then
    pending("needs child processes")
    return
  end

  it("reports coroutine.resume on stderr, not in the code it interrupted",
    function()
    local out, status = child(body("coroutine.resume(co, 'forged')"))
    assert.are.equal(0, status, out)
    assert.matches("innocent code:\ttrue\tloop done", out, 1, true)
    assert.matches("tidal: coroutine.resume: cannot resume the coroutine of "
      .. "task 2: it waits in tidal.sleep", out, 1, true)
    assert.matches("join\tfalse\ttask 2 was cancelled", out, 1, true)
    assert.matches("finished", out)
  end)

  it("reports coroutine.close on stderr, and the task is cancelled",
    function()
    local out, status = child(body("coroutine.close(co)"))
    assert.are.equal(0, status, out)
    assert.matches("innocent code:\ttrue\tloop done", out, 1, true)
    assert.matches("tidal: coroutine.close: closed the coroutine of task 2",
      out, 1, true)
    assert.matches("join\tfalse\ttask 2 was cancelled", out, 1, true)
    assert.matches("finished", out)
  end)
end)
