local tidal = require("tidal")
local support = require("support")

local closer = support.closer

-- Spawns fn and lets it run until it parks.
local function parked(fn, ...)
  local h = tidal.spawn(fn, ...)
  tidal.yield()
  assert.is_false(h:is_finished(), "the task was expected to wait")
  return h
end

describe("tidal.mutex", function()
  it("lock gives a guard; try_lock fails while held; release frees it once", function()
    local r = support.run(function()
      local m = tidal.mutex()
      local g = m:lock()
      local locked = m:is_locked()
      local busy = m:try_lock()
      local first = g:release()
      local second = g:release()
      local g2 = m:try_lock()
      return { locked, busy, first, second, g2 ~= nil, g:is_held(), g2:is_held() }
    end)
    assert.are.same({ true, nil, true, false, true, false, true }, r)
  end)

  it("a guard released twice is a no-op returning false and does not unlock someone else's hold", function()
    local r = support.run(function()
      local m = tidal.mutex()
      local g1 = m:lock()
      assert.is_true(g1:release())
      local g2 = m:lock()
      local again = g1:release()
      return { again, m:is_locked(), m:try_lock() == nil, g2:is_held() }
    end)
    assert.are.same({ false, true, true, true }, r)
  end)

  it("a <close> guard releases at the end of its scope, also when an error unwinds", function()
    local r = support.run(function()
      local m = tidal.mutex()
      do
        local g <close> = m:lock()
        assert.is_true(m:is_locked())
      end
      local after_block = m:is_locked()
      local ok = pcall(function()
        local g <close> = m:lock()
        error("boom")
      end)
      return { after_block, ok, m:is_locked() }
    end)
    assert.are.same({ false, false, false }, r)
  end)

  it("serves waiters in FIFO order", function()
    local r = support.run(function()
      local m = tidal.mutex()
      local order = {}
      local g = m:lock()
      local hs = {}
      for i = 1, 5 do
        hs[i] = tidal.spawn(function()
          local gi <close> = m:lock()
          order[#order + 1] = i
          tidal.yield()
        end)
        tidal.yield()
      end
      g:release()
      for i = 1, 5 do hs[i]:await() end
      return order
    end)
    assert.are.same({ 1, 2, 3, 4, 5 }, r)
  end)

  it("hands the lock to the waiter: a try_lock right after release does not barge", function()
    local r = support.run(function()
      local m = tidal.mutex()
      local g = m:lock()
      local h = parked(function() local gg <close> = m:lock(); return "waiter" end)
      g:release()
      local barged = m:try_lock()
      return { barged, h:await() }
    end)
    assert.is_nil(r[1])
    assert.are.equal("waiter", r[2])
  end)

  it("a guard collected while held releases the lock and wakes a waiter", function()
    local r = support.run(function()
      local m = tidal.mutex()
      ;(function() m:lock() end)() -- the guard is dropped at once, still held
      assert.is_true(m:is_locked())
      local h = tidal.spawn(function() local g <close> = m:lock(); return "got it" end)
      tidal.yield()
      collectgarbage()
      collectgarbage()
      return h:await()
    end)
    assert.are.equal("got it", r)
  end)

  it("lock outside a task raises; try_lock works anywhere", function()
    local m = tidal.mutex()
    local ok, err = pcall(m.lock, m)
    assert.is_false(ok)
    assert.matches("Mutex:lock: not inside a tidal task", err)
    local g = m:try_lock()
    assert.is_not_nil(g)
    assert.is_nil(m:try_lock())
    assert.is_true(g:release())
  end)
end)

describe("tidal.rwlock", function()
  it("lets many readers hold the lock at once", function()
    local r = support.run(function()
      local rw = tidal.rwlock()
      local now, max = 0, 0
      local hs = {}
      for i = 1, 5 do
        hs[i] = tidal.spawn(function()
          local g <close> = rw:read()
          now = now + 1
          if now > max then max = now end
          tidal.sleep(0.05)
          now = now - 1
        end)
      end
      for i = 1, 5 do hs[i]:await() end
      return { max = max, locked = rw:is_locked() }
    end)
    assert.are.equal(5, r.max)
    assert.is_false(r.locked)
  end)

  it("makes a writer exclusive of readers and of other writers", function()
    local r = support.run(function()
      local rw = tidal.rwlock()
      local w = rw:write()
      local tr, tw = rw:try_read(), rw:try_write()
      local log = {}
      local reader = parked(function() local g <close> = rw:read(); log[#log + 1] = "reader" end)
      local writer = parked(function() local g <close> = rw:write(); log[#log + 1] = "writer2" end)
      log[#log + 1] = "writer1 releases"
      w:release()
      reader:await()
      writer:await()
      local g = rw:read()
      local tw2 = rw:try_write()
      g:release()
      return { tr = tr, tw = tw, tw2 = tw2, log = log }
    end)
    assert.is_nil(r.tr)
    assert.is_nil(r.tw)
    assert.is_nil(r.tw2)
    assert.are.same({ "writer1 releases", "reader", "writer2" }, r.log)
  end)

  it("does not starve a waiting writer with a stream of readers", function()
    local r = support.run(function()
      local rw = tidal.rwlock()
      local log = {}
      local first = rw:read()
      local writer = parked(function()
        local g <close> = rw:write()
        log[#log + 1] = "writer"
      end)
      -- readers keep arriving while the first still reads
      local readers = {}
      for i = 1, 3 do
        readers[i] = tidal.spawn(function()
          local g <close> = rw:read()
          log[#log + 1] = "reader" .. i
        end)
      end
      tidal.yield()
      local sneaked = rw:try_read()
      first:release()
      writer:await()
      for i = 1, 3 do readers[i]:await() end
      return { sneaked = sneaked, log = log }
    end)
    assert.is_nil(r.sneaked, "try_read overtook a waiting writer")
    assert.are.same({ "writer", "reader1", "reader2", "reader3" }, r.log)
  end)

  it("lets readers queued behind a cancelled writer proceed", function()
    local r = support.run(function()
      local rw = tidal.rwlock()
      local held = rw:read()
      local writer = parked(function() local g <close> = rw:write() end)
      local reader = parked(function() local g <close> = rw:read(); return "read" end)
      writer:abort()
      local ok, err = writer:join()
      -- the first reader still holds: the queued reader may share with it
      local got = reader:await()
      local still_reading = rw:is_locked()
      held:release()
      return { ok = ok, kind = err.kind, got = got, still = still_reading, free = rw:try_write() ~= nil }
    end)
    assert.is_false(r.ok)
    assert.are.equal("cancelled", r.kind)
    assert.are.equal("read", r.got)
    assert.is_true(r.still)
    assert.is_true(r.free)
  end)
end)

describe("tidal.semaphore", function()
  it("acquires several permits at once and gives them back on release", function()
    local r = support.run(function()
      local s = tidal.semaphore(5)
      local p = s:acquire(3)
      local a1 = s:available()
      local q = s:acquire()
      local a2 = s:available()
      local count = p:count()
      local rel1, rel2 = p:release(), p:release()
      local a3 = s:available()
      q:release()
      return { a1, a2, count, rel1, rel2, a3, s:available() }
    end)
    assert.are.same({ 2, 1, 3, true, false, 4, 5 }, r)
  end)

  it("serves waiters in FIFO order", function()
    local r = support.run(function()
      local s = tidal.semaphore(1)
      local p = s:acquire()
      local order = {}
      local hs = {}
      for i = 1, 4 do
        hs[i] = tidal.spawn(function()
          local q <close> = s:acquire()
          order[#order + 1] = i
          tidal.yield()
        end)
        tidal.yield()
      end
      p:release()
      for i = 1, 4 do hs[i]:await() end
      return { order = order, avail = s:available() }
    end)
    assert.are.same({ 1, 2, 3, 4 }, r.order)
    assert.are.equal(1, r.avail)
  end)

  it("does not let smaller later requests overtake a large one at the head", function()
    local r = support.run(function()
      local s = tidal.semaphore(3)
      local log = {}
      local held = s:acquire(3)
      local big = parked(function() local p <close> = s:acquire(3); log[#log + 1] = "big" end)
      local small = parked(function() local p <close> = s:acquire(1); log[#log + 1] = "small" end)
      local part = s:try_acquire(1)
      held:release()
      big:await()
      small:await()
      return { part = part, log = log, avail = s:available() }
    end)
    assert.is_nil(r.part, "try_acquire overtook the waiting large request")
    assert.are.same({ "big", "small" }, r.log)
    assert.are.equal(3, r.avail)
  end)

  it("holds a large request until enough permits are back", function()
    local r = support.run(function()
      local s = tidal.semaphore(2)
      local a, b = s:acquire(), s:acquire()
      local big = parked(function() local p <close> = s:acquire(2); return "big" end)
      a:release()
      tidal.yield()
      local waiting = not big:is_finished()
      b:release()
      return { waiting, big:await(), s:available() }
    end)
    assert.are.same({ true, "big", 2 }, r)
  end)

  it("add_permits adds permits and serves waiters", function()
    local r = support.run(function()
      local s = tidal.semaphore(0)
      local h = parked(function() local p <close> = s:acquire(2); return "served" end)
      s:add_permits(1)
      tidal.yield()
      local waiting = not h:is_finished()
      s:add_permits(2)
      return { waiting, h:await(), s:available() }
    end)
    assert.are.same({ true, "served", 3 }, r)
  end)

  it("try_acquire returns nil, 'no_permits' when short and nil, 'closed' when closed", function()
    local s = tidal.semaphore(1)
    local p = s:try_acquire()
    assert.is_not_nil(p)
    local none, err = s:try_acquire()
    assert.is_nil(none)
    assert.are.equal("no_permits", err.kind)
    local big, err2 = s:try_acquire(5)
    assert.is_nil(big)
    assert.are.equal("no_permits", err2.kind)
    p:release()
    s:close()
    local c, err3 = s:try_acquire()
    assert.is_nil(c)
    assert.are.equal("closed", err3.kind)
  end)

  it("close makes pending and later acquires return nil, 'closed'", function()
    local r = support.run(function()
      local s = tidal.semaphore(1)
      local p = s:acquire()
      local hs = {}
      for i = 1, 3 do hs[i] = parked(function() return table.pack(s:acquire()) end) end
      s:close()
      local outs = {}
      for i = 1, 3 do
        local res = hs[i]:await()
        outs[i] = tostring(res[1]) .. "/" .. (res[2] and res[2].kind or "-")
      end
      local later, err = s:acquire()
      p:release()
      return { outs = outs, later = later, kind = err.kind, avail = s:available() }
    end)
    assert.are.same({ "nil/closed", "nil/closed", "nil/closed" }, r.outs)
    assert.is_nil(r.later)
    assert.are.equal("closed", r.kind)
    -- closing leaves the count alone (as in Tokio): the permit released
    -- after close() counts again (issue 9 item 19)
    assert.are.equal(1, r.avail)
  end)

  it("rejects bad arguments", function()
    for _, n in ipairs({ -1, 1.5, "x", true }) do
      local ok, err = pcall(tidal.semaphore, n)
      assert.is_false(ok, "semaphore(" .. tostring(n) .. ")")
      assert.matches("tidal.semaphore: the number of permits must be an integer >= 0", err)
    end
    assert.has_error(function() tidal.semaphore() end)
    local s = tidal.semaphore(2)
    for _, k in ipairs({ 0, -1, 1.5, "x" }) do
      local ok, err = pcall(s.try_acquire, s, k)
      assert.is_false(ok, "try_acquire(" .. tostring(k) .. ")")
      assert.matches("Semaphore:try_acquire: the number of permits must be an integer >= 1", err)
      ok, err = pcall(s.add_permits, s, k)
      assert.is_false(ok, "add_permits(" .. tostring(k) .. ")")
    end
    support.run(function()
      for _, k in ipairs({ 0, -1, 1.5, "x" }) do
        local ok, err = pcall(s.acquire, s, k)
        assert.is_false(ok, "acquire(" .. tostring(k) .. ")")
        assert.matches("Semaphore:acquire: the number of permits must be an integer >= 1", err)
      end
    end)
    assert.are.equal(2, s:available())
  end)

  it("a permit collected while held gives its permits back", function()
    local r = support.run(function()
      local s = tidal.semaphore(2)
      ;(function() s:acquire(2) end)()
      local before = s:available()
      collectgarbage()
      collectgarbage()
      return { before, s:available() }
    end)
    assert.are.same({ 0, 2 }, r)
  end)
end)

describe("tidal.notify", function()
  it("notify_one before notified stores one permit (not two)", function()
    local r = support.run(function()
      local n = tidal.notify()
      n:notify_one()
      n:notify_one()
      n:notified() -- returns at once: consumes the stored permit
      local h = tidal.spawn(function() n:notified(); return "woken" end)
      tidal.yield()
      local waiting = not h:is_finished()
      n:notify_one()
      return { waiting, h:await() }
    end)
    assert.are.same({ true, "woken" }, r)
  end)

  it("notify_one wakes the waiters one at a time in FIFO order", function()
    local r = support.run(function()
      local n = tidal.notify()
      local order = {}
      local hs = {}
      for i = 1, 3 do
        hs[i] = tidal.spawn(function() n:notified(); order[#order + 1] = i end)
        tidal.yield()
      end
      n:notify_one()
      tidal.yield()
      local after_one = #order
      n:notify_one()
      n:notify_one()
      for i = 1, 3 do hs[i]:await() end
      return { after_one, order }
    end)
    assert.are.same({ 1, { 1, 2, 3 } }, r)
  end)

  it("notify_waiters wakes every waiting task and stores no permit", function()
    local r = support.run(function()
      local n = tidal.notify()
      local hs = {}
      for i = 1, 4 do hs[i] = tidal.spawn(function() n:notified(); return i end) end
      tidal.yield()
      local count = n:notify_waiters()
      local out = {}
      for i = 1, 4 do out[i] = hs[i]:await() end
      local late = tidal.spawn(function() n:notified() end)
      tidal.sleep(0.02)
      local late_waits = not late:is_finished()
      late:abort()
      return { count, out, late_waits }
    end)
    assert.are.same({ 4, { 1, 2, 3, 4 }, true }, r)
  end)

  it("a waiter woken by notify_one and aborted before it runs passes the notification on", function()
    local r = support.run(function()
      local n = tidal.notify()
      local a = parked(function() n:notified(); return "a" end)
      local b = parked(function() n:notified(); return "b" end)
      n:notify_one() -- wakes a ...
      a:abort()      -- ... cancelled before it runs
      local ok = a:join()
      return { ok, b:await() }
    end)
    assert.are.same({ false, "b" }, r)
  end)
end)

describe("tidal.oneshot", function()
  it("delivers one value to a waiting receiver", function()
    local r = support.run(function()
      local tx, rx = tidal.oneshot()
      local h = parked(function() return rx:recv() end)
      local sent = tx:send({ "v" })
      return { sent, h:await()[1] }
    end)
    assert.are.same({ true, "v" }, r)
  end)

  it("recv after the sender closed without sending gives nil, 'closed'", function()
    local r = support.run(function()
      local tx, rx = tidal.oneshot()
      local h = parked(function() return table.pack(rx:recv()) end)
      tx:close()
      local res = h:await()
      return { res[1], res[2].kind }
    end)
    assert.are.same({ nil, "closed" }, r)
  end)

  it("recv after the sender was collected without sending gives nil, 'closed'", function()
    local r = support.run(function()
      local rx = select(2, tidal.oneshot())
      collectgarbage()
      collectgarbage()
      local v, err = rx:recv()
      return { v, err.kind }
    end)
    assert.are.same({ nil, "closed" }, r)
  end)

  it("the value sent before the sender closed is still received", function()
    local r = support.run(function()
      local tx, rx = tidal.oneshot()
      tx:send(42)
      tx:close()
      local v = rx:recv()
      local again, err = rx:try_recv()
      return { v, again, err.kind }
    end)
    assert.are.same({ 42, nil, "closed" }, r)
  end)

  it("send after the receiver closed gives nil, 'closed'", function()
    local tx, rx = tidal.oneshot()
    rx:close()
    local ok, err = tx:send(1)
    assert.is_nil(ok)
    assert.are.equal("closed", err.kind)
  end)

  it("recv on a receiver that was closed does not wait forever", function()
    local r = support.run(function()
      local tx, rx = tidal.oneshot()
      rx:close()
      return table.pack(tidal.timeout(1, function() return rx:recv() end))
    end)
    assert.is_true(r[1], "recv on a closed receiver waited")
    assert.is_nil(r[2])
    assert.are.equal("closed", r[3].kind)
  end)

  it("a second send raises; sending nil raises", function()
    local tx = tidal.oneshot()
    assert.is_true(tx:send(1))
    local ok, err = pcall(tx.send, tx, 2)
    assert.is_false(ok)
    assert.matches("OneshotSender:send: a value was sent already", err)
    local tx2 = tidal.oneshot()
    ok, err = pcall(tx2.send, tx2, nil)
    assert.is_false(ok)
    assert.matches("OneshotSender:send: cannot send nil", err)
  end)
end)

describe("tidal.broadcast", function()
  it("gives every subscriber every value, in order", function()
    local r = support.run(function()
      local tx, rx1 = tidal.broadcast(8)
      local rx2 = tx:subscribe()
      local function reader(rx)
        return tidal.spawn(function()
          local out = {}
          for _ = 1, 3 do out[#out + 1] = rx:recv() end
          return out
        end)
      end
      local h1, h2 = reader(rx1), reader(rx2)
      tidal.yield()
      for i = 1, 3 do tx:send(i) end
      return { h1:await(), h2:await() }
    end)
    assert.are.same({ { 1, 2, 3 }, { 1, 2, 3 } }, r)
  end)

  it("a subscriber sees only values sent after it subscribed", function()
    local r = support.run(function()
      local tx, rx = tidal.broadcast(4)
      tx:send("old")
      local late = tx:subscribe()
      tx:send("new")
      return { rx:recv(), rx:recv(), late:recv() }
    end)
    assert.are.same({ "old", "new", "new" }, r)
  end)

  it("tells a slow receiver how many values it missed, then continues with the oldest kept", function()
    local r = support.run(function()
      local tx, rx = tidal.broadcast(2)
      for i = 1, 5 do tx:send(i) end
      local v, err = rx:recv()
      local a, b = rx:recv(), rx:recv()
      local _, e2 = rx:try_recv()
      return { v = v, kind = err.kind, skipped = err.skipped, a = a, b = b, empty = e2.kind }
    end)
    assert.is_nil(r.v)
    assert.are.equal("lagged", r.kind)
    assert.are.equal(3, r.skipped)
    assert.are.equal(4, r.a)
    assert.are.equal(5, r.b)
    assert.are.equal("empty", r.empty)
  end)

  it("recv gives nil once every sender closed and everything was seen", function()
    local r = support.run(function()
      local tx, rx = tidal.broadcast(4)
      local tx2 = tx:clone()
      tx:send("a")
      tx:close()
      local h = tidal.spawn(function()
        local out = {}
        while true do
          local v = rx:recv()
          if v == nil then return out end
          out[#out + 1] = v
        end
      end)
      tidal.yield()
      local open = not h:is_finished()
      tx2:send("b")
      tx2:close()
      return { open, h:await() }
    end)
    assert.are.same({ true, { "a", "b" } }, r)
  end)
end)

describe("tidal.watch", function()
  it("borrow reads the current value; receivers start having seen it", function()
    local r = support.run(function()
      local tx, rx = tidal.watch("v1")
      local first = rx:borrow()
      local fresh = rx:has_changed()
      local h = tidal.spawn(function() return rx:changed() end)
      tidal.yield()
      local waiting = not h:is_finished()
      tx:send("v2")
      local ok = h:await()
      return { first, fresh, waiting, ok, rx:borrow(), rx:has_changed() }
    end)
    assert.are.same({ "v1", false, true, true, "v2", false }, r)
  end)

  it("changed reports several sends once and then waits", function()
    local r = support.run(function()
      local tx, rx = tidal.watch(0)
      tx:send(1)
      tx:send(2)
      local ok = rx:changed()
      local v = rx:borrow()
      local again = tidal.timeout(0.02, function() return rx:changed() end)
      return { ok, v, again }
    end)
    assert.are.same({ true, 2, false }, r)
  end)

  it("changed gives nil, 'closed' once the sender closed and the last value was seen", function()
    local r = support.run(function()
      local tx, rx = tidal.watch(0)
      local h = parked(function()
        local out = {}
        while true do
          local ok, err = rx:changed()
          if not ok then
            out[#out + 1] = err.kind
            return out
          end
          out[#out + 1] = rx:borrow()
        end
      end)
      tx:send(1)
      tidal.yield()
      tx:send(2)
      tx:close()
      return h:await()
    end)
    assert.are.same({ 1, 2, "closed" }, r)
  end)

  it("a subscriber made after a send starts having seen that value", function()
    local r = support.run(function()
      local tx, rx = tidal.watch("a")
      tx:send("b")
      local late = tx:subscribe()
      return { rx:has_changed(), late:has_changed(), late:borrow() }
    end)
    assert.are.same({ true, false, "b" }, r)
  end)
end)

describe("abort while waiting", function()
  -- Each case: setup() -> state; wait(state) parks; after the waiter was
  -- aborted, check(state) proves the wait was withdrawn.
  local cases = {
    {
      name = "Mutex:lock",
      setup = function()
        local m = tidal.mutex()
        return { m = m, g = m:lock() }
      end,
      wait = function(s) local g <close> = s.m:lock() end,
      check = function(s)
        s.g:release()
        assert.is_false(s.m:is_locked(), "the lock went to the aborted waiter")
      end,
    },
    {
      name = "RwLock:read",
      setup = function()
        local rw = tidal.rwlock()
        return { rw = rw, g = rw:write() }
      end,
      wait = function(s) local g <close> = s.rw:read() end,
      check = function(s)
        s.g:release()
        assert.is_false(s.rw:is_locked())
      end,
    },
    {
      name = "RwLock:write",
      setup = function()
        local rw = tidal.rwlock()
        return { rw = rw, g = rw:read() }
      end,
      wait = function(s) local g <close> = s.rw:write() end,
      check = function(s)
        -- a writer no longer waits: a new reader is not queued behind it
        assert.is_not_nil(s.rw:try_read())
        s.g:release()
      end,
    },
    {
      name = "Semaphore:acquire",
      setup = function()
        local sem = tidal.semaphore(1)
        return { sem = sem, p = sem:acquire() }
      end,
      wait = function(s) local p <close> = s.sem:acquire() end,
      check = function(s)
        s.p:release()
        assert.are.equal(1, s.sem:available())
      end,
    },
    {
      name = "Notify:notified",
      setup = function() return { n = tidal.notify() } end,
      wait = function(s) s.n:notified() end,
      check = function(s)
        s.n:notify_one() -- nobody waits: stored as a permit
        local ok = tidal.timeout(1, function() s.n:notified() end)
        assert.is_true(ok, "the notification went to the aborted waiter")
      end,
    },
    {
      name = "OneshotReceiver:recv",
      setup = function()
        local tx, rx = tidal.oneshot()
        return { tx = tx, rx = rx }
      end,
      wait = function(s) return s.rx:recv() end,
      check = function(s)
        s.tx:send("v")
        assert.are.equal("v", s.rx:recv())
      end,
    },
    {
      name = "BroadcastReceiver:recv",
      setup = function()
        local tx, rx = tidal.broadcast(4)
        return { tx = tx, rx = rx }
      end,
      wait = function(s) return s.rx:recv() end,
      check = function(s)
        s.tx:send("v")
        assert.are.equal("v", s.rx:recv())
      end,
    },
    {
      name = "WatchReceiver:changed",
      setup = function()
        local tx, rx = tidal.watch(0)
        return { tx = tx, rx = rx }
      end,
      wait = function(s) return s.rx:changed() end,
      check = function(s)
        s.tx:send(1)
        assert.is_true(s.rx:changed())
      end,
    },
  }

  for _, case in ipairs(cases) do
    it("in " .. case.name .. " withdraws the wait and the task ends cancelled", function()
      local r = support.run(function()
        local s = case.setup()
        local log = {}
        local h = parked(function()
          local c <close> = closer(log, "unwound")
          case.wait(s)
          log[#log + 1] = "not reached"
        end)
        local where
        for _, info in ipairs(tidal.tasks()) do
          if info.id == h:id() then where = info.waiting end
        end
        h:abort()
        local ok, err = h:join()
        case.check(s)
        return { ok = ok, kind = err.kind, log = log, where = where }
      end)
      assert.is_false(r.ok)
      assert.are.equal("cancelled", r.kind)
      assert.are.same({ "unwound" }, r.log)
      assert.are.equal(case.name, r.where)
    end)
  end
end)
