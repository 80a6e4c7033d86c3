--- Child processes for tidal tasks: run a program and collect its output
-- (`exec`), or start one and talk to it through pipes (`spawn`). Waiting
-- for a child parks the task; the others run meanwhile.
--
--     local process = require("tidal.process")   -- also tidal.process
--     tidal.run(function()
--       local res = assert(process.exec({"echo", "hello"}))
--       print(res.status, res.stdout)              --> 0  hello
--     end)
--
-- `argv` is always a list: the program (looked up in PATH) and its
-- arguments, passed as they are. There is never a shell, so nothing in an
-- argument is interpreted (write `{"sh", "-c", script}` to get one).
--
-- A task cancelled while it waits on a child it started (abort, timeout,
-- select, the runtime ending) kills the child and reaps it: no zombie, no
-- orphan. A child that nobody waits for runs on (collecting its Child does
-- not kill it) and is reaped when it exits; when the runtime ends, every
-- child still running is killed and reaped, except detached ones. The
-- full reference is docs/process.md.
-- @module tidal.process

local core = require("tidal.core")

local type, tostring, pcall = type, tostring, pcall

local c_spawn, c_kill, c_pid, c_signal = core._process_spawn,
  core._process_kill, core._process_pid, core._process_signal
local timeout, join_all, make_error = core.timeout, core.join_all, core.error

local M = {}

-- misuse: raise at the first caller outside tidal's files (the user's code)
local argcheck = require("tidal.argcheck")
argcheck.own()
local argerror = argcheck.argerror

local boolean = argcheck.boolean
local function string_opt(fname, k, v)
  if type(v) ~= "string" then
    argerror(fname, "option '" .. k .. "' must be a string, got " .. type(v))
  end
end
local function table_opt(fname, k, v)
  if type(v) ~= "table" then
    argerror(fname, "option '" .. k .. "' must be a table, got " .. type(v))
  end
end
local function stdio(fname, k, v)
  if v ~= "pipe" and v ~= "inherit" and v ~= "ignore" then
    argerror(fname, "option '" .. k .. "' must be \"pipe\", \"inherit\" or "
      .. "\"ignore\", got " .. tostring(v))
  end
end
local function signal(fname, k, v)
  local ok, err = pcall(c_signal, v, fname)
  if not ok then
    argerror(fname, "option '" .. k .. "': " .. tostring(err):gsub("^[^:]*: ", ""))
  end
end
local function seconds(fname, k, v)
  if type(v) ~= "number" or v ~= v then
    argerror(fname, "option '" .. k .. "' must be a number (seconds), got "
      .. tostring(v))
  end
end
local size = argcheck.size

local options = argcheck.options

--- Start a program.
-- @function spawn
-- @tparam table argv the program and its arguments (strings or numbers)
-- @tparam[opt] table opts `cwd`; `env` (name → string, or `false` to
-- remove a variable; merged over this process's environment) and
-- `clear_env` (start from an empty one); `stdin`, `stdout`, `stderr`:
-- "pipe" (the Child gets a Stream), "inherit" (the default: this
-- process's own) or "ignore" (/dev/null); `detach` (own session; not
-- killed when the runtime ends); `kill_signal` (what a cancelled wait and
-- `close` send, default "kill"); `read_buffer` (bytes a pipe buffers
-- before reading pauses, default 64 KiB)
-- @return a `tidal.Child`, or `nil, err` (kind "not_found" or
-- "permission_denied" when the program cannot be run)
--
-- A Child has `child.stdin` (a writable Stream), `child.stdout`,
-- `child.stderr` (readable Streams) for each "pipe", and the methods
-- `child:wait()` → `{status, signal, ok}` (the same table every time),
-- `child:try_wait()` (that table, or nil while it runs), `child:kill([sig])`
-- (default "kill"; nil, err of kind "exited" once it has exited),
-- `child:pid()`, and `child:close()` (also `<close>`): kill it if it still
-- runs (unless detached) and close its pipes.
local spawn_opts = {
  cwd = string_opt, env = table_opt, clear_env = boolean, stdin = stdio,
  stdout = stdio, stderr = stdio, detach = boolean, kill_signal = signal,
  read_buffer = size,
}
local function spawn(fname, argv, opts, known)
  opts = options(fname, opts, known or spawn_opts)
  return c_spawn(argv, opts.cwd, opts.env, opts.clear_env, opts.stdin,
    opts.stdout, opts.stderr, opts.detach, opts.kill_signal, opts.read_buffer,
    fname)
end

function M.spawn(argv, opts)
  return spawn("tidal.process.spawn", argv, opts)
end

local DEFAULT_MAX = 64 * 1024 * 1024

-- What a stream has buffered, without waiting.
local function buffered(s)
  if s == nil then return nil end
  local n = s:buffered()
  if n > 0 then return s:read(n) end
  return ""
end

--- Run a program to its end and collect what it writes.
-- @function exec
-- @tparam table argv the program and its arguments
-- @tparam[opt] table opts `cwd`, `env`, `clear_env`, `kill_signal` as for
-- `spawn`; `stdin` (a string to feed it; by default it reads /dev/null);
-- `stdout`, `stderr` ("pipe": captured, the default; or "inherit",
-- "ignore"); `timeout` (seconds: then the child is killed and exec returns
-- `nil, err` of kind "timeout", with what was read in `err.stdout` and
-- `err.stderr`); `max_output` (bytes per stream, default 64 MiB: more is
-- an error of kind "too_large" and the child is killed)
-- @treturn table `{status, signal, ok, stdout, stderr}`: `status` the exit
-- code (nil if a signal ended it), `signal` the signal's name ("kill",
-- "term", ...), `ok` = (status == 0); a non-zero status is not an error.
-- Or `nil, err`.
local exec_opts = {
  cwd = string_opt, env = table_opt, clear_env = boolean, stdin = string_opt,
  stdout = stdio, stderr = stdio, kill_signal = signal, timeout = seconds,
  max_output = size,
}
function M.exec(argv, opts)
  local fname = "tidal.process.exec"
  opts = options(fname, opts, exec_opts)
  local data = opts.stdin
  local max = opts.max_output or DEFAULT_MAX
  local child, err = c_spawn(argv, opts.cwd, opts.env, opts.clear_env,
    data and "pipe" or "ignore", opts.stdout or "pipe", opts.stderr or "pipe",
    false, opts.kill_signal, nil, fname)
  if not child then return nil, err end
  local _ <close> = child -- leaving early (an error, a cancellation) kills it
  local out, errout, failure
  local function fail(e) -- the first failure kills the child: the rest ends
    if not failure then
      failure = e
      child:kill(opts.kill_signal)
    end
  end
  local function collect()
    local fns = {}
    if data then
      fns[#fns + 1] = function()
        child.stdin:write(data) -- (a child that does not read: broken_pipe)
        child.stdin:close()
      end
    end
    if child.stdout then
      fns[#fns + 1] = function()
        local s, e = child.stdout:read_all(max)
        if s then out = s else fail(e) end
      end
    end
    if child.stderr then
      fns[#fns + 1] = function()
        local s, e = child.stderr:read_all(max)
        if s then errout = s else fail(e) end
      end
    end
    if #fns > 0 then join_all(fns) end
    if failure then return nil end
    return child:wait()
  end
  local ok, res
  if opts.timeout then
    ok, res = timeout(opts.timeout, collect)
    if not ok then
      err = make_error("timeout", ("%s: %s: timed out after %g s (killed)")
        :format(fname, tostring(argv[1]), opts.timeout))
      err.stdout, err.stderr = out or buffered(child.stdout),
        errout or buffered(child.stderr)
      return nil, err
    end
  else
    res = collect()
  end
  if failure then
    if failure.kind == "too_large" then
      local which = out == nil and child.stdout and "stdout" or "stderr"
      err = make_error("too_large", ("%s: %s: %s exceeds max_output (%d bytes; "
        .. "killed)"):format(fname, tostring(argv[1]), which, max))
      return nil, err
    end
    return nil, failure
  end
  return {
    status = res.status, signal = res.signal, ok = res.ok,
    stdout = out, stderr = errout,
  }
end

--- This process's id.
-- @function pid
-- @treturn integer
M.pid = c_pid

--- Send a signal to a process.
-- @function kill
-- @tparam integer pid
-- @param[opt="term"] sig a name ("term", "kill", "int", "hup", "usr1", ...;
-- "SIGTERM" and any case work too) or a number
-- @treturn boolean `true`, or `nil, err` (kind "not_found" when there is
-- no such process)
function M.kill(pid, sig)
  return c_kill(pid, sig)
end

return M
