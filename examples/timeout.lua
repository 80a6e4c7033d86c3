-- timeout.lua: the Tokio guide's "Timeouts and Cancellation", in tidal.
-- tidal.timeout(seconds, fn, ...) runs fn with a deadline: it returns true
-- and fn's results, or false and an error of kind "timeout" after the
-- pending wait inside fn was cancelled (its <close> variables ran).
local tidal = require("tidal")

-- a stand-in for a request that takes `delay` seconds
local function fetch(name, delay)
  local conn <close> = setmetatable({}, {
    __close = function() print("  connection for " .. name .. " closed") end,
  })
  tidal.sleep(delay)
  return "data from " .. name
end

local function fetch_with_timeout(name, delay, limit)
  local ok, result = tidal.timeout(limit, fetch, name, delay)
  if ok then return result end
  return nil, string.format("request to %s timed out after %g seconds (%s)",
    name, limit, result.kind)
end

tidal.run(function()
  print("fast:", fetch_with_timeout("fast.example", 0.05, 0.5))
  print("slow:", fetch_with_timeout("slow.example", 5, 0.1))
end)
