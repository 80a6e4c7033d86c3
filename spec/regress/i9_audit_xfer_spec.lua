-- Issue 9, audit of value transfer and parallel records (what a reviewer
-- finds beyond the numbered items): crashes and lost or stuck values on the
-- paths where values cross between Lua states.
local support = require("support")
local tidal = require("tidal")

local function run_child(code, limit)
  return support.lua(code, limit or 30)
end

describe("issue 9 audit: value transfer", function()
  it("a parallel task that cannot start on its worker fails its handle, again and again", function()
    if not support.can_spawn then return end
    -- the start path popped one slot too many of the scheduler's stack
    local out, status = run_child([[
      local tidal = require("tidal")
      package.preload.i9_audit_mod = function() return {} end
      local m = require("i9_audit_mod") -- not loadable on the worker
      print(tidal.run({ workers = 1 }, function()
        local failed, msg = 0, nil
        for _ = 1, 200 do
          local ok, err = tidal.spawn_parallel(function() return m end):join()
          if not ok then failed, msg = failed + 1, tostring(err) end
        end
        return failed, msg:match("module 'i9_audit_mod' not found") ~= nil,
          tidal.spawn_parallel(function() return 5 end):await()
      end))
    ]])
    assert.equal(0, status, out)
    assert.equal("200\ttrue\t5\n", out)
  end)

  it("an error that cannot be copied and whose __tostring raises still reaches join", function()
    local ok, err = support.run(function()
      return tidal.spawn_parallel(function()
        error(setmetatable({ co = coroutine.create(print) }, {
          __tostring = function() error("tostring fails") end,
        }))
      end):join()
    end)
    assert.is_false(ok)
    assert.equal("(error object is a table value)", tostring(err))
  end)

  it("copying survives a state whose package.loaded was removed", function()
    if not support.can_spawn then return end
    local out, status = run_child([[
      local tidal = require("tidal")
      local t = { 41 }
      print(tidal.run(function()
        debug.getregistry()._LOADED = nil
        return tidal.spawn_blocking(function() return t[1] + 1 end):await()
      end))
    ]])
    assert.equal(0, status, out)
    assert.equal("42\n", out)
  end)

  it("sees a module replaced in package.loaded (the name map is not stale)", function()
    local hooks = require("tidal.testhooks")
    package.loaded.i9_audit_a = { "a" }
    local a = package.loaded.i9_audit_a
    local function fa() return a end
    assert.truthy(hooks.encode(fa):find("\12\10i9_audit_a", 1, true)) -- by name
    -- as many modules as before, another one among them
    package.loaded.i9_audit_a = nil
    package.loaded.i9_audit_b = { "b" }
    local b = package.loaded.i9_audit_b
    local function fb() return b end
    local s = hooks.encode(fb)
    package.loaded.i9_audit_b = nil
    assert.truthy(s:find("\12\10i9_audit_b", 1, true), "b crosses by name")
  end)

  it("real handles work in a fresh Lua state that never loaded tidal", function()
    -- (the pool's states were one case: any state a host makes is another)
    local hooks = require("tidal.testhooks")
    local got = support.run(function()
      local tx, rx = tidal.channel()
      local m = tidal.mutex()
      local ok = hooks.run(function(sender, lock)
        local g = lock:try_lock()
        sender:send(tostring(sender):match("^tidal%.Sender") and "a Sender there"
          or tostring(sender))
        return g ~= nil and g:release()
      end, tx, m)
      return { rx:try_recv(), ok, m:try_lock() ~= nil }
    end)
    assert.same({ "a Sender there", true, true }, got)
  end)

  it("a parallel task aborted before it starts closes the ends it was given", function()
    if not support.can_spawn then return end
    local out, status = run_child([[
      local tidal = require("tidal")
      print(tidal.run(function()
        local tx, rx = tidal.channel()
        local h = tidal.spawn_parallel(function(tx) tx:send("ran") end, tx)
        h:abort() -- before it starts (it starts on this worker, later)
        tx:close()
        local got = {}
        for v in rx do got[#got + 1] = v end -- ends: h is still referenced
        return #got, select(2, h:join()).kind
      end))
    ]], 20)
    assert.equal(0, status, out)
    assert.equal("0\tcancelled\n", out)
  end)

  it("a oneshot sender copied to a worker can send after the original is closed", function()
    local v = tidal.run({ workers = 1 }, function()
      local tx, rx = tidal.oneshot()
      local gtx, grx = tidal.oneshot()
      local h = tidal.spawn_parallel(function(sender, gate)
        gate:recv()
        return sender:send("late")
      end, tx, grx)
      local waiter = tidal.spawn(function() return rx:recv() end)
      tidal.yield() -- it waits
      tx:close() -- this copy only: the worker's is still open
      gtx:send(true)
      assert(h:await())
      return waiter:await()
    end)
    assert.equal("late", v)
  end)
end)
