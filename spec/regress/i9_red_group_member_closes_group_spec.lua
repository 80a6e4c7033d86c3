-- Issue 9, red team: a member of a tidal.group closing its own group (the
-- group reached through an upvalue, or `<close>`). Closing cancels the
-- members and runs them at once to let them unwind, the member itself
-- included: its running coroutine was treated as closed and reset under
-- it, and the process died with SIGSEGV (the same from a select branch
-- the member started, which runs nested inside it). g:wait() from a member
-- waited for itself (and, after a sibling failed, crashed the same way).
-- Both now raise an error that says why; g:abort() from a member still
-- cancels the members, itself included. Runs in a child process, where a
-- crash fails the test instead of the suite.
local support = require("support")
local tidal = require("tidal")

describe("issue 9 red: a member closing or waiting for its own group",
         function()
  if support.can_spawn then
    it("g:close() from a member raises, without a crash", function()
      local out, status = support.lua([[
local tidal = require("tidal")
tidal.run(function()
  local g = tidal.group()
  g:spawn(function() tidal.yield(); return pcall(g.close, g) end)
  local sib = g:spawn(function() tidal.sleep(0.05); return "sibling" end)
  print("member", g:join_next())
  print("sibling", sib:await())
end)
print("finished")
]], 20)
      assert.are.equal(0, status, out)
      assert.matches("member\ttrue\tfalse\t[^\n]*Group:close: a member "
                     .. "cannot close its own group", out)
      assert.matches("sibling\tsibling", out)
      assert.matches("finished", out)
    end)

    it("g:close() from a select branch a member runs raises", function()
      local out, status = support.lua([[
local tidal = require("tidal")
tidal.run(function()
  local g = tidal.group()
  local m = g:spawn(function()
    return tidal.select({
      function() g:close(); return "closed" end, -- started at once, nested
      function() tidal.sleep(1) end,
    })
  end)
  print("member", m:join())
end)
print("finished")
]], 20)
      assert.are.equal(0, status, out)
      assert.matches("member\tfalse\t[^\n]*Group:close: a member cannot "
                     .. "close its own group %(nor can a select branch", out)
      assert.matches("finished", out)
    end)

    it("g:wait() from a member raises, also after a sibling failed",
       function()
      local out, status = support.lua([[
local tidal = require("tidal")
tidal.run(function()
  local g = tidal.group()
  local failed = g:spawn(function() error("boom") end)
  local m = g:spawn(function() tidal.yield(); return pcall(g.wait, g) end)
  print("member", m:await())
  print("failed", failed:join())
end)
print("finished")
]], 20)
      assert.are.equal(0, status, out)
      assert.matches("member\tfalse\t[^\n]*Group:wait: a member cannot "
                     .. "wait for its own group", out)
      assert.matches("failed\tfalse\t[^\n]*boom", out)
      assert.matches("finished", out)
    end)
  end

  it("g:abort() from a member cancels every member, itself included",
     function()
    support.run(function()
      local g = tidal.group()
      local other = g:spawn(function() tidal.sleep(10) end)
      local m = g:spawn(function()
        tidal.yield()
        g:abort()
        tidal.sleep(10)
      end)
      local ok, e = m:join()
      assert.is_false(ok)
      assert.is_true(tidal.is_error(e, "cancelled"))
      ok = other:join()
      assert.is_false(ok)
      g:close()
    end)
  end)

  it("a task outside the group still closes it and waits", function()
    support.run(function()
      local g = tidal.group()
      local log = {}
      g:spawn(function()
        local c <close> = support.closer(log, "member unwound")
        tidal.sleep(10)
      end)
      tidal.yield()
      g:close()
      assert.are.same({ "member unwound" }, log)
    end)
  end)
end)
