--- tidal.process (placeholder: filled in by issue 11).
-- @module tidal.process

local M = {}

return M
