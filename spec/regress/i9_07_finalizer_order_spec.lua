-- Issue 9 item 7: a finalizer may use a tidal object that was finalized
-- earlier in the same collection (finalizers run in the reverse order of
-- creation, and at lua_close every object is finalized). Every method then
-- gives the closed answer or raises "attempt to use a closed ...", never
-- touches freed memory. Each case runs in a child process, where a crash
-- fails the test instead of the suite.
local support = require("support")

-- Runs code in a child lua5.4 with a time limit; returns output, status.
local function child(code)
  return support.lua(code, 60)
end

-- An owner made before the objects it owns: its __gc runs after theirs.
local owner = [[
local tidal = require("tidal")
local function kind(err) return err and err.kind or "-" end
local function check(o)
  local n = 0
  while o.rx:try_recv() do n = n + 1 end
  local v, err = o.rx:try_recv()
  print("rx", n, v, kind(err), #o.rx, o.rx:is_closed(), o.rx())
  print("tx", o.tx:is_closed(), #o.tx, (select(2, pcall(o.tx.send, o.tx, 1))))
  print("mutex", (select(2, pcall(o.m.try_lock, o.m))))
  print("rwlock", (select(2, pcall(o.rw.try_read, o.rw))))
  local p, perr = o.s:try_acquire()
  print("semaphore", p, kind(perr), o.s:available())
  local ov, oerr = o.orx:try_recv()
  print("oneshot", ov, kind(oerr), o.orx:is_closed(), o.otx:is_closed())
  local bv, berr = o.brx:try_recv()
  print("broadcast", bv, kind(berr), #o.brx)
  local wok, werr = o.wrx:has_changed(), select(2, o.wrx:changed())
  print("watch", wok, kind(werr), o.wrx:borrow())
  print("guard", o.g:release(), o.g:is_held())
  print("permit", o.p:release(), o.p:count())
end
local o = setmetatable({}, { __gc = check })
o.tx, o.rx = tidal.channel(4)
o.tx:send("a")
o.m = tidal.mutex()
o.rw = tidal.rwlock()
o.s = tidal.semaphore(2)
o.otx, o.orx = tidal.oneshot()
o.otx:send("x")
o.btx, o.brx = tidal.broadcast(2)
o.btx:send("b")
o.wtx, o.wrx = tidal.watch("w")
o.g = o.m:try_lock()
o.p = o.s:try_acquire()
]]

local expected = {
  "rx\t0\tnil\tclosed\t0\ttrue\n",
  "tx\ttrue\t0\t[^\n]*Sender:send: attempt to use a closed sender",
  "mutex\t[^\n]*Mutex:try_lock: attempt to use a closed mutex",
  "rwlock\t[^\n]*RwLock:try_read: attempt to use a closed rwlock",
  "semaphore\tnil\tclosed\t0",
  "oneshot\tnil\tclosed\ttrue\ttrue",
  "broadcast\tnil\tclosed\t0",
  "watch\tfalse\tclosed\tw",
  "guard\tfalse\tfalse",
  "permit\tfalse\t0",
}

describe("issue 9 item 7: a finalizer may use objects finalized before it", function()
  it("at interpreter exit (lua_close): the owner's __gc drains its inbox", function()
    if not support.can_spawn then return end
    local out, status = child(owner .. "print('last line')\n")
    assert.are.equal(0, status, out)
    assert.matches("last line", out)
    for _, line in ipairs(expected) do assert.matches(line, out) end
  end)

  it("in an ordinary collection, and the program goes on", function()
    if not support.can_spawn then return end
    local out, status = child("do\n" .. owner .. "end\ncollectgarbage()\ncollectgarbage()\n"
      .. "print('after')\n")
    assert.are.equal(0, status, out)
    for _, line in ipairs(expected) do assert.matches(line, out) end
    assert.matches("after", out)
  end)

  it("a task waiting on an object finalized by hand is woken or stays parked, never crashes", function()
    if not support.can_spawn then return end
    local out, status = child([[
local tidal = require("tidal")
local r = tidal.run(function()
  local res = {}
  local tx, rx = tidal.channel()
  local h1 = tidal.spawn(function() return rx:recv() end)
  local m = tidal.mutex()
  local g = m:lock()
  local h2 = tidal.spawn(function() return m:lock() end)
  local s = tidal.semaphore(0)
  local h3 = tidal.spawn(function() return s:acquire() end)
  local otx, orx = tidal.oneshot()
  local h4 = tidal.spawn(function() return orx:recv() end)
  local wtx, wrx = tidal.watch(1)
  local h5 = tidal.spawn(function() return wrx:changed() end)
  local btx, brx = tidal.broadcast(1)
  local h6 = tidal.spawn(function() return brx:recv() end)
  tidal.yield()
  for _, o in ipairs({ rx, m, s, orx, wrx, brx }) do getmetatable(o).__gc(o) end
  g:release()
  tx:send(1)
  pcall(s.add_permits, s, 1)
  otx:send(1)
  wtx:send(2)
  btx:send(3)
  for i, h in ipairs({ h1, h2, h3, h4, h5, h6 }) do
    local ok, v, err = tidal.timeout(0.2, function() return h:join() end)
    res[i] = tostring(ok) .. " " .. tostring(v) .. " " .. tostring(err)
    h:abort()
  end
  return table.concat(res, "\n")
end)
print(r)
print("done")
]])
    assert.are.equal(0, status, out)
    -- the channel, oneshot, watch and broadcast receivers see their end
    -- closed; the lock waiter raises; the semaphore waiter (its core is
    -- gone) can only be cancelled
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.are.equal("true true nil", lines[1], out)
    assert.matches("^true false .*Mutex:lock: attempt to use a closed mutex", lines[2])
    assert.matches("^false .*timed out", lines[3])
    assert.are.equal("true true nil", lines[4], out)
    assert.are.equal("true true nil", lines[5], out)
    assert.are.equal("true true nil", lines[6], out)
    assert.are.equal("done", lines[7], out)
  end)

  it("a task left waiting on a freed shared object is reported, not waited for", function()
    if not support.can_spawn then return end
    -- the semaphore was shared with a worker (its waiters count as woken
    -- from another thread), then freed by hand: its waiter can never be
    -- woken, and the deadlock report says so instead of a silent hang
    local out, status = child([[
local tidal = require("tidal")
local ok, err = pcall(tidal.run, { workers = 1 }, function()
  local s = tidal.semaphore(0)
  tidal.spawn_parallel(function(x) return tostring(x) end, s):await()
  tidal.sleep(0.2) -- the worker's idle collection drops its copy
  local h = tidal.spawn(function() return s:acquire() end)
  tidal.yield()
  getmetatable(s).__gc(s)
  return h:await()
end)
print(ok, err)
]])
    assert.are.equal(0, status, out)
    assert.matches("deadlock: every task is waiting", out, nil, true)
    assert.matches("waits in (an object that was finalized)", out, nil, true)
  end)

  it("a runtime finalized after the primitives its parked tasks wait on", function()
    if not support.can_spawn then return end
    -- at lua_close the runtime (created first) is finalized last: its
    -- __gc withdraws the waits of its parked tasks, whose primitives are
    -- gone by then (AddressSanitizer saw a use after free here)
    local out, status = child([[
local tidal = require("tidal")
local rt = tidal.runtime()
rt:spawn(function()
  local m = tidal.mutex()
  local g = m:lock()
  for _ = 1, 3 do tidal.spawn(function() m:lock() end) end
  local tx = tidal.channel(1)
  tx:send(1)
  for _ = 1, 3 do tidal.spawn(function() tx:send(2) end) end
  local s = tidal.semaphore(0)
  for _ = 1, 3 do tidal.spawn(function() s:acquire() end) end
  local _, orx = tidal.oneshot()
  for _ = 1, 3 do tidal.spawn(function() orx:recv() end) end
  local _, wrx = tidal.watch(1)
  for _ = 1, 3 do tidal.spawn(function() wrx:changed() end) end
  local _, brx = tidal.broadcast(1)
  for _ = 1, 3 do tidal.spawn(function() brx:recv() end) end
  tidal.sleep(100)
  return g
end)
rt:step(0)
rt:step(0)
print("last line")
]])
    assert.are.equal(0, status, out)
    assert.matches("last line", out)
  end)
end)
