-- frame_loop.lua: a Lua host's frame loop (a game, a tool) that drives a
-- runtime by hand. rt:step(wait) runs what is ready, then waits for
-- timers and I/O at most wait seconds; rt:next_timeout() says how long
-- the runtime has nothing to do (nil: no timer at all). Waiting for the
-- sooner of that and the next frame keeps the CPU idle between frames,
-- where `while rt:step() do end` would spin a core at 100%.
local tidal = require("tidal")

local rt = tidal.runtime()
local FRAME = 1 / 60

rt:spawn(function()
  for i = 1, 3 do
    tidal.sleep(0.1)
    print("task: tick " .. i)
  end
end)

local frames, next_frame = 0, tidal.now() + FRAME
local cpu0, wall0 = os.clock(), tidal.now()
while true do
  local until_frame = math.max(0, next_frame - tidal.now())
  local wait = math.min(rt:next_timeout() or until_frame, until_frame)
  if not rt:step(wait) then break end -- false: no task left
  if tidal.now() >= next_frame then
    frames = frames + 1 -- the host draws a frame here
    next_frame = next_frame + FRAME
  end
end
local cpu, wall = os.clock() - cpu0, tidal.now() - wall0
print(("frames: %s; the CPU was %s"):format(frames >= 10 and "10 or more" or frames,
  cpu < wall / 2 and "mostly idle" or ("busy: " .. cpu .. " s of " .. wall .. " s")))
rt:close()
