-- The cost of one message through the transfer layer (csrc/transfer.c):
-- encode into a reused buffer, decode, discard, as a channel between
-- workers will pay it, through tidal.testhooks (a test-only module that
-- `make build` puts in ./lua_modules). Usage: make build && lua5.4
-- bench/transfer.lua [n]
local root = (arg[0]:match("^(.*)/bench/[^/]*$") or ".")
package.cpath = root .. "/lua_modules/lib/lua/5.4/?.so;" .. package.cpath
local hooks = require("tidal.testhooks")

local n = tonumber(arg[1]) or 1000000
local record = {}
for i = 1, 10 do record["field" .. i] = i end
local cases = {
  { "small integer", 42 },
  { "float", 0.5 },
  { "short string", "hello" },
  { "10-field table", record },
  { "100-item array", (function() local t = {} for i = 1, 100 do t[i] = i end return t end)() },
  { "closure, 1 upvalue", (function() local k = 3 return function(x) return x * k end end)() },
  { "probe handle", hooks.probe() },
}
for _, c in ipairs(cases) do
  local iters = c[1]:match("closure") and n // 20 or c[1]:match("100") and n // 10 or n
  hooks.bench(iters // 10, c[2]) -- warm up
  local ns, bytes = hooks.bench(iters, c[2])
  print(string.format("%-20s %8.1f ns  %5d bytes", c[1], ns, bytes))
end
