-- tidal's yardstick workloads (../shared/bench/WORKLOADS.md).
-- Usage: lua5.4 bench/bench.lua <workload>   (bench/run sets the paths)
local tidal = require("tidal")
local C = require("common")

local clock = tidal.now
local W = {}

function W.spawn()
  local N = C.scaled(200000)
  local function task(i) return i end
  local t0, t1, sum
  tidal.run(function()
    local spawn = tidal.spawn
    t0 = clock()
    local hs = {}
    for i = 0, N - 1 do hs[i + 1] = spawn(task, i) end
    sum = 0
    for i = 1, N do sum = sum + hs[i]:await() end
    t1 = clock()
  end)
  if sum ~= N * (N - 1) // 2 then C.fail("sum " .. sum) end
  C.result("spawn", { { "ns_per_task", (t1 - t0) * 1e9 / N }, { "check", sum }, { "rss_kb", C.hwm_kb() } })
end

function W.timers()
  local T = C.scaled(100000)
  local counter = 0
  local t0, t1, rss0
  local sleep = tidal.sleep
  -- one shared function, the index as argument: no closure per task
  local function sleeper(i)
    sleep(0.5 + (i % 1000) / 2000)
    counter = counter + 1
  end
  tidal.run(function()
    local spawn = tidal.spawn
    collectgarbage()
    rss0 = C.rss_kb()
    t0 = clock()
    local hs = {}
    for i = 0, T - 1 do hs[i + 1] = spawn(sleeper, i) end
    for i = 1, T do hs[i]:await() end
    t1 = clock()
  end)
  if counter ~= T then C.fail("counter " .. counter) end
  local hwm = C.hwm_kb()
  C.result("timers", { { "overhead_s", (t1 - t0) - 1.0 }, { "check", counter },
    { "bytes_per_task", (hwm - rss0) * 1024 / T }, { "rss_kb", hwm } })
end

-- 20,000 GETs of a 1 KiB file from the local nginx, at most 64 in flight
-- (64 tasks taking the next request number), keep-alive connections.
function W.http()
  local N = C.scaled(20000)
  local url = os.getenv("BENCH_HTTP_URL") or "http://127.0.0.1:18080/1k"
  local conc = math.min(64, N)
  local http = tidal.http
  local next_i, good, bad = 0, 0, nil
  local t0, t1
  local function worker()
    local get = http.get
    while next_i < N do
      next_i = next_i + 1
      local r, err = get(url)
      if r and r.status == 200 and #r.body == 1024 then
        good = good + 1
      else
        bad = bad or tostring(err or r.status)
      end
    end
  end
  tidal.run(function()
    -- one request first: the client, its pool and libcurl are set up
    -- outside the timed part, as the other peers' runtimes are
    local r = http.get(url)
    if not r then C.fail("warm-up request failed") end
    next_i = 0
    t0 = clock()
    local hs = {}
    for i = 1, conc do hs[i] = tidal.spawn(worker) end
    for i = 1, conc do hs[i]:await() end
    t1 = clock()
  end)
  if good ~= N then C.fail("ok " .. good .. " of " .. N .. ", first failure: " .. tostring(bad)) end
  C.result("http", { { "req_per_s", N / (t1 - t0) }, { "check", good }, { "rss_kb", C.hwm_kb() } })
end

local w = arg[1]
if not W[w] then C.skip(tostring(w), "no such workload in tidal's bench") end
W[w]()
