-- When a task ends and the next task in the run queue has not started, the
-- coroutine runs that one at once instead of yielding to the scheduler (a
-- chain, csrc/kernel/task.c); a task's only argument and only result are
-- kept in C when they are nil, booleans or numbers. Neither may change what
-- a program sees: the order tasks run in, I/O and timers between tasks,
-- errors, slow-task reports, values and their types.
local tidal = require("tidal")
local support = require("support")

describe("a burst of spawned tasks (chains)", function()
  it("runs in spawn order, mixed with tasks that wait", function()
    local order = {}
    support.run(function()
      local hs = {}
      for i = 1, 300 do
        hs[i] = tidal.spawn(function(x)
          order[#order + 1] = x
          if x % 7 == 0 then
            tidal.yield()
            order[#order + 1] = -x
          end
          return x
        end, i)
      end
      for i = 1, 300 do assert.are.equal(i, hs[i]:await()) end
    end)
    -- first every task in spawn order, then the ones that yielded, in order
    local want = {}
    for i = 1, 300 do want[#want + 1] = i end
    for i = 7, 300, 7 do want[#want + 1] = -i end
    assert.are.same(want, order)
  end)

  it("polls timers and I/O between its tasks, and counts its resumes", function()
    local n = support.scaled(20000)
    local first, last
    support.run(function()
      local hs = {}
      local function work(i)
        if i == 1 then first = tidal.stats() end
        if i == n then last = tidal.stats() end
      end
      for i = 1, n do hs[i] = tidal.spawn(work, i) end
      for i = 1, n do hs[i]:await() end
    end)
    -- the loop polls at least every 61 steps, chains included
    local polls = last.polls - first.polls
    assert.is_true(polls >= (n - 1) // 61, polls .. " polls for " .. n .. " tasks")
    assert.is_true(last.resumes - first.resumes >= n - 1)
  end)

  it("keeps each task's error, traceback and unobserved-error report", function()
    local out, status = support.lua([[
      local tidal = require("tidal")
      tidal.run(function()
        local hs = {}
        for i = 1, 10 do
          hs[i] = tidal.spawn(function(x)
            if x == 4 then error("boom " .. x) end
            if x == 6 then error({ code = x }) end
            return x
          end, i)
        end
        hs[9] = nil -- never awaited: still fine
        tidal.spawn(function() error("dropped failure") end)
        for i = 1, 10 do
          if hs[i] then
            local ok, err = hs[i]:join()
            if ok then
              io.write(err, " ")
            elseif type(err) == "table" then
              io.write("table:", err.code, " ")
            else
              io.write("err:", err, " ")
              print()
              print(tidal.traceback(err))
            end
          end
        end
        print()
        collectgarbage()
      end)
      print("finished")
    ]])
    assert.are.equal(0, status, out)
    assert.matches("1 2 3 err:[^\n]*boom 4 \n", out)
    assert.matches("in task 5", out) -- the traceback names the failing task
    assert.matches("5 table:6 7 8 10 \n", out)
    assert.matches("dropped failure", out) -- reported, not lost
    assert.matches("finished", out)
  end)

  it("reports a slow task in the middle of a burst, once, by name", function()
    local out, status = support.lua([[
      local tidal = require("tidal")
      tidal.run({ slow_task = 0.05 }, function()
        local hs = {}
        for i = 1, 20 do
          local opts = i == 10 and { name = "hog" } or {}
          hs[i] = tidal.spawn(opts, function(x)
            if x == 10 then
              local t0 = tidal.now()
              while tidal.now() - t0 < 0.1 do end
            end
            return x
          end, i)
        end
        for i = 1, 20 do assert(hs[i]:await() == i) end
      end)
      print("done")
    ]])
    assert.are.equal(0, status, out)
    local n = select(2, out:gsub("ran %d+%.%d+ s without waiting", ""))
    assert.are.equal(1, n, out)
    assert.matches("task %d+ %(hog%) ran 0%.%d+ s without waiting[^\n]*it then finished", out)
  end)

  it("cancels a queued task aborted by an earlier one of the burst", function()
    local r = support.run(function()
      local hs = {}
      local ran = {}
      for i = 1, 5 do
        hs[i] = tidal.spawn(function(x)
          ran[#ran + 1] = x
          if x == 2 then hs[3]:abort() end
          return x
        end, i)
      end
      local out = {}
      for i = 1, 5 do
        local ok, err = hs[i]:join()
        out[i] = ok and err or err.kind
      end
      return { ran = ran, out = out }
    end)
    assert.are.same({ 1, 2, 4, 5 }, r.ran)
    assert.are.same({ 1, 2, "cancelled", 4, 5 }, r.out)
  end)

  it("keeps the coroutine rules: a captured coroutine cannot be resumed", function()
    local out, status = support.lua([[
      local tidal = require("tidal")
      tidal.run(function()
        local cos, hs = {}, {}
        for i = 1, 10 do
          hs[i] = tidal.spawn(function(x)
            cos[x] = coroutine.running()
            return x
          end, i)
        end
        for i = 1, 10 do hs[i]:await() end
        for i = 1, 10 do
          local ok, err = pcall(coroutine.resume, cos[i], "forged")
          assert(not ok and err:find("cannot resume the coroutine of a finished task"), err)
        end
        print("closed", coroutine.close(cos[1]))
        local sum = 0
        for i = 1, 10 do sum = sum + tidal.spawn(function(x) return x end, i):await() end
        print("sum", sum)
      end)
      print("finished")
    ]])
    assert.are.equal(0, status, out)
    assert.matches("closed\ttrue", out)
    assert.matches("sum\t55", out)
    assert.matches("finished", out)
  end)
end)

describe("a task's argument and result", function()
  it("keep their value and type, scalars or not", function()
    local values = { 0, -1, math.maxinteger, math.mininteger, 2.0, -0.0, 0.5,
      math.huge, -math.huge, 1e308, true, false, "s", {}, print }
    support.run(function()
      local hs = {}
      for i, v in ipairs(values) do
        hs[i] = tidal.spawn(function(x) return x end, v)
      end
      for i, v in ipairs(values) do
        local r = hs[i]:await()
        assert.are.equal(v, r)
        assert.are.equal(math.type(v), math.type(r))
        if v == 0 and math.type(v) == "float" then
          assert.are.equal(1 / v, 1 / r) -- -0.0 stays -0.0
        end
      end
      -- nan, nil, none
      local nan = tidal.spawn(function(x) return x end, 0 / 0):await()
      assert.is_true(nan ~= nan)
      local r = table.pack(tidal.spawn(function(x) return x end, nil):await())
      assert.are.same({ n = 1 }, r)
      r = table.pack(tidal.spawn(function(...) return select("#", ...) end):await())
      assert.are.same({ n = 1, 0 }, r)
      r = table.pack(tidal.spawn(function() end):await())
      assert.are.same({ n = 0 }, r)
      r = table.pack(tidal.spawn(function(x) return x, x end, 3):join())
      assert.are.same({ n = 3, true, 3, 3 }, r)
      r = table.pack(tidal.spawn(function(x) return x end, 7):join())
      assert.are.same({ n = 2, true, 7 }, r)
      -- after a wait, the same
      r = table.pack(tidal.spawn(function(x) tidal.sleep(0.001); return x end, 1.5):await())
      assert.are.same({ n = 1, 1.5 }, r)
    end)
  end)

  it("does not keep the task's function alive once it is done", function()
    support.run(function()
      local weak = setmetatable({}, { __mode = "k" })
      local function make()
        local big = {}
        local function f() return big and 1 end
        weak[f] = true
        return tidal.spawn(f)
      end
      local h = make()
      assert.are.equal(1, h:await())
      collectgarbage()
      collectgarbage()
      assert.is_nil(next(weak))
      assert.are.equal(1, h:await()) -- the result stays
    end)
  end)

  it("does not keep a table argument alive through the handle once started", function()
    support.run(function()
      local weak = setmetatable({}, { __mode = "k" })
      local function make()
        local arg = {}
        weak[arg] = true
        return tidal.spawn(function(x, y) -- luacheck: ignore x
          x = nil -- the task drops it
          tidal.sleep(0.001)
          return y
        end, arg, 2)
      end
      local h = make()
      tidal.sleep(0) -- it starts and waits
      collectgarbage()
      collectgarbage()
      assert.is_nil(next(weak))
      assert.are.equal(2, h:await())
    end)
  end)
end)
