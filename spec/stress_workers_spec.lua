-- Stress across workers (issue 9, the Bar): senders and receivers of one
-- bounded channel run as parallel tasks on different workers, and are
-- aborted at random while they wait in send or recv. Every message that
-- send reported as sent must be received exactly once (a cancelled send
-- delivers nothing, a cancelled recv loses nothing), in order per sender
-- and receiver, and the run must end (a watchdog kills it otherwise).
--
-- Messages: TIDAL_STRESS_MESSAGES, else 10^5 scaled by TIDAL_SPEC_SCALE
-- (the sanitizer and valgrind runs shrink it). TIDAL_STRESS_SEED repeats a
-- run. The figures (messages, aborts, time) are printed to stderr.
local support = require("support")

local PROGRAM = [==[
local N, WORKERS, SEED, LIMIT = ...
local tidal = require("tidal")
math.randomseed(SEED)
local CHUNK = 250 -- messages per sender
local NS, NR = 4, 3 -- live senders, live receivers
local P_ABORT = 0.4 -- per tick
local BASE = 1 << 20 -- message = sender id * BASE + seq

-- A sender: sends seq 1..quota; reports how many send() completed (in a
-- <close> handler, so an abort reports too).
local function sender(tx, report, quota, g)
  local sent = 0
  local _ <close> = setmetatable({}, { __close = function() report:send(sent) end })
  local out <close> = tx
  for seq = 1, quota do
    out:send(g * BASE + seq)
    sent = seq
  end
end

-- A receiver: receives until the end of the stream; reports what it got.
local function receiver(rx, report)
  local got, n = {}, 0
  local _ <close> = setmetatable({}, { __close = function() report:send(got) end })
  while true do
    local v = rx:recv()
    if v == nil then return end
    n = n + 1
    got[n] = v
  end
end

-- The stress itself, as a task of main.
local function stress()
  local start = tidal.now()
  local tx, rx = tidal.channel(32)
  local live = {} -- { h, kind, report, g, quota }
  local remaining = N -- messages no live sender has been given
  local sent_by, received = {}, {}
  local g = 0
  local st = { senders = 0, receivers = 0, aborted_senders = 0, aborted_receivers = 0 }

  local function spawn_sender()
    local quota = math.min(CHUNK, remaining)
    remaining = remaining - quota
    g = g + 1
    local rtx, rrx = tidal.oneshot()
    live[#live + 1] = { h = tidal.spawn_parallel(sender, tx, rtx, quota, g), kind = "s",
      report = rrx, g = g, quota = quota }
    st.senders = st.senders + 1
  end
  local function spawn_receiver()
    local rtx, rrx = tidal.oneshot()
    live[#live + 1] = { h = tidal.spawn_parallel(receiver, rx, rtx), kind = "r", report = rrx }
    st.receivers = st.receivers + 1
  end
  -- a finished task: its report (none if it never started)
  local function settle(e)
    e.h:join()
    local v = e.report:try_recv()
    if e.kind == "s" then
      local k = v or 0
      sent_by[e.g] = k
      remaining = remaining + (e.quota - k) -- given to a later sender
    elseif v ~= nil then
      received[#received + 1] = v
    end
  end

  for _ = 1, NS do spawn_sender() end
  for _ = 1, NR do spawn_receiver() end
  while true do
    local nsenders = 0
    for i = #live, 1, -1 do
      local e = live[i]
      if e.h:is_finished() then
        table.remove(live, i)
        settle(e)
        if e.kind == "r" then spawn_receiver() end
      elseif e.kind == "s" then
        nsenders = nsenders + 1
      end
    end
    while remaining > 0 and nsenders < NS do
      spawn_sender()
      nsenders = nsenders + 1
    end
    if remaining == 0 and nsenders == 0 then break end
    if math.random() < 0.5 then tidal.yield() else tidal.sleep(math.random() * 0.001) end
    if #live > 0 and math.random() < P_ABORT then
      local e = live[math.random(#live)]
      if not e.h:is_finished() then
        e.h:abort()
        if e.kind == "s" then
          st.aborted_senders = st.aborted_senders + 1
        else
          st.aborted_receivers = st.aborted_receivers + 1
        end
      end
    end
  end
  -- every message is sent: end the stream; the receivers drain it
  tx:close()
  spawn_receiver()
  for _, e in ipairs(live) do settle(e) end

  -- check
  local count, total_recv, disorder = {}, 0, 0
  for _, got in ipairs(received) do
    local last = {}
    for _, m in ipairs(got) do
      count[m] = (count[m] or 0) + 1
      total_recv = total_recv + 1
      local s, seq = m // BASE, m % BASE
      if last[s] and seq <= last[s] then disorder = disorder + 1 end
      last[s] = seq
    end
  end
  local total_sent, lost, dup, unsent = 0, 0, 0, 0
  for s, k in pairs(sent_by) do
    total_sent = total_sent + k
    for seq = 1, k do
      local c = count[s * BASE + seq] or 0
      if c == 0 then lost = lost + 1 elseif c > 1 then dup = dup + c - 1 end
    end
  end
  for m in pairs(count) do -- delivered, though its send did not complete
    local s, seq = m // BASE, m % BASE
    if not sent_by[s] or seq > sent_by[s] then unsent = unsent + 1 end
  end
  st.messages, st.sent, st.received = N, total_sent, total_recv
  st.lost, st.duplicated, st.cancelled_but_delivered, st.disorder = lost, dup, unsent, disorder
  st.seconds = tidal.now() - start
  return st
end

-- A watchdog that needs nothing of the runtime it guards: a pool thread
-- that waits (in a runtime of its own) for the stress to end or LIMIT
-- seconds to pass, and then says so.
local function watchdog(fire, done, limit)
  local t = require("tidal")
  local fired = t.run(function()
    return t.select({ function() t.sleep(limit) end, function() done:recv() end }) == 1
  end)
  if fired then fire:send(true) end
  return fired
end

return tidal.run({ workers = WORKERS }, function()
  local done_tx, done_rx = tidal.oneshot()
  local fire_tx, fire_rx = tidal.oneshot()
  local work = tidal.spawn(stress)
  local dog = tidal.spawn_blocking(watchdog, fire_tx, done_rx, LIMIT)
  local key, ok, st = tidal.select({
    function() return work:join() end,
    function() return fire_rx:recv() end,
  })
  if key == 2 then -- where worker 0's tasks wait, then stop
    local where = {}
    for _, t in ipairs(tidal.tasks()) do
      where[#where + 1] = ("%s %s in %s at %s"):format(t.name or t.id, t.state,
        tostring(t.waiting), tostring(t.where))
    end
    work:abort()
    work:join()
    ok, st = false, "the watchdog fired after " .. LIMIT .. " s; tasks of worker 0: "
      .. table.concat(where, "; ")
  end
  done_tx:send(true)
  dog:await()
  if not ok then return { error = tostring(st) } end
  return st
end)
]==]

local KEYS = { "messages", "sent", "received", "lost", "duplicated", "cancelled_but_delivered",
  "disorder", "senders", "receivers", "aborted_senders", "aborted_receivers", "seconds" }

local function run_stress(n, workers, seed, limit)
  if not support.can_spawn then -- (ThreadSanitizer) in this process
    return assert(load(PROGRAM))(n, workers, seed, limit)
  end
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write("local st = assert(load(", ("%q"):format(PROGRAM), "))(", n, ", ", workers, ", ", seed,
    ", ", limit - 10, ")\nfor k, v in pairs(st) do print(k .. '=' .. tostring(v)) end\n")
  f:close()
  local p = assert(io.popen(("timeout -s KILL %d lua5.4 %s 2>&1"):format(limit, path), "r"))
  local out = p:read("a")
  local ok, how, code = p:close()
  os.remove(path)
  assert(ok, ("the stress run did not finish (%s %s; watchdog %d s):\n%s"):format(how, code, limit,
    out:sub(-2000)))
  local st = {}
  for k, v in out:gmatch("(%w[%w_]*)=([^\n]*)") do st[k] = tonumber(v) or v end
  if next(st) == nil then st.error = out end
  return st
end

describe("stress across workers", function()
  it("random aborts of senders and receivers lose and duplicate nothing", function()
    local n = tonumber(os.getenv("TIDAL_STRESS_MESSAGES")) or support.scaled(100000)
    local seed = tonumber(os.getenv("TIDAL_STRESS_SEED")) or os.time()
    local st = run_stress(n, 2, seed, math.max(120, n // 2000))
    local line = {}
    for _, k in ipairs(KEYS) do line[#line + 1] = k .. "=" .. tostring(st[k]) end
    io.stderr:write("\nstress_workers (seed ", seed, "): ", table.concat(line, " "), "\n")
    assert(st.error == nil, st.error)
    assert.equal(n, st.messages)
    assert.equal(n, st.sent) -- every message was sent in the end
    assert.equal(n, st.received)
    assert.equal(0, st.lost)
    assert.equal(0, st.duplicated)
    assert.equal(0, st.cancelled_but_delivered)
    assert.equal(0, st.disorder)
  end)
end)
