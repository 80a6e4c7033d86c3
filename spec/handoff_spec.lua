-- Handoff: a task about to wait runs the run queue's head nested, and goes
-- on at once if that woke it and it is next in line (task.c). It must not
-- change the order tasks run in, nor what cancellation and errors do.
local tidal = require("tidal")
local support = require("support")

local closer = support.closer

describe("handoff between tasks", function()
  it("keeps the run queue's first-in first-out order", function()
    local log = support.run(function()
      local log = {}
      local tx1, rx1 = tidal.channel(1)
      local tx2, rx2 = tidal.channel(1)
      local a = tidal.spawn(function()
        for i = 1, 3 do
          tx1:send(i)
          local v = rx2:recv()
          log[#log + 1] = "a" .. v
        end
      end)
      local b = tidal.spawn(function()
        for _ = 1, 3 do
          local v = rx1:recv()
          log[#log + 1] = "b" .. v
          tx2:send(v)
        end
      end)
      local c = tidal.spawn(function()
        for i = 1, 3 do
          log[#log + 1] = "c" .. i
          tidal.yield()
        end
      end)
      a:await()
      b:await()
      c:await()
      return log
    end)
    -- what a plain FIFO scheduler does: c runs between a and b each time
    assert.are.same({ "b1", "c1", "a1", "c2", "b2", "c3", "a2", "b3", "a3" }, log)
  end)

  it("a task woken by the task it handed off to waits behind the tasks queued before it", function()
    local log = support.run(function()
      local log = {}
      local tx, rx = tidal.channel(1)
      local t = tidal.spawn(function()
        tidal.yield() -- from here on it is resumed by the loop itself
        tidal.spawn(function() tx:send("v") end) -- runs nested, wakes t
        tidal.spawn(function() log[#log + 1] = "x ran" end) -- queued first
        local v = rx:recv()
        log[#log + 1] = "t got " .. v
      end)
      t:await()
      return log
    end)
    assert.are.same({ "x ran", "t got v" }, log)
  end)

  it("a ping-pong pair still lets a third task run", function()
    local r = support.run(function()
      local tx1, rx1 = tidal.channel(1)
      local tx2, rx2 = tidal.channel(1)
      local ticks = 0
      local stop = false
      local ticker = tidal.spawn(function()
        while not stop do
          ticks = ticks + 1
          tidal.yield()
        end
      end)
      local a = tidal.spawn(function()
        for i = 1, 1000 do
          tx1:send(i)
          rx2:recv()
        end
      end)
      tidal.spawn(function()
        for _ = 1, 1000 do tx2:send(rx1:recv()) end
      end)
      a:await()
      local seen = ticks
      stop = true
      ticker:await()
      return seen
    end)
    assert.is_true(r >= 500, "the ticker ran " .. r .. " times")
  end)

  it("a task aborted by the task it handed off to unwinds where it waits, and nothing is lost", function()
    local r = support.run(function()
      local log = {}
      local tx, rx = tidal.channel(1)
      local a
      a = tidal.spawn(function()
        local c <close> = closer(log, "a unwound")
        local v = rx:recv()
        log[#log + 1] = "a got " .. tostring(v)
      end)
      local b = tidal.spawn(function()
        a:abort()
        tx:send("kept")
        return "b done"
      end)
      local ok, err = a:join()
      local got = rx:try_recv()
      return { log = log, ok = ok, kind = err and err.kind, b = b:await(), got = got }
    end)
    assert.are.same({ "a unwound" }, r.log)
    assert.is_false(r.ok)
    assert.are.equal("cancelled", r.kind)
    assert.are.equal("b done", r.b)
    assert.are.equal("kept", r.got)
  end)

  it("a task failing while nested in another's wait is reported to its awaiter only", function()
    local r = support.run(function()
      local tx, rx = tidal.channel(1)
      local a = tidal.spawn(function() return rx:recv() end)
      local b = tidal.spawn(function()
        tx:send("value")
        error("b failed", 0)
      end)
      local ok, err = b:join()
      return { a = a:await(), ok = ok, err = err }
    end)
    assert.are.equal("value", r.a)
    assert.is_false(r.ok)
    assert.are.equal("b failed", r.err)
  end)

  it("a task that ends while nested releases everything (many rounds)", function()
    local n = support.scaled(2000)
    local total = support.run(function()
      local tx, rx = tidal.channel(1)
      local sum = 0
      local consumer = tidal.spawn(function()
        for v in rx do sum = sum + v end
        return sum
      end)
      local producers = {}
      for i = 1, n do
        producers[i] = tidal.spawn(function() tx:send(i) end)
      end
      for i = 1, n do producers[i]:await() end
      tx:close()
      return consumer:await()
    end)
    assert.are.equal(n * (n + 1) // 2, total)
  end)
end)
