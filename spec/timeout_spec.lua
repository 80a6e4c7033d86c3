local tidal = require("tidal")
local support = require("support")

local closer = support.closer

describe("tidal.timeout", function()
  it("returns true and fn's results when fn finishes in time", function()
    local r = support.run(function()
      return table.pack(tidal.timeout(5, function(a, b)
        tidal.sleep(0.01)
        return a + b, "x", nil
      end, 1, 2))
    end)
    assert.are.equal(4, r.n)
    assert.is_true(r[1])
    assert.are.equal(3, r[2])
    assert.are.equal("x", r[3])
    assert.is_nil(r[4])
  end)

  it("on expiry returns false, err.kind 'timeout', withdraws the sleep's timer and runs <close>", function()
    local log = {}
    local r = support.run(function()
      tidal.yield()
      local timers = tidal.stats().timers
      local t0 = tidal.now()
      local ok, err = tidal.timeout(0.05, function()
        local c <close> = closer(log, "closed")
        tidal.sleep(30)
        log[#log + 1] = "not reached"
      end)
      return { ok = ok, err = err, dt = tidal.now() - t0, timers = tidal.stats().timers - timers }
    end)
    assert.is_false(r.ok)
    assert.are.equal("timeout", r.err.kind)
    assert.matches("timed out", tostring(r.err))
    assert.are.same({ "closed" }, log)
    assert.is_true(r.dt >= 0.05 and r.dt < 5, "took " .. r.dt)
    assert.are.equal(0, r.timers, "the sleep's timer and the scope's timer are withdrawn")
  end)

  it("a recv that timed out leaves the channel's messages in place", function()
    local r = support.run(function()
      local tx, rx = tidal.channel()
      local ok, err = tidal.timeout(0.02, function() return rx:recv() end)
      tx:send("m1")
      tx:send("m2")
      local a = rx:recv()
      local b = rx:recv()
      return { ok, err.kind, a, b }
    end)
    assert.are.same({ false, "timeout", "m1", "m2" }, r)
  end)

  it("a recv that timed out does not take a message sent afterwards", function()
    local r = support.run(function()
      local tx, rx = tidal.channel()
      local other = tidal.spawn(function()
        tidal.sleep(0.1)
        return rx:recv()
      end)
      local ok = tidal.timeout(0.02, function() return rx:recv() end)
      tx:send("only")
      return { ok, other:await() }
    end)
    assert.are.same({ false, "only" }, r)
  end)

  it("a recv woken by a send whose deadline passes before it runs passes the message on", function()
    local r = support.run(function()
      local tx, rx = tidal.channel()
      local a_ok, a_v, b_v
      local a = tidal.spawn(function() a_ok, a_v = tidal.timeout(0.002, rx.recv, rx) end)
      local b = tidal.spawn(function() b_v = rx:recv() end)
      tidal.yield()
      -- many ready tasks ahead of the receiver: the scheduler polls its
      -- timers before the receiver's turn comes
      for _ = 1, 200 do tidal.spawn(function() end) end
      local t0 = tidal.now()
      while tidal.now() - t0 < 0.004 do end -- past the receiver's deadline
      tx:send("m") -- wakes the first receiver
      a:join()
      b:join()
      return { a_got = a_ok == true and a_v == "m", b_got = b_v == "m", left = rx:try_recv() }
    end)
    assert.is_nil(r.left)
    assert.is_true(r.a_got ~= r.b_got, "received by the timed-out receiver: " .. tostring(r.a_got)
      .. ", by the next one: " .. tostring(r.b_got))
  end)

  it("a send that timed out on a full channel delivers nothing", function()
    local r = support.run(function()
      local tx, rx = tidal.channel(1)
      tx:send("first")
      local ok, err = tidal.timeout(0.02, function() return tx:send("late") end)
      local a = rx:recv()
      local _, e = rx:try_recv()
      return { ok, err.kind, a, e.kind }
    end)
    assert.are.same({ false, "timeout", "first", "empty" }, r)
  end)

  it("a lock wait that timed out does not leak the lock", function()
    local r = support.run(function()
      local m = tidal.mutex()
      local holder = tidal.spawn(function()
        local g <close> = m:lock()
        tidal.sleep(0.05)
      end)
      tidal.yield()
      local ok, err = tidal.timeout(0.01, function() return m:lock() end)
      holder:await()
      return { ok, err.kind, m:is_locked() }
    end)
    assert.are.same({ false, "timeout", false }, r)
  end)

  it("an await that timed out leaves the awaited task running", function()
    local r = support.run(function()
      local h = tidal.spawn(function() tidal.sleep(0.05); return "done" end)
      local ok = tidal.timeout(0.01, function() return h:await() end)
      return { ok, h:is_finished(), h:await() }
    end)
    assert.are.same({ false, false, "done" }, r)
  end)

  it("propagates errors raised by fn unchanged", function()
    local e = { "mine" }
    local r = support.run(function()
      local ok1, err1 = pcall(tidal.timeout, 1, function() error(e) end)
      local ok2, err2 = pcall(tidal.timeout, 1, function()
        tidal.sleep(0.01)
        error("plain", 0)
      end)
      return { ok1, rawequal(err1, e), ok2, err2 }
    end)
    assert.are.same({ false, true, false, "plain" }, r)
  end)

  it("nested: an inner shorter timeout expires alone and the outer continues", function()
    local r = support.run(function()
      local inner_ok, inner_err
      local ok, v = tidal.timeout(5, function()
        inner_ok, inner_err = tidal.timeout(0.02, function() tidal.sleep(30) end)
        tidal.sleep(0.01) -- the outer scope still allows waiting
        return "outer done"
      end)
      return { ok, v, inner_ok, inner_err.kind }
    end)
    assert.are.same({ true, "outer done", false, "timeout" }, r)
  end)

  it("nested: an outer shorter timeout unwinds through the inner one", function()
    local log = {}
    local r = support.run(function()
      local t0 = tidal.now()
      local ok, err = tidal.timeout(0.05, function()
        local res = table.pack(tidal.timeout(10, function()
          local c <close> = closer(log, "inner closed")
          tidal.sleep(30)
        end))
        log[#log + 1] = "inner returned " .. res.n
      end)
      return { ok = ok, err = err, dt = tidal.now() - t0 }
    end)
    assert.is_false(r.ok)
    assert.are.equal("timeout", r.err.kind)
    assert.matches("0%.05", tostring(r.err), "the outer scope's timeout")
    assert.are.same({ "inner closed" }, log)
    assert.is_true(r.dt < 5, "took " .. r.dt)
  end)

  it("with 0 or a negative duration runs fn, whose first wait raises the timeout", function()
    local r = support.run(function()
      local out = {}
      for _, s in ipairs({ 0, -1 }) do
        local ran, after = false, false
        local ok, err = tidal.timeout(s, function()
          ran = true
          tidal.yield()
          after = true
        end)
        out[#out + 1] = { ran, after, ok, err.kind }
      end
      -- fn that never waits finishes normally
      out[#out + 1] = { tidal.timeout(0, function() return "quick" end) }
      return out
    end)
    assert.are.same({ { true, false, false, "timeout" }, { true, false, false, "timeout" }, { true, "quick" } }, r)
  end)

  it("with 0 still lets an operation that need not wait complete (as Tokio polls once)", function()
    local r = support.run(function()
      local tx, rx = tidal.channel()
      local ok, sent = tidal.timeout(0, function() return tx:send("x") end)
      local ok2, err2 = tidal.timeout(0, function() return rx:recv(), rx:recv() end)
      return { ok, sent, rx:try_recv() == nil, ok2, err2.kind }
    end)
    -- the send completed; the first recv took "x" and the second, which had
    -- to wait, raised the timeout
    assert.are.same({ true, true, true, false, "timeout" }, r)
  end)

  it("with nil or math.huge has no limit and arms no timer", function()
    local r = support.run(function()
      local out = {}
      for _, s in ipairs({ "nil", math.huge }) do
        local base, timers = tidal.stats().timers, nil
        local ok, v = tidal.timeout(s ~= "nil" and s or nil, function()
          timers = tidal.stats().timers - base
          tidal.sleep(0.03)
          return "slept"
        end)
        out[#out + 1] = { ok, v, timers }
      end
      return out
    end)
    assert.are.same({ { true, "slept", 0 }, { true, "slept", 0 } }, r)
  end)

  it("rejects bad arguments", function()
    support.run(function()
      for _, s in ipairs({ "1", {}, true, 0 / 0 }) do
        local ok, err = pcall(tidal.timeout, s, function() end)
        assert.is_false(ok, tostring(s))
        assert.matches("tidal.timeout: seconds must be a number", err)
      end
      for _, fn in ipairs({ 1, "f", {} }) do
        local ok, err = pcall(tidal.timeout, 1, fn)
        assert.is_false(ok)
        assert.matches("tidal.timeout", err)
      end
      local ok = pcall(tidal.timeout, 1)
      assert.is_false(ok)
    end)
    local ok, err = pcall(tidal.timeout, 1, function() end)
    assert.is_false(ok)
    assert.matches("tidal.timeout: not inside a tidal task", err)
  end)

  it("is sticky: fn catching the timeout and waiting again gets it again", function()
    local r = support.run(function()
      local kinds = {}
      local ok, err = tidal.timeout(0.02, function()
        for _ = 1, 3 do
          local ok2, e = pcall(tidal.sleep, 30)
          kinds[#kinds + 1] = ok2 and "slept" or e.kind
        end
        tidal.sleep(30)
      end)
      return { ok, err.kind, kinds }
    end)
    assert.are.same({ false, "timeout", { "timeout", "timeout", "timeout" } }, r)
  end)

  it("stops applying once its scope is left: later waits work", function()
    local r = support.run(function()
      local ok = tidal.timeout(0.01, function() tidal.sleep(30) end)
      local t0 = tidal.now()
      tidal.sleep(0.03)
      local slept = tidal.now() - t0
      local tx, rx = tidal.channel()
      tidal.spawn(function() tidal.sleep(0.01); tx:send("late") end)
      return { ok, slept >= 0.03, rx:recv() }
    end)
    assert.are.same({ false, true, "late" }, r)
  end)

  it("an expired scope's deadline does not fire after fn returned in time", function()
    local r = support.run(function()
      local base = tidal.stats().timers
      local ok = tidal.timeout(0.02, function() return "fast" end)
      local armed = tidal.stats().timers - base
      tidal.sleep(0.05) -- past the deadline: nothing may fire
      return { ok, armed }
    end)
    assert.are.same({ true, 0 }, r)
  end)

  it("times out concurrent tasks independently", function()
    local r = support.run(function()
      local hs = {}
      for i = 1, 10 do
        hs[i] = tidal.spawn(function()
          local ok = tidal.timeout(i % 2 == 0 and 0.02 or 5, function()
            tidal.sleep(i % 2 == 0 and 5 or 0.03)
          end)
          return ok
        end)
      end
      local out = {}
      for i = 1, 10 do out[i] = hs[i]:await() end
      return out
    end)
    for i = 1, 10 do assert.are.equal(i % 2 == 1, r[i], "task " .. i) end
  end)
end)
