-- Shared helpers for the specs.
local tidal = require("tidal")

local M = {}

-- TIDAL_SPEC_SCALE shrinks the big specs (the sanitizer and valgrind runs
-- set it): scaled(n) is at least 1.
M.scale = tonumber(os.getenv("TIDAL_SPEC_SCALE") or "1") or 1
function M.scaled(n)
  return math.max(1, math.floor(n * M.scale + 0.5))
end

-- A to-be-closed value that appends tag to log when it is closed.
function M.closer(log, tag)
  return setmetatable({}, { __close = function() log[#log + 1] = tag end })
end

-- Runs fn(...) as a task inside tidal.run and returns its results. A test
-- that has not finished after `deadline` seconds (default 20) is aborted and
-- fails, so a hang cannot stall the suite.
function M.run(fn, ...)
  return M.run_within(20, fn, ...)
end

function M.run_within(deadline, fn, ...)
  return tidal.run(function(...)
    local h = tidal.spawn({ name = "test" }, fn, ...)
    local dog = tidal.spawn({ name = "watchdog" }, function()
      tidal.sleep(deadline)
      h:abort()
    end)
    local r = table.pack(h:join())
    dog:abort()
    if not r[1] then
      if tidal.is_error(r[2], "cancelled") and dog:is_finished() then
        error("test did not finish within " .. deadline .. " s", 0)
      end
      error(r[2], 0)
    end
    return table.unpack(r, 2, r.n)
  end, ...)
end

-- Whether specs may start child processes (TIDAL_NO_CHILD=1 says no).
M.can_spawn = os.getenv("TIDAL_NO_CHILD") == nil

-- The sanitizer the run is under: "asan", "tsan" (make test-tsan: Lua
-- children get libtsan through the lua5.4 it puts first on PATH) or nil.
M.sanitizer = os.getenv("TIDAL_TSAN_PRELOAD") and "tsan"
  or (os.getenv("LD_PRELOAD") or ""):find("asan") and "asan" or nil

-- The resident set of this process in KiB (/proc/self/status).
function M.rss_kb()
  local f = assert(io.open("/proc/self/status"))
  local kb = tonumber(f:read("a"):match("VmRSS:%s*(%d+)"))
  f:close()
  return kb
end

-- Runs a Lua chunk in a child lua5.4 (same module paths and environment)
-- under `timeout`: after secs (default 60) it gets SIGTERM, 2 s later
-- SIGKILL. Returns its combined stdout and stderr, its exit status (0 on
-- success, 124 when it timed out, 128 + n when signal n ended it, e.g. 139
-- for a segfault) and how p:close() saw it end ("exit" or "signal").
function M.lua(code, secs)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(code)
  f:close()
  local p = assert(io.popen(("timeout -k 2 %d lua5.4 %s 2>&1"):format(secs or 60, path), "r"))
  local out = p:read("a")
  local _, how, status = p:close()
  os.remove(path)
  return out, status, how
end

-- What the process holds, for the io specs (tidal.testhooks, built into
-- every test tree by the Makefile).
local hooks_ok, hooks = pcall(require, "tidal.testhooks")

-- { [fd] = link target } of the open file descriptors.
function M.fds()
  assert(hooks_ok, "support.fds needs tidal.testhooks (build with make)")
  return hooks.fds()
end

-- { {pid =, state =}, ... }: every child process (of any thread), zombies
-- (state "Z") included.
function M.children()
  assert(hooks_ok, "support.children needs tidal.testhooks (build with make)")
  return hooks.children()
end

-- The children that are zombies (exited, not reaped).
function M.zombies()
  local z = {}
  for _, c in ipairs(M.children()) do
    if c.state == "Z" then z[#z + 1] = c end
  end
  return z
end

-- A description of the descriptors open in after and not (or not the same)
-- in before, or nil when there are none.
function M.fd_diff(before, after)
  local extra = {}
  for fd, target in pairs(after) do
    if before[fd] ~= target then
      extra[#extra + 1] = ("%d -> %s"):format(fd, target)
    end
  end
  table.sort(extra)
  return #extra > 0 and table.concat(extra, ", ") or nil
end

-- Creates, once per process, the process-wide descriptors that the first
-- use of some io function leaves open for good (libuv's signal lock pipe),
-- so that run_io compares like with like (run_io calls it first).
local warmed = false
function M.warm_io()
  if warmed then return end
  warmed = true
  M.run(function() -- (the first loop makes libuv's signal pipe)
    local net, process, signal = tidal.net, tidal.process, tidal.signal
    if net.listen and net.connect then
      local l = assert(net.listen("127.0.0.1", 0))
      local c = assert(net.connect("127.0.0.1", l:port()))
      local s = assert(l:accept())
      s:close()
      c:close()
      l:close()
    end
    if process.exec then assert(process.exec({ "true" })) end
    if signal.listen then signal.listen("usr2"):close() end
  end)
end

-- M.run(fn, ...), then checks that the process holds no descriptor it did
-- not hold before and has no child process (running or zombie).
function M.run_io(fn, ...)
  M.warm_io()
  local before = M.fds()
  local r = table.pack(M.run(fn, ...))
  local leaks = M.io_leaks(before)
  if leaks then error(leaks, 2) end
  return table.unpack(r, 1, r.n)
end

-- The problems of the process now against a fds() snapshot: descriptors
-- opened since and children left (running or zombie), or nil.
function M.io_leaks(before)
  local diff = M.fd_diff(before, M.fds())
  local kids = M.children()
  local list = {}
  for _, c in ipairs(kids) do list[#list + 1] = c.pid .. " " .. tostring(c.state) end
  local out = {}
  if diff then out[#out + 1] = "descriptors left open: " .. diff end
  if #list > 0 then out[#out + 1] = "child processes left: " .. table.concat(list, ", ") end
  return #out > 0 and table.concat(out, "; ") or nil
end

-- For an io spec file, called at its top level: every test of the file
-- must end holding the descriptors it began with and no child process
-- (the issue's bar, checked on /proc/self/fd after each test, whatever the
-- test ran: runtimes, child Lua processes, shells). A test that leaks
-- fails with the list.
function M.guard_io()
  local env, i = nil, 1 -- (busted's names live in the spec file's _ENV)
  local caller = debug.getinfo(2, "f").func
  while true do
    local name, v = debug.getupvalue(caller, i)
    if name == nil or name == "_ENV" then env = v; break end
    i = i + 1
  end
  assert(env and env.before_each, "support.guard_io: call it at a spec file's top level")
  local before
  env.before_each(function()
    M.warm_io()
    before = M.fds()
  end)
  env.after_each(function()
    local leaks = M.io_leaks(before)
    if leaks then error(leaks, 0) end
  end)
end

-- Measures elapsed seconds of fn(...).
function M.elapsed(fn, ...)
  local t0 = tidal.now()
  fn(...)
  return tidal.now() - t0
end

return M
