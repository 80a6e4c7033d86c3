-- issue 9 item 14: end-of-stream is deterministic. The Tokio mpsc pattern (a
-- clone of the sender per producer task, dropped when the task ends) is
-- written with `local tx <close> = tx` in each task and `tx:close()` in
-- main; the receiver's loop then ends as soon as the last producer ends,
-- while other tasks (a ticker) keep the runtime busy and with the garbage
-- collector stopped. The README's channel example, examples/channel.lua and
-- every docs program that uses a channel end the same way.
--
-- Everything runs in a child process (`timeout 20 lua5.4`): a receiver that
-- waits forever fails one test instead of hanging the suite.
local support = require("support")

-- Prepended to a program: the collector stops (explicit collections aside),
-- and every tidal.run gets a ticker task that stays alive until its main
-- function returns, so nothing ever leaves the runtime idle.
local TICKER = [[
collectgarbage("stop")
local tidal = require("tidal")
do
  local run = tidal.run
  function tidal.run(...)
    local args = table.pack(...)
    local fi = type(args[1]) == "table" and 2 or 1
    local fn = args[fi]
    args[fi] = function(...)
      local ticker = tidal.spawn({ name = "ticker" }, function()
        while true do tidal.sleep(0.005) end
      end)
      local r = table.pack(fn(...))
      ticker:abort()
      return table.unpack(r, 1, r.n)
    end
    return run(table.unpack(args, 1, args.n))
  end
end
]]

local function run_child(code)
  return support.lua(code, 20)
end

local function read(path)
  local f = assert(io.open(path))
  local s = f:read("a")
  f:close()
  return s
end

-- the ```lua blocks of a markdown file
local function lua_blocks(path)
  local blocks = {}
  for code in read(path):gmatch("\n```lua\n(.-\n)```") do
    blocks[#blocks + 1] = code
  end
  return blocks
end

if not support.can_spawn then
  describe("issue 9 item 14: end-of-stream without the collector", function()
    pending("needs child processes")
  end)
  return
end

describe("issue 9 item 14: end-of-stream without the collector", function()
  it("the Tokio mpsc pattern ends with a ticker alive, however producers end", function()
    local out, status = run_child([[
collectgarbage("stop")
local tidal = require("tidal")
tidal.run(function()
  local ticker = tidal.spawn(function()
    while true do tidal.sleep(0.005) end
  end)
  local tx, rx = tidal.channel(1)     -- producers wait for room
  for id = 1, 20 do
    tidal.spawn(function(tx)
      local tx <close> = tx
      tx:send(id)
    end, tx:clone())
  end
  local failing = tidal.spawn(function(tx)
    local tx <close> = tx
    tx:send(21)
    error("producer 21 fails")
  end, tx:clone())
  local stuck = tidal.spawn(function(tx)
    local tx <close> = tx
    tx:send(22)
    tidal.sleep(math.huge)            -- aborted below
  end, tx:clone())
  local timed = tidal.spawn(function(tx)
    tidal.timeout(0.02, function()
      local tx <close> = tx           -- closed when the timeout expires
      tx:send(23)
      tidal.sleep(60)
    end)
    tidal.sleep(math.huge)            -- the task lives on
  end, tx:clone())
  tx:close()
  local seen, n = {}, 0
  for id in rx do
    assert(not seen[id], "received twice: " .. id)
    seen[id], n = true, n + 1
    if id == 22 then stuck:abort() end
  end
  for id = 1, 23 do assert(seen[id], "not received: " .. id) end
  assert(not failing:join())
  print("ended after " .. n .. " messages; ticker alive: "
    .. tostring(not ticker:is_finished()) .. "; producer 23 alive: "
    .. tostring(not timed:is_finished()))
  ticker:abort()
  timed:abort()
end)
]])
    assert.are.equal(0, status, out)
    assert.are.equal("ended after 23 messages; ticker alive: true; producer 23 alive: true\n", out)
  end)

  it("the pattern ends across workers, with tickers alive on both", function()
    local out, status = run_child([[
collectgarbage("stop")
local tidal = require("tidal")
tidal.run({ workers = 1 }, function()
  local tick = function()
    collectgarbage("stop")
    while true do tidal.sleep(0.005) end
  end
  local t0 = tidal.spawn(tick)
  local t1 = tidal.spawn_parallel(tick)
  local tx, rx = tidal.channel(4)
  for id = 1, 8 do
    local mine <close> = tx:clone()
    tidal.spawn_parallel(function(tx, id)
      collectgarbage("stop")
      local tx <close> = tx
      for k = 1, 100 do tx:send(id * 1000 + k) end
    end, mine, id)
  end
  tx:close()
  local n, sum = 0, 0
  for v in rx do n, sum = n + 1, sum + v end
  print(n, sum)
  t0:abort()
  t1:abort()
end)
]])
    assert.are.equal(0, status, out)
    -- 8 producers x 100 messages; sum of id*1000+k
    assert.are.equal(("800\t%d\n"):format(36 * 100 * 1000 + 8 * 5050), out)
  end)

  it("the README's channel example ends (as a program), also with a ticker alive", function()
    local block
    for _, code in ipairs(lua_blocks("README.md")) do
      if code:find("for msg in rx", 1, true) then block = code end
    end
    assert.is_truthy(block, "README.md has no block with `for msg in rx`")
    if not block:find('require("tidal")', 1, true) then -- (it used to lack it)
      block = 'local tidal = require("tidal")\n' .. block
    end
    local expected = "hello 1\nhello 2\nhello 3\ntrue\n1\n"
    local out, status = run_child(block)
    assert.are.equal(0, status, out)
    assert.are.equal(expected, out)
    out, status = run_child(TICKER .. block)
    assert.are.equal(0, status, out)
    assert.are.equal(expected, out)
  end)

  it("examples/channel.lua ends with a ticker alive", function()
    local out, status = run_child(TICKER .. read("examples/channel.lua"))
    assert.are.equal(0, status, out)
    assert.is_truthy(out:find("channel closed after 5 messages\n$"), out)
  end)

  it("every docs program that uses a channel ends with a ticker alive", function()
    local ran = 0
    for _, path in ipairs({ "README.md", "docs/reference.md", "docs/http.md" }) do
      for _, code in ipairs(lua_blocks(path)) do
        if code:find("tidal.channel(", 1, true) and code:find('require("tidal")', 1, true) then
          local out, status = run_child(TICKER .. code)
          assert.are.equal(0, status, path .. ":\n" .. code .. "\n--> " .. out)
          ran = ran + 1
        end
      end
    end
    assert.is_true(ran >= 4, "ran " .. ran .. " programs")
  end)
end)
