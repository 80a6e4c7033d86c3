local tidal = require("tidal")
local support = require("support")

local closer = support.closer

local function drain(rx)
  local out = {}
  while true do
    local v = rx:try_recv()
    if v == nil then return out end
    out[#out + 1] = v
  end
end

describe("tidal.select", function()
  it("returns the key and results of the first branch to finish", function()
    local r = support.run(function()
      return table.pack(tidal.select({
        function() tidal.sleep(5); return "slow" end,
        function() tidal.sleep(0.01); return "fast", 2, nil end,
      }))
    end)
    assert.are.equal(4, r.n)
    assert.are.same({ 2, "fast", 2 }, { r[1], r[2], r[3] })
  end)

  it("cancels the losers, which have unwound before select returns", function()
    local log = {}
    local r = support.run(function()
      tidal.yield()
      local timers = tidal.stats().timers
      local alive = tidal.stats().alive
      local t0 = tidal.now()
      local k = tidal.select({
        function()
          local c <close> = closer(log, "loser 1 unwound")
          tidal.sleep(30)
        end,
        function()
          tidal.sleep(0.02)
          return "winner"
        end,
        function()
          local c <close> = closer(log, "loser 3 unwound")
          tidal.sleep(30)
        end,
      })
      -- nothing left behind: no timer, no task
      return {
        k = k, snapshot = { table.unpack(log) }, dt = tidal.now() - t0,
        timers = tidal.stats().timers - timers, alive = tidal.stats().alive - alive,
      }
    end)
    assert.are.equal(2, r.k)
    table.sort(r.snapshot)
    assert.are.same({ "loser 1 unwound", "loser 3 unwound" }, r.snapshot)
    assert.is_true(r.dt < 5, "took " .. r.dt)
    assert.are.equal(0, r.timers)
    assert.are.equal(0, r.alive)
  end)

  it("lets a losing branch wait while it unwinds before select returns", function()
    local log = {}
    local r = support.run(function()
      local k = tidal.select({
        function()
          local c <close> = setmetatable({}, {
            __close = function()
              pcall(tidal.sleep, 0.01) -- cancellation is sticky: raises at once
              log[#log + 1] = "cleanup done"
            end,
          })
          tidal.sleep(30)
        end,
        function() tidal.sleep(0.01); return "w" end,
      })
      return { k, { table.unpack(log) } }
    end)
    assert.are.same({ 2, { "cleanup done" } }, r)
  end)

  it("lets an already finished first branch win; later branches never start", function()
    local started = false
    local r = support.run(function()
      local res = table.pack(tidal.select({
        function() return "at once" end,
        function() started = true; return "second" end,
      }))
      tidal.sleep(0.01)
      return res
    end)
    assert.are.same({ 1, "at once", n = 2 }, r)
    assert.is_false(started)
  end)

  it("lets a ready first op branch win; later branches never start", function()
    local started = false
    local r = support.run(function()
      local tx, rx = tidal.channel()
      tx:send("ready")
      local res = table.pack(tidal.select({
        rx:recv_op(),
        function() started = true end,
      }))
      tidal.sleep(0.01)
      return res
    end)
    assert.are.same({ 1, "ready", n = 2 }, r)
    assert.is_false(started)
  end)

  it("lets a branch that finishes before the next starts win over a ready op after it", function()
    local r = support.run(function()
      local tx, rx = tidal.channel()
      tx:send("kept")
      local k, v = tidal.select({
        function() return "first" end,
        rx:recv_op(),
      })
      return { k, v, drain(rx) }
    end)
    assert.are.same({ 1, "first", { "kept" } }, r)
  end)

  it("supports keyed branches", function()
    local r = support.run(function()
      return table.pack(tidal.select({
        slow = function() tidal.sleep(5) end,
        quick = function() tidal.sleep(0.01); return "q" end,
      }))
    end)
    assert.are.same({ "quick", "q", n = 2 }, r)
  end)

  it("accepts callable tables as branches", function()
    local r = support.run(function()
      local branch = setmetatable({}, { __call = function() return "called" end })
      return { tidal.select({ branch }) }
    end)
    assert.are.same({ 1, "called" }, r)
  end)

  describe("op branches", function()
    it("rx:recv_op() alone waits for a message", function()
      local r = support.run(function()
        local tx, rx = tidal.channel()
        tidal.spawn(function() tidal.sleep(0.01); tx:send("late") end)
        return { tidal.select({ rx:recv_op() }) }
      end)
      assert.are.same({ 1, "late" }, r)
    end)

    it("rx:recv_op() on a closed channel finishes with no value", function()
      local r = support.run(function()
        local tx, rx = tidal.channel()
        tx:close()
        return table.pack(tidal.select({ rx:recv_op(), tidal.sleep_op(5) }))
      end)
      assert.are.same({ 1, n = 1 }, r)
    end)

    it("tidal.sleep_op(s) wins over a recv that gets nothing; the recv is withdrawn", function()
      local r = support.run(function()
        local tx, rx = tidal.channel()
        local t0 = tidal.now()
        local res = table.pack(tidal.select({ rx:recv_op(), tidal.sleep_op(0.05) }))
        local dt = tidal.now() - t0
        tx:send("after")
        return { res = res, dt = dt, left = drain(rx) }
      end)
      assert.are.same({ 2, n = 1 }, r.res)
      assert.is_true(r.dt >= 0.05 and r.dt < 5, "took " .. r.dt)
      assert.are.same({ "after" }, r.left)
    end)

    it("tx:send_op(v) sends when there is room, and waits while the channel is full", function()
      local r = support.run(function()
        local tx, rx = tidal.channel(1)
        local k1, ok1 = tidal.select({ tx:send_op("a") })
        -- full now: the send waits until the receiver makes room
        tidal.spawn(function() tidal.sleep(0.01); rx:recv() end)
        local k2, ok2 = tidal.select({ tx:send_op("b"), tidal.sleep_op(5) })
        return { k1, ok1, k2, ok2, drain(rx) }
      end)
      assert.are.same({ 1, true, 1, true, { "b" } }, r)
    end)

    it("a losing send_op delivers nothing", function()
      local r = support.run(function()
        local tx, rx = tidal.channel(1)
        tx:send("full")
        local k = tidal.select({ tx:send_op("lost"), tidal.sleep_op(0.02) })
        return { k, drain(rx) }
      end)
      assert.are.same({ 2, { "full" } }, r)
    end)

    it("tx:send_op(v) on a channel whose receiver closed gives nil, 'closed'", function()
      local r = support.run(function()
        local tx, rx = tidal.channel(1)
        rx:close()
        local k, ok, err = tidal.select({ tx:send_op("x") })
        return { k, ok, err.kind }
      end)
      assert.are.same({ 1, nil, "closed" }, r)
    end)

    it("m:lock_op() gives a guard that holds the mutex", function()
      local r = support.run(function()
        local m = tidal.mutex()
        local k, g = tidal.select({ m:lock_op() })
        local held = m:is_locked()
        g:release()
        return { k, held, m:is_locked() }
      end)
      assert.are.same({ 1, true, false }, r)
    end)

    it("a waiting m:lock_op() wins when the lock is released", function()
      local r = support.run(function()
        local m = tidal.mutex()
        local g = m:lock()
        tidal.spawn(function() tidal.sleep(0.01); g:release() end)
        local k, g2 = tidal.select({ tidal.sleep_op(5), m:lock_op() })
        local held = g2:is_held()
        g2:release()
        return { k, held, m:is_locked() }
      end)
      assert.are.same({ 2, true, false }, r)
    end)

    it("a losing m:lock_op() does not take the lock", function()
      local r = support.run(function()
        local m = tidal.mutex()
        local g = m:lock()
        local k = tidal.select({ m:lock_op(), tidal.sleep_op(0.02) })
        g:release()
        return { k, m:is_locked() }
      end)
      assert.are.same({ 2, false }, r)
    end)

    it("mixes op branches and functions", function()
      local r = support.run(function()
        local tx, rx = tidal.channel()
        local k, v = tidal.select({
          rx:recv_op(),
          function() tidal.sleep(0.01); tx:send("from branch 2"); tidal.sleep(5) end,
          tidal.sleep_op(5),
        })
        return { k, v }
      end)
      assert.are.same({ 1, "from branch 2" }, r)
    end)

    it("an op that is ready once an earlier function branch waits completes in the selecting task", function()
      local log = {}
      local r = support.run(function()
        local tx, rx = tidal.channel()
        tx:send("ready")
        local k, v = tidal.select({
          function()
            local c <close> = closer(log, "function branch unwound")
            tidal.sleep(30)
          end,
          rx:recv_op(),
        })
        return { k, v, { table.unpack(log) }, drain(rx) }
      end)
      assert.are.same({ 2, "ready", { "function branch unwound" }, {} }, r)
    end)

    it("an op is callable like the method it stands for", function()
      local r = support.run(function()
        local tx, rx = tidal.channel()
        local send = tx:send_op("v")
        local recv = rx:recv_op()
        assert.is_true(send())
        return { recv(), tostring(recv):match("tidal.Op") ~= nil }
      end)
      assert.are.same({ "v", true }, r)
    end)
  end)

  describe("ops used again and again", function()
    it("work in every select, call and tostring, before and after select caches them", function()
      local r = support.run(function()
        local tx, rx = tidal.channel()
        local recv, send = rx:recv_op(), tx:send_op("s")
        local out = {}
        for i = 1, 5 do
          tx:send(i)
          local k, v = tidal.select({ recv, tidal.sleep_op(5) })
          out[#out + 1] = k .. ":" .. tostring(v)
        end
        assert.is_true(send())
        out[#out + 1] = recv()
        out[#out + 1] = tostring(recv):match("^tidal.Op") or tostring(recv)
        local k = tidal.select({ send })
        out[#out + 1] = k .. ":" .. tostring(recv())
        return table.concat(out, " ")
      end)
      assert.are.equal("1:1 1:2 1:3 1:4 1:5 s tidal.Op 1:s", r)
    end)

    it("give every kind of value, in order, and see the channel's end", function()
      local r = support.run(function()
        local tx, rx = tidal.channel()
        local recv = rx:recv_op()
        local t = {}
        local sent = { 1, "two", 3.5, t, false, true, 2 ^ 63, math.mininteger }
        local out = {}
        for _, v in ipairs(sent) do tx:send(v) end
        for i = 1, #sent do
          local k, v = tidal.select({ recv, tidal.sleep_op(5) })
          out[i] = k == 1 and rawequal(v, sent[i]) and math.type(v) == math.type(sent[i])
        end
        tx:close()
        local k, v = tidal.select({ recv, tidal.sleep_op(5) })
        out[#out + 1] = k == 1 and v == nil
        return out
      end)
      assert.are.same({ true, true, true, true, true, true, true, true, true }, r)
    end)

    it("once collected, leave nothing behind that would take another object for an op", function()
      -- a reused op is remembered as checked until its finalizer runs; the
      -- memory of a collected op then serves other objects, which select
      -- must still refuse (under ASan, any mix-up is a crash)
      local r = support.run(function()
        local tx, rx = tidal.channel()
        local refused, won = 0, 0
        for round = 1, support.scaled(300) do
          local op = rx:recv_op()
          for _ = 1, 3 do
            tx:send(round)
            if tidal.select({ op }) == 1 then won = won + 1 end
          end
          op = nil
          collectgarbage()
          collectgarbage()
          -- (not a Receiver: it is callable, a branch that receives)
          local others = { tidal.notify(), tidal.mutex(), (tidal.channel()),
            tidal.semaphore(1) }
          for _, o in ipairs(others) do
            local ok, err = pcall(tidal.select, { o })
            if not ok and err:match("branch 1 is a userdata, not a function") then
              refused = refused + 1
            end
          end
        end
        return { won = won, refused = refused, rounds = support.scaled(300) }
      end)
      assert.are.equal(3 * r.rounds, r.won)
      assert.are.equal(4 * r.rounds, r.refused)
    end)
  end)

  it("takes no other userdata for a collected op whose memory it got (child process)", function()
    if not support.can_spawn then return end
    -- userdata of another library, made where collected ops were (same
    -- sizes, memory not cleared): select must refuse each of them
    local out, status = support.lua([[
      local tidal = require("tidal")
      local hooks = require("tidal.testhooks")
      local refused, tried = 0, 0
      tidal.run(function()
        local tx, rx = tidal.channel()
        for _ = 1, 40 do
          local ops = {}
          for i = 1, 20 do ops[i] = i % 2 == 0 and rx:recv_op() or tx:send_op(i) end
          for i, op in ipairs(ops) do
            for _ = 1, 2 do
              if i % 2 == 0 then tx:send(i) end -- (a value for the recv op)
              tidal.select({ op })
              if i % 2 == 1 then rx:try_recv() end -- (what the send op sent)
            end
          end
          ops = nil
          collectgarbage()
          collectgarbage()
          for size = 8, 64, 8 do
            for nuv = 0, 2 do
              local u = hooks.foreign(size, nuv)
              tried = tried + 1
              local ok, err = pcall(tidal.select, { u })
              if not ok and tostring(err):match("branch 1 is a userdata, not a function") then
                refused = refused + 1
              end
            end
          end
        end
      end)
      print("refused " .. refused .. " of " .. tried)
    ]], 60)
    assert.are.equal(0, status, out)
    assert.matches("refused 960 of 960", out)
  end)

  describe("two recv branches", function()
    it("both ready at the start: exactly one message is taken", function()
      local r = support.run(function()
        local tx1, rx1 = tidal.channel()
        local tx2, rx2 = tidal.channel()
        tx1:send("a")
        tx2:send("b")
        local k, v = tidal.select({ rx1:recv_op(), rx2:recv_op() })
        return { k, v, drain(rx1), drain(rx2) }
      end)
      assert.are.same({ 1, "a", {}, { "b" } }, r)
    end)

    it("ops that become ready in the same turn: exactly one message is taken", function()
      local r = support.run(function()
        local tx1, rx1 = tidal.channel()
        local tx2, rx2 = tidal.channel()
        tidal.spawn(function()
          tidal.sleep(0.01)
          tx1:send("a")
          tx2:send("b")
        end)
        local k, v = tidal.select({ rx1:recv_op(), rx2:recv_op() })
        local left = {}
        for _, x in ipairs(drain(rx1)) do left[#left + 1] = x end
        for _, x in ipairs(drain(rx2)) do left[#left + 1] = x end
        return { k = k, v = v, left = left }
      end)
      assert.are.equal(r.k == 1 and "a" or "b", r.v)
      assert.are.same({ r.k == 1 and "b" or "a" }, r.left, "the losing branch's message was lost")
    end)

    it("function branches that become ready in the same turn: exactly one message is taken", function()
      local r = support.run(function()
        local tx1, rx1 = tidal.channel()
        local tx2, rx2 = tidal.channel()
        tidal.spawn(function()
          tidal.sleep(0.01)
          tx1:send("a")
          tx2:send("b")
        end)
        local k, v = tidal.select({
          function() return rx1:recv() end,
          function() return rx2:recv() end,
        })
        local left = {}
        for _, x in ipairs(drain(rx1)) do left[#left + 1] = x end
        for _, x in ipairs(drain(rx2)) do left[#left + 1] = x end
        return { k = k, v = v, left = left }
      end)
      assert.are.equal(r.k == 1 and "a" or "b", r.v)
      assert.are.same({ r.k == 1 and "b" or "a" }, r.left, "the losing branch's message was lost")
    end)
  end)

  it("propagates an error of the winning branch after the others were cancelled", function()
    local log = {}
    local e = { "branch error" }
    local r = support.run(function()
      local ok, err = pcall(tidal.select, {
        function()
          local c <close> = closer(log, "other unwound")
          tidal.sleep(30)
        end,
        function() tidal.sleep(0.01); error(e) end,
      })
      return { ok = ok, same = rawequal(err, e), log = { table.unpack(log) } }
    end)
    assert.is_false(r.ok)
    assert.is_true(r.same, "the error keeps its identity")
    assert.are.same({ "other unwound" }, r.log)
  end)

  it("propagates an error raised at once by the first branch; later branches never start", function()
    local started = false
    local r = support.run(function()
      local ok, err = pcall(tidal.select, {
        function() error("at once", 0) end,
        function() started = true end,
      })
      return { ok, err }
    end)
    assert.are.same({ false, "at once" }, r)
    assert.is_false(started)
  end)

  it("cancels every branch when the selecting task is aborted while waiting", function()
    local log = {}
    local r = support.run(function()
      local before = #tidal.tasks()
      local h = tidal.spawn(function()
        return tidal.select({
          function() local c <close> = closer(log, "b1"); tidal.sleep(30) end,
          function() local c <close> = closer(log, "b2"); tidal.sleep(30) end,
        })
      end)
      tidal.sleep(0.01)
      h:abort()
      local ok, err = h:join()
      return { ok = ok, kind = err.kind, log = { table.unpack(log) }, alive = #tidal.tasks() - before }
    end)
    assert.is_false(r.ok)
    assert.are.equal("cancelled", r.kind)
    table.sort(r.log)
    assert.are.same({ "b1", "b2" }, r.log)
    assert.are.equal(0, r.alive, "no branch task is left")
  end)

  it("a select aborted right after its recv branch was woken loses no message", function()
    local r = support.run(function()
      local tx, rx = tidal.channel()
      local h = tidal.spawn(function() return tidal.select({ rx:recv_op(), tidal.sleep_op(30) }) end)
      tidal.yield()
      tx:send("m") -- wakes the recv branch ...
      h:abort()    -- ... and the selecting task is cancelled in the same turn
      local ok, kind_or_key, v = h:join()
      local left = drain(rx)
      return { ok = ok, key = kind_or_key, v = v, left = left }
    end)
    -- either the select returned the message, or the message is still there
    if r.ok then
      assert.are.same({ 1, "m" }, { r.key, r.v })
      assert.are.same({}, r.left)
    else
      assert.are.same({ "m" }, r.left, "the message was taken by a cancelled select")
    end
  end)

  it("a select whose recv branch finished loses no message when cancelled before it runs", function()
    local r = support.run(function()
      local tx, rx = tidal.channel()
      local got
      local h = tidal.spawn(function()
        got = table.pack(tidal.select({ rx:recv_op(), tidal.sleep_op(30) }))
      end)
      tidal.yield()
      -- let the branch take the message and finish, but not the selecting task
      local waker = tidal.spawn(function()
        tx:send("m")
        tidal.yield() -- the branch runs, takes "m", and wakes the selecting task
        h:abort()     -- which is cancelled before it runs again
      end)
      waker:await()
      local ok = h:join()
      return { ok = ok, got = got, left = drain(rx) }
    end)
    local delivered = (r.got and r.got[2] == "m") and 1 or 0
    assert.are.equal(1, delivered + #r.left, "the message was lost")
  end)

  it("cancels its branches when a timeout around it expires", function()
    local log = {}
    local r = support.run(function()
      local ok, err = tidal.timeout(0.02, function()
        return tidal.select({
          function() local c <close> = closer(log, "b1"); tidal.sleep(30) end,
          tidal.sleep_op(30),
        })
      end)
      return { ok, err.kind, { table.unpack(log) } }
    end)
    assert.are.same({ false, "timeout", { "b1" } }, r)
  end)

  it("rejects bad arguments", function()
    support.run(function()
      local before = #tidal.tasks()
      local ok, err = pcall(tidal.select, {})
      assert.is_false(ok)
      assert.matches("tidal.select: no branches given", err)
      ok, err = pcall(tidal.select, { function() end, 42 })
      assert.is_false(ok)
      assert.matches("tidal.select: branch 2 is a number, not a function", err)
      ok, err = pcall(tidal.select, { a = "x" })
      assert.is_false(ok)
      assert.matches("tidal.select: branch a is a string, not a function", err)
      ok, err = pcall(tidal.select, nil)
      assert.is_false(ok)
      assert.matches("tidal.select: expected a table of functions", err)
      -- nothing was started by the rejected calls
      assert.are.equal(before, #tidal.tasks())
    end)
    local ok, err = pcall(tidal.select, { function() end })
    assert.is_false(ok)
    assert.matches("tidal.select: not inside a tidal task", err)
  end)

  it("runs many selects in a row without leaking tasks", function()
    local r = support.run(function()
      local tx, rx = tidal.channel()
      local alive = tidal.stats().alive
      local n = support.scaled(2000)
      local got = 0
      tidal.spawn(function()
        for i = 1, n do
          tx:send(i)
          if i % 7 == 0 then tidal.yield() end
        end
      end)
      for _ = 1, n do
        local k = tidal.select({ rx:recv_op(), function() tidal.sleep(5) end })
        if k == 1 then got = got + 1 end
      end
      tidal.yield()
      return { got = got, n = n, leaked = tidal.stats().alive - alive }
    end)
    assert.are.equal(r.n, r.got)
    assert.are.equal(0, r.leaked)
  end)
end)
