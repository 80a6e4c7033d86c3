-- rwlock_cache.lua: the Tokio guide's "Shared State with RwLock", in tidal.
-- A cache guarded by an async reader-writer lock: many readers at once, one
-- writer at a time, and waiting writers are not starved by new readers.
local tidal = require("tidal")

local Cache = {}
Cache.__index = Cache

function Cache.new()
  return setmetatable({ lock = tidal.rwlock(), store = {} }, Cache)
end

function Cache:get(key)
  -- a read lock: several readers can hold it at the same time
  local guard <close> = self.lock:read()
  tidal.sleep(0.01) -- readers overlap while they hold the lock
  return self.store[key]
end

function Cache:set(key, value)
  -- a write lock: exclusive, waits for the readers to finish
  local guard <close> = self.lock:write()
  self.store[key] = value
end

tidal.run(function()
  local cache = Cache.new()
  cache:set("answer", "42")

  local t0 = tidal.now()
  local readers = {}
  for i = 1, 10 do
    readers[i] = tidal.spawn(function() return cache:get("answer") end)
  end
  local writer = tidal.spawn(function() cache:set("answer", "43") end)
  local seen = {}
  for i = 1, 10 do seen[#seen + 1] = readers[i]:await() end
  writer:await()
  local elapsed = tidal.now() - t0

  print("readers saw: " .. table.concat(seen, " "))
  print("after the writer: " .. cache:get("answer"))
  print(string.format("ten 0.01 s reads overlapped: %s", elapsed < 0.09 and "yes" or "no"))
  print("missing key: " .. tostring(cache:get("nope")))
end)
