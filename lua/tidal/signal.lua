--- tidal.signal (placeholder: filled in by issue 11).
-- @module tidal.signal

local M = {}

return M
