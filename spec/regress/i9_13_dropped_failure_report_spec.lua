-- Issue 9 item 13: a task that failed and whose JoinHandle was dropped was
-- reported only when the program exited (when the runtime closed, or the
-- collector happened to run): a long-running program never showed it. The
-- scheduler now collects soon after such a failure (and again, less and
-- less often, while one is still held), so it is reported within about a
-- second, while the program runs.
local support = require("support")

local function child(code, secs)
  return support.lua(code, secs)
end

describe("issue 9 item 13: a dropped failed task", function()
  if not support.can_spawn then
    pending("needs child processes")
    return
  end

  it("is reported while a long-running main sleeps", function()
    -- stdout and stderr share the pipe: the report must come between the
    -- tick at 0 s and the tick at 2 s
    local out, status = child([[
      local tidal = require("tidal")
      tidal.run(function()
        local t0 = tidal.now()
        tidal.spawn(function() error("dropped and failed") end)
        for i = 0, 3 do
          io.stdout:write(("tick %d at %.1f\n"):format(i, tidal.now() - t0))
          io.stdout:flush()
          tidal.sleep(1)
        end
      end)
    ]], 30)
    assert.are.equal(0, status, out)
    local report = out:find("tidal: task 2 failed and its error was never observed", 1, true)
    assert.is_truthy(report, out)
    assert.matches("dropped and failed", out)
    assert.is_true(report > out:find("tick 0", 1, true), out)
    assert.is_true(report < out:find("tick 2", 1, true), out)
    -- once: not again at exit
    local _, n = out:gsub("was never observed", "")
    assert.are.equal(1, n, out)
  end)

  it("is reported while main waits on a channel beside a worker", function()
    local out, status = child([[
      local tidal = require("tidal")
      tidal.run({ workers = 1 }, function()
        local tx, rx = tidal.channel()
        local p = tidal.spawn_parallel(function(tx)
          tidal.spawn(function() error("failed on the worker") end)
          tidal.sleep(2)
          tx:send("late")
        end, tx)
        tidal.spawn(function() error("failed on main") end)
        io.stdout:write("waiting\n"); io.stdout:flush()
        print("got", rx:recv())
        p:await()
      end)
    ]], 30)
    assert.are.equal(0, status, out)
    local late = out:find("got\tlate", 1, true)
    assert.is_truthy(late, out)
    for _, what in ipairs({ "failed on main", "failed on the worker" }) do
      local at = out:find(what, 1, true)
      assert.is_truthy(at, out)
      assert.is_true(at < late, out)
    end
  end)

  it("is reported once its handle is dropped later", function()
    local out, status = child([[
      local tidal = require("tidal")
      tidal.run(function()
        local h = tidal.spawn(function() error("held, then dropped") end)
        tidal.sleep(0.7) -- held past the first look
        h = nil
        for i = 1, 4 do
          tidal.sleep(1)
          io.stdout:write("tick ", i, "\n"); io.stdout:flush()
        end
      end)
    ]], 30)
    assert.are.equal(0, status, out)
    local report = out:find("held, then dropped", 1, true)
    assert.is_truthy(report, out)
    assert.is_true(report < out:find("tick 4", 1, true), out)
  end)

  it("is not reported when its error is observed late", function()
    local out, status = child([[
      local tidal = require("tidal")
      tidal.run(function()
        local h = tidal.spawn(function() error("observed") end)
        tidal.sleep(1.2)
        print("join", h:join())
      end)
    ]], 30)
    assert.are.equal(0, status, out)
    assert.matches("join\tfalse\t.-observed", out)
    assert.is_nil(out:find("never observed", 1, true), out)
  end)

  it("does not delay deadlock detection", function()
    local out, status = child([[
      local tidal = require("tidal")
      local t0 = tidal.now()
      local ok, err = pcall(tidal.run, function()
        local keep = tidal.spawn(function() error("kept") end)
        tidal.yield()
        local _, rx = tidal.channel()
        rx:recv()
        return keep
      end)
      print(ok, err.kind, tidal.now() - t0 < 0.3)
    ]], 30)
    assert.are.equal(0, status, out)
    assert.matches("false\tdeadlock\ttrue", out)
  end)
end)
