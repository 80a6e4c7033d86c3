-- select.lua: the Tokio guide's "Select: Racing Multiple Futures", in tidal.
-- Each branch runs as a task; the first to finish wins and the others are
-- cancelled (and have unwound) before select returns.
local tidal = require("tidal")

local function primary_source()
  local guard <close> = setmetatable({}, {
    __close = function() print("primary source cancelled") end,
  })
  tidal.sleep(2)
  return "data from primary"
end

local function fallback_source()
  tidal.sleep(1)
  return "data from fallback"
end

tidal.run(function()
  local t0 = tidal.now()
  local which, val = tidal.select({
    primary = primary_source,
    fallback = fallback_source,
  })
  if which == "primary" then
    print("Primary source responded first")
  else
    print("Fallback source responded first")
  end
  print("Got: " .. val)
  print(string.format("after %.0f s", tidal.now() - t0))
end)
