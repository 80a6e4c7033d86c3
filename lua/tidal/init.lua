--- tidal: an async runtime for Lua 5.4 on libuv.
--
-- Tasks are Lua coroutines owned by a scheduler written in C. Code reads
-- straight down: every call that would wait (`sleep`, `await`, ...) parks
-- the current task and lets the others run.
--
--     local tidal = require("tidal")
--     tidal.run(function()
--       local h = tidal.spawn(function(x) tidal.sleep(0.1); return x * 2 end, 21)
--       print(h:await())  --> 42
--     end)
--
-- This module is a thin facade over the private C core `tidal.core`; most
-- functions are the core's own, re-exported unchanged.
-- @module tidal

local core = require("tidal.core")

local M = {}

M._VERSION = core._VERSION

--- Runtime
-- @section runtime

--- Start a runtime, run `fn(...)` as the main task, and return its results
-- (or raise its error). When main returns, every other task is cancelled and
-- allowed to unwind (their `<close>` variables run).
-- @function run
-- @tparam[opt] table opts `workers`, `blocking_threads`, `thread_name`
-- @tparam function fn the main task
-- @param ... arguments for `fn`
-- @return the results of `fn`
M.run = core.run

--- Create a runtime to drive step by step or with `block_on`.
-- Methods: `rt:block_on(fn, ...)`, `rt:spawn(fn, ...)`, `rt:step([timeout])`,
-- `rt:next_timeout()`, `rt:backend_fd()`, `rt:tasks()`, `rt:stats()`,
-- `rt:close()`. A runtime is a to-be-closed value.
-- @function runtime
-- @tparam[opt] table opts as for `run`
-- @return a `tidal.Runtime`
M.runtime = core.runtime

--- Tasks
-- @section tasks

--- Spawn `fn(...)` as a new task in the current runtime and return its
-- JoinHandle (`h:await()`, `h:join()`, `h:abort()`, `h:is_finished()`,
-- `h:id()`, `h:name()`). The task first runs when the current task waits.
-- @function spawn
-- @tparam[opt] table opts `{name = "..."}`
-- @tparam function fn
-- @param ... arguments for `fn`
-- @return JoinHandle
M.spawn = core.spawn

--- Let the other ready tasks run, then continue.
-- @function yield
M.yield = core.yield

--- Wait `seconds` (a negative duration counts as 0; nil or `math.huge`
-- waits until cancelled).
-- @function sleep
-- @tparam number seconds
M.sleep = core.sleep

--- Monotonic time in seconds.
-- @function now
-- @treturn number
M.now = core.now

--- Errors
-- @section errors

--- The traceback recorded where error value `err` was first raised in a
-- task, or nil.
-- @function traceback
M.traceback = core.traceback

--- Make an error object like the runtime's own: `{kind = kind, message =
-- message}` whose `tostring` is the message.
-- @function error
M.error = core.error

--- Whether `v` is a tidal error object (of the given kind, if one is given).
-- @function is_error
M.is_error = core.is_error

--- Introspection
-- @section introspection

--- The live tasks of the running runtime, in spawn order: a list of
-- `{id, name, state, waiting, where, handle}`.
-- @function tasks
function M.tasks()
  local list = core.tasks()
  table.sort(list, function(a, b) return a.id < b.id end)
  return list
end

--- Counters of the running runtime: spawned, alive, parked, runnable,
-- finished, failed, cancelled, resumes, polls, timers, and `workers` (the
-- same counters for each worker).
-- @function stats
M.stats = core.stats

--- The id of the running task, or nil outside a task.
-- @function current_id
M.current_id = core.current_id

--- HTTP
-- @section http

--- The HTTP client (`tidal.http`, also `require("tidal.http")`): `get`,
-- `post`, `request`, `client`. See the `tidal.http` module.
M.http = require("tidal.http")

return M
