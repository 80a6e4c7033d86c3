-- runtime_config.lua: the Tokio guide's "Runtime Configuration", in tidal.
-- Four worker threads named "my-app-worker" (visible in
-- /proc/self/task/*/comm), a blocking pool, and work spread over them.
local tidal = require("tidal")

local function thread_names()
  local f = io.open("/proc/self/stat")
  local pid = f:read("a"):match("^(%d+)")
  f:close()
  local names = {}
  -- the process's threads, one folder each (plain Lua has no directory
  -- listing: ls does it)
  local ls = assert(io.popen("ls /proc/" .. pid .. "/task"))
  for tid in ls:lines() do
    local c = io.open("/proc/" .. pid .. "/task/" .. tid .. "/comm")
    if c then
      local name = c:read("l")
      c:close()
      names[name] = (names[name] or 0) + 1
    end
  end
  ls:close()
  return names
end

tidal.run({
  workers = 4,                   -- four worker threads besides this one
  thread_name = "my-app-worker", -- named, for debuggers and top
  blocking_threads = 4,          -- the pool behind spawn_blocking
}, function()
  print("Running on custom runtime")
  print("worker threads named my-app-worker: " .. (thread_names()["my-app-worker"] or 0))

  -- async work on the workers: each task can sleep, use channels, ...
  local jobs = {}
  for i = 1, 4 do
    jobs[i] = tidal.spawn_parallel(function(n)
      tidal.sleep(0.01 * n)
      return n * n
    end, i)
  end
  local sum = 0
  for i = 1, 4 do sum = sum + jobs[i]:await() end
  print("sum of squares from the workers: " .. sum)

  -- CPU-bound work on the blocking pool
  local fib = tidal.spawn_blocking(function(n)
    local function f(k) if k < 2 then return k end return f(k - 1) + f(k - 2) end
    return f(n)
  end, 24)
  print("fib(24) from the blocking pool: " .. fib:await())
end)
