-- tidal.process: exec, spawn and the Child, kill, pid. Every test runs
-- through support.run_io, which fails when a descriptor or a child process
-- (running or zombie) is left behind.
local tidal = require("tidal")
local process = require("tidal.process")
local support = require("support")

-- every test ends with the descriptors it began with, and no child
support.guard_io()

if not support.can_spawn then
  describe("tidal.process", function()
    pending("needs child processes")
  end)
  return
end

-- whether pid names a process (a zombie counts)
local function alive(pid)
  return process.kill(pid, 0) == true
end

describe("tidal.process.exec", function()
  it("collects stdout, stderr and the status; argv is never a shell", function()
    support.run_io(function()
      local res = assert(process.exec({ "echo", "a b", "$HOME;", "*", 42 }))
      assert.are.same({ status = 0, ok = true, stdout = "a b $HOME; * 42\n", stderr = "" }, res)
      res = assert(process.exec({ "sh", "-c", "echo out; echo err >&2; exit 3" }))
      assert.are.same({ status = 3, ok = false, stdout = "out\n", stderr = "err\n" }, res)
    end)
  end)

  it("a child killed by a signal has signal and no status", function()
    support.run_io(function()
      local res = assert(process.exec({ "sh", "-c", "kill -TERM $$" }))
      assert.is_nil(res.status)
      assert.are.equal("term", res.signal)
      assert.is_false(res.ok)
    end)
  end)

  it("stdin feeds the child; large input and output flow at once", function()
    support.run_io(function()
      local res = assert(process.exec({ "cat" }, { stdin = "fed\n" }))
      assert.are.equal("fed\n", res.stdout)
      local big = ("0123456789"):rep(300000) -- 3 MB each way: no deadlock
      res = assert(process.exec({ "cat" }, { stdin = big }))
      assert.are.equal(#big, #res.stdout)
      assert.is_true(res.stdout == big)
      -- a child that does not read its input still finishes
      res = assert(process.exec({ "true" }, { stdin = big }))
      assert.is_true(res.ok)
      -- without stdin the child reads /dev/null
      res = assert(process.exec({ "cat" }))
      assert.are.equal("", res.stdout)
    end)
  end)

  it("env is merged (false removes); clear_env starts empty; cwd", function()
    support.run_io(function()
      local res = assert(process.exec({ "sh", "-c", 'echo "$TIDAL_A|${HOME-unset}"' },
        { env = { TIDAL_A = "one", HOME = false } }))
      assert.are.equal("one|unset\n", res.stdout)
      res = assert(process.exec({ "env" }, { clear_env = true, env = { ONLY = "me" } }))
      assert.are.equal("ONLY=me\n", res.stdout)
      res = assert(process.exec({ "pwd" }, { cwd = "/" }))
      assert.are.equal("/\n", res.stdout)
      local none, err = process.exec({ "pwd" }, { cwd = "/nonexistent-dir" })
      assert.is_nil(none)
      assert.are.equal("not_found", err.kind)
      assert.truthy(err.message:find("(in /nonexistent-dir)", 1, true), err.message)
    end)
  end)

  it("stdout and stderr may be inherited or ignored", function()
    support.run_io(function()
      local res = assert(process.exec({ "sh", "-c", "echo x; echo y >&2" },
        { stdout = "ignore", stderr = "ignore" }))
      assert.is_nil(res.stdout)
      assert.is_nil(res.stderr)
      assert.is_true(res.ok)
    end)
  end)

  it("a program that cannot run: not_found, permission_denied", function()
    local dir = os.tmpname()
    support.run_io(function()
      local none, err = process.exec({ "tidal-no-such-program" })
      assert.is_nil(none)
      assert.are.equal("not_found", err.kind)
      assert.are.equal("ENOENT", err.errno)
      assert.are.equal("tidal.process.exec: tidal-no-such-program: no such file or "
        .. "directory (ENOENT)", err.message)
      none, err = process.spawn({ dir }) -- a file that is not executable
      assert.is_nil(none)
      assert.are.equal("permission_denied", err.kind)
      assert.are.equal("EACCES", err.errno)
      assert.truthy(err.message:find("tidal.process.spawn: " .. dir, 1, true), err.message)
    end)
    os.remove(dir)
  end)

  it("timeout kills the child and keeps what it wrote", function()
    support.run_io(function()
      local t0 = tidal.now()
      local none, err = process.exec({ "sh", "-c", "echo partial; exec sleep 10" },
        { timeout = 0.3 })
      assert.is_nil(none)
      assert.are.equal("timeout", err.kind)
      assert.are.equal("partial\n", err.stdout)
      assert.are.equal("", err.stderr)
      assert.truthy(err.message:find("timed out after 0.3 s", 1, true), err.message)
      assert.is_true(tidal.now() - t0 < 5)
    end)
  end)

  it("max_output: more is too_large and the child is killed", function()
    support.run_io(function()
      local t0 = tidal.now()
      local none, err = process.exec({ "sh", "-c", "while :; do echo spam; done" },
        { max_output = 1000 })
      assert.is_nil(none)
      assert.are.equal("too_large", err.kind)
      assert.truthy(err.message:find("stdout exceeds max_output (1000 bytes", 1, true),
        err.message)
      assert.is_true(tidal.now() - t0 < 5)
      assert.are.equal("x", assert(process.exec({ "printf", "x" }, { max_output = 1 })).stdout)
    end)
  end)
end)

describe("tidal.process.spawn", function()
  it("pipes both ways; wait gives the same table each time", function()
    support.run_io(function()
      local c = assert(process.spawn({ "sh", "-c", "read x; echo got $x; echo e >&2; exit 7" },
        { stdin = "pipe", stdout = "pipe", stderr = "pipe" }))
      assert.is_nil(c:try_wait())
      assert.truthy(tostring(c):find("running", 1, true))
      assert(c.stdin:write("abc\n"))
      assert.are.equal("got abc", c.stdout:read_line())
      assert.are.equal("e", c.stderr:read_line())
      local res = c:wait()
      assert.are.same({ status = 7, ok = false }, res)
      assert.are.equal(res, c:wait())
      assert.are.equal(res, c:try_wait())
      assert.is_nil(c.stdout:read())
      assert.is_nil(c.nonsense)
      local ok, err = c:kill()
      assert.is_nil(ok)
      assert.are.equal("exited", err.kind)
      c:close()
    end)
  end)

  it("a child that exits before its pipes are read: nothing is lost", function()
    support.run_io(function()
      -- 200 KiB: more than the socket holds, less than read_buffer (the
      -- stream reads on until it holds that much, so the child can finish)
      local c = assert(process.spawn({ "head", "-c", "204800", "/dev/zero" },
        { stdout = "pipe", read_buffer = 1024 * 1024 }))
      assert.is_true(c:wait().ok)
      local data = assert(c.stdout:read_all())
      assert.are.equal(204800, #data)
      assert.is_nil(c.stdout:read())
      c:close()
      -- with the default read_buffer (64 KiB) and what fits in the socket
      c = assert(process.spawn({ "sh", "-c", "head -c 70000 /dev/zero; echo err >&2" },
        { stdout = "pipe", stderr = "pipe" }))
      assert.is_true(c:wait().ok)
      assert.are.equal(70000, #assert(c.stdout:read_all()))
      assert.are.equal("err\n", c.stderr:read_all())
      c:close()
    end)
  end)

  it("writing to a child that has exited is broken_pipe, not SIGPIPE", function()
    support.run_io(function()
      local c = assert(process.spawn({ "true" }, { stdin = "pipe" }))
      c:wait()
      local ok, err
      for _ = 1, 10 do -- (the first writes may still fit in the buffer)
        ok, err = c.stdin:write(("x"):rep(65536))
        if not ok then break end
      end
      assert.is_nil(ok)
      assert.are.equal("broken_pipe", err.kind)
      c:close()
    end)
  end)

  it("kill sends a signal (default kill); names in any form", function()
    support.run_io(function()
      local c = assert(process.spawn({ "sleep", "10" }))
      assert.is_true(c:kill())
      assert.are.same({ signal = "kill", ok = false }, c:wait())
      for _, sig in ipairs({ "term", "SIGTERM", "Term", 15 }) do
        c = assert(process.spawn({ "sleep", "10" }))
        assert.is_true(c:kill(sig))
        assert.are.equal("term", c:wait().signal)
      end
      c = assert(process.spawn({ "sleep", "10" }))
      assert.is_true(process.kill(c:pid(), "usr1"))
      assert.are.equal("usr1", c:wait().signal)
    end)
  end)

  it("close kills a running child and closes its pipes; it is reaped", function()
    support.run_io(function()
      local c = assert(process.spawn({ "sleep", "10" }, { stdout = "pipe" }))
      local pid, out = c:pid(), c.stdout
      c:close()
      c:close()
      assert.are.equal("tidal.Child (closed)", tostring(c))
      assert.are.equal(pid, c:pid())
      local ok, err = pcall(c.wait, c)
      assert.is_false(ok)
      assert.truthy(tostring(err):find("Child:wait: attempt to use a closed child", 1, true))
      ok = pcall(out.read, out)
      assert.is_false(ok)
      tidal.sleep(0.2)
      assert.is_false(alive(pid))
    end)
  end)

  it("a dropped Child is not killed; it is reaped when it exits", function()
    support.run_io(function()
      local pid
      do
        local c = assert(process.spawn({ "sleep", "0.3" }))
        pid = c:pid()
      end
      collectgarbage()
      collectgarbage()
      assert.is_true(alive(pid))
      local t0 = tidal.now()
      while alive(pid) and tidal.now() - t0 < 5 do tidal.sleep(0.05) end
      assert.is_false(alive(pid)) -- reaped: not even a zombie
    end)
  end)

  it("misuse raises naming the function", function()
    support.run(function()
      local cases = {
        { process.spawn, { "ls" }, "tidal.process.spawn: argv must be a list of strings" },
        { process.spawn, { {} }, "tidal.process.spawn: argv is empty" },
        { process.spawn, { { "ls", {} } }, "tidal.process.spawn: argv[2] must be a string, got table" },
        { process.spawn, { { "ls\0x" } }, "tidal.process.spawn: argv[1] contains a zero byte" },
        { process.spawn, { { "ls" }, { stdout = "file" } },
          "tidal.process.spawn: option 'stdout' must be \"pipe\", \"inherit\" or \"ignore\", got file" },
        { process.spawn, { { "ls" }, { shell = true } }, "tidal.process.spawn: unknown option 'shell' (known: " },
        { process.spawn, { { "ls" }, { kill_signal = "nine" } },
          "tidal.process.spawn: option 'kill_signal': unknown signal 'nine'" },
        { process.spawn, { { "ls" }, { env = { ["A=B"] = "x" } } },
          "tidal.process.spawn: invalid environment variable name 'A=B'" },
        { process.spawn, { { "ls" }, { env = { A = {} } } },
          "tidal.process.spawn: an env value must be a string, got table" },
        { process.exec, { { "ls" }, { stdin = 5 } },
          "tidal.process.exec: option 'stdin' must be a string, got number" },
        { process.exec, { { "ls" }, { timeout = "1" } }, "tidal.process.exec: option 'timeout' must be a number" },
        { process.exec, { { "ls" }, { detach = true } }, "tidal.process.exec: unknown option 'detach'" },
        { process.kill, { -1 }, "tidal.process.kill: pid must be a positive integer" },
        { process.kill, { 1, "bogus" }, "tidal.process.kill: unknown signal 'bogus'" },
      }
      for _, c in ipairs(cases) do
        local ok, err = pcall(c[1], table.unpack(c[2]))
        assert.is_false(ok)
        assert.truthy(tostring(err):find(c[3], 1, true), tostring(err))
      end
      local c = assert(process.spawn({ "true" }, { stdout = "pipe" }))
      local ok, err = pcall(c.stdout.write, c.stdout, "x")
      assert.is_false(ok)
      assert.truthy(tostring(err):find("Stream:write", 1, true), tostring(err))
      c:wait()
      c:close()
    end)
    local ok, err = pcall(process.spawn, { "true" })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("tidal.process.spawn: not inside a tidal runtime", 1, true),
      tostring(err))
  end)

  it("pid and kill of the module", function()
    support.run_io(function()
      assert.are.equal("integer", math.type(process.pid()))
      local none, err = process.kill(2147483000, "term")
      assert.is_nil(none)
      assert.are.equal("not_found", err.kind)
      assert.are.equal("ESRCH", err.errno)
    end)
  end)
end)

describe("tidal.process: no zombie, no orphan", function()
  it("a task cancelled in wait kills the child, which is reaped", function()
    support.run_io(function()
      local c = assert(process.spawn({ "sleep", "10" }))
      local pid = c:pid()
      local ok, err = tidal.timeout(0.1, c.wait, c)
      assert.is_false(ok)
      assert.are.equal("timeout", err.kind)
      local res = c:wait() -- it was killed: this returns at once
      assert.are.equal("kill", res.signal)
      assert.is_false(alive(pid))
      -- an aborted waiter, with kill_signal
      c = assert(process.spawn({ "sleep", "10" }, { kill_signal = "term" }))
      local h = tidal.spawn(c.wait, c)
      tidal.sleep(0.05)
      h:abort()
      assert.is_false((h:join()))
      assert.are.equal("term", c:wait().signal)
    end)
  end)

  it("exec cancelled by its caller's timeout kills and reaps the child", function()
    support.run_io(function()
      local ok, err = tidal.timeout(0.1, process.exec, { "sleep", "10" })
      assert.is_false(ok)
      assert.are.equal("timeout", err.kind)
      -- a select loser
      local k = tidal.select({
        slow = function() return process.exec({ "sleep", "10" }) end,
        fast = function() tidal.sleep(0.05) end,
      })
      assert.are.equal("fast", k)
    end)
    -- (run_io: no child is left)
  end)

  it("a waited child is no deadlock; one nobody waits for does not keep the run alive", function()
    support.run_io(function()
      local c = assert(process.spawn({ "sleep", "0.1" }))
      assert.is_true(c:wait().ok) -- main alone, parked on the child
    end)
    local t0 = os.time()
    support.run_io(function()
      assert(process.spawn({ "sleep", "30" })) -- killed when the run ends
    end)
    assert.is_true(os.time() - t0 < 10)
  end)

  it("a detached child outlives the runtime (in a fresh process)", function()
    local out, status = support.lua([[
      local tidal = require("tidal")
      local pid
      tidal.run(function()
        local c = assert(tidal.process.spawn({ "sleep", "0.5" }, { detach = true }))
        pid = c:pid()
      end)
      print(pid, os.execute("kill -0 " .. pid .. " 2>/dev/null") and "alive" or "gone")
    ]])
    assert.are.equal(0, status, out)
    local pid, state = out:match("^(%d+)\t(%a+)\n$")
    assert.are.equal("alive", state, out)
    -- (it is init's child now: wait for it to go)
    for _ = 1, 100 do
      if not os.execute("kill -0 " .. pid .. " 2>/dev/null") then break end
      os.execute("sleep 0.05")
    end
    assert.is_falsy(os.execute("kill -0 " .. pid .. " 2>/dev/null"))
  end)

  it("children inherit no descriptor of ours (in a fresh process)", function()
    local dir = os.tmpname()
    local out, status = support.lua(([[
      local tidal = require("tidal")
      -- what any child inherits anyway (from whoever started this process)
      local p = io.popen("ls /proc/self/fd")
      local before = p:read("a")
      p:close()
      tidal.run(function()
        local f = assert(tidal.fs.open(%q, "w"))
        local c = assert(tidal.process.spawn({ "sleep", "10" }, { stdout = "pipe", stdin = "pipe" }))
        local res = assert(tidal.process.exec({ "ls", "/proc/self/fd" }))
        print(res.stdout == before and "same" or ("before:\n" .. before .. "now:\n" .. res.stdout))
        c:close()
        f:close()
      end)
    ]]):format(dir))
    os.remove(dir)
    assert.are.equal(0, status, out)
    assert.are.equal("same\n", out)
  end)
end)
