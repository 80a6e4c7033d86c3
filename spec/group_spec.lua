local tidal = require("tidal")
local support = require("support")

local closer = support.closer

describe("tidal.join_all", function()
  it("returns the results packed in input order, with .n", function()
    local r = support.run(function()
      return tidal.join_all({
        function() tidal.sleep(0.03); return 1, 2 end,
        function() tidal.sleep(0.01); return "b" end,
        function() end,
        function() return nil, "x" end,
      })
    end)
    assert.are.same({ { 1, 2, n = 2 }, { "b", n = 1 }, { n = 0 }, { nil, "x", n = 2 } }, r)
  end)

  it("runs the functions concurrently", function()
    local dt = support.run(function()
      local t0 = tidal.now()
      local fns = {}
      for i = 1, 10 do fns[i] = function() tidal.sleep(0.1) end end
      tidal.join_all(fns)
      return tidal.now() - t0
    end)
    assert.is_true(dt >= 0.1 and dt < 0.9, "took " .. dt .. " (in sequence: 1 s)")
  end)

  it("accepts JoinHandles as elements, mixed with functions", function()
    local r = support.run(function()
      local h = tidal.spawn(function() tidal.sleep(0.01); return "from handle" end)
      local done = tidal.spawn(function() return "already done" end)
      tidal.yield()
      return tidal.join_all({ h, function() return "from fn" end, done })
    end)
    assert.are.same({ { "from handle", n = 1 }, { "from fn", n = 1 }, { "already done", n = 1 } }, r)
  end)

  it("an empty list gives an empty result", function()
    local r = support.run(function() return tidal.join_all({}) end)
    assert.are.same({}, r)
  end)

  it("the first error cancels the others, which unwind before it propagates", function()
    local log = {}
    local e = { "first error" }
    local r = support.run(function()
      local ok, err = pcall(tidal.join_all, {
        function() local c <close> = closer(log, "a unwound"); tidal.sleep(30) end,
        function() tidal.sleep(0.01); error(e) end,
        function() local c <close> = closer(log, "c unwound"); tidal.sleep(30) end,
        function() tidal.sleep(0.05); error("second error") end,
      })
      local snapshot = { table.unpack(log) }
      return { ok = ok, same = rawequal(err, e), log = snapshot }
    end)
    assert.is_false(r.ok)
    assert.is_true(r.same, "the first error propagates with its identity")
    table.sort(r.log)
    assert.are.same({ "a unwound", "c unwound" }, r.log)
  end)

  it("an error from a JoinHandle element propagates and cancels the rest", function()
    local log = {}
    local r = support.run(function()
      local failing = tidal.spawn(function() tidal.sleep(0.01); error("handle failed", 0) end)
      local ok, err = pcall(tidal.join_all, {
        failing,
        function() local c <close> = closer(log, "fn unwound"); tidal.sleep(30) end,
      })
      return { ok, err, { table.unpack(log) } }
    end)
    assert.are.same({ false, "handle failed", { "fn unwound" } }, r)
  end)

  it("aborting the joining task cancels every element", function()
    local log = {}
    local r = support.run(function()
      local h = tidal.spawn(function()
        return tidal.join_all({
          function() local c <close> = closer(log, "1"); tidal.sleep(30) end,
          function() local c <close> = closer(log, "2"); tidal.sleep(30) end,
        })
      end)
      tidal.sleep(0.01)
      h:abort()
      local ok, err = h:join()
      return { ok = ok, kind = err.kind, log = { table.unpack(log) } }
    end)
    assert.is_false(r.ok)
    assert.are.equal("cancelled", r.kind)
    table.sort(r.log)
    assert.are.same({ "1", "2" }, r.log)
  end)

  it("rejects bad arguments", function()
    support.run(function()
      local ok, err = pcall(tidal.join_all, "x")
      assert.is_false(ok)
      assert.matches("tidal.join_all: expected a list of functions or JoinHandles", err)
      ok, err = pcall(tidal.join_all, { function() end, 5 })
      assert.is_false(ok)
      assert.matches("tidal.join_all: element 2 is a number, not a function or a JoinHandle", err)
    end)
    local ok, err = pcall(tidal.join_all, {})
    assert.is_false(ok)
    assert.matches("tidal.join_all: not inside a tidal task", err)
  end)
end)

describe("tidal.group", function()
  it("g:spawn returns a JoinHandle of the member", function()
    local r = support.run(function()
      local g = tidal.group()
      local h = g:spawn(function(x) return x * 2 end, 21)
      return { h:await(), tostring(h):match("JoinHandle") ~= nil }
    end)
    assert.are.same({ 42, true }, r)
  end)

  it("g:spawn accepts options", function()
    local r = support.run(function()
      local g = tidal.group()
      local h = g:spawn({ name = "member" }, function() return "named" end)
      return { h:name(), h:await() }
    end)
    assert.are.same({ "member", "named" }, r)
  end)

  it("join_next gives members in the order they finish, then nil", function()
    local r = support.run(function()
      local g = tidal.group()
      for i, d in ipairs({ 0.06, 0.02, 0.04 }) do
        g:spawn(function() tidal.sleep(d); return i end)
      end
      local order = {}
      while true do
        local res = table.pack(g:join_next())
        if res.n == 0 then break end
        assert.is_true(res[1])
        order[#order + 1] = res[2]
      end
      return { order = order, len = #g, again = select("#", g:join_next()) }
    end)
    assert.are.same({ 2, 3, 1 }, r.order)
    assert.are.equal(0, r.len)
    assert.are.equal(0, r.again)
  end)

  it("join_next gives false, err for a member that failed", function()
    local r = support.run(function()
      local g = tidal.group()
      g:spawn(function() error({ code = 7 }) end)
      local ok, err = g:join_next()
      return { ok, err.code }
    end)
    assert.are.same({ false, 7 }, r)
  end)

  it("join_next of an empty group gives nil at once", function()
    local r = support.run(function()
      return table.pack(tidal.group():join_next())
    end)
    assert.are.equal(0, r.n)
  end)

  it("#g counts the members not collected yet", function()
    local r = support.run(function()
      local g = tidal.group()
      local counts = { #g }
      g:spawn(function() return 1 end)
      g:spawn(function() tidal.sleep(0.02) end)
      counts[#counts + 1] = #g
      tidal.yield()          -- the first finishes; still counted until collected
      counts[#counts + 1] = #g
      g:join_next()
      counts[#counts + 1] = #g
      g:wait()
      counts[#counts + 1] = #g
      return counts
    end)
    assert.are.same({ 0, 2, 2, 1, 0 }, r)
  end)

  it("wait waits for every member", function()
    local r = support.run(function()
      local g = tidal.group()
      local done = 0
      for _ = 1, 5 do g:spawn(function() tidal.sleep(0.01); done = done + 1 end) end
      local res = table.pack(g:wait())
      return { done, res.n, #g }
    end)
    assert.are.same({ 5, 0, 0 }, r)
  end)

  it("wait with a failing member cancels the rest, lets them unwind, and raises the error", function()
    local log = {}
    local e = { "member failed" }
    local r = support.run(function()
      local g = tidal.group()
      g:spawn(function() local c <close> = closer(log, "a unwound"); tidal.sleep(30) end)
      g:spawn(function() tidal.sleep(0.01); error(e) end)
      g:spawn(function() local c <close> = closer(log, "b unwound"); tidal.sleep(30) end)
      local ok, err = pcall(g.wait, g)
      return { ok = ok, same = rawequal(err, e), log = { table.unpack(log) }, len = #g }
    end)
    assert.is_false(r.ok)
    assert.is_true(r.same)
    table.sort(r.log)
    assert.are.same({ "a unwound", "b unwound" }, r.log)
    assert.are.equal(0, r.len)
  end)

  it("abort cancels every member, including members that have not started yet", function()
    local r = support.run(function()
      local g = tidal.group()
      local ran = 0
      for _ = 1, 4 do g:spawn(function() ran = ran + 1; tidal.sleep(30) end) end
      g:abort()
      local kinds = {}
      local t0 = tidal.now()
      while true do
        local res = table.pack(g:join_next())
        if res.n == 0 then break end
        kinds[#kinds + 1] = res[1] and "ok" or res[2].kind
      end
      return { ran = ran, kinds = kinds, dt = tidal.now() - t0 }
    end)
    assert.are.same({ "cancelled", "cancelled", "cancelled", "cancelled" }, r.kinds)
    assert.are.equal(0, r.ran, "a member cancelled before it started must never run")
    assert.is_true(r.dt < 5)
  end)

  it("abort cancels started members waiting in different places", function()
    local log = {}
    local r = support.run(function()
      local g = tidal.group()
      local tx, rx = tidal.channel()
      local m = tidal.mutex()
      local held = m:lock()
      g:spawn(function() local c <close> = closer(log, "sleep"); tidal.sleep(30) end)
      g:spawn(function() local c <close> = closer(log, "recv"); rx:recv() end)
      g:spawn(function() local c <close> = closer(log, "lock"); m:lock() end)
      tidal.yield()
      g:abort()
      while g:join_next() ~= nil do end
      held:release()
      return { log = log, locked = m:is_locked() }
    end)
    table.sort(r.log)
    assert.are.same({ "lock", "recv", "sleep" }, r.log)
    assert.is_false(r.locked)
  end)

  it("<close> aborts what is left and waits for it to unwind", function()
    local log = {}
    local r = support.run(function()
      local finished
      do
        local g <close> = tidal.group()
        g:spawn(function() return "quick" end)
        finished = g:spawn(function()
          local c <close> = closer(log, "member unwound")
          tidal.sleep(30)
        end)
        tidal.yield()
      end
      local snapshot = { table.unpack(log) }
      local ok, err = finished:join()
      return { snapshot = snapshot, ok = ok, kind = err.kind }
    end)
    assert.are.same({ "member unwound" }, r.snapshot)
    assert.is_false(r.ok)
    assert.are.equal("cancelled", r.kind)
  end)

  it("<close> in a task that is aborted still waits for the members to unwind", function()
    local log = {}
    local r = support.run(function()
      local owner = tidal.spawn(function()
        local g <close> = tidal.group()
        g:spawn(function()
          local c <close> = closer(log, "member unwound")
          tidal.sleep(30)
        end)
        local c <close> = closer(log, "owner unwinding")
        tidal.sleep(30)
      end)
      tidal.sleep(0.01)
      owner:abort()
      local ok, err = owner:join()
      return { ok = ok, kind = err.kind, log = { table.unpack(log) } }
    end)
    assert.is_false(r.ok)
    assert.are.equal("cancelled", r.kind)
    assert.are.same({ "owner unwinding", "member unwound" }, r.log)
  end)

  it("<close> cancels members that have not started yet: they never run", function()
    local r = support.run(function()
      local ran = 0
      do
        local g <close> = tidal.group()
        for _ = 1, 3 do g:spawn(function() ran = ran + 1 end) end
      end
      tidal.sleep(0.01)
      return ran
    end)
    assert.are.equal(0, r)
  end)

  it("a closed group refuses new members", function()
    support.run(function()
      local g = tidal.group()
      g:close()
      local ok, err = pcall(g.spawn, g, function() end)
      assert.is_false(ok)
      assert.matches("Group:spawn: the group is closed", err)
    end)
  end)

  it("tidal.group outside a runtime raises", function()
    local ok, err = pcall(tidal.group)
    assert.is_false(ok)
    assert.matches("tidal.group: not inside a tidal task", err)
  end)
end)
