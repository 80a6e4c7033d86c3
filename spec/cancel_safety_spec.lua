-- Cancellation safety under random timeouts and aborts (DESIGN.md section
-- 2): a cancelled recv loses no message, a cancelled send delivers
-- nothing, every message that send reported as sent is received exactly
-- once; a lock is never held by two tasks and never leaked by a cancelled
-- waiter. The seeds are fixed so that a failure can be replayed (timer
-- expiries still depend on the machine, so a replay is close, not exact).
local tidal = require("tidal")
local support = require("support")

local random = math.random

-- A short random deadline: often 0 (the first wait raises), else up to 2 ms.
local function deadline()
  if random() < 0.2 then return 0 end
  return random() * 0.002
end

-- Picks a random live entry of list (handles), or nil.
local function pick(list)
  local n = #list
  if n == 0 then return nil end
  return list[random(n)]
end

--------------------------------------------------------------- channels

-- Runs producers and consumers over one channel under random timeouts,
-- selects and aborts. Returns the bookkeeping.
local function channel_stress(seed, capacity, nproducers, per_producer, nconsumers)
  math.randomseed(seed)
  return support.run_within(60, function()
    local base_tx, rx = tidal.channel(capacity)
    local sent, got = {}, {}
    local stats = { sent = 0, got = 0, aborts = 0, respawns = 0, failed = 0, timeouts = 0 }
    local consumers, producers = {}, {}
    local progress = {}

    local function record(v)
      got[v] = (got[v] or 0) + 1
      stats.got = stats.got + 1
    end

    -- one receive in a random way; returns false at the end of the stream
    local function receive_once()
      local mode = random(5)
      if mode == 1 then
        local v = rx:recv()
        if v == nil then return false end
        record(v)
      elseif mode == 2 then
        local ok, v = tidal.timeout(deadline(), rx.recv, rx)
        if ok then
          if v == nil then return false end
          record(v)
        else
          stats.timeouts = stats.timeouts + 1
        end
      elseif mode == 3 then
        local k, v = tidal.select({ rx:recv_op(), tidal.sleep_op(deadline()) })
        if k == 1 then
          if v == nil then return false end
          record(v)
        end
      elseif mode == 4 then
        local k, v = tidal.select({
          function() return rx:recv() end,
          function() tidal.sleep(deadline()) end,
        })
        if k == 1 then
          if v == nil then return false end
          record(v)
        end
      else
        local v, err = rx:try_recv()
        if v ~= nil then
          record(v)
        elseif err.kind == "closed" then
          return false
        else
          tidal.yield()
        end
      end
      return true
    end

    local function consumer()
      while receive_once() do end
    end

    local function abort_a_consumer()
      local i = random(#consumers)
      consumers[i]:abort()
      stats.aborts = stats.aborts + 1
      consumers[i] = tidal.spawn(consumer)
      stats.respawns = stats.respawns + 1
    end

    local function producer(p)
      local tx <close> = base_tx:clone()
      while progress[p] <= per_producer do
        local id = p * 1000000 + progress[p]
        local mode = random(5)
        local ok
        if mode == 1 then
          ok = tx:send(id)
        elseif mode == 2 then
          local done, r = tidal.timeout(deadline(), tx.send, tx, id)
          ok = done and r
        elseif mode == 3 then
          local k, r = tidal.select({ tx:send_op(id), tidal.sleep_op(deadline()) })
          ok = k == 1 and r
        elseif mode == 4 then
          ok = tx:try_send(id)
          if not ok then tidal.yield() end
        else
          local k, r = tidal.select({
            function() return tx:send(id) end,
            function() tidal.sleep(deadline()) end,
          })
          ok = k == 1 and r
        end
        if ok then
          -- recorded in the same turn as the send returned: no wait between
          assert(not sent[id], "send reported twice")
          sent[id] = true
          stats.sent = stats.sent + 1
          progress[p] = progress[p] + 1
          -- the send may just have woken a parked receiver: cancel one in
          -- the same turn, before it runs
          if random() < 0.1 then abort_a_consumer() end
        end
        -- else (full, timed out, lost the select): the same id is tried
        -- again, so a cancelled send that delivered anyway shows up as a
        -- message received twice
      end
    end

    for p = 1, nproducers do
      progress[p] = 1
      producers[p] = tidal.spawn(producer, p)
    end
    for i = 1, nconsumers do consumers[i] = tidal.spawn(consumer) end

    -- chaos until every producer is through its ids
    local function producers_done()
      for p = 1, nproducers do
        if progress[p] <= per_producer then return false end
      end
      return true
    end
    while not producers_done() do
      local roll = random()
      if roll < 0.3 then
        tidal.yield()
      elseif roll < 0.9 then
        tidal.sleep(random() * 0.002)
      end
      roll = random()
      if roll < 0.25 then
        abort_a_consumer()
      elseif roll < 0.35 then
        local p = random(nproducers)
        if progress[p] <= per_producer then
          producers[p]:abort()
          stats.aborts = stats.aborts + 1
          producers[p] = tidal.spawn(producer, p)
          stats.respawns = stats.respawns + 1
        end
      end
    end
    for p = 1, nproducers do producers[p]:join() end
    base_tx:close()
    -- the stream ends: consumers see nil
    for i = 1, nconsumers do
      local ok, err = consumers[i]:join()
      if not ok and not tidal.is_error(err, "cancelled") then error(err, 0) end
    end
    local leftover, err = rx:try_recv()
    return { sent = sent, got = got, stats = stats, leftover = leftover, end_kind = err and err.kind }
  end)
end

local function assert_exactly_once(r)
  local missing, extra, twice = {}, {}, {}
  for id in pairs(r.sent) do
    if r.got[id] == nil then missing[#missing + 1] = id end
  end
  for id, n in pairs(r.got) do
    if not r.sent[id] then extra[#extra + 1] = id end
    if n > 1 then twice[#twice + 1] = id end
  end
  table.sort(missing)
  table.sort(extra)
  table.sort(twice)
  local function show(t) return #t .. " (" .. table.concat(t, ", ", 1, math.min(#t, 10)) .. ")" end
  assert.is_true(#missing == 0 and #extra == 0 and #twice == 0,
    "sent but never received: " .. show(missing) .. "; received but not reported as sent: " .. show(extra)
      .. "; received more than once: " .. show(twice))
  assert.are.equal(r.stats.sent, r.stats.got)
  assert.is_nil(r.leftover)
  assert.are.equal("closed", r.end_kind)
end

describe("cancellation safety of channels", function()
  it("bounded: every message reported as sent is received exactly once", function()
    local r = channel_stress(1234, 4, 4, support.scaled(800), 4)
    assert_exactly_once(r)
    assert.is_true(r.stats.sent >= 4 * support.scaled(800))
    if support.scale >= 0.2 then -- a tiny run may not get there
      assert.is_true(r.stats.aborts > 0, "the run aborted nothing")
      assert.is_true(r.stats.timeouts > 0, "no recv timed out")
    end
  end)

  it("capacity 1: every message reported as sent is received exactly once", function()
    local r = channel_stress(99, 1, 3, support.scaled(600), 5)
    assert_exactly_once(r)
    if support.scale >= 0.2 then assert.is_true(r.stats.aborts > 0) end
  end)

  it("unbounded: every message reported as sent is received exactly once", function()
    local r = channel_stress(4321, nil, 4, support.scaled(800), 3)
    assert_exactly_once(r)
    if support.scale >= 0.2 then assert.is_true(r.stats.aborts > 0) end
  end)

  it("a receiver woken by a send and aborted before it runs passes the message on (many rounds)", function()
    math.randomseed(7)
    local r = support.run(function()
      local lost, wrong = 0, 0
      local rounds = support.scaled(2000)
      for round = 1, rounds do
        local tx, rx = tidal.channel(random(2) == 1 and 1 or nil)
        local nrecv = random(2, 4)
        local got = {}
        local hs = {}
        for i = 1, nrecv do
          hs[i] = tidal.spawn(function()
            local v = rx:recv()
            if v ~= nil then got[#got + 1] = { i, v } end
          end)
        end
        tidal.yield() -- all parked, in order
        tx:send(round) -- wakes the first ...
        hs[1]:abort()  -- ... which is cancelled before it runs
        tx:close()     -- the others then see the end
        for i = 1, nrecv do hs[i]:join() end
        if #got ~= 1 then
          lost = lost + 1
        elseif got[1][1] == 1 or got[1][2] ~= round then
          wrong = wrong + 1
        end
      end
      return { lost = lost, wrong = wrong }
    end)
    assert.are.same({ lost = 0, wrong = 0 }, r)
  end)

  it("a receiver woken by a send and timed out before it runs leaves the message in the channel", function()
    math.randomseed(11)
    local r = support.run(function()
      local lost = 0
      local rounds = support.scaled(300)
      for round = 1, rounds do
        local tx, rx = tidal.channel()
        local got
        local h = tidal.spawn(function()
          local ok, v = tidal.timeout(0.001, rx.recv, rx)
          if ok then got = v end
        end)
        tidal.yield()
        -- spin past the receiver's deadline, then send: the receiver is
        -- woken, and its deadline may expire before it runs
        local t0 = tidal.now()
        while tidal.now() - t0 < 0.0015 do end
        tx:send(round)
        h:join()
        local left = rx:try_recv()
        if (got == round and 1 or 0) + (left == round and 1 or 0) ~= 1 then lost = lost + 1 end
      end
      return lost
    end)
    assert.are.equal(0, r)
  end)
end)

------------------------------------------------------------------ locks

-- The holders bookkeeping: enter() counts a holder and returns a to-be-
-- closed value that uncounts it and releases the guard.
local function tracker(limit_fn)
  local t = { now = 0, max = 0, violations = {}, acquired = 0 }
  function t.enter(guard, what, amount)
    amount = amount or 1
    local err = limit_fn(t, what, amount)
    if err then t.violations[#t.violations + 1] = err end
    t[what] = (t[what] or 0) + amount
    t.acquired = t.acquired + 1
    return setmetatable({}, {
      __close = function()
        t[what] = t[what] - amount
        guard:release()
      end,
    })
  end
  return t
end

-- Runs nworkers tasks doing rounds of acquire/hold/release through body(),
-- aborting random workers all the while; returns when each did its rounds.
local function lock_stress(nworkers, rounds, body)
  local stats = { aborts = 0, timeouts = 0 }
  local done = {}
  local workers = {}
  local function worker(i)
    while done[i] < rounds do
      body(stats)
      done[i] = done[i] + 1
    end
  end
  for i = 1, nworkers do
    done[i] = 0
    workers[i] = tidal.spawn(worker, i)
  end
  local function all_done()
    for i = 1, nworkers do
      if done[i] < rounds then return false end
    end
    return true
  end
  -- one abort at once, so that even a tiny run (TIDAL_SPEC_SCALE) aborts
  tidal.yield()
  if done[1] < rounds then
    workers[1]:abort()
    stats.aborts = stats.aborts + 1
    workers[1] = tidal.spawn(worker, 1)
  end
  while not all_done() do
    tidal.sleep(random() * 0.002)
    if random() < 0.5 then
      local i = random(nworkers)
      if done[i] < rounds then
        workers[i]:abort()
        stats.aborts = stats.aborts + 1
        workers[i] = tidal.spawn(worker, i)
      end
    end
  end
  for i = 1, nworkers do
    local ok, err = workers[i]:join()
    if not ok then error(err, 0) end
  end
  return stats
end

-- Holds for a random short while: nothing, a yield, or a sleep.
local function hold()
  local roll = random()
  if roll < 0.3 then
    tidal.yield()
  elseif roll < 0.5 then
    tidal.sleep(random() * 0.001)
  end
end

describe("cancellation safety of locks", function()
  it("a mutex is never held by two tasks and never leaked by a cancelled waiter", function()
    math.randomseed(2024)
    local r = support.run_within(60, function()
      local m = tidal.mutex()
      local t = tracker(function(tr)
        if (tr.holders or 0) > 0 then return "two holders" end
      end)
      local stats = lock_stress(8, support.scaled(300), function(stats)
        local mode = random(4)
        local g
        if mode == 1 then
          g = m:lock()
        elseif mode == 2 then
          local ok, guard = tidal.timeout(deadline(), m.lock, m)
          if ok then g = guard else stats.timeouts = stats.timeouts + 1 end
        elseif mode == 3 then
          local k, guard = tidal.select({ m:lock_op(), tidal.sleep_op(deadline()) })
          if k == 1 then g = guard end
        else
          g = m:try_lock()
          if not g then tidal.yield() end
        end
        if g then
          local h <close> = t.enter(g, "holders")
          hold()
        end
      end)
      return {
        violations = t.violations, holders = t.holders, acquired = t.acquired, stats = stats,
        locked = m:is_locked(), free = m:try_lock() ~= nil,
      }
    end)
    assert.are.same({}, r.violations)
    assert.are.equal(0, r.holders)
    assert.is_false(r.locked, "the mutex was leaked")
    assert.is_true(r.free)
    assert.is_true(r.acquired > 0)
    assert.is_true(r.stats.aborts > 0)
    if support.scale >= 0.2 then assert.is_true(r.stats.timeouts > 0) end
  end)

  it("an rwlock never lets a writer in with anyone else, and leaks nothing", function()
    math.randomseed(77)
    local r = support.run_within(60, function()
      local rw = tidal.rwlock()
      local t = tracker(function(tr, what)
        local readers, writers = tr.readers or 0, tr.writers or 0
        if what == "writers" and (readers > 0 or writers > 0) then
          return "writer with " .. readers .. " readers and " .. writers .. " writers"
        end
        if what == "readers" and writers > 0 then return "reader with a writer" end
      end)
      local max_readers = 0
      local stats = lock_stress(10, support.scaled(250), function(stats)
        local write = random() < 0.3
        local acquire = write and rw.write or rw.read
        local mode = random(3)
        local g
        if mode == 1 then
          g = acquire(rw)
        elseif mode == 2 then
          local ok, guard = tidal.timeout(deadline(), acquire, rw)
          if ok then g = guard else stats.timeouts = stats.timeouts + 1 end
        else
          g = (write and rw.try_write or rw.try_read)(rw)
          if not g then tidal.yield() end
        end
        if g then
          local h <close> = t.enter(g, write and "writers" or "readers")
          if (t.readers or 0) > max_readers then max_readers = t.readers end
          hold()
        end
      end)
      return {
        violations = t.violations, readers = t.readers, writers = t.writers, stats = stats,
        max_readers = max_readers, free = rw:try_write() ~= nil,
      }
    end)
    assert.are.same({}, r.violations)
    assert.are.equal(0, r.readers or 0)
    assert.are.equal(0, r.writers or 0)
    assert.is_true(r.free, "the rwlock was leaked")
    if support.scale >= 0.2 then assert.is_true(r.max_readers > 1, "readers never shared the lock") end
    assert.is_true(r.stats.aborts > 0)
  end)

  it("a semaphore never hands out more permits than it has, and gets them all back", function()
    math.randomseed(5)
    local total = 5
    local r = support.run_within(60, function()
      local s = tidal.semaphore(total)
      local t = tracker(function(tr, _, k)
        if (tr.permits or 0) + k > total then return "over the total: " .. (tr.permits + k) end
      end)
      local stats = lock_stress(8, support.scaled(300), function(stats)
        local k = random(3)
        local mode = random(3)
        local p
        if mode == 1 then
          p = s:acquire(k)
        elseif mode == 2 then
          local ok, permit = tidal.timeout(deadline(), s.acquire, s, k)
          if ok then p = permit else stats.timeouts = stats.timeouts + 1 end
        else
          p = s:try_acquire(k)
          if not p then tidal.yield() end
        end
        if p then
          assert(p:count() == k)
          local h <close> = t.enter(p, "permits", k)
          hold()
        end
      end)
      return { violations = t.violations, permits = t.permits, stats = stats, available = s:available() }
    end)
    assert.are.same({}, r.violations)
    assert.are.equal(0, r.permits)
    assert.are.equal(total, r.available, "permits were leaked")
    assert.is_true(r.stats.aborts > 0)
  end)

  it("a lock handed to a waiter that is aborted before it runs goes to the next waiter (many rounds)", function()
    math.randomseed(3)
    local r = support.run(function()
      local bad = 0
      for _ = 1, support.scaled(1000) do
        local m = tidal.mutex()
        local g = m:lock()
        local got = {}
        local a = tidal.spawn(function() local x <close> = m:lock(); got[#got + 1] = "a" end)
        local b = tidal.spawn(function() local x <close> = m:lock(); got[#got + 1] = "b" end)
        tidal.yield()
        g:release() -- hands the lock to a ...
        a:abort()   -- ... which is cancelled before it runs
        a:join()
        b:join()
        if #got ~= 1 or got[1] ~= "b" or m:is_locked() then bad = bad + 1 end
      end
      return bad
    end)
    assert.are.equal(0, r)
  end)

  it("permits handed to a waiter that is aborted before it runs go to the next waiter (many rounds)", function()
    local r = support.run(function()
      local bad = 0
      for _ = 1, support.scaled(1000) do
        local s = tidal.semaphore(2)
        local p = s:acquire(2)
        local got = {}
        local a = tidal.spawn(function() local x <close> = s:acquire(2); got[#got + 1] = "a" end)
        local b = tidal.spawn(function() local x <close> = s:acquire(1); got[#got + 1] = "b" end)
        tidal.yield()
        p:release() -- serves a ...
        a:abort()   -- ... which is cancelled before it runs
        a:join()
        b:join()
        if #got ~= 1 or got[1] ~= "b" or s:available() ~= 2 then bad = bad + 1 end
      end
      return bad
    end)
    assert.are.equal(0, r)
  end)
end)

--------------------------------------- woken, then timed out before it runs

-- The first waiter is woken (granted the lock, the permits, the
-- notification, the value) but its deadline passes before its turn: many
-- ready tasks are queued ahead of it, so the scheduler polls its timers
-- first. It must raise the timeout and hand what it was woken for to the
-- second waiter.
describe("a waiter woken and then timed out before it runs", function()
  local cases = {
    { "Mutex:lock", function() local m = tidal.mutex(); return m, m:lock() end,
      function(m) return m:lock() end, function(m) return not m:is_locked() end },
    { "RwLock:write", function() local rw = tidal.rwlock(); return rw, rw:read() end,
      function(rw) return rw:write() end, function(rw) return not rw:is_locked() end },
    { "RwLock:read", function() local rw = tidal.rwlock(); return rw, rw:write() end,
      function(rw) return rw:read() end, function(rw) return not rw:is_locked() end },
    { "Semaphore:acquire", function() local sem = tidal.semaphore(2); return sem, sem:acquire(2) end,
      function(sem) return sem:acquire(2) end, function(sem) return sem:available() == 2 end },
  }
  local function crowd_and_spin(deadline_s)
    for _ = 1, 200 do tidal.spawn(function() end) end
    local t0 = tidal.now()
    while tidal.now() - t0 < deadline_s * 2 do end
  end

  for _, case in ipairs(cases) do
    local name, setup, acquire, free = case[1], case[2], case[3], case[4]
    it("passes " .. name .. " to the next waiter", function()
      local r = support.run(function()
        local obj, held = setup()
        local a_ok, b_got
        local a = tidal.spawn(function()
          local ok, g = tidal.timeout(0.002, acquire, obj)
          a_ok = ok
          if ok then g:release() end
        end)
        local b = tidal.spawn(function()
          local g = acquire(obj)
          b_got = g ~= nil
          g:release()
        end)
        tidal.yield()
        crowd_and_spin(0.002)
        held:release() -- grants the first waiter
        a:join()
        b:join()
        return { a_ok = a_ok, b_got = b_got, free = free(obj) }
      end)
      assert.is_true(r.b_got)
      assert.is_true(r.free, "leaked")
    end)
  end

  it("passes a notify_one to the next waiter", function()
    local r = support.run(function()
      local n = tidal.notify()
      local a_ok, b_woken = nil, false
      local a = tidal.spawn(function() a_ok = tidal.timeout(0.002, n.notified, n) end)
      local b = tidal.spawn(function() n:notified(); b_woken = true end)
      tidal.yield()
      crowd_and_spin(0.002)
      n:notify_one()
      a:join()
      tidal.timeout(1, function() return b:join() end)
      return { a_ok = a_ok, b_woken = b_woken }
    end)
    assert.is_true(r.a_ok or r.b_woken, "the notification was lost")
    assert.is_false(r.a_ok and r.b_woken, "one notify_one woke two waiters")
  end)

  it("passes a oneshot value to the next receiver", function()
    local r = support.run(function()
      local tx, rx = tidal.oneshot()
      local a_ok, a_v, b_v
      local a = tidal.spawn(function() a_ok, a_v = tidal.timeout(0.002, rx.recv, rx) end)
      local b = tidal.spawn(function() b_v = rx:recv() end)
      tidal.yield()
      crowd_and_spin(0.002)
      tx:send("v")
      a:join()
      b:join()
      return { a_got = a_ok == true and a_v == "v", b_got = b_v == "v" }
    end)
    assert.is_true(r.a_got ~= r.b_got)
  end)

  it("passes a message of a timed-out select to the next receiver", function()
    local r = support.run(function()
      local tx, rx = tidal.channel()
      local a_ok, a_k, a_v, b_v
      local a = tidal.spawn(function()
        a_ok, a_k, a_v = tidal.timeout(0.002, tidal.select, { rx:recv_op(), tidal.sleep_op(30) })
      end)
      local b = tidal.spawn(function() b_v = rx:recv() end)
      tidal.yield()
      crowd_and_spin(0.002)
      tx:send("m")
      a:join()
      tidal.timeout(1, function() return b:join() end)
      return { a_got = a_ok == true and a_k == 1 and a_v == "m", b_got = b_v == "m", left = rx:try_recv() }
    end)
    assert.is_nil(r.left)
    assert.is_true(r.a_got ~= r.b_got)
  end)
end)

------------------------------------------------- a runtime that is dropped

-- A runtime collected without close() drops its tasks as they are (no task
-- code runs in a finalizer). A task that was parked on a primitive shared
-- with other code must not stay registered there: a later send, release or
-- close would wake a task that no longer exists. Run in a child process, so
-- that a crash fails this test only.
describe("a runtime collected while its tasks wait on shared primitives", function()
  local cases = {
    channel_send = [[
      local tx, rx = tidal.channel()
      drop(function() return rx:recv() end)
      assert(tx:send(1))
      assert(rx:try_recv() == 1, "the message is still there")
    ]],
    channel_close = [[
      local tx, rx = tidal.channel(1)
      tx:send(0)
      drop(function() return tx:send(1) end)
      rx:close()
    ]],
    mutex = [[
      local m = tidal.mutex()
      local g = m:try_lock()
      drop(function() return m:lock() end)
      g:release()
      assert(not m:is_locked(), "the lock went to a dropped task")
    ]],
    rwlock = [[
      local rw = tidal.rwlock()
      local g = rw:try_write()
      drop(function() return rw:read() end)
      g:release()
      assert(rw:try_write(), "the lock went to a dropped task")
    ]],
    semaphore = [[
      local s = tidal.semaphore(0)
      drop(function() return s:acquire() end)
      s:add_permits(1)
      assert(s:available() == 1, "the permit went to a dropped task")
      s:close()
    ]],
    notify = [[
      local n = tidal.notify()
      drop(function() return n:notified() end)
      n:notify_one()
      n:notify_waiters()
    ]],
    oneshot = [[
      local tx, rx = tidal.oneshot()
      drop(function() return rx:recv() end)
      assert(tx:send(1))
    ]],
    broadcast = [[
      local tx, rx = tidal.broadcast(2)
      drop(function() return rx:recv() end)
      tx:send(1)
      tx:close()
    ]],
    watch = [[
      local tx, rx = tidal.watch(0)
      drop(function() return rx:changed() end)
      tx:send(1)
      tx:close()
    ]],
    select = [[
      local tx, rx = tidal.channel()
      drop(function() return tidal.select({ rx:recv_op(), tidal.sleep_op(60) }) end)
      assert(tx:send(1))
      rx:close()
    ]],
  }
  local prelude = [[
    local tidal = require("tidal")
    -- starts fn in a runtime that is then dropped without close()
    local function drop(fn)
      local rt = tidal.runtime()
      rt:spawn(fn)
      rt:step(0)
      rt:step(0)
      rt = nil
      collectgarbage()
      collectgarbage()
    end
  ]]
  for name, body in pairs(cases) do
    it("does not leave a dangling waiter (" .. name .. ")", function()
      local out, status = support.lua(prelude .. body .. [[
        collectgarbage()
        collectgarbage()
        print("finished")
      ]])
      assert.are.equal(0, status, out)
      assert.matches("finished", out)
    end)
  end
end)
