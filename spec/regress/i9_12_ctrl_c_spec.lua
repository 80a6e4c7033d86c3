-- Issue 9 item 12: Ctrl-C did nothing. SIGINT during tidal.run (or
-- rt:block_on) was ignored while main slept or other tasks ran (tasks run in
-- coroutines, where lua5.4's own interrupt hook never fires, and the loop
-- sits in epoll). Now, as with plain lua5.4: the main task is cancelled with
-- an error of kind "interrupted", <close> handlers run, the error escapes
-- tidal.run (lua5.4 prints it and exits 1), busy Lua code is interrupted, and
-- a second Ctrl-C ends the process at once.
--
-- Each case runs a script in a child lua5.4 and sends it SIGINT through
-- spec/fixtures/sigint.py (a shell's `&` would start the child with SIGINT
-- ignored).
local support = require("support")

local here = debug.getinfo(1, "S").source:match("^@(.*)/regress/[^/]*$")
  or "spec"
local helper = here .. "/fixtures/sigint.py"

-- Runs code in a child lua5.4; steps as sigint.py takes them. Returns the
-- output, the exit code (negative: killed by that signal) and the seconds
-- from the first SIGINT to the exit.
local function interrupt(code, steps)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(code)
  f:close()
  local quoted = {}
  for i, s in ipairs(steps) do quoted[i] = "'" .. s .. "'" end
  local p = assert(io.popen(("python3 %s %s -- lua5.4 %s 2>&1"):format(
    helper, table.concat(quoted, " "), path)))
  local out = p:read("a")
  p:close()
  os.remove(path)
  local exit = tonumber(out:match("\nEXIT (%-?%d+)\n"))
  local after = tonumber(out:match("\nAFTER (%-?[%d.]+)"))
  return out, exit, after
end

local closer = [[
local function closer(tag)
  return setmetatable({}, { __close = function() print(tag) end })
end
]]

local it_child = support.can_spawn and it or pending
-- ThreadSanitizer runs a signal handler only when the thread next enters
-- its runtime (an intercepted call): a Lua loop that calls nothing it
-- intercepts never does, so these cases cannot pass under make test-tsan
local it_busy = support.sanitizer ~= "tsan" and it_child or pending

describe("issue 9 item 12: Ctrl-C during tidal.run", function()
  it_child("cancels main while it sleeps and other tasks tick: kind "
    .. "'interrupted', <close> runs, lua5.4 exits 1", function()
    local out, exit, after = interrupt([[
local tidal = require("tidal")
]] .. closer .. [[
local ok, err = pcall(tidal.run, function()
  local c <close> = closer("main closed")
  tidal.spawn(function()
    local t <close> = closer("ticker closed")
    while true do tidal.sleep(0.005) end
  end)
  print("ready"); io.stdout:flush()
  tidal.sleep(30)
end)
print("ok", ok, "kind", err.kind, "message", err.message)
error(err, 0) -- as if uncaught
]], { "line:ready", "0.3" })
    assert.matches("main closed", out)
    assert.matches("ticker closed", out)
    assert.matches("ok\tfalse\tkind\tinterrupted\tmessage\tinterrupted", out)
    assert.matches("lua5.4: interrupted", out)
    assert.equal(1, exit)
    assert.is_true(after < 5, "took " .. tostring(after) .. " s")
  end)

  it_child("lets the error escape tidal.run uncaught", function()
    local out, exit = interrupt([[
local tidal = require("tidal")
]] .. closer .. [[
tidal.run(function()
  local c <close> = closer("main closed")
  print("ready"); io.stdout:flush()
  tidal.sleep(30)
end)
print("not reached")
]], { "line:ready", "0.3" })
    assert.matches("main closed", out)
    assert.matches("lua5.4: interrupted", out)
    assert.not_matches("not reached", out)
    assert.equal(1, exit)
  end)

  it_busy("interrupts main busy in a Lua loop", function()
    local out, exit, after = interrupt([[
local tidal = require("tidal")
]] .. closer .. [[
tidal.run(function()
  local c <close> = closer("main closed")
  print("ready"); io.stdout:flush()
  local n = 0
  while true do n = n + 1 end
end)
]], { "line:ready", "0.3" })
    assert.matches("main closed", out)
    assert.matches("lua5.4: interrupted", out)
    assert.equal(1, exit)
    assert.is_true(after < 5, "took " .. tostring(after) .. " s")
  end)

  it_busy("interrupts another task busy in a loop while main sleeps",
    function()
    local out, exit, after = interrupt([[
local tidal = require("tidal")
]] .. closer .. [[
tidal.run(function()
  local c <close> = closer("main closed")
  local busy = tidal.spawn(function()
    local b <close> = closer("busy closed")
    while true do end
  end)
  print("ready"); io.stdout:flush()
  tidal.sleep(30)
end)
]], { "line:ready", "0.3" })
    assert.matches("busy closed", out)
    assert.matches("main closed", out)
    assert.matches("lua5.4: interrupted", out)
    assert.equal(1, exit)
    assert.is_true(after < 5, "took " .. tostring(after) .. " s")
  end)

  it_child("cancels the tasks of worker threads as on shutdown", function()
    local out, exit, after = interrupt([[
local tidal = require("tidal")
]] .. closer .. [[
tidal.run({ workers = 2 }, function()
  local c <close> = closer("main closed")
  tidal.spawn_parallel(function()
    local b <close> = setmetatable({}, { __close = function()
      print("worker busy closed")
    end })
    while true do end
  end)
  tidal.spawn_parallel(function()
    local s <close> = setmetatable({}, { __close = function()
      print("worker sleeper closed")
    end })
    tidal.sleep(30)
  end)
  tidal.sleep(0.1)
  print("ready"); io.stdout:flush()
  tidal.sleep(30)
end)
]], { "line:ready", "0.3" })
    assert.matches("main closed", out)
    assert.matches("worker busy closed", out)
    assert.matches("worker sleeper closed", out)
    assert.matches("lua5.4: interrupted", out)
    assert.equal(1, exit)
    assert.is_true(after < 5, "took " .. tostring(after) .. " s")
  end)

  it_busy("a second Ctrl-C while cleanup runs ends the process at once",
    function()
    local out, exit, after = interrupt([[
local tidal = require("tidal")
tidal.run(function()
  local c <close> = setmetatable({}, { __close = function()
    print("cleanup started"); io.stdout:flush()
    local t = os.clock()
    while os.clock() - t < 15 do end -- a long cleanup
    print("cleanup ended")
  end })
  print("ready"); io.stdout:flush()
  tidal.sleep(30)
end)
]], { "line:ready", "0.3", "line:cleanup started", "0.3" })
    assert.matches("cleanup started", out)
    assert.not_matches("cleanup ended", out)
    assert.equal(-2, exit) -- killed by SIGINT
    assert.is_true(after < 5, "took " .. tostring(after) .. " s")
  end)

  it_busy("interrupts rt:block_on; the runtime stays usable, and the "
    .. "host's own SIGINT handling is back afterwards", function()
    local out, exit = interrupt([[
local tidal = require("tidal")
local rt = tidal.runtime()
print("ready"); io.stdout:flush()
local ok, err = pcall(rt.block_on, rt, function() tidal.sleep(30) end)
print("block_on", ok, err.kind)
print("again", rt:block_on(function() tidal.sleep(0.01) return 42 end))
rt:close()
-- plain Lua again: lua5.4's own Ctrl-C handler must be in place
print("ready2"); io.stdout:flush()
local t = os.clock()
while os.clock() - t < 15 do end
print("not interrupted")
]], { "line:ready", "0.3", "line:ready2", "0.3" })
    assert.matches("block_on\tfalse\tinterrupted", out)
    assert.matches("again\t42", out)
    -- lua.c's laction / lstop: "interrupted!" and exit 1, not SIG_DFL
    assert.matches("interrupted!", out)
    assert.not_matches("not interrupted", out)
    assert.equal(1, exit)
  end)
end)
