-- Issue 9 item 20: shutdown races. A worker that had already stopped could
-- still be picked by spawn_parallel or receive a remote wake
-- (uv_async_send on its closed loop aborted the process), and posts queued
-- to a worker that stopped were freed without running, leaking the record
-- and the encoded arguments (a channel end passed to such a task stayed
-- open). Now a worker refuses posts once it is gone (spawn_parallel then
-- returns a task cancelled before it started, as tidal.spawn does during
-- shutdown), what was posted before runs, and a task that never runs
-- releases its arguments at once.
local tidal = require("tidal")
local support = require("support")

-- Senders of tx go to tasks on three workers; their cleanup (which runs
-- while the runtime shuts down, when other workers may have stopped
-- already) hands more work and more clones of tx to spawn_parallel. After
-- run, every copy of tx must be closed.
-- (Functions sent to workers require tidal themselves instead of capturing
-- a `tidal` upvalue: run in this process after another spec file, busted's
-- insulation reloads the module and transfer.c's cache of loaded modules,
-- kept while their number is unchanged, no longer recognises the table.)
local stress = [[
local iterations = ...
local tidal = require("tidal")
local leaks, sent = 0, 0
for iter = 1, iterations do
  local tx, rx = tidal.channel()
  tidal.run({ workers = 3 }, function()
    local dtx, drx = tidal.channel()
    for i = 1, 6 do
      local mine <close> = tx:clone()
      tidal.spawn_parallel(function(tx, i, drx)
        local tidal = require("tidal")
        local guard <close> = setmetatable({}, { __close = function()
          local t = os.clock()
          while os.clock() - t < 0.002 * (i % 3) do end
          for _ = 1, 3 do
            local c <close> = tx:clone()
            tidal.spawn_parallel(function(c) c:try_send(1) end, c)
          end
          tx:try_send(i)
          tx:close()
        end })
        for _ in drx do end -- woken from other workers
      end, mine, i, drx)
    end
    for k = 1, 20 do dtx:send(k) end
    local t = os.clock()
    while os.clock() - t < 0.001 * (iter % 4) do end
  end)
  tx:close()
  while rx:try_recv() do sent = sent + 1 end
  local _, err = rx:try_recv()
  if not (err and err.kind == "closed") then leaks = leaks + 1 end
end
return ("iterations %d leaked %d received %d"):format(iterations, leaks, sent)
]]

-- Runs chunk (which returns a string) in a child lua5.4 with the
-- arguments given, or in this process under ThreadSanitizer (no child
-- processes there); returns what it returned.
local function run_chunk(chunk, ...)
  if not support.can_spawn then
    return assert(load(chunk, "chunk"))(...)
  end
  local args = {}
  for i, v in ipairs({ ... }) do args[i] = ("%q"):format(v) end
  local out, status = support.lua(("print((function(...) %s end)(%s))")
    :format(chunk, table.concat(args, ", ")))
  assert.equal(0, status, out)
  return out
end

describe("issue 9 item 20: shutdown races", function()
  it("spawn_parallel and cross-worker wakes racing with shutdown: no "
    .. "crash, no post dropped with its references", function()
    local n = support.scaled(150)
    local out = run_chunk(stress, n)
    assert.matches("iterations " .. n .. " leaked 0 received", out)
  end)

  it("a task spawned onto a stopped worker is cancelled before it starts",
    function()
    -- worker 1's task cleans up slowly; meanwhile worker 2, with nothing
    -- to unwind, has stopped: it must not be picked nor posted to
    local code = [[
local tidal = require("tidal")
local tx, rx = tidal.channel()
tidal.run({ workers = 2 }, function()
  local mine <close> = tx:clone()
  tidal.spawn_parallel(function(tx)
    local tidal = require("tidal")
    local guard <close> = setmetatable({}, { __close = function()
      local t = os.clock()
      while os.clock() - t < 0.2 do end
      for _ = 1, 3 do -- worker 0 first, then the least loaded: worker 2
        local h = tidal.spawn_parallel(function(tx) tx:send("ran") end, tx)
        tx:send(tostring(h))
      end
      tx:close()
    end })
    tidal.sleep(30)
  end, mine)
  tidal.sleep(0.05)
end)
tx:close()
local got = {}
for v in rx do got[#got + 1] = v end
got[#got + 1] = "done"
return table.concat(got, "\n")
]]
    local out = run_chunk(code)
    assert.matches("tidal.JoinHandle: parallel task %d+", out)
    assert.not_matches("ran", out) -- it never starts
    assert.matches("done", out)
  end)

  -- Found in the audit: a runtime collected without close() dropped its
  -- tasks without finishing their records, so a copy of a task's handle
  -- that outlived the runtime stayed "running" forever, and aborting it
  -- posted to the freed worker (the process aborted).
  it("a runtime collected without close() finishes its tasks' records",
    function()
    local out = run_chunk([[
local tidal = require("tidal")
local rh
do
  local rt = tidal.runtime({ workers = 1 })
  rh = rt:block_on(function()
    local h = tidal.spawn(function() tidal.sleep(100) end)
    -- a copy of h's handle, made on worker 1 and sent back
    return tidal.spawn_parallel(function(h) return h end, h):await()
  end)
end
collectgarbage()
collectgarbage()
local finished, text = rh:is_finished(), tostring(rh)
rh:abort()
return ("finished %s %s"):format(finished, text)
]])
    assert.matches("finished true tidal.JoinHandle: parallel task %d+ "
      .. "%(cancelled%)", out)
  end)
end)
