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
    -- libcurl's global set-up (OpenSSL and all) happens outside the timed
    -- part, as the other peers build their clients before the clock starts;
    -- it uses a client of its own, so the timed requests start with an empty
    -- pool and open their connections themselves, as the other peers do
    local warm = http.client()
    if not warm:get(url) then C.fail("warm-up request failed") end
    warm:close()
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

-- BENCH_CHAN=parallel (chan_mp): the producers run on other workers
-- (spawn_parallel with workers = 2), so every message crosses threads.
local function chan_run(workload, producers, per)
  local total = producers * per
  local t0, t1, sum
  local parallel = os.getenv("BENCH_CHAN") == "parallel"
  local function produce(txp, base, n)
    for j = base, base + n - 1 do txp:send(j) end
    txp:close()
  end
  tidal.run({ workers = parallel and 2 or 0 }, function()
    local spawn = parallel and tidal.spawn_parallel or tidal.spawn
    t0 = clock()
    local tx, rx = tidal.channel(128)
    local hs = {}
    for p = 0, producers - 1 do
      local txp = tx:clone()
      hs[#hs + 1] = spawn(produce, txp, p * per, per)
      if parallel then txp:close() end -- the worker got its own copy
    end
    tx:close()
    local cons = spawn(function()
      local s = 0
      for v in rx do s = s + v end
      return s
    end)
    for i = 1, #hs do hs[i]:await() end
    sum = cons:await()
    t1 = clock()
  end)
  if sum ~= total * (total - 1) // 2 then C.fail("sum " .. sum) end
  C.result(workload, { { "ns_per_msg", (t1 - t0) * 1e9 / total }, { "check", sum },
    { "mode", parallel and "parallel" or "local" }, { "rss_kb", C.hwm_kb() } })
end

function W.chan() chan_run("chan", 1, C.scaled(1000000)) end
function W.chan_mp() chan_run("chan_mp", 4, C.scaled(250000)) end

function W.pingpong()
  local R = C.scaled(100000)
  local t0, t1, last
  tidal.run(function()
    local tx1, rx1 = tidal.channel(1)
    local tx2, rx2 = tidal.channel(1)
    t0 = clock()
    local a = tidal.spawn(function()
      local v
      for i = 0, R - 1 do
        tx1:send(i)
        v = rx2:recv()
      end
      return v
    end)
    tidal.spawn(function()
      for _ = 1, R do tx2:send(rx1:recv() + 1) end
    end)
    last = a:await()
    t1 = clock()
  end)
  if last ~= R then C.fail("last " .. tostring(last)) end
  C.result("pingpong", { { "ns_per_rt", (t1 - t0) * 1e9 / R }, { "check", last }, { "rss_kb", C.hwm_kb() } })
end

function W.timeout()
  local N = C.scaled(100000)
  local count = 0
  local t0, t1
  tidal.run(function()
    local timeout = tidal.timeout
    local function op(i) return i end -- completes immediately
    t0 = clock()
    for i = 1, N do
      local ok, v = timeout(1.0, op, i)
      if ok and v == i then count = count + 1 end
    end
    t1 = clock()
  end)
  if count ~= N then C.fail("count " .. count) end
  C.result("timeout", { { "ns_per_call", (t1 - t0) * 1e9 / N }, { "check", count }, { "rss_kb", C.hwm_kb() } })
end

-- select between an already-ready recv and a 1 s sleep. The branches are
-- wait operations (rx:recv_op(), tidal.sleep_op(1)); BENCH_SELECT=fn uses
-- function branches (each started as a child task) instead.
function W.select()
  local N = C.scaled(100000)
  local wins = 0
  local t0, t1
  local form = os.getenv("BENCH_SELECT") or "op"
  tidal.run(function()
    local tx, rx = tidal.channel(1)
    local select, sleep = tidal.select, tidal.sleep
    local branches = { rx:recv_op(), tidal.sleep_op(1.0) }
    if form == "fn" then
      branches = {
        function() return rx:recv() end, -- ready: a value was just sent
        function() sleep(1.0) end,
      }
    end
    t0 = clock()
    for i = 1, N do
      tx:send(i)
      local b, v = select(branches)
      if b == 1 and v == i then wins = wins + 1 end
    end
    t1 = clock()
  end)
  if wins ~= N then C.fail("ready branch won " .. wins .. " of " .. N) end
  C.result("select", { { "ns_per_select", (t1 - t0) * 1e9 / N }, { "check", wins }, { "form", form },
    { "rss_kb", C.hwm_kb() } })
end

function W.mutex()
  local NT = C.scaled(1000)
  local counter = 0
  local t0, t1
  tidal.run(function()
    local m = tidal.mutex()
    local yield = tidal.yield
    local function worker()
      for _ = 1, 100 do
        local g = m:lock()
        local c = counter
        yield()
        counter = c + 1
        g:release()
      end
    end
    t0 = clock()
    local hs = {}
    for i = 1, NT do hs[i] = tidal.spawn(worker) end
    for i = 1, NT do hs[i]:await() end
    t1 = clock()
  end)
  if counter ~= NT * 100 then C.fail("counter " .. counter) end
  C.result("mutex", { { "ns_per_section", (t1 - t0) * 1e9 / (NT * 100) }, { "check", counter },
    { "rss_kb", C.hwm_kb() } })
end

-- 8 x fib(30) computed in Lua, run in parallel; speedup against running
-- them one after another. The default is spawn_blocking on the thread pool;
-- BENCH_CPU=parallel uses spawn_parallel on worker threads.
-- Threads: one per job by default (BENCH_CPU_THREADS overrides), as Tokio's
-- spawn_blocking starts a thread per pending job: with more runnable threads
-- than cores the kernel balances the cores to the end of the batch, where a
-- pool of one thread per core leaves a core idle behind the slower one (on
-- this 2-core VM, 15 interleaved runs: par/seq 0.511 with 8 threads, 0.534
-- with 4, 0.569 with 2). In parallel mode the runtime's own thread is one of
-- them, so `workers` is one less.
function W.cpu()
  local K, n = 8, tonumber(os.getenv("BENCH_FIB") or 30)
  local mode = os.getenv("BENCH_CPU") or "blocking"
  local function fib(k) if k < 2 then return k end return fib(k - 1) + fib(k - 2) end
  local expect = fib(n)
  local t0 = clock()
  for _ = 1, K do if fib(n) ~= expect then C.fail("seq") end end
  local seq = clock() - t0
  local par, ok
  local threads = tonumber(os.getenv("BENCH_CPU_THREADS") or K)
  local parallel = mode == "parallel"
  tidal.run({ workers = parallel and threads - 1 or 0, blocking_threads = threads,
    slow_task = false }, function()
    local spawn = parallel and tidal.spawn_parallel or tidal.spawn_blocking
    local job = function(k)
      local function f(x) if x < 2 then return x end return f(x - 1) + f(x - 2) end
      return f(k)
    end
    -- warm-up: start the threads and their Lua states outside the timing
    local warm = {}
    for i = 1, threads do warm[i] = spawn(job, 1) end
    for i = 1, threads do warm[i]:await() end
    local t1 = clock()
    local hs = {}
    for i = 1, K do hs[i] = spawn(job, n) end
    ok = true
    for i = 1, K do if hs[i]:await() ~= expect then ok = false end end
    par = clock() - t1
  end)
  if not ok then C.fail("parallel results differ") end
  C.result("cpu", { { "speedup", seq / par }, { "check", expect }, { "seq_s", seq }, { "par_s", par },
    { "mode", mode }, { "threads", threads }, { "rss_kb", C.hwm_kb() } })
end

-- TCP echo on 127.0.0.1 (WORKLOADS.md "echo"): a task per accepted
-- connection writes back what arrives; 64 client tasks connect, then R
-- times write a 64-byte message and read exactly 64 bytes back, compared.
-- The timer covers the client phase, connects included.
function W.echo()
  local net = tidal.net
  local CLIENTS, R = 64, C.scaled(2000)
  local bytes, t0, t1 = 0, 0, 0
  local function serve(s)
    while true do
      local d = s:read()
      if not d or not s:write(d) then break end
    end
    s:close()
  end
  tidal.run(function()
    local l = assert(net.listen("127.0.0.1", 0, { backlog = 1024 }))
    local port = l:port()
    tidal.spawn(function()
      while true do
        local s = l:accept()
        if not s then break end
        tidal.spawn(serve, s)
      end
    end)
    t0 = clock()
    local hs = {}
    for c = 0, CLIENTS - 1 do
      hs[c + 1] = tidal.spawn(function()
        local s = assert(net.connect("127.0.0.1", port, { nodelay = true }))
        local fill = string.rep(string.char(65 + c % 26), 56)
        local n = 0
        for i = 0, R - 1 do
          local msg = string.format("%08d", i % 100000000) .. fill
          if not s:write(msg) then break end
          local back = s:read_exactly(64)
          if back ~= msg then
            io.stderr:write("client ", c, ": echo ", i, " differs\n")
            break
          end
          n = n + #back
        end
        s:close()
        return n
      end)
    end
    for c = 1, CLIENTS do bytes = bytes + hs[c]:await() end
    t1 = clock()
    l:close()
  end)
  if bytes ~= CLIENTS * R * 64 then C.fail("bytes " .. bytes) end
  C.result("echo", { { "ns_per_rt", (t1 - t0) * 1e9 / (CLIENTS * R) }, { "check", bytes },
    { "clients", CLIENTS }, { "rt_per_client", R }, { "rss_kb", C.hwm_kb() } })
end

-- TCP connect on 127.0.0.1 (WORKLOADS.md "connect"): the server's task per
-- connection writes "x" and closes; 64 client tasks take the next number
-- until C: connect, read the byte, close.
function W.connect()
  local net = tidal.net
  local N, TASKS = C.scaled(20000), 64
  local good, t0, t1 = 0, 0, 0
  local function serve(s)
    s:write("x")
    s:close()
  end
  tidal.run(function()
    local l = assert(net.listen("127.0.0.1", 0, { backlog = 1024 }))
    local port = l:port()
    tidal.spawn(function()
      while true do
        local s = l:accept()
        if not s then break end
        tidal.spawn(serve, s)
      end
    end)
    t0 = clock()
    local next_i = 0
    local hs = {}
    for k = 1, TASKS do
      hs[k] = tidal.spawn(function()
        local n = 0
        while next_i < N do
          next_i = next_i + 1
          local s = assert(net.connect("127.0.0.1", port))
          if s:read_exactly(1) == "x" then n = n + 1 end
          s:close()
        end
        return n
      end)
    end
    for k = 1, TASKS do good = good + hs[k]:await() end
    t1 = clock()
    l:close()
  end)
  if good ~= N then C.fail("connections " .. good) end
  C.result("connect", { { "ns_per_conn", (t1 - t0) * 1e9 / N }, { "check", good },
    { "rss_kb", C.hwm_kb() } })
end

local w = arg[1]
if not W[w] then C.skip(tostring(w), "no such workload in tidal's bench") end
W[w]()
