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

-- Whether specs may start child processes (not under ThreadSanitizer, whose
-- preloaded runtime does not survive in /bin/sh).
M.can_spawn = os.getenv("TIDAL_NO_CHILD") == nil

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

-- Measures elapsed seconds of fn(...).
function M.elapsed(fn, ...)
  local t0 = tidal.now()
  fn(...)
  return tidal.now() - t0
end

return M
