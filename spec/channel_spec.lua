local tidal = require("tidal")
local support = require("support")

-- Drains every value currently buffered in rx without waiting.
local function drain(rx)
  local out = {}
  while true do
    local v, err = rx:try_recv()
    if v == nil then return out, err end
    out[#out + 1] = v
  end
end

local closer = support.closer

describe("tidal.channel", function()
  describe("order and capacity", function()
    it("delivers the values of an unbounded channel in FIFO order", function()
      local got = support.run(function()
        local tx, rx = tidal.channel()
        for i = 1, 10 do assert.is_true(tx:send(i)) end
        tx:close()
        local out = {}
        for v in rx do out[#out + 1] = v end
        return out
      end)
      assert.are.same({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }, got)
    end)

    it("delivers the values of a bounded channel in FIFO order between two tasks", function()
      local got = support.run(function()
        local tx, rx = tidal.channel(3)
        local producer = tidal.spawn(function()
          for i = 1, 50 do assert.is_true(tx:send(i)) end
          tx:close()
        end)
        local out = {}
        for v in rx do out[#out + 1] = v end
        producer:await()
        return out
      end)
      local want = {}
      for i = 1, 50 do want[i] = i end
      assert.are.same(want, got)
    end)

    it("keeps order when an unbounded buffer grows past 16 values while wrapped", function()
      local got = support.run(function()
        local tx, rx = tidal.channel()
        local out = {}
        -- move the ring's head away from slot 1 so that the growth copies a
        -- wrapped ring
        for i = 1, 10 do tx:send(-i) end
        for _ = 1, 10 do out[#out + 1] = rx:recv() end
        for i = 1, 100 do tx:send(i) end
        assert.are.equal(100, #rx)
        for _ = 1, 100 do out[#out + 1] = rx:recv() end
        return out
      end)
      local want = {}
      for i = 1, 10 do want[i] = -i end
      for i = 1, 100 do want[10 + i] = i end
      assert.are.same(want, got)
    end)

    it("makes send wait while a bounded channel is full and resume when room appears", function()
      local r = support.run(function()
        local tx, rx = tidal.channel(2)
        local log = {}
        assert.is_true(tx:send("a"))
        assert.is_true(tx:send("b"))
        local h = tidal.spawn(function()
          log[#log + 1] = "sending c"
          local ok = tx:send("c")
          log[#log + 1] = "sent c"
          return ok
        end)
        tidal.sleep(0.02)
        local waited = not h:is_finished()
        log[#log + 1] = "recv " .. rx:recv()
        local ok = h:await()
        return { waited = waited, ok = ok, log = log, rest = drain(rx) }
      end)
      assert.is_true(r.waited, "send on a full channel must wait")
      assert.is_true(r.ok)
      assert.are.same({ "sending c", "recv a", "sent c" }, r.log)
      assert.are.same({ "b", "c" }, r.rest)
    end)

    it("rejects capacities that are not integers >= 1", function()
      for _, cap in ipairs({ 0, -1, 1.5, "x", "2", true, {} }) do
        local ok, err = pcall(tidal.channel, cap)
        assert.is_false(ok, "capacity " .. tostring(cap))
        assert.matches("tidal.channel: capacity must be an integer >= 1", tostring(err))
      end
      -- nil (or nothing) is unbounded
      local tx = tidal.channel(nil)
      assert.matches("unbounded", tostring(tx))
      assert.matches("capacity 1,", tostring((tidal.channel(1))))
    end)
    it("keeps FIFO order when the ring grows while wrapped, at any head", function()
      -- the ring grows in place: the values from the head move up
      for _, cap in ipairs({ false, 20, 33, 1000 }) do
        local sent, got = support.run(function()
          local tx, rx = tidal.channel(cap or nil)
          local nin, out = 1, {}
          for round = 1, 40 do
            for _ = 1, round % 5 do
              local v = rx:try_recv()
              if v then out[#out + 1] = v end
            end
            for _ = 1, round * 3 do
              if tx:try_send(nin) then nin = nin + 1 end
            end
          end
          for _, v in ipairs(drain(rx)) do out[#out + 1] = v end
          return nin - 1, out
        end)
        assert.is_true(sent > 20)
        assert.are.equal(sent, #got)
        for i = 1, sent do assert.are.equal(i, got[i]) end
      end
    end)

    it("keeps each value's type and identity through the ring, across wrap and growth", function()
      -- numbers, booleans and light userdata are kept in C, other values in
      -- a Lua table at the same slot: the order and the types must not mix
      local lud = debug.upvalueid(drain, 1) -- a light userdata
      local t, f, co = {}, function() end, coroutine.create(function() end)
      local kinds = { 7, 1.0, -0.0, 2 ^ 53 + 1, math.maxinteger, math.mininteger,
        1 / 0, 0 / 0, true, false, "s", t, f, co, lud, 0.5, "x" }
      local ok, why = support.run(function()
        local tx, rx = tidal.channel()
        for _ = 1, 5 do tx:send(0) end
        for _ = 1, 5 do rx:recv() end -- the head away from slot 1
        for round = 1, 3 do -- 3 x 17 values: wraps and grows twice
          for _, v in ipairs(kinds) do tx:send(v) end
          assert(round)
        end
        for _ = 1, 3 do
          for i, v in ipairs(kinds) do
            local got = rx:recv()
            if v ~= v then -- NaN
              if got == got then return false, "NaN became " .. tostring(got) end
            elseif got ~= v or math.type(got) ~= math.type(v) or type(got) ~= type(v) then
              return false, ("value %d: sent %s (%s), got %s (%s)"):format(i,
                tostring(v), math.type(v) or type(v), tostring(got), math.type(got) or type(got))
            end
            if v == 0 and 1 / v < 0 and 1 / got > 0 then return false, "-0.0 lost its sign" end
          end
        end
        return rx:try_recv() == nil, "left over"
      end)
      assert.is_true(ok, why)
    end)

    it("keeps the buffered values' types when the channel starts crossing workers", function()
      local got = tidal.run({ workers = 1 }, function()
        local tx, rx = tidal.channel()
        local values = { 1, 2.0, true, false, "three", { 4 } }
        for _, v in ipairs(values) do tx:send(v) end
        -- rx moves to another worker: what is buffered is copied over
        return tidal.spawn_parallel(function(r)
          local out = {}
          for _ = 1, 6 do
            local v = r:recv()
            out[#out + 1] = type(v) == "table" and "t" .. v[1] or (math.type(v) or "") .. tostring(v)
          end
          return table.concat(out, " ")
        end, rx):await()
      end)
      assert.are.equal("integer1 float2.0 true false three t4", got)
    end)

    it("keeps no reference to a value once received, across ring growth", function()
      local alive = support.run(function()
        local weak = setmetatable({}, { __mode = "k" })
        local tx, rx = tidal.channel()
        for i = 1, 10 do tx:send(i) end -- the ring starts with 16 slots
        for _ = 1, 6 do rx:recv() end -- head in the middle
        for i = 1, 13 do -- wraps, fills the 16 slots, then grows once
          local t = {}
          weak[t] = i
          tx:send(t)
        end
        while rx:try_recv() do end
        collectgarbage()
        collectgarbage()
        return next(weak) ~= nil
      end)
      assert.is_false(alive)
    end)
  end)

  describe("try_send and try_recv", function()
    it("try_send returns nil, 'full' on a full channel and 'closed' once the receiver closed", function()
      local r = support.run(function()
        local tx, rx = tidal.channel(1)
        local a = tx:try_send(1)
        local b, e1 = tx:try_send(2)
        rx:close()
        local c, e2 = tx:try_send(3)
        return { a = a, b = b, e1 = e1, c = c, e2 = e2, left = drain(rx) }
      end)
      assert.is_true(r.a)
      assert.is_nil(r.b)
      assert.are.equal("full", r.e1.kind)
      assert.is_nil(r.c)
      assert.are.equal("closed", r.e2.kind)
      assert.are.same({ 1 }, r.left)
    end)

    it("try_recv returns nil, 'empty' while senders are open and 'closed' after the last closes", function()
      local r = support.run(function()
        local tx, rx = tidal.channel(4)
        local a, e1 = rx:try_recv()
        tx:send("x")
        local b = rx:try_recv()
        tx:close()
        local c, e2 = rx:try_recv()
        return { a = a, e1 = e1, b = b, c = c, e2 = e2 }
      end)
      assert.is_nil(r.a)
      assert.are.equal("empty", r.e1.kind)
      assert.are.equal("x", r.b)
      assert.is_nil(r.c)
      assert.are.equal("closed", r.e2.kind)
    end)

    it("work outside any task", function()
      local tx, rx = tidal.channel(1)
      assert.is_true(tx:try_send("v"))
      local _, full = tx:try_send("w")
      assert.are.equal("full", full.kind)
      assert.are.equal("v", rx:try_recv())
      local _, empty = rx:try_recv()
      assert.are.equal("empty", empty.kind)
    end)
  end)

  describe("sending nil", function()
    it("is an argument error naming the method", function()
      local tx = tidal.channel()
      local ok, err = pcall(tx.send, tx, nil)
      assert.is_false(ok)
      assert.matches("Sender:send: cannot send nil", err)
      ok, err = pcall(tx.send, tx)
      assert.is_false(ok)
      assert.matches("Sender:send: cannot send nil", err)
      ok, err = pcall(tx.try_send, tx, nil)
      assert.is_false(ok)
      assert.matches("Sender:try_send: cannot send nil", err)
      ok, err = pcall(tx.send_op, tx, nil)
      assert.is_false(ok)
      assert.matches("Sender:send_op: cannot send nil", err)
    end)

    it("leaves nothing in the channel; false is an ordinary value", function()
      local r = support.run(function()
        local tx, rx = tidal.channel()
        pcall(tx.send, tx, nil)
        tx:send(false)
        tx:close()
        local out = {}
        while true do
          local v = rx:recv()
          if v == nil then break end
          out[#out + 1] = v
        end
        return out
      end)
      assert.are.same({ false }, r)
    end)
  end)

  describe("senders", function()
    it("clone gives another sender; the stream ends when the last one closes", function()
      local r = support.run(function()
        local tx, rx = tidal.channel()
        local tx2 = tx:clone()
        tx:send(1)
        tx:close()
        local a = rx:recv()
        local _, still_open = rx:try_recv()
        tx2:send(2)
        tx2:close()
        local b = rx:recv()
        local c = rx:recv()
        local _, closed = rx:try_recv()
        return { a, still_open.kind, b, c, closed.kind }
      end)
      assert.are.same({ 1, "empty", 2, nil, "closed" }, r)
    end)

    it("closing the last sender wakes a waiting receiver with nil after the buffer drains", function()
      local r = support.run(function()
        local tx, rx = tidal.channel()
        local got = {}
        local h = tidal.spawn(function()
          while true do
            local v = rx:recv()
            got[#got + 1] = v == nil and "end" or v
            if v == nil then return end
          end
        end)
        tidal.yield()
        tx:send("a")
        tx:send("b")
        tx:close()
        h:await()
        return got
      end)
      assert.are.same({ "a", "b", "end" }, r)
    end)

    it("a closed sender cannot send or clone; closing twice is fine", function()
      local tx, rx = tidal.channel()
      tx:close()
      tx:close()
      assert.has_error(function() tx:send(1) end)
      assert.has_error(function() tx:try_send(1) end)
      assert.has_error(function() tx:clone() end)
      local _, err = rx:try_recv()
      assert.are.equal("closed", err.kind)
    end)

    it("a sender leaving a <close> scope closes it", function()
      local r = support.run(function()
        local tx, rx = tidal.channel()
        do
          local t <close> = tx
          t:send("last")
        end
        return { rx:recv(), rx:recv() }
      end)
      assert.are.same({ "last" }, r)
    end)

    it("a sender used through another reference after its <close> ran raises, not crashes", function()
      local ok, err = pcall(support.run, function()
        local tx, rx = tidal.channel()
        local alias = tx
        do local t <close> = tx end
        local okc, ec = pcall(alias.clone, alias)
        assert.is_false(okc)
        assert.matches("closed", ec)
        assert.is_true(alias:is_closed())
        assert.are.equal(0, #alias)
        local oks = pcall(alias.send, alias, 1)
        assert.is_false(oks)
        return rx:recv()
      end)
      assert.is_true(ok, tostring(err))
    end)

    it("a sender that is garbage collected closes, and the receiver sees the end", function()
      local r = support.run(function()
        local rx = (function()
          local tx, r = tidal.channel()
          tx:send("kept")
          return r -- the sender is dropped here
        end)()
        collectgarbage()
        collectgarbage()
        local a = rx:recv()
        local b = rx:recv()
        local _, err = rx:try_recv()
        return { a, b, err.kind }
      end)
      assert.are.same({ "kept", nil, "closed" }, r)
    end)

    it("a collected sender wakes a receiver that waits on it", function()
      local r = support.run(function()
        local rx = select(2, tidal.channel(1)) -- the sender is dropped at once
        local h = tidal.spawn(function() return rx:recv() == nil end)
        tidal.yield()
        assert.is_false(h:is_finished())
        collectgarbage()
        collectgarbage()
        return h:await()
      end)
      assert.is_true(r)
    end)
  end)

  describe("the receiver", function()
    it("rx:close refuses new sends while buffered values can still be received", function()
      local r = support.run(function()
        local tx, rx = tidal.channel(8)
        tx:send(1)
        tx:send(2)
        rx:close()
        local s, err = tx:send(3)
        local a = rx:recv()
        local b, e2 = rx:try_recv()
        local c = rx:recv()
        local d, e3 = rx:try_recv()
        return { s = s, err = err, a = a, b = b, e2 = e2, c = c, d = d, e3 = e3 }
      end)
      assert.is_nil(r.s)
      assert.are.equal("closed", r.err.kind)
      assert.are.equal(1, r.a)
      assert.are.equal(2, r.b)
      assert.is_nil(r.e2)
      assert.is_nil(r.c, "recv after close and drain gives nil even though a sender is open")
      assert.is_nil(r.d)
      assert.are.equal("closed", r.e3.kind)
    end)

    it("rx:close wakes senders waiting on a full channel with nil, 'closed', and delivers nothing", function()
      local r = support.run(function()
        local tx, rx = tidal.channel(1)
        tx:send("in")
        local hs = {}
        for i = 1, 3 do hs[i] = tidal.spawn(function() return table.pack(tx:send("w" .. i)) end) end
        tidal.yield()
        rx:close()
        local outs = {}
        for i = 1, 3 do
          local p = hs[i]:await()
          outs[i] = tostring(p[1]) .. "/" .. (p[2] and p[2].kind or "-")
        end
        return { outs = outs, left = drain(rx) }
      end)
      assert.are.same({ "nil/closed", "nil/closed", "nil/closed" }, r.outs)
      assert.are.same({ "in" }, r.left)
    end)

    it("rx:close wakes a waiting receiver with nil", function()
      local r = support.run(function()
        local tx, rx = tidal.channel()
        local h = tidal.spawn(function() return table.pack(rx:recv()) end)
        tidal.yield()
        rx:close()
        return h:await()
      end)
      assert.are.equal(0, r.n)
    end)

    it("closing the receiver twice is fine", function()
      local tx, rx = tidal.channel()
      rx:close()
      rx:close()
      assert.is_true(rx:is_closed())
      assert.is_true(tx:is_closed())
    end)

    it("a receiver leaving a <close> scope closes the channel for senders", function()
      local r = support.run(function()
        local tx, rx = tidal.channel()
        do local r <close> = rx end
        return table.pack(tx:send(1))
      end)
      assert.is_nil(r[1])
      assert.are.equal("closed", r[2].kind)
    end)

    it("a receiver used through another reference after its <close> ran does not crash", function()
      local ok, r = pcall(support.run, function()
        local tx, rx = tidal.channel()
        tx:send("buffered")
        local alias = rx
        do local r <close> = rx end
        local v = alias:try_recv()
        local w = alias:recv()
        return { v, w }
      end)
      assert.is_true(ok, tostring(r))
      assert.are.same({ "buffered" }, r)
    end)

    it("a receiver that is garbage collected closes the channel for senders", function()
      local r = support.run(function()
        local tx = tidal.channel() -- the receiver is dropped at once
        collectgarbage()
        collectgarbage()
        return table.pack(tx:send(1))
      end)
      assert.is_nil(r[1])
      assert.are.equal("closed", r[2].kind)
    end)

    it("iterates with `for v in rx do` until the channel ends", function()
      local r = support.run(function()
        local tx, rx = tidal.channel(2)
        tidal.spawn(function()
          for i = 1, 5 do tx:send(i * 10) end
          tx:close()
        end)
        local out = {}
        for v in rx do out[#out + 1] = v end
        return out
      end)
      assert.are.same({ 10, 20, 30, 40, 50 }, r)
    end)

    it("passes a table by reference: the same table arrives", function()
      local r = support.run(function()
        local tx, rx = tidal.channel(1)
        local t = { 1, 2 }
        tx:send(t)
        local got = rx:recv()
        return { same = rawequal(t, got) }
      end)
      assert.is_true(r.same)
    end)
  end)

  describe("outside a task", function()
    it("send on an unbounded channel works (it never waits)", function()
      local tx, rx = tidal.channel()
      assert.is_true(tx:send("a"))
      assert.is_true(tx:send("b"))
      assert.are.equal("a", rx:try_recv())
      assert.are.equal("b", support.run(function() return rx:recv() end))
    end)

    it("recv on an empty channel raises 'not inside a tidal task'", function()
      local _, rx = tidal.channel()
      local ok, err = pcall(rx.recv, rx)
      assert.is_false(ok)
      assert.matches("Receiver:recv: not inside a tidal task", err)
    end)

    it("send on a full bounded channel raises 'not inside a tidal task'", function()
      local tx = tidal.channel(1)
      tx:send(1)
      local ok, err = pcall(tx.send, tx, 2)
      assert.is_false(ok)
      assert.matches("Sender:send: not inside a tidal task", err)
    end)
  end)

  describe("waiters", function()
    it("serve blocked receivers in FIFO order", function()
      local r = support.run(function()
        local tx, rx = tidal.channel()
        local got = {}
        local hs = {}
        for i = 1, 5 do
          hs[i] = tidal.spawn(function()
            local v = rx:recv()
            got[#got + 1] = i .. ":" .. v
          end)
          tidal.yield() -- park them one after the other
        end
        for i = 1, 5 do tx:send("m" .. i) end
        for i = 1, 5 do hs[i]:await() end
        return got
      end)
      assert.are.same({ "1:m1", "2:m2", "3:m3", "4:m4", "5:m5" }, r)
    end)

    it("serve blocked senders in FIFO order", function()
      local r = support.run(function()
        local tx, rx = tidal.channel(1)
        tx:send("first")
        local hs = {}
        for i = 1, 5 do
          hs[i] = tidal.spawn(function() tx:send("s" .. i) end)
          tidal.yield()
        end
        local out = {}
        for _ = 1, 6 do out[#out + 1] = rx:recv() end
        for i = 1, 5 do hs[i]:await() end
        return out
      end)
      assert.are.same({ "first", "s1", "s2", "s3", "s4", "s5" }, r)
    end)

    it("a new sender does not overtake senders already waiting (try_send says full)", function()
      local r = support.run(function()
        local tx, rx = tidal.channel(1)
        tx:send(1)
        local h = tidal.spawn(function() tx:send(2) end)
        tidal.yield()
        local taken = rx:try_recv() -- wakes the waiting sender
        -- room exists now, but the sender that waited has its turn first,
        -- even before it ran again
        local ok, err = tx:try_send(3)
        local next_value = rx:recv()
        h:await()
        return { taken, ok, err and err.kind, next_value, drain(rx) }
      end)
      assert.are.equal(1, r[1])
      assert.is_nil(r[2], "try_send overtook a waiting sender")
      assert.are.equal("full", r[3])
      assert.are.equal(2, r[4], "the waiting sender's value comes first")
      assert.are.same({}, r[5])
    end)
  end)

  describe("abort while waiting", function()
    it("in recv withdraws the wait: the next message goes to the next receiver", function()
      local r = support.run(function()
        local tx, rx = tidal.channel()
        local log = {}
        local a = tidal.spawn(function()
          local c <close> = closer(log, "a unwound")
          local v = rx:recv()
          log[#log + 1] = "a got " .. tostring(v)
        end)
        local b = tidal.spawn(function()
          local v = rx:recv()
          log[#log + 1] = "b got " .. v
        end)
        tidal.yield()
        a:abort()
        local ok, err = a:join()
        tx:send("m")
        b:await()
        return { ok = ok, kind = err.kind, log = log, left = drain(rx) }
      end)
      assert.is_false(r.ok)
      assert.are.equal("cancelled", r.kind)
      assert.are.same({ "a unwound", "b got m" }, r.log)
      assert.are.same({}, r.left)
    end)

    it("in send withdraws the wait: the value is never delivered", function()
      local r = support.run(function()
        local tx, rx = tidal.channel(1)
        tx:send("first")
        local a = tidal.spawn(function() return tx:send("aborted") end)
        local b = tidal.spawn(function() return tx:send("second") end)
        tidal.yield()
        a:abort()
        local ok, err = a:join()
        local out = { rx:recv(), rx:recv() }
        b:await()
        local _, e = rx:try_recv()
        return { ok = ok, kind = err.kind, out = out, empty = e.kind }
      end)
      assert.is_false(r.ok)
      assert.are.equal("cancelled", r.kind)
      assert.are.same({ "first", "second" }, r.out)
      assert.are.equal("empty", r.empty)
    end)

    it("a receiver woken by a send and aborted before it runs passes the message on", function()
      local r = support.run(function()
        local tx, rx = tidal.channel()
        local got = {}
        local a = tidal.spawn(function()
          local v = rx:recv()
          got[#got + 1] = "a:" .. tostring(v)
        end)
        local b = tidal.spawn(function()
          local v = rx:recv()
          got[#got + 1] = "b:" .. tostring(v)
        end)
        tidal.yield()
        tx:send("m") -- wakes a ...
        a:abort()    -- ... which is cancelled before it runs
        local ok = a:join()
        b:await()
        return { ok = ok, got = got }
      end)
      assert.is_false(r.ok)
      assert.are.same({ "b:m" }, r.got)
    end)

    it("a sender woken by room and aborted before it runs passes the room on", function()
      local r = support.run(function()
        local tx, rx = tidal.channel(1)
        tx:send(0)
        local a = tidal.spawn(function() return tx:send("a") end)
        local b = tidal.spawn(function() return tx:send("b") end)
        tidal.yield()
        assert.are.equal(0, rx:recv()) -- wakes a ...
        a:abort()                       -- ... cancelled before it runs
        local ok = a:join()
        assert.is_true(b:await())
        return { ok = ok, left = drain(rx) }
      end)
      assert.is_false(r.ok)
      assert.are.same({ "b" }, r.left)
    end)
  end)
end)
