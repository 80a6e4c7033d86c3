-- Issue 9 item 1: tidal handles that reach a spawn_blocking job (argument,
-- upvalue or result) killed the process with SIGSEGV: the pool's Lua
-- states never loaded tidal.core, so rebuilding a handle there dereferenced
-- a NULL context. Real handle types only (the test-only probe type builds
-- its metatable on demand, which is why the suite never saw this).
--
-- Each scenario is a function(tidal) run as the main task: in a child
-- process when the suite may start children (a crash then fails one spec),
-- else (ThreadSanitizer) in this process.
local support = require("support")
local tidal = require("tidal")

local function run_child(code, limit)
  return support.lua(code, limit)
end

-- Runs the scenario (source of a chunk returning function(tidal)); returns
-- its results as strings.
local function scenario(src)
  if support.can_spawn then
    local out, status, how = run_child(([[
local tidal = require("tidal")
local f = assert(load(%q))()
local r = table.pack(tidal.run(f, tidal))
for i = 1, r.n do io.write("=> ", tostring(r[i]), "\n") end
]]):format(src), 60)
    assert(status == 0, ("child failed (%s %s):\n%s"):format(how, status, out))
    local r = {}
    for v in out:gmatch("=> ([^\n]*)") do r[#r + 1] = v end
    return r
  end
  local r = table.pack(support.run_within(60, assert(load(src))(), tidal))
  for i = 1, r.n do r[i] = tostring(r[i]) end
  r.n = nil
  return r
end

local POOL_ERR = "cannot wait in a spawn_blocking job"

describe("issue 9 item 1: tidal handles in spawn_blocking jobs", function()
  it("a oneshot sender passed to a job wakes rx:recv() in main", function()
    assert.same({ "from the pool", "true" }, scenario([[
      return function(tidal)
        local tx, rx = tidal.oneshot()
        local h = tidal.spawn_blocking(function(tx) return tx:send("from the pool") end, tx)
        return rx:recv(), h:await()
      end]]))
  end)

  it("200 tasks, each woken by a oneshot sent from the pool", function()
    assert.same({ "200", "40200" }, scenario([[
      return function(tidal)
        local n, hs, jobs = 200, {}, {}
        for i = 1, n do
          local tx, rx = tidal.oneshot()
          hs[i] = tidal.spawn(function() return rx:recv() end)
          jobs[i] = tidal.spawn_blocking(function(tx, i) tx:send(i * 2) end, tx, i)
        end
        local count, sum = 0, 0
        for i = 1, n do
          local v = hs[i]:await()
          assert(v == i * 2, "task " .. i .. " got " .. tostring(v))
          count, sum = count + 1, sum + v
        end
        for i = 1, n do jobs[i]:await() end
        return count, sum
      end]]))
  end)

  it("channel senders: as argument (the stream ends with the job), full, as upvalue", function()
    local r = scenario([[
      return function(tidal)
        local tx, rx = tidal.channel()
        local h = tidal.spawn_blocking(function(tx)
          for i = 1, 3 do assert(tx:send(i)) end
          return "sent"
        end, tx)
        tx:close()
        local got = {}
        for v in rx do got[#got + 1] = v end -- ends: the job's copy closed with it
        -- a bounded channel: try_send until full; send on a full one cannot
        -- wait in the pool and says so
        local btx, brx = tidal.channel(2)
        local n, err = tidal.spawn_blocking(function(tx)
          local n = 0
          while tx:try_send(n + 1) do n = n + 1 end
          return n, select(2, pcall(tx.send, tx, "more"))
        end, btx):await()
        -- as an upvalue
        local utx, urx = tidal.channel()
        tidal.spawn_blocking(function() utx:send("upvalue") end):await()
        return table.concat(got, ","), h:await(), n, err, brx:recv(), brx:recv(),
          select(2, brx:try_recv()).kind, urx:recv()
      end]])
    assert.equal("1,2,3", r[1])
    assert.equal("sent", r[2])
    assert.equal("2", r[3])
    assert.matches("Sender:send: " .. POOL_ERR, r[4], 1, true)
    assert.matches("tidal.run", r[4], 1, true)
    assert.same({ "1", "2", "empty", "upvalue" }, { r[5], r[6], r[7], r[8] })
  end)

  it("channel receivers and ends returned as results", function()
    local r = scenario([[
      return function(tidal)
        local tx, rx = tidal.channel(4)
        tx:send("a")
        tx:send("b")
        local a, b, empty, err = tidal.spawn_blocking(function(rx)
          local a = rx:try_recv()
          local b = rx:recv() -- ready: no wait needed
          local _, e = rx:try_recv()
          return a, b, e.kind, select(2, pcall(rx.recv, rx))
        end, rx):await()
        -- a receiver given back, and a channel made in the pool
        local back, made = tidal.spawn_blocking(function(rx)
          local t = require("tidal")
          local mtx, mrx = t.channel()
          mtx:send("made in the pool")
          return rx, mrx
        end, rx):await()
        tx:send("c")
        return a, b, empty, err, back:recv(), made:recv(), (made:recv())
      end]])
    assert.same({ "a", "b", "empty" }, { r[1], r[2], r[3] })
    assert.matches("Receiver:recv: " .. POOL_ERR, r[4], 1, true)
    -- the pool's sender of `made` was collected with the job: end of stream
    assert.same({ "c", "made in the pool", "nil" }, { r[5], r[6], r[7] })
  end)

  it("mutexes and rwlocks: try methods in the job, a release there wakes main", function()
    local r = scenario([[
      return function(tidal)
        local m, rw = tidal.mutex(), tidal.rwlock()
        local held = m:lock()
        local busy, err, read = tidal.spawn_blocking(function(m, rw)
          local r = rw:try_read()
          return m:try_lock() == nil, select(2, pcall(m.lock, m)), r ~= nil and rw:try_write() == nil
        end, m, rw):await()
        held:release()
        -- the job holds the lock; a task of main waits for it; the job
        -- releases it after waiting (in tidal.run, which blocks its thread)
        local ltx, lrx = tidal.oneshot()
        local gtx, grx = tidal.oneshot()
        local job = tidal.spawn_blocking(function(m, ltx, grx)
          local g = assert(m:try_lock())
          ltx:send(true)
          require("tidal").run(function() return grx:recv() end)
          g:release()
          return "released"
        end, m, ltx, grx)
        lrx:recv()
        local waiter = tidal.spawn(function()
          local g <close> = m:lock()
          return "main locked it"
        end)
        tidal.sleep(0.01)
        gtx:send("go")
        return busy, err, read, waiter:await(), job:await()
      end]])
    assert.equal("true", r[1])
    assert.matches("Mutex:lock: " .. POOL_ERR, r[2], 1, true)
    assert.same({ "true", "main locked it", "released" }, { r[3], r[4], r[5] })
  end)

  it("semaphores: try_acquire, available, add_permits waking a task of main", function()
    assert.same({ "true", "0", "acquired 3" }, scenario([[
      return function(tidal)
        local s = tidal.semaphore(1)
        local waiter = tidal.spawn(function()
          local p <close> = s:acquire(3)
          return "acquired 3"
        end)
        tidal.yield() -- it waits now
        local none, left = tidal.spawn_blocking(function(s)
          local p = s:try_acquire(2)
          s:add_permits(2) -- 3: the waiter's, at once
          return p == nil, s:available()
        end, s):await()
        return none, left, waiter:await()
      end]]))
  end)

  it("JoinHandles as argument, upvalue and result, and abort from the pool", function()
    local r = scenario([[
      return function(tidal)
        local h = tidal.spawn(function() tidal.sleep(0.5) return "task result" end)
        local id, done, err = tidal.spawn_blocking(function(h)
          return h:id(), h:is_finished(), select(2, pcall(h.await, h))
        end, h):await()
        h:await()
        local v, fin = tidal.spawn_blocking(function() return h:await(), h:is_finished() end):await()
        local back = tidal.spawn_blocking(function(h) return h end, h):await()
        local b1 = tidal.spawn_blocking(function() return 7 end)
        b1:await()
        local seven = tidal.spawn_blocking(function(b) return b:await() end, b1):await()
        local long = tidal.spawn(function() tidal.sleep(30) end)
        tidal.spawn_blocking(function(l) l:abort() end, long):await()
        local ok, cerr = long:join()
        return id == h:id(), done, err, v, fin, back:await(), back:id() == h:id(), seven,
          ok, cerr.kind
      end]])
    assert.same({ "true", "false" }, { r[1], r[2] })
    assert.matches("JoinHandle:await: " .. POOL_ERR, r[3], 1, true)
    assert.same({ "task result", "true", "task result", "true", "7", "false", "cancelled" },
      { r[4], r[5], r[6], r[7], r[8], r[9], r[10] })
  end)

  it("a job waiting in tidal.run is stopped by abort and by shutdown", function()
    assert.same({ "false", "cancelled", "true" }, scenario([[
      return function(tidal)
        local tx, rx = tidal.channel()
        local wait = function(rx) return require("tidal").run(function() return rx:recv() end) end
        local h = tidal.spawn_blocking(wait, rx)
        tidal.sleep(0.05) -- it waits in its own runtime now
        h:abort()
        local ok, err = h:join()
        -- and one still waiting when main returns must not hold the process
        tidal.spawn_blocking(wait, rx)
        tidal.sleep(0.05)
        return ok, err.kind, tx ~= nil
      end]]))
  end)

  it("tidal.sleep in a job says how to wait there", function()
    local r = scenario([[
      return function(tidal)
        return select(2, tidal.spawn_blocking(function()
          return pcall(require("tidal").sleep, 0.01)
        end):await())
      end]])
    assert.matches("tidal.sleep: " .. POOL_ERR, r[1], 1, true)
  end)
end)
