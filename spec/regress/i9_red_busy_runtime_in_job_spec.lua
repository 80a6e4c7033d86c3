-- Issue 9, red team: a runtime run inside a spawn_blocking job (tidal.run,
-- or a loop of rt:step, to wait in the job) whose code does not wait.
-- Aborting the job, or shutting its runtime down, posted "cancel your main
-- task" to the inner runtime, which a busy task never let it read: h:abort()
-- then h:join() waited forever, and so did the program's exit. A job that
-- drove a runtime with rt:step between pieces of its own work (C code, such
-- as a blocking read) was never stopped either: the count hook set on the
-- job's state needs a million instructions of the job's own Lua code, which
-- such a loop takes hours to run, and nothing else told step. Now the inner
-- runtime's running Lua code is interrupted, and rt:step in a stopped job
-- raises the job's cancellation. Each case runs in a child process with a
-- time limit, so a hang fails the test.
local support = require("support")

-- a job that runs tidal.run with a main task that never waits
local busy_run = [[tidal.spawn_blocking(function()
    local tidal = require("tidal")
    return tidal.run(function() while true do end end)
  end)]]

-- the same, the busy code in a task the inner main task awaits
local busy_awaited = [[tidal.spawn_blocking(function()
    local tidal = require("tidal")
    return tidal.run(function()
      tidal.spawn(function() while true do end end):await()
    end)
  end)]]

-- a job driving a runtime with rt:step, doing its own (C) work in between
local step_work = [[tidal.spawn_blocking(function()
    local tidal = require("tidal")
    local rt = tidal.runtime()
    rt:spawn(function() tidal.sleep(100) end)
    while rt:step(0) do local _ = ("x"):rep(1 << 22) end
  end)]]

-- a job waiting in rt:step
local step_wait = [[tidal.spawn_blocking(function()
    local tidal = require("tidal")
    local rt = tidal.runtime()
    rt:spawn(function() tidal.sleep(100) end)
    while rt:step(1) do end
  end)]]

local function aborted(job)
  return [[
local tidal = require("tidal")
tidal.run(function()
  local h = ]] .. job .. [[

  tidal.sleep(0.1)
  local t0 = tidal.now()
  h:abort()
  local ok, err = h:join()
  print("join", ok, err.kind, err.message, tidal.now() - t0 < 5)
end)
print("finished")
]]
end

local function left_at_exit(job)
  return [[
local tidal = require("tidal")
tidal.run(function()
  ]] .. job .. [[

  tidal.sleep(0.1)
end)
print("finished")
]]
end

local function check_aborted(job)
  local out, status = support.lua(aborted(job), 20)
  assert.are.equal(0, status, out)
  assert.matches("join\tfalse\tcancelled\t[^\n]*\ttrue\n", out)
  assert.matches("finished", out)
end

local function check_exits(job)
  local out, status = support.lua(left_at_exit(job), 20)
  assert.are.equal(0, status, out)
  assert.matches("finished", out)
end

describe("issue 9 red: a busy runtime inside a spawn_blocking job", function()
  if not support.can_spawn then
    pending("needs child processes")
    return
  end

  it("tidal.run with a busy main task: abort ends the job", function()
    check_aborted(busy_run)
  end)

  it("tidal.run with a busy main task: the program still exits", function()
    check_exits(busy_run)
  end)

  it("a busy task the inner main task awaits: abort ends the job", function()
    check_aborted(busy_awaited)
  end)

  it("rt:step between pieces of the job's work: abort ends the job",
     function()
    check_aborted(step_work)
  end)

  it("rt:step between pieces of the job's work: the program still exits",
     function()
    check_exits(step_work)
  end)

  it("a loop waiting in rt:step: abort ends the job", function()
    check_aborted(step_wait)
  end)

  it("rt:step in a stopped job raises the job's cancellation", function()
    local out, status = support.lua([[
local tidal = require("tidal")
tidal.run(function()
  local tx, rx = tidal.oneshot()
  local h = tidal.spawn_blocking(function(tx)
    local tidal = require("tidal")
    local rt = tidal.runtime()
    rt:spawn(function() tidal.sleep(100) end)
    local ok, err = pcall(function()
      while rt:step(0) do local _ = ("x"):rep(1 << 22) end
    end)
    tx:send(tostring(ok) .. " " .. tostring(tidal.is_error(err, "cancelled"))
            .. " " .. tostring(err))
  end, tx)
  tidal.sleep(0.1)
  h:abort()
  print("join", h:join())
  print("step", rx:recv())
end)
]], 20)
    assert.are.equal(0, status, out)
    assert.matches("join\tfalse", out)
    assert.matches("step\tfalse true [^\n]*spawn_blocking: the job was "
                   .. "cancelled", out)
  end)
end)
