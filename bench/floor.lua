-- The floor under tidal's bench figures: what PUC Lua 5.4 itself costs on
-- this machine for the steps a task, a wait or a message cannot avoid (a
-- call into C, a coroutine switch, an object for the collector). No tidal
-- in here: tidal's own figures (bench/run <workload>, make bench) are read
-- beside these.
--
-- Usage: lua5.4 bench/floor.lua [name...]   (BENCH_SCALE scales the counts)
-- Prints one line per floor program:
--   FLOOR <name> ns_per_op=<v>   <what one operation is>
-- Timing is CPU time (os.clock) around the loop only, best of 3 runs, so a
-- busy machine inflates it less than wall time.

local scale = tonumber(os.getenv("BENCH_SCALE") or "1") or 1
local clock = os.clock

local function best_of(n, fn)
  local best = math.huge
  for _ = 1, 3 do
    collectgarbage()
    local t0 = clock()
    fn(n)
    local dt = clock() - t0
    if dt < best then best = dt end
  end
  return best * 1e9 / n
end

local F = {}
local order = {}
local function floor(name, what, n, fn)
  F[name] = { what = what, n = math.max(1, math.floor(n * scale)), fn = fn }
  order[#order + 1] = name
end

floor("loop", "an empty numeric for loop iteration", 5000000, function(n)
  for _ = 1, n do end
end)

local function nothing() end
floor("lua_call", "a call of an empty Lua function", 2000000, function(n)
  local f = nothing
  for _ = 1, n do f() end
end)

floor("c_call", "a bare C call from Lua (rawequal(x, x))", 2000000, function(n)
  local eq, x = rawequal, n
  for _ = 1, n do eq(x, x) end
end)

floor("c_method", "a C method found through a metatable's __index (s:len())",
  2000000, function(n)
    local s = "abc"
    for _ = 1, n do s:len() end
  end)

floor("resume_yield", "coroutine.resume into a coroutine that yields back",
  1000000, function(n)
    local co = coroutine.create(function()
      while true do coroutine.yield() end
    end)
    local resume = coroutine.resume
    for _ = 1, n do resume(co) end
  end)

floor("wrap_yield", "the same switch through coroutine.wrap", 1000000, function(n)
  local f = coroutine.wrap(function()
    while true do coroutine.yield() end
  end)
  for _ = 1, n do f() end
end)

floor("coroutine_new", "coroutine.create + one resume of a function that returns",
  500000, function(n)
    local create, resume = coroutine.create, coroutine.resume
    local function task(i) return i end
    for i = 1, n do resume(create(task), i) end
  end)

floor("spawn_floor",
  "a pure-Lua task: coroutine.create, queued, resumed, result kept, read back "
    .. "in order (the spawn workload without a runtime)", 200000, function(n)
    local create, resume = coroutine.create, coroutine.resume
    local function task(i) return i end
    local q, res = {}, {}
    for i = 1, n do q[i] = create(task) end
    for i = 1, n do
      local _, v = resume(q[i], i - 1)
      res[i] = v
    end
    local sum = 0
    for i = 1, n do sum = sum + res[i] end
    assert(sum == n * (n - 1) // 2)
  end)

floor("object", "a small object with a metatable, made and collected",
  1000000, function(n)
    local mt = {}
    local setmt = setmetatable
    for _ = 1, n do setmt({}, mt) end
  end)

local names = arg[1] and { table.unpack(arg) } or order
for _, name in ipairs(names) do
  local f = F[name]
  if not f then
    io.stderr:write("floor: no such floor program: ", name, "\n")
    os.exit(2)
  end
  local ns = best_of(f.n, f.fn)
  io.stdout:write(("FLOOR %-13s ns_per_op=%8.1f   %s\n"):format(name, ns, f.what))
  io.stdout:flush()
end
