-- Issue 9 item 10: a loop over operations that are always ready never
-- waits, so the budget yield was its only scheduling point, and a
-- cancellation delivered meanwhile (a timeout expiring, the select's other
-- branch winning, an abort) was never raised: the loop ran forever. A spent
-- budget must yield, let timers and I/O run, and raise what came meanwhile,
-- for every waiting operation (DESIGN.md section 1).
local support = require("support")

local function child(code, secs)
  return support.lua(code, secs)
end

-- Each loop body is always ready; the loop is run inside
-- tidal.timeout(0.05) and must end with a timeout.
local loops = {
  ["channel send/recv"] = [[
    local tx, rx = tidal.channel()
    LOOP(function() tx:send(1); rx:recv() end)
  ]],
  ["bounded channel send/recv"] = [[
    local tx, rx = tidal.channel(1)
    LOOP(function() tx:send(1); rx:recv() end)
  ]],
  ["receiving from a closed channel"] = [[
    local tx, rx = tidal.channel()
    tx:close()
    LOOP(function() assert(rx:recv() == nil) end)
  ]],
  ["oneshot send/recv"] = [[
    LOOP(function() local tx, rx = tidal.oneshot(); tx:send(1); rx:recv() end)
  ]],
  ["broadcast send/recv"] = [[
    local tx, rx = tidal.broadcast(4)
    LOOP(function() tx:send(1); rx:recv() end)
  ]],
  ["watch send/changed"] = [[
    local tx, rx = tidal.watch(0)
    LOOP(function() tx:send(1); rx:changed() end)
  ]],
  ["mutex lock/release"] = [[
    local m = tidal.mutex()
    LOOP(function() m:lock():release() end)
  ]],
  ["rwlock read and write"] = [[
    local rw = tidal.rwlock()
    LOOP(function() rw:read():release(); rw:write():release() end)
  ]],
  ["semaphore acquire/release"] = [[
    local s = tidal.semaphore(1)
    LOOP(function() s:acquire():release() end)
  ]],
  ["notify_one/notified"] = [[
    local n = tidal.notify()
    LOOP(function() n:notify_one(); n:notified() end)
  ]],
  ["await and join of a finished task"] = [[
    local h = tidal.spawn(function() return 1 end)
    h:await()
    LOOP(function() h:await(); h:join() end)
  ]],
  ["select over a ready op"] = [[
    local tx, rx = tidal.channel()
    LOOP(function() tx:send(1); tidal.select({ rx:recv_op() }) end)
  ]],
  ["join_all of nothing"] = [[
    LOOP(function() tidal.join_all({}) end)
  ]],
  ["join_next and wait of an empty group"] = [[
    local g = tidal.group()
    LOOP(function() g:join_next(); g:wait() end)
  ]],
  ["sleep(0) and yield"] = [[
    LOOP(function() tidal.sleep(0); tidal.yield() end)
  ]],
  ["an op called directly"] = [[
    local tx, rx = tidal.channel()
    local op = rx:recv_op()
    LOOP(function() tx:send(1); op() end)
  ]],
}

local prelude = [[
  local tidal = require("tidal")
  local function LOOP(body)
    local t0 = tidal.now()
    local ok, err = tidal.timeout(0.05, function()
      while true do body() end
    end)
    assert(not ok and tidal.is_error(err, "timeout"), tostring(err))
    print(("timed out after %.3f"):format(tidal.now() - t0))
  end
]]

describe("issue 9 item 10: a spent budget lets timers fire", function()
  if not support.can_spawn then
    pending("needs child processes")
    return
  end

  for name, body in pairs(loops) do
    it("ends a loop of " .. name .. " at its timeout", function()
      local out, status = child(prelude .. "tidal.run(function()\n" .. body ..
        "\nend)\n", 15)
      assert.are.equal(0, status, out)
      local dt = tonumber(out:match("timed out after (%d+%.%d+)"))
      assert.is_truthy(dt, out)
      assert.is_true(dt < 5, out)
    end)
  end

  it("lets sleep_op win a select against a watch loop", function()
    local out, status = child([[
      local tidal = require("tidal")
      tidal.run(function()
        local tx, rx = tidal.watch(0)
        local key = tidal.select({
          busy = function() while true do tx:send(1); rx:changed() end end,
          slept = tidal.sleep_op(0.01),
        })
        print("winner", key)
      end)
    ]], 15)
    assert.are.equal(0, status, out)
    assert.matches("winner\tslept", out)
  end)

  it("lets sleep_op win a select against a broadcast loop", function()
    local out, status = child([[
      local tidal = require("tidal")
      tidal.run(function()
        local tx, rx = tidal.broadcast(8)
        local key = tidal.select({
          function() while true do tx:send(1); rx:recv() end end,
          tidal.sleep_op(0.01),
        })
        print("winner", key)
      end)
    ]], 15)
    assert.are.equal(0, status, out)
    assert.matches("winner\t2", out)
  end)

  it("ends a busy loop that another task aborts", function()
    local out, status = child([[
      local tidal = require("tidal")
      tidal.run(function()
        local tx, rx = tidal.channel()
        local n = 0
        local h = tidal.spawn(function()
          while true do tx:send(1); rx:recv(); n = n + 1 end
        end)
        tidal.spawn(function() tidal.sleep(0.02); h:abort() end)
        local ok, err = h:join()
        print("ended", ok, tidal.is_error(err, "cancelled"), n > 0)
      end)
    ]], 15)
    assert.are.equal(0, status, out)
    assert.matches("ended\tfalse\ttrue\ttrue", out)
  end)

  it("lets a worker task's loop time out", function()
    local out, status = child([[
      local tidal = require("tidal")
      tidal.run({ workers = 1 }, function()
        local h = tidal.spawn_parallel(function()
          local tx, rx = tidal.channel()
          return tidal.timeout(0.02, function()
            while true do tx:send(1); rx:recv() end
          end)
        end)
        local ok, err = h:await()
        print("worker", ok, err and err.kind)
      end)
    ]], 15)
    assert.are.equal(0, status, out)
    assert.matches("worker\tfalse\ttimeout", out)
  end)

  it("does not raise again in cleanup that spends the budget", function()
    -- the timeout is raised once; the <close> handler then completes 1000
    -- ready operations without being interrupted at its budget yields
    local out, status = child([[
      local tidal = require("tidal")
      tidal.run(function()
        local tx, rx = tidal.channel()
        local sent = 0
        local ok, err = tidal.timeout(0.01, function()
          local _ <close> = setmetatable({}, { __close = function()
            for i = 1, 1000 do tx:send(i); rx:recv(); sent = i end
          end })
          tidal.sleep(1)
        end)
        print("cleanup", ok, err.kind, sent)
      end)
    ]], 15)
    assert.are.equal(0, status, out)
    assert.matches("cleanup\tfalse\ttimeout\t1000", out)
  end)
end)
