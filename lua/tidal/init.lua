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
-- @usage tidal.run(function() print(tidal.spawn(function() return 1 end):await()) end)
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
-- @usage local rt <close> = tidal.runtime({ workers = 2 })
-- @tparam[opt] table opts as for `run`
-- @return a `tidal.Runtime`
M.runtime = core.runtime

--- Tasks
-- @section tasks

--- Spawn `fn(...)` as a new task in the current runtime and return its
-- JoinHandle (`h:await()`, `h:join()`, `h:abort()`, `h:is_finished()`,
-- `h:id()`, `h:name()`). The task first runs when the current task waits.
-- @function spawn
-- @usage local h = tidal.spawn({ name = "fetch" }, function(url) return url end, "x")
-- @tparam[opt] table opts `{name = "..."}`
-- @tparam function fn
-- @param ... arguments for `fn`
-- @return JoinHandle
M.spawn = core.spawn

--- Let the other ready tasks run, then continue.
-- @function yield
-- @usage for i = 1, 1e6 do if i % 1000 == 0 then tidal.yield() end end
M.yield = core.yield

--- Wait `seconds` (a negative duration counts as 0; nil or `math.huge`
-- waits until cancelled).
-- @function sleep
-- @usage tidal.sleep(0.25)
-- @tparam number seconds
M.sleep = core.sleep

--- Monotonic time in seconds. Deadlines (`sleep_until`, `timeout_at`,
-- `interval`'s `start`) are values of this clock.
-- @function now
-- @usage local t0 = tidal.now(); tidal.sleep(0.1); print(tidal.now() - t0)
-- @treturn number
M.now = core.now

--- Wait until `deadline`, a `tidal.now()` value. A deadline in the past
-- yields once (as `sleep(0)`); nil or `math.huge` waits until cancelled.
-- @function sleep_until
-- @usage local next = tidal.now()
-- for _ = 1, 10 do next = next + 0.1; tidal.sleep_until(next); poll() end
-- @tparam number deadline
M.sleep_until = core.sleep_until

--- A periodic timer: `iv:tick()` waits for the next tick and returns its
-- deadline and the number of ticks skipped (`nil, err` of kind "closed"
-- once the interval is closed). The first tick completes at once; later
-- ones fall on the grid `start + k * period`, so the interval never
-- drifts. `opts.missed` says what a late `tick()` does: `"skip"` (the
-- default: tick now, then go on at the next grid point, reporting how many
-- were skipped), `"burst"` (deliver every missed tick at once, as Tokio's
-- default) or `"delay"` (tick now and start a new grid from now).
-- `opts.start`: the first tick's deadline (a `tidal.now()` value).
-- Methods: `tick`, `tick_op` (a wait operation), `reset([deadline])`,
-- `period`, `close` (also `<close>`).
-- @function interval
-- @usage local iv <close> = tidal.interval(1)
-- while iv:tick() do send_heartbeat() end
-- @tparam number period seconds, > 0
-- @tparam[opt] table opts `missed`, `start`
-- @return a `tidal.Interval`
M.interval = core.interval

--- Run `fn(...)` with a deadline, in the current task. Returns `true, ...`
-- with fn's results, or `false, err` (`err.kind == "timeout"`) when the
-- deadline passed first: fn's pending wait was cancelled and its `<close>`
-- variables ran. Errors raised by `fn` propagate. Nested timeouts work.
-- @function timeout
-- @usage local ok, err = tidal.timeout(1, function() return rx:recv() end)
-- @tparam number seconds nil or `math.huge` for no limit
-- @tparam function fn
M.timeout = core.timeout

--- `tidal.timeout` with a deadline (a `tidal.now()` value) instead of a
-- duration: `true, ...` or `false, err` (`err.kind == "timeout"`, message
-- "tidal.timeout_at: deadline passed"). nil or `math.huge`: no limit.
-- @function timeout_at
-- @usage local deadline = tidal.now() + 5
-- local ok, err = tidal.timeout_at(deadline, fetch_all, urls)
-- @tparam number deadline
-- @tparam function fn
M.timeout_at = core.timeout_at

--- Run the branches (a table of functions, array or keyed) as child tasks
-- and return the key of the first to finish, followed by its results. The
-- others are cancelled and have unwound before `select` returns. Branches
-- start in order; one that finishes before the next has started wins and
-- the later ones never start. An error in the winning branch propagates.
-- @function select
-- @usage local i, v = tidal.select({ rx:recv_op(), tidal.sleep_op(1) })
-- @tparam table branches
M.select = core.select

--- Run functions (or await JoinHandles) concurrently and return an array of
-- packed results (`{n = ..., ...}` per element). The first error cancels the
-- rest, waits for them to unwind, and propagates.
-- @function join_all
-- @usage local results = tidal.join_all({ function() return 1 end, function() return 2 end })
M.join_all = core.join_all

--- A structured task group: `g:spawn([opts,] fn, ...)` → JoinHandle,
-- `g:join_next()` → `true, ...` / `false, err` for the next member to
-- finish (nil when none is left), `g:wait()` (all; the first error cancels
-- the rest and is raised), `g:abort()`, `#g`. Closing the group (`<close>`
-- or `g:close()`) aborts what is left and waits for it to unwind.
-- @function group
-- @usage local g <close> = tidal.group(); g:spawn(work); g:wait()
M.group = core.group

--- Channels
-- @section channels

--- A multi-producer channel: `tx, rx = tidal.channel([capacity])`; no
-- capacity makes it unbounded. `tx:send(v)` waits while full → `true` or
-- `nil, err` ("closed"); `tx:try_send(v)` → `true` or `nil, err` ("full" /
-- "closed"); `tx:clone()`, `tx:close()`. `rx:recv()` → value, or nil once
-- every sender is closed and the buffer is drained; `rx:try_recv()` → value
-- or `nil, err` ("empty" / "closed"); `rx:close()`; `for v in rx do ... end`.
-- An end closes with `close()`, leaving a `<close>` scope, or when
-- collected. For a deterministic end of stream, close every sender: give
-- each producer task its clone as an argument and bind it with
-- `local tx <close> = tx`, then close the original (Tokio's `drop(tx)`).
-- @function channel
-- @usage local tx, rx = tidal.channel(16)
M.channel = core.channel

--- A oneshot channel: `tx, rx = tidal.oneshot()`. `tx:send(v)` → `true` or
-- `nil, err` ("closed" when the receiver is gone); `rx:recv()` waits → the
-- value, or `nil, err` ("closed" when the sender closed without sending).
-- @function oneshot
-- @usage local tx, rx = tidal.oneshot()
M.oneshot = core.oneshot

--- A broadcast channel: `tx, rx = tidal.broadcast(capacity)`;
-- `tx:subscribe()` → another receiver; `tx:send(v)` never waits. A receiver
-- that falls more than `capacity` values behind gets `nil, err` with
-- `err.kind == "lagged"` and `err.skipped`, then continues.
-- @function broadcast
-- @usage local tx, rx = tidal.broadcast(64)
M.broadcast = core.broadcast

--- A watched value: `tx, rx = tidal.watch(initial)`; `tx:send(v)`;
-- `rx:borrow()` reads the current value; `rx:changed()` waits for a newer
-- one → `true`, or `nil, err` ("closed") once the sender is closed and the
-- last value was seen.
-- @function watch
-- @usage local tx, rx = tidal.watch("initial")
M.watch = core.watch

--- Locks
-- @section locks

--- A FIFO-fair async mutex: `m:lock()` → guard (`local g <close> =
-- m:lock()`), `m:try_lock()` → guard or nil; `g:release()`.
-- @function mutex
-- @usage local m = tidal.mutex(); local g <close> = m:lock()
M.mutex = core.mutex

--- An async reader-writer lock: `rw:read()`, `rw:write()` → guard;
-- `try_read`, `try_write`. Writers are not starved.
-- @function rwlock
-- @usage local rw = tidal.rwlock(); local g <close> = rw:read()
M.rwlock = core.rwlock

--- A counting semaphore with FIFO waiters: `s:acquire([k])` → permit (or
-- `nil, err` "closed"), `s:try_acquire([k])`, `s:available()`,
-- `s:add_permits(k)`, `s:close()`; `permit:release()`.
-- @function semaphore
-- @usage local s = tidal.semaphore(4); local p <close> = s:acquire()
M.semaphore = core.semaphore

--- A notification between tasks: `n:notified()` waits; `n:notify_one()`
-- wakes one waiter or stores a permit; `n:notify_waiters()` wakes all.
-- @function notify
-- @usage local n = tidal.notify(); n:notify_one()
M.notify = core.notify

--- Wait operations
-- @section ops

--- A sleep as a value, e.g. a branch of `tidal.select`: calling it sleeps.
-- Other ops: `rx:recv_op()`, `tx:send_op(v)`, `m:lock_op()`. An op branch
-- that can complete at once completes without starting a task.
-- @function sleep_op
-- @usage local i = tidal.select({ rx:recv_op(), tidal.sleep_op(0.5) })
M.sleep_op = core.sleep_op

--- Parallel work
-- @section parallel

--- Run `fn(...)` on libuv's thread pool in a pooled Lua state; `fn` and its
-- arguments are copied there, its results (or error and traceback) copied
-- back. Aborting a queued job cancels it; aborting a running one discards
-- its result.
-- @function spawn_blocking
-- @usage local h = tidal.spawn_blocking(function(n) return n * n end, 12)
-- @tparam function fn
-- @return JoinHandle
M.spawn_blocking = core.spawn_blocking

--- Run `fn(...)` as a task on the least-loaded worker (see the `workers`
-- option of `tidal.run`); `fn` and its arguments are copied. The JoinHandle
-- can be awaited from any worker.
-- @function spawn_parallel
-- @usage local h = tidal.spawn_parallel(function(n) return n + 1 end, 41)
-- @tparam[opt] table opts `{name = "..."}`
-- @tparam function fn
-- @return JoinHandle
M.spawn_parallel = core.spawn_parallel

--- Errors
-- @section errors

--- The traceback recorded where error value `err` was first raised in a
-- task, or nil.
-- @function traceback
-- @usage local ok, err = h:join(); print(tidal.traceback(err))
M.traceback = core.traceback

--- Make an error object like the runtime's own: `{kind = kind, message =
-- message}` whose `tostring` is the message.
-- @function error
-- @usage error(tidal.error("bad_input", "expected a number"))
M.error = core.error

--- Whether `v` is a tidal error object (of the given kind, if one is given).
-- @function is_error
-- @usage if tidal.is_error(err, "timeout") then print("too slow") end
M.is_error = core.is_error

--- Introspection
-- @section introspection

--- The live tasks of the running runtime, in spawn order: a list of
-- `{id, name, state, waiting, where, handle}`.
-- @function tasks
-- @usage for _, t in ipairs(tidal.tasks()) do print(t.id, t.name, t.state, t.where) end
local function by_id(a, b) return a.id < b.id end
function M.tasks()
  local ok, list = pcall(core.tasks)
  if not ok then
    -- misuse: say it at the caller's line, not at this file's
    error((tostring(list):gsub("^[^\n]-:%d+: ", "", 1)), 2)
  end
  table.sort(list, by_id)
  return list
end

--- Counters of the running runtime: spawned, alive, parked, runnable,
-- finished, failed, cancelled, resumes, polls, timers, and `workers` (the
-- same counters for each worker).
-- @function stats
-- @usage print(tidal.stats().alive)
M.stats = core.stats

--- The id of the running task, or nil outside a task.
-- @function current_id
-- @usage print(tidal.current_id())
M.current_id = core.current_id

--- HTTP
-- @section http

--- The HTTP client (`tidal.http`, also `require("tidal.http")`): `get`,
-- `post`, `request`, `client`. See the `tidal.http` module.
M.http = require("tidal.http")

--- I/O
-- @section io

--- Sockets (`tidal.net`, also `require("tidal.net")`): TCP, Unix-domain
-- sockets, UDP, DNS. See the `tidal.net` module.
M.net = require("tidal.net")

--- Files (`tidal.fs`) on libuv's thread pool. See the `tidal.fs` module.
M.fs = require("tidal.fs")

--- Child processes (`tidal.process`). See the `tidal.process` module.
M.process = require("tidal.process")

--- Signals (`tidal.signal`). See the `tidal.signal` module.
M.signal = require("tidal.signal")

-- anything the core offers that is not listed above (never its private
-- "_" functions)
for k, v in pairs(core) do
  if M[k] == nil and type(k) == "string" and k:sub(1, 1) ~= "_" then M[k] = v end
end

-- Tracebacks name functions by searching package.loaded; keep the core's
-- table out of that search so they always read "tidal.sleep", never
-- "tidal.core.sleep" (require("tidal.core") still works, through __index).
package.loaded["tidal.core"] = setmetatable({}, { __index = core })

return M
