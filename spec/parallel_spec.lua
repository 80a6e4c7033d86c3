-- Worker threads, spawn_parallel, spawn_blocking, and tidal handles shared
-- between workers. Run under ThreadSanitizer by `make test-tsan`.
local tidal = require("tidal")
local support = require("support")

local function pid()
  local f = assert(io.open("/proc/self/stat"))
  local s = f:read("a")
  f:close()
  return s:match("^(%d+)")
end

-- the names of this process's threads (no child process: it must also work
-- under ThreadSanitizer)
local function thread_names()
  local lfs = require("lfs")
  local names = {}
  local dir = "/proc/" .. pid() .. "/task"
  for tid in lfs.dir(dir) do
    if tid:match("^%d+$") then
      local f = io.open(dir .. "/" .. tid .. "/comm")
      if f then
        names[#names + 1] = f:read("l")
        f:close()
      end
    end
  end
  return names
end

local function count(list, value)
  local n = 0
  for _, v in ipairs(list) do if v == value then n = n + 1 end end
  return n
end

local function run(opts, fn, ...)
  return tidal.run(opts, function(...)
    local h = tidal.spawn(fn, ...)
    local dog = tidal.spawn(function() tidal.sleep(30); h:abort() end)
    local r = table.pack(h:join())
    dog:abort()
    if not r[1] then error(r[2], 0) end
    return table.unpack(r, 2, r.n)
  end, ...)
end

describe("worker threads", function()
  it("start with the runtime, carry thread_name, and end with it", function()
    local names = run({ workers = 3, thread_name = "tidal-spec-w" }, function()
      return thread_names()
    end)
    assert.are.equal(3, count(names, "tidal-spec-w"))
    assert.are.equal(0, count(thread_names(), "tidal-spec-w"), "the threads are gone")
  end)

  it("refuse bad options", function()
    assert.matches("option 'workers' must be a non%-negative integer",
      select(2, pcall(tidal.run, { workers = 1.5 }, function() end)))
    assert.matches("option 'workers' must be at most 256",
      select(2, pcall(tidal.run, { workers = 1000 }, function() end)))
  end)
end)

describe("tidal.spawn_parallel", function()
  it("runs a task on a worker and returns its results, copied", function()
    local r = run({ workers = 2 }, function()
      local h = tidal.spawn_parallel(function(a, t)
        t.x = t.x + 1 -- the copy changes; the original does not
        tidal.sleep(0.001) -- a full task: it can wait
        return a * 2, t, math.type(a), math.type(1.5)
      end, 21, { x = 1 })
      return table.pack(h:await())
    end)
    assert.are.equal(42, r[1])
    assert.are.same({ x = 2 }, r[2])
    assert.are.equal("integer", r[3])
    assert.are.equal("float", r[4])
  end)

  it("copies arguments: mutating the copy leaves the original alone", function()
    local original = { list = { 1, 2, 3 } }
    run({ workers = 1 }, function()
      tidal.spawn_parallel(function(t) t.list[1] = "changed"; t.new = true end, original):await()
    end)
    assert.are.same({ list = { 1, 2, 3 } }, original)
  end)

  it("brings modules across by name (upvalues like `tidal` and `table.concat`)", function()
    local concat = table.concat
    local r = run({ workers = 1 }, function()
      return tidal.spawn_parallel(function(n)
        local parts = {}
        for i = 1, n do parts[i] = i end
        tidal.yield()
        return concat(parts, ",")
      end, 3):await()
    end)
    assert.are.equal("1,2,3", r)
  end)

  it("spreads tasks over the workers", function()
    local names = run({ workers = 2, thread_name = "spread" }, function()
      local hs, seen = {}, {}
      for i = 1, 6 do
        hs[i] = tidal.spawn_parallel(function()
          tidal.sleep(0.05) -- all six alive at once
          local f = io.open("/proc/thread-self/comm")
          local name = f:read("l")
          f:close()
          return name
        end)
      end
      for i = 1, 6 do seen[#seen + 1] = hs[i]:await() end
      return seen
    end)
    assert.is_true(count(names, "spread") >= 2, table.concat(names, " "))
  end)

  it("brings errors and their tracebacks back; a failing task does not take the process down", function()
    local r = run({ workers = 1 }, function()
      local h = tidal.spawn_parallel(function()
        local function inner() error("failed on a worker") end
        inner()
      end)
      local ok, err = h:join()
      local ok2, err2 = pcall(h.await, h)
      return { ok = ok, err = err, tb = tidal.traceback(err), ok2 = ok2, err2 = err2 }
    end)
    assert.is_false(r.ok)
    assert.matches("failed on a worker", r.err)
    assert.matches("inner", r.tb)
    assert.is_false(r.ok2)
    assert.matches("failed on a worker", r.err2)
  end)

  it("refuses what cannot be copied, naming the path", function()
    local msg = run({ workers = 1 }, function()
      local ok, e = pcall(tidal.spawn_parallel, function(x) return x end, { conn = io.stdout })
      assert.is_false(ok)
      return e
    end)
    assert.matches("tidal.spawn_parallel: cannot copy userdata %(FILE%*%) at args%[2%]%.conn", msg)
    assert.matches("expected a Lua function",
      run({}, function() return select(2, pcall(tidal.spawn_parallel, 5)) end))
  end)

  it("works without extra workers (a copy on the same thread)", function()
    local r = run({}, function()
      local t = { 1 }
      local got = tidal.spawn_parallel(function(t) t[1] = 2; return t end, t):await()
      return { t[1], got[1] }
    end)
    assert.are.same({ 1, 2 }, r)
  end)

  it("can be aborted from another worker, and its <close> variables run", function()
    local r = run({ workers = 2 }, function()
      local tx, rx = tidal.channel()
      local h = tidal.spawn_parallel(function(tx)
        local g <close> = setmetatable({}, { __close = function() tx:send("closed") end })
        tx:send("started")
        tidal.sleep(60)
      end, tx)
      assert(rx:recv() == "started")
      h:abort()
      local ok, err = h:join()
      return { ok, err.kind, rx:recv() }
    end)
    assert.are.same({ false, "cancelled", "closed" }, r)
  end)

  it("gives JoinHandles that any worker can await", function()
    local r = run({ workers = 2 }, function()
      local inner = tidal.spawn_parallel(function() tidal.sleep(0.02); return "inner" end)
      local outer = tidal.spawn_parallel(function(h) return "outer saw " .. h:await() end, inner)
      local local_task = tidal.spawn(function() tidal.sleep(0.02); return "local" end)
      local via = tidal.spawn_parallel(function(h) return h:await() end, local_task)
      return { outer:await(), inner:await(), via:await() }
    end)
    assert.are.same({ "outer saw inner", "inner", "local" }, r)
  end)

  it("lets shutdown cancel tasks still running on workers", function()
    if not support.can_spawn then return pending("needs a child process") end
    local out, status = support.lua([[
      local tidal = require("tidal")
      tidal.run({ workers = 2 }, function()
        local tx, rx = tidal.channel()
        for i = 1, 4 do
          tidal.spawn_parallel(function(tx, i)
            -- one write per line: two workers writing at once would interleave
            local g <close> = setmetatable({}, { __close = function() io.stderr:write("unwound " .. i .. "\n") end })
            tx:send(i)
            tidal.sleep(60)
          end, tx, i)
        end
        for _ = 1, 4 do rx:recv() end
        print("main returns")
      end)
      print("process continues")
    ]])
    assert.are.equal(0, status, out)
    assert.matches("main returns", out)
    assert.matches("process continues", out)
    for i = 1, 4 do assert.matches("unwound " .. i, out) end
  end)
end)

describe("tidal handles between workers", function()
  it("deliver every message exactly once between workers", function()
    local per = support.scaled(250000)
    local r = run({ workers = 2 }, function()
      local tx, rx = tidal.channel(128)
      local hs = {}
      for p = 1, 4 do
        local mine <close> = tx:clone() -- the worker gets its own copy
        hs[p] = tidal.spawn_parallel(function(tx, p, per)
          for i = 1, per do tx:send(p * 10000000 + i) end
        end, mine, p, per)
      end
      tx:close()
      local seen, n, dup = {}, 0, 0
      for v in rx do
        if seen[v] then dup = dup + 1 end
        seen[v] = true
        n = n + 1
      end
      for p = 1, 4 do hs[p]:await() end
      local missing = 0
      for p = 1, 4 do
        for i = 1, per do if not seen[p * 10000000 + i] then missing = missing + 1 end end
      end
      return { n = n, dup = dup, missing = missing }
    end)
    assert.are.same({ n = 4 * per, dup = 0, missing = 0 }, r)
  end)

  it("copy values sent through a shared channel, in both directions", function()
    local r = run({ workers = 1 }, function()
      local to_w, from_main = tidal.channel()
      local to_main, from_w = tidal.channel()
      local h = tidal.spawn_parallel(function(rx, tx)
        for msg in rx do tx:send({ echo = msg.text, n = #msg.list }) end
        tx:close()
      end, from_main, to_main)
      to_main:close() -- the worker has its own copy of this end
      to_w:send({ text = "hi", list = { 1, 2, 3 } })
      to_w:send({ text = "again", list = {} })
      to_w:close()
      local got = {}
      for v in from_w do got[#got + 1] = v end
      h:await()
      return got
    end)
    assert.are.same({ { echo = "hi", n = 3 }, { echo = "again", n = 0 } }, r)
  end)

  it("keep mutexes, semaphores and oneshots working across workers", function()
    local r = run({ workers = 2 }, function()
      local m = tidal.mutex()
      local sem = tidal.semaphore(2)
      local otx, orx = tidal.oneshot()
      local log_tx, log_rx = tidal.channel()
      local hs = {}
      for i = 1, 6 do
        local log <close> = log_tx:clone()
        hs[i] = tidal.spawn_parallel(function(m, sem, log, i)
          local p <close> = sem:acquire()
          for _ = 1, 20 do
            local g <close> = m:lock()
            log:send("in")
            tidal.yield()
            log:send("out")
          end
          return i
        end, m, sem, log, i)
      end
      log_tx:close()
      local inside, max_inside, events = 0, 0, 0
      for e in log_rx do
        inside = inside + (e == "in" and 1 or -1)
        if inside > max_inside then max_inside = inside end
        events = events + 1
      end
      for i = 1, 6 do hs[i]:await() end
      local w = tidal.spawn_parallel(function(otx) otx:send("from a worker") end, otx)
      local msg = orx:recv()
      w:await()
      return { max_inside = max_inside, events = events, available = sem:available(), msg = msg,
        locked = m:is_locked() }
    end)
    assert.are.same({ max_inside = 1, events = 240, available = 2, msg = "from a worker", locked = false }, r)
  end)

  it("refuse primitives that stay in one state", function()
    local msg = run({ workers = 1 }, function()
      local wtx = tidal.watch(1)
      return select(2, pcall(tidal.spawn_parallel, function(w) return w end, wtx))
    end)
    assert.matches("cannot copy userdata %(tidal.WatchSender%) at args%[2%]", msg)
  end)
end)

describe("tidal.spawn_blocking", function()
  local function fib(n) if n < 2 then return n end return fib(n - 1) + fib(n - 2) end

  it("runs a function on the thread pool and returns its results", function()
    local r = run({}, function()
      local h = tidal.spawn_blocking(function(n)
        local function f(k) if k < 2 then return k end return f(k - 1) + f(k - 2) end
        return f(n), "done"
      end, 20)
      -- the loop stays free meanwhile
      local ticks = 0
      local ticker = tidal.spawn(function() while true do tidal.sleep(0.001); ticks = ticks + 1 end end)
      local a, b = h:await()
      ticker:abort()
      return { a, b }
    end)
    assert.are.same({ fib(20), "done" }, r)
  end)

  it("brings errors and tracebacks back", function()
    local r = run({}, function()
      local h = tidal.spawn_blocking(function()
        local function deep() error({ code = 7 }) end
        deep()
      end)
      local ok, err = h:join()
      return { ok = ok, err = err, tb = tidal.traceback(err) }
    end)
    assert.is_false(r.ok)
    assert.are.same({ code = 7 }, r.err)
    assert.matches("deep", r.tb)
  end)

  it("lets require work inside (package paths carried over)", function()
    local r = run({}, function()
      return tidal.spawn_blocking(function()
        local cjson = require("cjson")
        return cjson.encode({ 1, 2 })
      end):await()
    end)
    assert.are.equal("[1,2]", r)
  end)

  it("reuses pooled Lua states", function()
    local r = run({}, function()
      local seen = {}
      for i = 1, 20 do
        seen[i] = tidal.spawn_blocking(function()
          _G.tidal_spec_jobs = (_G.tidal_spec_jobs or 0) + 1
          return _G.tidal_spec_jobs
        end):await()
      end
      return seen
    end)
    local max = 0
    for _, n in ipairs(r) do if n > max then max = n end end
    assert.is_true(max > 1, "a state served more than one job")
  end)

  -- aborting a queued job, and a running one: spec/regress/i9_26_*
  -- (issue 9 item 26: the versions here could not fail)

  it("refuses bad arguments", function()
    local msg = run({}, function() return select(2, pcall(tidal.spawn_blocking, 5)) end)
    assert.matches("tidal.spawn_blocking: expected a Lua function", msg)
    assert.matches("not inside a tidal task", select(2, pcall(tidal.spawn_blocking, function() end)))
  end)
end)
