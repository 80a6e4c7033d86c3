-- tidal.signal: wait(name), ctrl_c(), listen(name).
--
-- Every case that sends a real signal runs in a child lua5.4, so a signal
-- that is not caught ends that child, not busted. The child signals
-- itself with kill(1) through os.execute; Ctrl-C comes from
-- spec/fixtures/sigint.py, as a terminal would send it.
local tidal = require("tidal")
local support = require("support")

-- every test ends with the descriptors it began with, and no child
support.guard_io()

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec"
local sigint_py = here .. "/fixtures/sigint.py"

local it_child = support.can_spawn and it or pending

-- prepended to every child program
local prelude = [[
local tidal = require("tidal")
local signal = tidal.signal
local function pid()
  local f = assert(io.open("/proc/self/stat"))
  local s = f:read("l")
  f:close()
  return s:match("^(%d+)")
end
local function kill(sig) -- delivered before os.execute returns
  assert(os.execute("kill -" .. sig .. " " .. pid()))
end
local function say(...) print(...); io.stdout:flush() end
]]

-- Runs code in a child lua5.4 (support.lua, 20 s at most); returns its
-- output and exit status (128 + n when signal n ended it).
local function child(code)
  local out, status = support.lua(prelude .. code, 20)
  return out, status
end

-- The same through sigint.py (steps: "line:TEXT" or seconds then SIGINT);
-- returns the output and the exit code (negative: killed by that signal).
local function interrupt(code, steps)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(prelude, code)
  f:close()
  local quoted = {}
  for i, s in ipairs(steps) do quoted[i] = "'" .. s .. "'" end
  local p = assert(io.popen(("python3 %s %s -- lua5.4 %s 2>&1"):format(
    sigint_py, table.concat(quoted, " "), path)))
  local out = p:read("a")
  p:close()
  os.remove(path)
  return out, tonumber(out:match("\nEXIT (%-?%d+)\n"))
end

describe("tidal.signal.wait", function()
  it_child("returns the signal's name to every task waiting for it", function()
    local out, status = child([[
tidal.run(function()
  local hs = {}
  for i, name in ipairs({ "usr1", "SIGUSR1", "Usr1", 10 }) do
    hs[i] = tidal.spawn(signal.wait, name)
  end
  tidal.yield() -- all four wait now
  kill("USR1")  -- one delivery
  for i = 1, 4 do say("got", hs[i]:await()) end
end)
say("done")
]])
    assert.are.equal(0, status, out)
    local _, n = out:gsub("got\tusr1\n", "")
    assert.are.equal(4, n, out)
    assert.matches("done", out)
  end)

  it_child("waits for the next delivery only; a signal nobody waits for has "
    .. "its default effect", function()
    local out, status = child([[
tidal.run(function()
  local h = tidal.spawn(signal.wait, "usr1")
  tidal.yield()
  kill("USR1")
  say("first", h:await())
  say("now unwatched")
  kill("USR1") -- SIGUSR1's default: the process ends
  say("not reached")
end)
]])
    assert.matches("first\tusr1\nnow unwatched\n", out)
    assert.not_matches("not reached", out)
    assert.are.equal(128 + 10, status, out)
  end)

  it_child("stops watching when its wait is cancelled", function()
    local out, status = child([[
tidal.run(function()
  local ok, err = tidal.timeout(0.05, signal.wait, "usr2")
  say("timeout", ok, err.kind)
  local h = tidal.spawn(signal.wait, "usr2")
  tidal.yield()
  h:abort()
  say("aborted", h:join())
  kill("USR2")
  say("not reached")
end)
]])
    assert.matches("timeout\tfalse\ttimeout\n", out)
    assert.matches("aborted\tfalse\ttask %d+ was cancelled\n", out)
    assert.not_matches("not reached", out)
    assert.are.equal(128 + 12, status, out)
  end)

  it_child("keeps the runtime alive while a task waits (not a deadlock)", function()
    local out, status = child([[
tidal.run(function()
  assert(os.execute("(sleep 0.3; kill -HUP " .. pid() .. ") &"))
  say("got", signal.wait("SIGHUP")) -- main alone, parked on the signal
end)
say("done")
]])
    assert.are.equal(0, status, out)
    assert.matches("got\thup\ndone\n", out)
  end)

  it_child("wakes waiters on every worker", function()
    local out, status = child([[
tidal.run({ workers = 1 }, function()
  local remote = tidal.spawn_parallel(function()
    return require("tidal").signal.wait("usr1")
  end)
  local here = tidal.spawn(signal.wait, "usr1")
  tidal.sleep(0.2) -- both wait now (the worker's task started meanwhile)
  kill("USR1")
  say("here", here:await())
  say("remote", remote:await())
end)
]])
    assert.are.equal(0, status, out)
    assert.matches("here\tusr1\n", out)
    assert.matches("remote\tusr1\n", out)
  end)
end)

describe("tidal.signal.listen", function()
  it_child("counts deliveries between recv calls and holds the signal while open", function()
    local out, status = child([[
tidal.run(function()
  local l <close> = signal.listen("term")
  say(tostring(l))
  kill("TERM"); kill("TERM"); kill("TERM") -- nobody in recv: no default effect
  tidal.sleep(0.01)
  say("recv", l:recv())
  local h = tidal.spawn(l.recv, l)
  tidal.yield()
  kill("TERM")
  say("parked recv", h:await())
  say("alive")
end)
say("done")
]])
    assert.are.equal(0, status, out)
    assert.matches("tidal.SignalListener %(term, 0 pending%)\n", out)
    assert.matches("recv\tterm\t3\n", out)
    assert.matches("parked recv\tterm\t1\nalive\ndone\n", out)
  end)

  it_child("ends a recv loop when closed; after close the default is back", function()
    local out, status = child([[
tidal.run(function()
  local l = signal.listen("usr1")
  local n = 0
  local h = tidal.spawn(function()
    while l:recv() do n = n + 1 end
    return select(2, l:recv())
  end)
  tidal.yield()
  kill("USR1")
  tidal.sleep(0.01)
  kill("USR1")
  tidal.sleep(0.01)
  l:close()
  local err = h:await()
  say("loop", n, err.kind, err.message)
  l:close() -- idempotent
  say(tostring(l))
  kill("USR1")
  say("not reached")
end)
]])
    assert.matches("loop\t2\tclosed\tSignalListener:recv: the listener was closed\n", out)
    assert.matches("tidal.SignalListener %(closed%)\n", out)
    assert.not_matches("not reached", out)
    assert.are.equal(128 + 10, status, out)
  end)

  it_child("passes a delivery on when a woken recv is cancelled before it runs", function()
    local out, status = child([[
tidal.run(function()
  local l <close> = signal.listen("usr2")
  local a = tidal.spawn(l.recv, l)
  local b = tidal.spawn(l.recv, l)
  local stopper = tidal.spawn(function() signal.wait("usr1"); a:abort() end)
  tidal.yield() -- a then b in recv, the stopper in wait
  -- both deliveries are read in one poll, in order: the stopper is woken,
  -- then a; the stopper runs first and cancels a, woken and not run yet
  kill("USR1"); kill("USR2")
  tidal.sleep(0.05)
  say("a", a:join())
  say("b", tidal.timeout(2, b.await, b))
end)
]])
    assert.are.equal(0, status, out)
    assert.matches("a\tfalse\ttask %d+ was cancelled\n", out)
    assert.matches("b\ttrue\tusr2\t1\n", out)
  end)

  it_child("an open listener nobody reads neither keeps the runtime alive nor "
    .. "hides a deadlock", function()
    local out, status = child([[
local t0 = os.time()
tidal.run(function()
  local l = signal.listen("usr1") -- left open
end)
say("returned", os.time() - t0 < 5)
local ok, err = pcall(tidal.run, function()
  local l <close> = signal.listen("usr1")
  local tx, rx = tidal.channel()
  rx:recv() -- nothing can send: a deadlock
end)
say("deadlock", err.kind)
]])
    assert.are.equal(0, status, out)
    assert.matches("returned\ttrue\n", out)
    assert.matches("deadlock\tdeadlock\n", out)
  end)

  it_child("is closed when the runtime ends, and leaves no descriptor behind", function()
    local out, status = child([[
local hooks = require("tidal.testhooks")
local function nfds() local n = 0; for _ in pairs(hooks.fds()) do n = n + 1 end; return n end
local kept
tidal.run(function() -- warm-up: libuv's process-wide signal pipe
  kept = signal.listen("usr1")
end)
local before = nfds()
tidal.run(function()
  kept = signal.listen("usr1")
  local h = tidal.spawn(signal.wait, "usr2")
  tidal.yield()
  kill("USR2")
  h:await()
end)
say("fds", before == nfds())
local ok, e = pcall(kept.recv, kept)
say("after", ok, e)
kill("USR1")
say("not reached")
]])
    assert.matches("fds\ttrue\n", out)
    assert.matches("after\tfalse\t.*SignalListener:recv: not inside a tidal task", out)
    assert.not_matches("not reached", out)
    assert.are.equal(128 + 10, status, out)
  end)
end)

describe("Ctrl-C and tidal.signal", function()
  it_child("goes to a ctrl_c() waiter instead of cancelling main; the next one "
    .. "cancels main", function()
    local out, exit = interrupt([[
tidal.run(function()
  local h = tidal.spawn(signal.ctrl_c)
  tidal.yield()
  say("ready")
  say("got", h:await())
  say("waiting again")
  tidal.sleep(15)
  say("not reached")
end)
]], { "line:ready", "0.2", "line:waiting again", "0.2" })
    assert.matches("got\tint\n", out)
    assert.matches("waiting again\n", out)
    assert.matches("lua5.4: interrupted", out)
    assert.not_matches("not reached", out)
    assert.are.equal(1, exit)
  end)

  it_child("goes to an open listener every time, never ending the process", function()
    local out, exit = interrupt([[
tidal.run(function()
  local l <close> = signal.listen("int")
  say("ready")
  local total = 0
  while total < 3 do
    local _, n = l:recv()
    total = total + n
    say("ctrl-c", total)
  end
end)
say("done")
]], { "line:ready", "0.2", "0.2", "0.2" })
    assert.matches("ctrl%-c\t3\ndone\n", out)
    assert.are.equal(0, exit)
  end)

  it_child("interrupts main again once the listener is closed, and in a later run", function()
    local out, exit = interrupt([[
tidal.run(function()
  local l = signal.listen("int") -- open when the runtime ends
  local h = tidal.spawn(signal.ctrl_c)
  tidal.yield()
  say("ready")
  say("got", h:await())
end)
local ok, err = pcall(tidal.run, function()
  say("second run")
  tidal.sleep(15)
end)
say("second", ok, err.kind)
]], { "line:ready", "0.2", "line:second run", "0.2" })
    assert.matches("got\tint\n", out)
    assert.matches("second\tfalse\tinterrupted\n", out)
    assert.are.equal(0, exit)
  end)
end)

describe("tidal.signal misuse", function()
  local function err_of(f, ...)
    local ok, e = pcall(f, ...)
    assert.is_false(ok)
    return e
  end

  it("raises for bad names, uncatchable signals and calls outside a task", function()
    support.run(function()
      assert.matches("tidal.signal.wait: unknown signal 'foo' %(known: hup, int, quit",
        err_of(tidal.signal.wait, "foo"))
      assert.matches("unknown signal '99'", err_of(tidal.signal.wait, 99))
      assert.matches("unknown signal '1.5'", err_of(tidal.signal.wait, 1.5))
      assert.matches('expected a signal name such as "int" or "term", got no value',
        err_of(tidal.signal.wait))
      assert.matches("got table", err_of(tidal.signal.listen, {}))
      assert.matches("tidal.signal.wait: SIGKILL cannot be caught", err_of(tidal.signal.wait, "kill"))
      assert.matches("tidal.signal.listen: SIGSTOP cannot be caught", err_of(tidal.signal.listen, "SIGSTOP"))
      assert.matches("SIGPIPE cannot be waited for %(tidal ignores it", err_of(tidal.signal.wait, "pipe"))
      local l <close> = tidal.signal.listen("usr2")
      assert.matches("SignalListener:recv: expected a SignalListener as self",
        err_of(l.recv, 5))
    end)
    assert.matches("tidal.signal.wait: not inside a tidal task", err_of(tidal.signal.wait, "usr1"))
    assert.matches("tidal.signal.ctrl_c: not inside a tidal task", err_of(tidal.signal.ctrl_c))
    assert.matches("tidal.signal.listen: not inside a tidal runtime", err_of(tidal.signal.listen, "usr1"))
  end)
end)
