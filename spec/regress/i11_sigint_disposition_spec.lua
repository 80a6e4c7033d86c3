-- A runtime whose tasks used tidal.signal on "int" gave back SIGINT's
-- default action (SIG_DFL) instead of the handler from before the run
-- (here lua5.4's own, which turns Ctrl-C into an "interrupted!" error):
-- the worker's extensions closed in the order they were set, so the
-- runtime's Ctrl-C watcher (set as block_on starts) put the old handler
-- back first, and io's signal watcher, closed after it, made libuv reset
-- SIGINT to the default when it stopped. Extensions now close last set,
-- first closed.
local support = require("support")

local it_child = support.can_spawn and it or pending

describe("issue 11: SIGINT's disposition after a run that used tidal.signal", function()
  it_child("is the one from before the run, whether the listener was left open or closed", function()
    local out, status = support.lua([[
local tidal = require("tidal")
local function caught() -- SIGINT has a handler (lua5.4's, during the chunk)
  for l in io.lines("/proc/self/status") do
    local m = l:match("^SigCgt:%s*(%x+)")
    if m then return (tonumber(m, 16) & 2) ~= 0 end
  end
end
print("before", caught())
tidal.run(function() local _ = tidal.signal.listen("int") end)
print("left open", caught())
tidal.run(function() local l <close> = tidal.signal.listen("int") end)
print("closed", caught())
tidal.run(function()
  local h = tidal.spawn(tidal.signal.ctrl_c)
  tidal.yield()
  h:abort()
end)
print("waiter", caught())
]], 30)
    assert.are.equal(0, status, out)
    assert.are.equal("before\ttrue\nleft open\ttrue\nclosed\ttrue\nwaiter\ttrue\n", out)
  end)
end)
