local tidal = require("tidal")
local support = require("support")

describe("tidal.spawn and JoinHandle", function()
  it("runs tasks concurrently and awaits their results", function()
    local order = {}
    local r = support.run(function()
      local a = tidal.spawn(function(x)
        order[#order + 1] = "a1"
        tidal.yield()
        order[#order + 1] = "a2"
        return x * 10, "a"
      end, 4)
      local b = tidal.spawn(function()
        order[#order + 1] = "b1"
        tidal.yield()
        order[#order + 1] = "b2"
        return "b"
      end)
      local x, tag = a:await()
      return { x, tag, b:await() }
    end)
    assert.are.same({ 40, "a", "b" }, r)
    assert.are.same({ "a1", "b1", "a2", "b2" }, order)
  end)

  it("does not run a spawned task before the spawner waits", function()
    support.run(function()
      local ran = false
      local h = tidal.spawn(function() ran = true end)
      assert.is_false(ran)
      assert.is_false(h:is_finished())
      tidal.yield()
      assert.is_true(ran)
      assert.is_true(h:is_finished())
    end)
  end)

  it("passes many arguments and returns many results", function()
    local r = support.run(function()
      local h = tidal.spawn(function(...) return select("#", ...), ... end, 1, nil, 3, nil)
      return table.pack(h:await())
    end)
    assert.are.equal(5, r.n)
    assert.are.same({ 4, 1, nil, 3, nil }, { r[1], r[2], r[3], r[4], r[5] })
    local many = support.run(function()
      return table.pack(tidal.spawn(function() return table.unpack({ 1, 2, 3, 4, 5, 6, 7, 8 }) end):await())
    end)
    assert.are.equal(8, many.n)
    assert.are.equal(8, many[8])
  end)

  it("shares closures and upvalues with the spawner", function()
    local t = {}
    support.run(function()
      local shared = { n = 0 }
      local hs = {}
      for i = 1, 10 do hs[i] = tidal.spawn(function() shared.n = shared.n + i; t[i] = shared end) end
      for i = 1, 10 do hs[i]:await() end
      assert.are.equal(55, shared.n)
    end)
    assert.are.equal(t[1], t[10])
  end)

  it("gives ids, names and a readable tostring", function()
    support.run(function()
      local a = tidal.spawn({ name = "fetch" }, function() end)
      local b = tidal.spawn(function() end)
      assert.is_true(b:id() > a:id())
      assert.are.equal("fetch", a:name())
      assert.is_nil(b:name())
      assert.matches("^tidal.JoinHandle: task %d+ %(fetch%) %(new%)$", tostring(a))
      a:await()
      assert.matches("%(done%)$", tostring(a))
    end)
  end)

  it("propagates a task's error through await as the original value", function()
    local e = setmetatable({ code = 7 }, { __tostring = function() return "E7" end })
    support.run(function()
      local h = tidal.spawn(function() error(e) end)
      local ok, err = pcall(h.await, h)
      assert.is_false(ok)
      assert.are.equal(e, err)
      -- again: the outcome stays
      local ok2, err2 = pcall(h.await, h)
      assert.is_false(ok2)
      assert.are.equal(e, err2)
      assert.matches("in task %d+", tidal.traceback(e))
    end)
  end)

  it("join returns true and results, or false and the error, and never raises", function()
    support.run(function()
      local good = tidal.spawn(function() return 1, 2 end)
      local bad = tidal.spawn(function() error("nope", 0) end)
      assert.are.same({ true, 1, 2 }, { good:join() })
      assert.are.same({ false, "nope" }, { bad:join() })
    end)
  end)

  it("keeps errors raised under pcall inside a task contained", function()
    local r = support.run(function()
      local h = tidal.spawn(function()
        local ok, err = pcall(function()
          tidal.sleep(0.001)
          error("inner", 0)
        end)
        tidal.yield()
        return ok, err
      end)
      return { h:await() }
    end)
    assert.are.same({ false, "inner" }, r)
  end)

  it("refuses a task awaiting itself", function()
    local err = support.run(function()
      local me
      me = tidal.spawn(function()
        tidal.yield()
        local ok, e = pcall(me.await, me)
        assert.is_false(ok)
        return e
      end)
      return me:await()
    end)
    assert.matches("a task cannot wait for itself", err)
  end)

  it("refuses bad arguments with the function's name", function()
    support.run(function()
      local ok, err = pcall(tidal.spawn)
      assert.matches("tidal.spawn: expected a function to run as the task, got no value", err)
      ok, err = pcall(tidal.spawn, 5)
      assert.matches("got number", err)
      ok, err = pcall(tidal.spawn, { name = "x" })
      assert.matches("after the options table, got no value", err)
      ok, err = pcall(tidal.spawn, { name = 1 }, function() end)
      assert.matches("option 'name' must be a string", err)
      local h = tidal.spawn(function() end)
      ok, err = pcall(h.await)
      assert.matches("JoinHandle:await: expected a JoinHandle", err)
      ok, err = pcall(h.abort, {})
      assert.matches("JoinHandle:abort: expected a JoinHandle", err)
    end)
  end)

  it("refuses spawning outside a runtime", function()
    local ok, err = pcall(tidal.spawn, function() end)
    assert.is_false(ok)
    assert.matches("tidal.spawn: not inside a tidal task %(wrap the code in tidal.run", err)
  end)

  it("treats a plain coroutine.yield in a task body as tidal.yield", function()
    local r = support.run(function()
      local log = {}
      local a = tidal.spawn(function() log[#log + 1] = 1; coroutine.yield("ignored"); log[#log + 1] = 3 end)
      local b = tidal.spawn(function() log[#log + 1] = 2 end)
      a:await(); b:await()
      return log
    end)
    assert.are.same({ 1, 2, 3 }, r)
  end)

  it("lets plain coroutines run inside a task", function()
    local r = support.run(function()
      local co = coroutine.wrap(function(a) local b = coroutine.yield(a + 1); return b * 2 end)
      local x = co(1)
      tidal.sleep(0.001)
      return { x, co(5) }
    end)
    assert.are.same({ 2, 10 }, r)
  end)

  it("runs 100,000 tasks", function()
    local n = support.scaled(100000)
    local sum = support.run(function()
      local hs = {}
      for i = 1, n do hs[i] = tidal.spawn(function(x) return x end, i) end
      local s = 0
      for i = 1, n do s = s + hs[i]:await() end
      return s
    end)
    assert.are.equal(n * (n + 1) // 2, sum)
  end)

  it("runs 100,000 tasks that each wait once", function()
    local n = support.scaled(100000)
    local count = support.run(function()
      local c = 0
      local hs = {}
      for i = 1, n do hs[i] = tidal.spawn(function() tidal.yield(); c = c + 1 end) end
      for i = 1, n do hs[i]:await() end
      return c
    end)
    assert.are.equal(n, count)
  end)
end)

describe("unobserved task failures", function()
  it("are reported on stderr with their traceback", function()
    local out, status = support.lua([[
      local tidal = require("tidal")
      tidal.run(function()
        tidal.spawn({name = "lonely"}, function()
          local function explode() error("nobody listens") end
          explode()
        end)
        tidal.sleep(0.01)
        print("main done")
      end)
    ]])
    assert.are.equal(0, status)
    assert.matches("main done", out)
    assert.matches("tidal: task 2 %(lonely%) failed and its error was never observed", out)
    assert.matches("nobody listens", out)
    assert.matches("explode", out)
  end)

  it("are reported when the handle is collected", function()
    local out = support.lua([[
      local tidal = require("tidal")
      tidal.run(function()
        tidal.spawn(function() error("dropped", 0) end)
        tidal.yield()
        collectgarbage(); collectgarbage()
        io.stderr:write("after gc\n")
        tidal.sleep(0.01)
      end)
    ]])
    assert.matches("failed and its error was never observed:\ndropped.*after gc", out)
  end)

  it("are not reported once awaited, joined or cancelled", function()
    local out = support.lua([[
      local tidal = require("tidal")
      tidal.run(function()
        local a = tidal.spawn(function() error("seen", 0) end)
        local b = tidal.spawn(function() tidal.sleep(10) end)
        tidal.yield()
        b:abort()
        a:join()
      end)
      collectgarbage()
      print("clean")
    ]])
    assert.are.equal("clean\n", out)
  end)
end)
