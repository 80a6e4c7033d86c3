-- Issue 9 audit: random misuse. A program makes every kind of tidal object
-- and, driven by a seeded random generator, calls random methods and
-- metamethods of random objects with random arguments (other objects
-- included), from tasks that are aborted, under timeouts, in selects, after
-- objects were closed or finalized by hand, across a worker. Nothing may
-- crash: each seed runs in a child process and must print "ok". (Before
-- issue 9 the first seeds died of a NULL dereference or a heap overflow.)
-- TIDAL_SPEC_SCALE scales the number of steps.
local support = require("support")

-- Seeds that also copy objects to spawn_parallel tasks (shared mode, waits
-- woken from another thread).
local share_seeds = 4

local program = [==[
local tidal = require("tidal")
local seed = tonumber(arg[1]) or 1
local share = arg[3] == "share" -- also copy objects to spawn_parallel tasks
math.randomseed(seed)
local R = math.random
local objs = {}
local makers = {
  function() local a, b = tidal.channel(R(1, 3)); return a, b end,
  function() local a, b = tidal.channel(); return a, b end,
  function() return tidal.oneshot() end,
  function() return tidal.broadcast(R(1, 3)) end,
  function() return tidal.watch(R(10)) end,
  function() return tidal.mutex() end,
  function() return tidal.rwlock() end,
  function() return tidal.semaphore(R(0, 3)) end,
  function() return tidal.notify() end,
  function() return tidal.group() end,
  function() local tx, rx = tidal.channel(1); return rx:recv_op(), tx:send_op(R(5)), tx, rx end,
  function() return tidal.mutex():lock_op() end,
  function() return tidal.sleep_op(0.001 * R(3)) end,
  function() return tidal.runtime() end,
}
local vals = { nil, 1, "s", {}, true, false, -1, 0, 2^53, 1.5 }
local function pick() return objs[R(#objs)] end
local function rndval()
  local k = R(#vals + 3)
  if k > #vals then return pick() end
  return vals[k]
end
local function callrand(o)
  local mt = getmetatable(o)
  if not mt then return end
  local fns = {}
  for k, v in pairs(mt) do if type(v) == "function" then fns[#fns + 1] = v end end
  if type(mt.__index) == "table" then
    for _, v in pairs(mt.__index) do if type(v) == "function" then fns[#fns + 1] = v end end
  end
  if #fns == 0 then return end
  local f = fns[R(#fns)]
  local self = R(10) == 1 and pick() or o
  local r = table.pack(pcall(f, self, rndval(), rndval()))
  for i = 2, r.n do if type(r[i]) == "userdata" then objs[#objs + 1] = r[i] end end
end
tidal.run({ workers = 1 }, function()
  for step = 1, tonumber(arg[2]) or 3000 do
    local k = R(10)
    if k == 1 or #objs < 4 then
      local r = table.pack(makers[R(#makers)]())
      for i = 1, r.n do objs[#objs + 1] = r[i] end
    elseif k == 2 then
      local o = pick()
      tidal.spawn(function() for i = 1, R(3) do callrand(o) end end)
    elseif k == 3 then
      local o = pick()
      local h = tidal.spawn(function() callrand(o) end)
      objs[#objs + 1] = h
      if R(2) == 1 then tidal.yield(); h:abort() end
    elseif k == 4 then
      tidal.yield()
    elseif k == 5 then
      local o = table.remove(objs, R(#objs))
      if R(3) == 1 then collectgarbage() end
    elseif k == 8 and R(3) == 1 then
      local o = pick()
      local mt = getmetatable(o)
      if mt and mt.__gc then pcall(mt.__gc, o) end
      if mt and mt.__close and R(2) == 1 then pcall(mt.__close, o) end
    elseif k == 9 and R(4) == 1 then
      local branches = {}
      for i = 1, R(3) do
        local o = pick()
        branches[i] = (getmetatable(o) or {}).__name == "tidal.Op" and o or function() callrand(o) end
      end
      branches[#branches + 1] = tidal.sleep_op(0.002)
      pcall(tidal.select, branches)
    elseif k == 6 and share and R(20) == 1 then
      local o = pick()
      local ok = pcall(tidal.spawn_parallel, function(x) return x end, o)
    elseif k == 7 then
      pcall(tidal.timeout, 0.001, callrand, pick())
    else
      pcall(tidal.timeout, 0.001, callrand, pick())
    end
  end
  for _, o in ipairs(objs) do if getmetatable(o) and getmetatable(o).__name == "tidal.JoinHandle" then o:abort() end end
end)
print("ok", seed)
]==]

describe("issue 9 audit: random misuse of every tidal object never crashes", function()
  local path
  setup(function()
    path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write(program)
    f:close()
  end)
  teardown(function() os.remove(path) end)

  for seed = 1, 6 + share_seeds do
    local share = seed > 6 and " share" or ""
    it("seed " .. seed .. share, function()
      if not support.can_spawn then return end
      local p = assert(io.popen("timeout 120 lua5.4 " .. path .. " " .. seed .. " "
        .. support.scaled(20000) .. share .. " 2>&1"))
      local out = p:read("a")
      local ok = p:close()
      assert.matches("ok\t" .. seed, out)
      assert.is_true(ok, out)
    end)
  end
end)
