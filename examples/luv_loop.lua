-- luv_loop.lua: tidal tasks and luv's timers and handles on one loop.
-- tidal.runtime{loop = uv} runs its tasks from luv's loop: uv.run() drives
-- both, and returns once luv's handles are closed and every task is done
-- (tidal keeps no reference on the loop while no task is alive). Needs
-- luv (Debian: lua-luv; LuaRocks: luv), which tidal does not depend on.
local uv = require("luv")
local tidal = require("tidal")

local rt = tidal.runtime({ loop = uv })
local tx, rx = tidal.channel()

-- luv's side: a repeating timer feeds the channel, an idle-time check
-- counts loop turns
local ticks = 0
local timer = uv.new_timer()
timer:start(20, 20, function()
  ticks = ticks + 1
  tx:try_send("luv tick " .. ticks) -- from a luv callback, outside any task
  if ticks == 3 then
    timer:close()
    tx:close()
  end
end)

-- tidal's side: a task receives what luv sends, another sleeps
rt:spawn(function()
  for msg in rx.recv, rx do print("task got: " .. msg) end
  print("task: the channel is closed")
end)
local sleeper = rt:spawn(function()
  tidal.sleep(0.03)
  print("task: slept 0.03 s")
  return "done"
end)

-- a luv callback may spawn tasks too
uv.new_timer():start(10, 0, function()
  rt:spawn(function() print("task spawned from a luv timer") end)
end)

local t0 = uv.hrtime()
uv.run() -- returns when luv and tidal have nothing left to do
print(("uv.run returned after %s; tasks alive: %d"):format(
  (uv.hrtime() - t0) / 1e9 < 2 and "well under 2 s" or "too long", #rt:tasks()))
print("sleeper: " .. select(2, sleeper:join()))
rt:close()
