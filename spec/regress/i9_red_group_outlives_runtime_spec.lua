-- Issue 9, red team: a tidal.group that outlives its runtime. A runtime
-- collected without rt:close() drops its tasks as they are (their task
-- records are recycled), but a group made in one of its tasks kept the
-- dropped members linked through those records: the group's __gc (at the
-- next collection, or at exit), g:abort() or closing it then dereferenced
-- NULL (SIGSEGV). The dropped members now leave their group. Each case runs
-- in a child process, where a crash fails the test instead of the suite.
local support = require("support")

local function child(code)
  return support.lua(code, 30)
end

local prelude = [[
local tidal = require("tidal")
local g, member
local rt = tidal.runtime()
rt:spawn(function()
  g = tidal.group()
  member = g:spawn(function() tidal.sleep(100) end)
  g:spawn(function() tidal.sleep(100) end)
  tidal.sleep(100)
end)
rt:step(0)
rt = nil
collectgarbage() -- the runtime goes first; the group stays reachable
]]

describe("issue 9 red: a group whose runtime was collected", function()
  if not support.can_spawn then
    pending("needs child processes")
    return
  end

  it("forgets the dropped members: its __gc does not crash", function()
    local out, status = child(prelude .. [[
      print("members", #g)
      g = nil
      collectgarbage()
      print("finished")
    ]])
    assert.are.equal(0, status, out)
    assert.matches("members\t0", out)
    assert.matches("finished", out)
  end)

  it("can be aborted, closed and waited on", function()
    local out, status = child(prelude .. [[
      g:abort()
      print("aborted", #g)
      print("member", member:join())
      getmetatable(g).__close(g)
      print("wait", tidal.run(function() return g:wait() end))
      print("spawn", pcall(g.spawn, g, print))
      print("finished")
    ]])
    assert.are.equal(0, status, out)
    assert.matches("aborted\t0", out)
    assert.matches("member\tfalse\t", out)
    assert.matches("spawn\tfalse\t.*Group:spawn: the group is closed", out)
    assert.matches("finished", out)
  end)

  it("at exit, with members left, the process ends cleanly", function()
    local out, status = child(prelude .. [[
      print("finished")
    ]])
    assert.are.equal(0, status, out)
    assert.matches("finished", out)
  end)
end)
