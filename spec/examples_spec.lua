-- Every program under examples/ runs here and its output is checked.
local support = require("support")

local function run_example(name)
  local f = assert(io.open("examples/" .. name))
  local code = f:read("a")
  f:close()
  return support.lua(code)
end

describe("examples", function()
  it("demo.lua runs five downloads concurrently and cancels a slow task", function()
    local out, status = run_example("demo.lua")
    assert.are.equal(0, status, out)
    local expected = table.concat({
      "starting 5 downloads at once",
      "  alpha    done after 0.2 s",
      "  beta     done after 0.4 s",
      "  gamma    done after 0.6 s",
      "  delta    done after 0.8 s",
      "  epsilon  done after 1.0 s",
      "all done: 2600 bytes in 1.X s (one after another: 3.0 s)",
      "meanwhile the ticker ticked about 10 times",
      "  slow task cleaned up",
      "slow task:\tfalse\tcancelled",
      "",
    }, "\n")
    -- the elapsed time's decimal depends on the machine's load
    assert.are.equal(expected, (out:gsub("in 1%.%d s", "in 1.X s")))
  end)

  it("channel.lua: five producers, main closes its sender, the stream ends", function()
    local out, status = run_example("channel.lua")
    assert.are.equal(0, status, out)
    local lines = {}
    for i = 0, 4 do lines[#lines + 1] = ("Received message %d: Hello from task %d"):format(i, i) end
    lines[#lines + 1] = "channel closed after 5 messages"
    lines[#lines + 1] = ""
    assert.are.equal(table.concat(lines, "\n"), out)
  end)

  it("timeout.lua: the fast request returns, the slow one times out and cleans up", function()
    local out, status = run_example("timeout.lua")
    assert.are.equal(0, status, out)
    assert.are.equal(table.concat({
      "  connection for fast.example closed",
      "fast:\tdata from fast.example",
      "  connection for slow.example closed",
      "slow:\tnil\trequest to slow.example timed out after 0.1 seconds (timeout)",
      "",
    }, "\n"), out)
  end)

  it("select.lua: the fallback (1 s) wins and the primary (2 s) is cancelled", function()
    local out, status = run_example("select.lua")
    assert.are.equal(0, status, out)
    assert.are.equal(table.concat({
      "primary source cancelled",
      "Fallback source responded first",
      "Got: data from fallback",
      "after 1 s",
      "",
    }, "\n"), out)
  end)

  it("rwlock_cache.lua: readers overlap, the writer is exclusive", function()
    local out, status = run_example("rwlock_cache.lua")
    assert.are.equal(0, status, out)
    assert.are.equal(table.concat({
      "readers saw: 42 42 42 42 42 42 42 42 42 42",
      "after the writer: 43",
      "ten 0.01 s reads overlapped: yes",
      "missing key: nil",
      "",
    }, "\n"), out)
  end)

  -- host.c, uv_host.c, luv_loop.lua and frame_loop.lua: spec/embed_spec.lua

  it("runtime_config.lua: four workers named my-app-worker", function()
    if not support.can_spawn then return pending("needs a child process") end
    local out, status = run_example("runtime_config.lua")
    assert.are.equal(0, status, out)
    assert.are.equal(table.concat({
      "Running on custom runtime",
      "worker threads named my-app-worker: 4",
      "sum of squares from the workers: 30",
      "fib(24) from the blocking pool: 46368",
      "",
    }, "\n"), out)
  end)
end)
