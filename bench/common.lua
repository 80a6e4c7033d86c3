-- Helpers for tidal's bench programs (the convention of
-- ../shared/bench/peers/README.md: one RESULT line, exit 77 = not implemented).
local M = {}

function M.scaled(base)
  local s = tonumber(os.getenv("BENCH_SCALE") or "1") or 1
  local n = math.floor(base * s + 0.5)
  if n < 1 then n = 1 end
  return n
end

local function status_kb(field)
  local f = io.open("/proc/self/status", "r")
  if not f then return 0 end
  local s = f:read("a")
  f:close()
  return tonumber(s:match(field .. ":%s*(%d+)")) or 0
end
function M.hwm_kb() return status_kb("VmHWM") end
function M.rss_kb() return status_kb("VmRSS") end

function M.result(workload, fields)
  local parts = { "RESULT", workload, "tidal" }
  for _, kv in ipairs(fields) do
    local v = kv[2]
    if type(v) == "number" then
      if v == math.floor(v) and math.abs(v) < 1e15 then
        v = string.format("%d", v)
      elseif math.abs(v) >= 100 then
        v = string.format("%.1f", v)
      else
        v = string.format("%.4g", v)
      end
    end
    parts[#parts + 1] = kv[1] .. "=" .. tostring(v)
  end
  io.stdout:write(table.concat(parts, " "), "\n")
  io.stdout:flush()
end

function M.fail(msg)
  io.stderr:write("CHECK FAILED: ", msg, "\n")
  os.exit(1)
end

function M.skip(workload, why)
  io.stderr:write("tidal: workload ", workload, " not implemented: ", why or "", "\n")
  os.exit(77)
end

return M
