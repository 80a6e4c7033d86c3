--- tidal.fs (placeholder: filled in by issue 11).
-- @module tidal.fs

local M = {}

return M
