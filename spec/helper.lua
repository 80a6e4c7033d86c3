-- Loaded by busted before the specs (see .busted): makes spec/support.lua
-- reachable as require("support") whatever the working folder.
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec"
package.path = here .. "/?.lua;" .. package.path
