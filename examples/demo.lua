-- demo.lua: concurrent tasks on one thread.
-- Five "downloads" of different lengths run at once; the whole batch takes
-- about as long as the slowest one, not the sum. A ticker task runs beside
-- them, and a task that runs too long is cancelled.
local tidal = require("tidal")

local function download(name, seconds)
  tidal.sleep(seconds) -- parks this task; the others keep running
  print(string.format("  %-8s done after %.1f s", name, seconds))
  return #name * 100
end

tidal.run(function()
  local t0 = tidal.now()
  print("starting 5 downloads at once")

  local ticks = 0
  local ticker = tidal.spawn({ name = "ticker" }, function()
    while true do
      tidal.sleep(0.1)
      ticks = ticks + 1
    end
  end)

  local jobs = {}
  for i, name in ipairs({ "alpha", "beta", "gamma", "delta", "epsilon" }) do
    jobs[i] = tidal.spawn({ name = name }, download, name, 0.2 * i)
  end

  local total = 0
  for _, h in ipairs(jobs) do total = total + h:await() end
  ticker:abort()

  print(string.format("all done: %d bytes in %.1f s (one after another: 3.0 s)",
    total, tidal.now() - t0))
  print(string.format("meanwhile the ticker ticked %s times", ticks >= 8 and "about 10" or ticks))

  -- cancellation: a slow task is aborted; its <close> cleanup still runs
  local slow = tidal.spawn(function()
    local conn <close> = setmetatable({}, { __close = function()
      print("  slow task cleaned up")
    end })
    tidal.sleep(60)
  end)
  tidal.sleep(0.05)
  slow:abort()
  local ok, err = slow:join()
  print("slow task:", ok, err.kind)
end)
