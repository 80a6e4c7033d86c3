-- tidal.argcheck: the argument checks shared by tidal's Lua modules
-- (tidal.fs, tidal.process, tidal.http). Internal: not part of the API.
--
-- A misuse raises "<function>: <message>" at the first caller outside
-- tidal's own Lua files (the user's code), as luaL_argerror does for C.
local type, tostring, pairs, error, math_type =
  type, tostring, pairs, error, math.type
local concat, sort = table.concat, table.sort
local getinfo = debug.getinfo

local M = {}

local ours = { [getinfo(1, "S").source] = true }

--- The calling file counts as tidal's own: its frames are skipped when an
-- error is raised at the user's code.
function M.own()
  ours[getinfo(2, "S").source] = true
end

function M.argerror(fname, msg)
  local level = 2
  while true do
    local info = getinfo(level, "S")
    if not info or not ours[info.source] then break end
    level = level + 1
  end
  error(fname .. ": " .. msg, level)
end
local argerror = M.argerror

-- option checkers: function(fname, name, value) raising on misuse
function M.boolean(fname, k, v)
  if type(v) ~= "boolean" then
    argerror(fname, "option '" .. k .. "' must be a boolean, got " .. type(v))
  end
end

function M.size(fname, k, v)
  if math_type(v) ~= "integer" or v < 0 then
    argerror(fname, "option '" .. k .. "' must be a non-negative integer "
      .. "(bytes), got " .. tostring(v))
  end
end

--- Checks opts against known (name -> checker); returns opts, or {} for nil.
function M.options(fname, opts, known)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    argerror(fname, "options must be a table, got " .. type(opts))
  end
  for k, v in pairs(opts) do
    local check = known[k]
    if check == nil then
      local names = {}
      for name in pairs(known) do names[#names + 1] = name end
      sort(names)
      argerror(fname, "unknown option '" .. tostring(k) .. "' (known: "
        .. concat(names, ", ") .. ")")
    end
    check(fname, k, v)
  end
  return opts
end

return M
