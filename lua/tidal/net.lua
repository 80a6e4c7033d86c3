--- tidal.net (placeholder: filled in by issue 11).
-- @module tidal.net

local M = {}

return M
