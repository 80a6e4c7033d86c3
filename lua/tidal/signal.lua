--- Signals: wait for a signal in a task, on the worker's libuv loop.
--
--     local tidal = require("tidal")
--     tidal.run(function()
--       tidal.spawn(serve)                 -- the program's work
--       tidal.signal.ctrl_c()              -- until Ctrl-C
--       print("shutting down")
--     end)
--
-- Names are "int", "term", "hup", "quit", "usr1", "usr2", "winch", "alrm",
-- "cont", "tstp", "chld" (also "SIGTERM", "TERM", any case, or the
-- number); results always use the short lower-case name. A signal is
-- watched while a task waits for it (`wait`) or a listener is open
-- (`listen`); otherwise it has its default effect (SIGINT cancels main,
-- SIGTERM ends the process). See "signals" in docs/reference.md.
-- @module tidal.signal

local core = require("tidal.core")

local M = {}

--- Wait for the next delivery of a signal after the call. Every task
-- waiting for it gets it. Returns the signal's short name (or `nil, err`
-- if it cannot be watched).
-- @function wait
-- @tparam string|integer name
-- @treturn string
M.wait = core._signal_wait

--- Wait for Ctrl-C: `wait("int")`. While a task waits here, SIGINT goes
-- to it and does not cancel main.
-- @function ctrl_c
-- @treturn string "int"
M.ctrl_c = core._signal_ctrl_c

--- Watch a signal until the listener is closed: `l:recv()` waits for a
-- delivery and returns the name and how many deliveries came since the
-- last `recv` (counted from `listen`), or `nil, err` (kind "closed") once
-- it is closed; `l:close()`; a listener is a to-be-closed value.
-- @function listen
-- @tparam string|integer name
-- @return a `tidal.SignalListener`
M.listen = core._signal_listen

return M
