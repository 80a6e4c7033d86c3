-- The LDoc reference (make docs) covers every function of tidal and
-- tidal.http and every method of their objects, each with an example
-- (@usage), and LDoc builds it.
local support = require("support")
local tidal = require("tidal")
local http = require("tidal.http")

local SOURCES = { "lua/tidal/init.lua", "lua/tidal/http.lua", "lua/tidal/types.luadoc" }

-- name -> the text of its doc comment, for every block with @function
local function documented()
  local docs = {}
  for _, path in ipairs(SOURCES) do
    local f = assert(io.open(path))
    local block
    for line in (f:read("a") .. "\n\n"):gmatch("(.-)\n") do
      if line:match("^%-%-%-") then
        block = { line }
      elseif block and line:match("^%-%-") then
        block[#block + 1] = line
      else
        if block then
          local text = table.concat(block, "\n")
          local name = text:match("@function ([%w_:]+)")
          if name then docs[name] = text end
        end
        block = nil
      end
    end
    f:close()
  end
  return docs
end

-- every public function and method, as "name" / "Type:method"
local function public_names()
  local names = {}
  for k, v in pairs(tidal) do
    if type(v) == "function" and not k:match("^_") then names[#names + 1] = k end
  end
  for k, v in pairs(http) do
    if type(v) == "function" and not k:match("^_") then names[#names + 1] = k end
  end
  local seen = {}
  local function methods(obj, tname)
    local mt = getmetatable(obj)
    if seen[mt] then return end
    seen[mt] = true
    tname = tname or assert(mt.__name, "a type without a name"):match("([%w_]+)$")
    local idx = mt.__index
    if type(idx) == "table" then
      for k, v in pairs(idx) do
        if type(v) == "function" and not k:match("^_") then names[#names + 1] = tname .. ":" .. k end
      end
    end
  end
  tidal.run(function()
    local tx, rx = tidal.channel(); methods(tx); methods(rx)
    local a, b = tidal.oneshot(); methods(a); methods(b)
    local c, d = tidal.broadcast(4); methods(c); methods(d)
    local e, f = tidal.watch(1); methods(e); methods(f)
    local m = tidal.mutex(); methods(m); methods(m:lock())
    methods(tidal.rwlock())
    local s = tidal.semaphore(1); methods(s); methods(s:acquire())
    methods(tidal.notify())
    methods(tidal.spawn(function() end))
    local g = tidal.group(); methods(g); g:close()
    methods(rx:recv_op())
    methods(tidal.spawn_parallel(function() end))
  end)
  local rt = tidal.runtime(); methods(rt); rt:close()
  local cl = http.client(); methods(cl, "Client"); cl:close()
  table.sort(names)
  return names
end

describe("the LDoc reference", function()
  it("documents every function and method, each with an example", function()
    local docs = documented()
    local names = public_names()
    assert.is_true(#names > 100, #names .. " names")
    for _, name in ipairs(names) do
      local text = docs[name]
      assert.is_truthy(text, name .. " is not documented (lua/tidal/*.lua, lua/tidal/types.luadoc)")
      assert.is_truthy(text:find("@usage", 1, true), name .. " has no @usage example")
    end
    for _, name in ipairs({ "Response:json", "Response:read", "Response:chunks", "Response:close" }) do
      assert.is_truthy(docs[name] and docs[name]:find("@usage", 1, true), name)
    end
  end)

  it("builds with ldoc (make docs) and lists them", function()
    if not support.can_spawn then return pending("needs a child process") end
    if not os.execute("command -v ldoc >/dev/null 2>&1") then
      return pending("ldoc is not installed (make docs installs lua-ldoc)")
    end
    local dir = os.tmpname()
    os.remove(dir)
    local p = assert(io.popen("ldoc -c config.ld -d " .. dir .. " . 2>&1"))
    local out = p:read("a")
    assert.is_true(p:close(), out)
    local f = assert(io.open(dir .. "/modules/tidal.html"))
    local html = f:read("a")
    f:close()
    os.execute("rm -rf " .. dir)
    for _, name in ipairs({ "spawn", "Runtime:step", "Sender:send", "Semaphore:acquire", "RemoteHandle:await" }) do
      assert.is_truthy(html:find('name = "' .. name .. '"', 1, true), name)
    end
  end)
end)
