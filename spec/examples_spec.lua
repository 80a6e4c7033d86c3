-- Every program under examples/ runs here and its output is checked.
local support = require("support")

-- every test ends with the descriptors it began with, and no child
support.guard_io()

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

  it("xargs.lua: 8 jobs, 4 at a time, outputs in input order", function()
    if not support.can_spawn then return pending("needs child processes") end
    local out, status = run_example("xargs.lua")
    assert.are.equal(0, status, out)
    local secs = tonumber(out:match("8 jobs in (%d+%.%d) s"))
    assert.are.equal(table.concat({
      "running 8 jobs, 4 at a time",
      "one", "two", "three", "four", "five", "six", "seven", "eight",
      "8 jobs in X s (one at a time: 0.8 s), 0 failed",
      "",
    }, "\n"), (out:gsub("in %d+%.%d s", "in X s", 1)))
    assert.is_true(secs >= 0.2 and secs < 0.7, out) -- four at a time, not one
  end)

  it("xargs.lua with arguments: lines from stdin, exit status 123 on a failure", function()
    if not support.can_spawn then return pending("needs child processes") end
    local p = assert(io.popen("printf 'a\\nb c\\n\\nd\\n' | timeout 30 lua5.4 "
      .. "examples/xargs.lua -P 2 echo item: 2>&1"))
    local out = p:read("a")
    local _, _, status = p:close()
    assert.are.equal(0, status, out)
    assert.are.equal("item: a\nitem: b c\nitem: d\n", out)
    p = assert(io.popen("printf '1\\n0\\n' | timeout 30 lua5.4 examples/xargs.lua "
      .. "sh -c 'echo $0; exit $0' 2>&1"))
    out = p:read("a")
    _, _, status = p:close()
    assert.are.equal(123, status, out)
    assert.truthy(out:find("xargs: sh 1: exit 1", 1, true), out)
  end)

  it("copy.lua: 8 MiB in 1 MiB chunks, a progress line, an identical copy", function()
    local out, status = run_example("copy.lua")
    assert.are.equal(0, status, out)
    -- stderr (merged here): the progress line, rewritten with \r
    local progress = out:match("^(.-)\n")
    assert.are.equal(8, select(2, progress:gsub("\r", "")), progress)
    assert.truthy(progress:find("\r 12.5%  1.0 MiB of 8.0 MiB", 1, true), progress)
    local last = "\r100.0%  8.0 MiB of 8.0 MiB"
    assert.are.equal(last, progress:sub(-#last), progress)
    assert.are.equal(table.concat({
      "copied 8.0 MiB in X s",
      "sizes 8388608 8388608, identical: true",
      "left in the directory: copy source",
      "",
    }, "\n"), (out:gsub("^.-\n", ""):gsub("in %d+%.%d+ s", "in X s")))
  end)

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

describe("network examples (a server on 127.0.0.1, port 0, started and stopped)", function()
  local function run(name)
    local out, status = run_example(name)
    assert.are.equal(0, status, out)
    return out
  end

  it("echo.lua: three clients at once, each gets its lines back", function()
    assert.are.equal(table.concat({
      'alpha: "hello" | "how are you?"',
      'beta: "ping" | "pong" | ""',
      "gamma: 50000 bytes",
      "server stopped",
      "",
    }, "\n"), run("echo.lua"))
  end)

  it("chat.lua: joins, messages and leaves reach the others, not the sender", function()
    assert.are.equal(table.concat({
      "alice <- * welcome alice (1 here)",
      "bob   <- * welcome bob (2 here)",
      "alice <- * bob joined",
      "bob   <- alice: hi bob",
      "carol <- * welcome carol (3 here)",
      "alice <- * carol joined",
      "bob   <- * carol joined",
      "alice <- bob: hello both",
      "carol <- bob: hello both",
      "alice <- * carol left",
      "bob   <- * carol left",
      "bob   <- alice: bye",
      "bob   <- * alice left",
      "server stopped",
      "",
    }, "\n"), run("chat.lua"))
  end)

  it("kv.lua: SET / GET / DEL, binary values, errors, ten clients at once", function()
    assert.are.equal(table.concat({
      "SET hello world ->\tOK",
      "GET hello       ->\tworld",
      "GET missing     ->\tnil",
      "a binary value  ->\ttrue",
      "DEL hello       ->\t1",
      "DEL hello       ->\t0",
      "FLY away        ->\tERR unknown command 'FLY away'",
      "10 clients x 100 keys at once: 1000 keys stored and read back",
      "server stopped",
      "",
    }, "\n"), run("kv.lua"))
  end)

  it("reuseport.lua: two workers' servers share one port", function()
    if not support.can_spawn then return pending("needs a child process") end
    assert.are.equal(table.concat({
      "40 connections, served by 2 servers on 2 worker threads",
      "servers stopped",
      "",
    }, "\n"), run("reuseport.lua"))
  end)
end)
