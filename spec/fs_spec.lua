-- tidal.fs: every function, its error kinds, and cancellation (a cancelled
-- call leaks no descriptor and no request). Every test runs through
-- support.run_io, which fails when a descriptor or a child process is left.
local tidal = require("tidal")
local fs = require("tidal.fs")
local support = require("support")

-- every test ends with the descriptors it began with, and no child
support.guard_io()

local function sh(cmd)
  assert(os.execute(cmd), cmd)
end

local function tmpdir()
  local d = os.tmpname()
  os.remove(d)
  sh("mkdir -p " .. d)
  return d
end

local function write_raw(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

local function read_raw(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- an error object of kind with errno and path, whose message names fname
local function is_err(err, kind, errno, fname, path)
  assert.is_true(tidal.is_error(err), tostring(err))
  assert.are.equal(kind, err.kind, err.message)
  if errno then assert.are.equal(errno, err.errno, err.message) end
  if path then
    assert.are.equal(path, err.path)
    assert.truthy(err.message:find(path, 1, true), err.message)
  end
  assert.are.equal(fname .. ": ", err.message:sub(1, #fname + 2))
end

-- a path that open(2) refuses to write with EACCES, or nil
local function denied_path(dir)
  local p = dir .. "/denied"
  write_raw(p, "x")
  sh("chmod 000 " .. p)
  local f = io.open(p, "w")
  if not f then return p end
  f:close() -- root: permission bits do not stop it; sysfs does
  f = io.open("/sys/kernel/notes", "w")
  if f then
    f:close()
    return nil
  end
  return "/sys/kernel/notes"
end

local dir
before_each(function() dir = tmpdir() end)
after_each(function() sh("chmod -R u+rwx " .. dir .. "; rm -rf " .. dir) end)

describe("tidal.fs.read_file / write_file", function()
  it("round-trip binary data of any size", function()
    support.run_io(function()
      local bin = {}
      for i = 0, 255 do bin[#bin + 1] = string.char(i) end
      bin = table.concat(bin)
      for _, data in ipairs({ "", "x", bin, bin:rep(12000) }) do
        local p = dir .. "/data"
        assert.is_true(fs.write_file(p, data))
        assert.are.equal(data, fs.read_file(p))
        assert.are.equal(data, read_raw(p))
      end
    end)
  end)

  it("read_file reads what has no size (/proc)", function()
    support.run_io(function()
      local s = assert(fs.read_file("/proc/self/status"))
      assert.truthy(s:find("Pid:", 1, true))
    end)
  end)

  it("read_file's max: a larger file is too_large, nothing more is read", function()
    support.run_io(function()
      local p = dir .. "/ten"
      write_raw(p, ("x"):rep(10))
      assert.are.equal(("x"):rep(10), fs.read_file(p, { max = 10 }))
      local s, err = fs.read_file(p, { max = 9 })
      assert.is_nil(s)
      is_err(err, "too_large", nil, "tidal.fs.read_file", p)
      assert.truthy(err.message:find("larger than max (9 bytes)", 1, true), err.message)
      -- a file with no size (/proc) is cut at max too
      s, err = fs.read_file("/proc/self/status", { max = 5 })
      assert.is_nil(s)
      assert.are.equal("too_large", err.kind)
    end)
  end)

  it("errors: not_found, is_a_directory, not_a_directory", function()
    support.run_io(function()
      local s, err = fs.read_file(dir .. "/nope")
      assert.is_nil(s)
      is_err(err, "not_found", "ENOENT", "tidal.fs.read_file", dir .. "/nope")
      assert.are.equal("tidal.fs.read_file: " .. dir
        .. "/nope: no such file or directory (ENOENT)", err.message)
      s, err = fs.read_file(dir)
      assert.is_nil(s)
      is_err(err, "is_a_directory", "EISDIR", "tidal.fs.read_file", dir)
      write_raw(dir .. "/file", "")
      local ok
      ok, err = fs.write_file(dir .. "/file/x", "data")
      assert.is_nil(ok)
      is_err(err, "not_a_directory", "ENOTDIR", "tidal.fs.write_file", dir .. "/file/x")
    end)
  end)

  it("append and mode", function()
    support.run_io(function()
      local p = dir .. "/log"
      assert.is_true(fs.write_file(p, "a\n", { mode = tonumber("600", 8) }))
      assert.is_true(fs.write_file(p, "b\n", { append = true }))
      assert.are.equal("a\nb\n", fs.read_file(p))
      assert.are.equal(tonumber("600", 8), fs.stat(p).mode)
      assert.is_true(fs.write_file(p, "c"))
      assert.are.equal("c", fs.read_file(p))
    end)
  end)

  it("atomic: replaces the file whole and leaves no temporary file", function()
    support.run_io(function()
      local p = dir .. "/conf"
      write_raw(p, "old")
      assert.is_true(fs.write_file(p, "new contents", { atomic = true }))
      assert.are.equal("new contents", fs.read_file(p))
      assert.are.same({ "conf" }, fs.readdir(dir))
    end)
  end)

  it("atomic: a failure leaves the target as it was and removes the temporary file", function()
    support.run_io(function()
      -- the rename fails: the target is a directory that holds a file
      local p = dir .. "/target"
      assert(fs.mkdir(p))
      write_raw(p .. "/inside", "keep")
      local ok, err = fs.write_file(p, "data", { atomic = true })
      assert.is_nil(ok)
      is_err(err, "is_a_directory", "EISDIR", "tidal.fs.write_file", p)
      assert.are.same({ "target" }, fs.readdir(dir))
      assert.are.equal("keep", fs.read_file(p .. "/inside"))
      -- the directory is missing: nothing is created
      ok, err = fs.write_file(dir .. "/missing/f", "data", { atomic = true })
      assert.is_nil(ok)
      assert.are.equal("not_found", err.kind)
      assert.are.same({ "target" }, fs.readdir(dir))
    end)
  end)

  it("permission_denied names the path", function()
    local p = denied_path(dir)
    if not p then return pending("no path refuses writes here") end
    support.run_io(function()
      local ok, err = fs.write_file(p, "data")
      assert.is_nil(ok)
      is_err(err, "permission_denied", "EACCES", "tidal.fs.write_file", p)
      local f
      f, err = fs.open(p, "w")
      assert.is_nil(f)
      is_err(err, "permission_denied", "EACCES", "tidal.fs.open", p)
    end)
  end)
end)

describe("tidal.fs.stat / lstat", function()
  it("types, size, mode, times", function()
    support.run_io(function()
      local p = dir .. "/f"
      write_raw(p, "12345")
      sh("chmod 640 " .. p .. "; ln -s f " .. dir .. "/link; mkfifo " .. dir .. "/fifo"
        .. "; ln -s nowhere " .. dir .. "/dangling")
      local st = assert(fs.stat(p))
      assert.are.equal("file", st.type)
      assert.are.equal(5, st.size)
      assert.are.equal(tonumber("640", 8), st.mode)
      assert.is_true(math.abs(st.mtime - os.time()) < 60)
      assert.are.equal("number", type(st.atime))
      assert.are.equal("number", type(st.ctime))
      assert.are.equal(1, st.nlink)
      assert.is_true(math.type(st.ino) == "integer" and math.type(st.dev) == "integer")
      assert.are.equal("directory", fs.stat(dir).type)
      assert.are.equal("file", fs.stat(dir .. "/link").type)
      assert.are.equal("link", fs.lstat(dir .. "/link").type)
      assert.are.equal("fifo", fs.stat(dir .. "/fifo").type)
      assert.are.equal("char", fs.stat("/dev/null").type)
      local none, err = fs.stat(dir .. "/dangling")
      assert.is_nil(none)
      is_err(err, "not_found", "ENOENT", "tidal.fs.stat", dir .. "/dangling")
      assert.are.equal("link", fs.lstat(dir .. "/dangling").type)
      none, err = fs.lstat(dir .. "/nope")
      assert.is_nil(none)
      is_err(err, "not_found", "ENOENT", "tidal.fs.lstat", dir .. "/nope")
    end)
  end)

  it("errors: name_too_long, too_many_links", function()
    support.run_io(function()
      local long = dir .. "/" .. ("n"):rep(300)
      local st, err = fs.stat(long)
      assert.is_nil(st)
      is_err(err, "name_too_long", "ENAMETOOLONG", "tidal.fs.stat", long)
      sh("ln -s loop2 " .. dir .. "/loop1; ln -s loop1 " .. dir .. "/loop2")
      st, err = fs.stat(dir .. "/loop1")
      assert.is_nil(st)
      is_err(err, "too_many_links", "ELOOP", "tidal.fs.stat", dir .. "/loop1")
    end)
  end)
end)

describe("tidal.fs.mkdir", function()
  it("makes one directory; an existing one is already_exists", function()
    support.run_io(function()
      local p = dir .. "/d"
      assert.is_true(fs.mkdir(p))
      assert.are.equal("directory", fs.stat(p).type)
      local ok, err = fs.mkdir(p)
      assert.is_nil(ok)
      is_err(err, "already_exists", "EEXIST", "tidal.fs.mkdir", p)
      ok, err = fs.mkdir(dir .. "/a/b")
      assert.is_nil(ok)
      is_err(err, "not_found", "ENOENT", "tidal.fs.mkdir", dir .. "/a/b")
    end)
  end)

  it("parents: makes the whole chain; what exists is fine", function()
    support.run_io(function()
      local p = dir .. "/a/b//c/d/"
      assert.is_true(fs.mkdir(p, { parents = true }))
      assert.are.equal("directory", fs.stat(dir .. "/a/b/c/d").type)
      assert.is_true(fs.mkdir(p, { parents = true }))
      assert.is_true(fs.mkdir(dir .. "/a", { parents = true, mode = tonumber("700", 8) }))
      assert.is_true(fs.mkdir(dir .. "/m", { parents = true, mode = tonumber("700", 8) }))
      assert.are.equal(tonumber("700", 8), fs.stat(dir .. "/m").mode)
      write_raw(dir .. "/file", "")
      local ok, err = fs.mkdir(dir .. "/file/sub/x", { parents = true })
      assert.is_nil(ok)
      is_err(err, "not_a_directory", "ENOTDIR", "tidal.fs.mkdir", dir .. "/file/sub/x")
      ok, err = fs.mkdir(dir .. "/file", { parents = true })
      assert.is_nil(ok)
      is_err(err, "already_exists", "EEXIST", "tidal.fs.mkdir", dir .. "/file")
    end)
  end)
end)

describe("tidal.fs.readdir", function()
  it("names sorted bytewise, no . and ..; types on request", function()
    support.run_io(function()
      for _, n in ipairs({ "b", "a", "B", "\xc3\xa9", "10", "9" }) do write_raw(dir .. "/" .. n, "") end
      sh("mkdir " .. dir .. "/sub; ln -s a " .. dir .. "/ln; mkfifo " .. dir .. "/p")
      assert.are.same({ "10", "9", "B", "a", "b", "ln", "p", "sub", "\xc3\xa9" }, fs.readdir(dir))
      local typed = fs.readdir(dir, { types = true })
      local types = {}
      for _, e in ipairs(typed) do types[e.name] = e.type end
      assert.are.same({ ["10"] = "file", ["9"] = "file", B = "file", a = "file",
        b = "file", ln = "link", p = "fifo", sub = "directory",
        ["\xc3\xa9"] = "file" }, types)
      assert.are.equal("10", typed[1].name)
      assert.are.same({}, fs.readdir(dir .. "/sub"))
      local list, err = fs.readdir(dir .. "/a")
      assert.is_nil(list)
      is_err(err, "not_a_directory", "ENOTDIR", "tidal.fs.readdir", dir .. "/a")
      list, err = fs.readdir(dir .. "/none")
      assert.is_nil(list)
      is_err(err, "not_found", "ENOENT", "tidal.fs.readdir", dir .. "/none")
    end)
  end)
end)

describe("tidal.fs.remove / rename", function()
  it("remove: a file, a link, an empty directory; not_empty; not_found", function()
    support.run_io(function()
      write_raw(dir .. "/f", "")
      sh("mkdir -p " .. dir .. "/empty " .. dir .. "/full; touch " .. dir .. "/full/x"
        .. "; ln -s full " .. dir .. "/link")
      assert.is_true(fs.remove(dir .. "/f"))
      assert.is_true(fs.remove(dir .. "/link"))
      assert.are.equal("directory", fs.stat(dir .. "/full").type) -- not followed
      assert.is_true(fs.remove(dir .. "/empty"))
      local ok, err = fs.remove(dir .. "/full")
      assert.is_nil(ok)
      is_err(err, "not_empty", "ENOTEMPTY", "tidal.fs.remove", dir .. "/full")
      ok, err = fs.remove(dir .. "/f")
      assert.is_nil(ok)
      is_err(err, "not_found", "ENOENT", "tidal.fs.remove", dir .. "/f")
      assert.are.same({ "full" }, fs.readdir(dir))
    end)
  end)

  it("remove recursive: a tree, never following links out of it", function()
    support.run_io(function()
      local outside = dir .. "/outside"
      sh("mkdir -p " .. outside .. " " .. dir .. "/tree/a/b/c " .. dir .. "/tree/d"
        .. "; touch " .. outside .. "/keep " .. dir .. "/tree/a/b/c/f " .. dir .. "/tree/x"
        .. "; ln -s " .. outside .. " " .. dir .. "/tree/a/out"
        .. "; mkfifo " .. dir .. "/tree/d/p")
      assert.is_true(fs.remove(dir .. "/tree", { recursive = true }))
      assert.are.same({ "outside" }, fs.readdir(dir))
      assert.are.same({ "keep" }, fs.readdir(outside))
      assert.is_true(fs.remove(outside .. "/keep", { recursive = true }))
      local ok, err = fs.remove(dir .. "/tree", { recursive = true })
      assert.is_nil(ok)
      is_err(err, "not_found", "ENOENT", "tidal.fs.remove", dir .. "/tree")
    end)
  end)

  it("rename: moves, replaces; invalid_argument, cross_device", function()
    support.run_io(function()
      write_raw(dir .. "/a", "A")
      write_raw(dir .. "/b", "B")
      assert.is_true(fs.rename(dir .. "/a", dir .. "/b"))
      assert.are.same({ "b" }, fs.readdir(dir))
      assert.are.equal("A", fs.read_file(dir .. "/b"))
      local ok, err = fs.rename(dir .. "/a", dir .. "/c")
      assert.is_nil(ok)
      is_err(err, "not_found", "ENOENT", "tidal.fs.rename", dir .. "/a")
      assert.are.equal(dir .. "/c", err.to)
      assert.truthy(err.message:find(dir .. "/a -> " .. dir .. "/c", 1, true), err.message)
      sh("mkdir " .. dir .. "/d")
      ok, err = fs.rename(dir .. "/d", dir .. "/d/inside")
      assert.is_nil(ok)
      is_err(err, "invalid_argument", "EINVAL", "tidal.fs.rename", dir .. "/d")
    end)
    local shm = "/dev/shm/tidal-fs-spec-" .. tostring(os.time()) .. "-" .. math.random(1e6)
    local a, b = io.open("/dev/shm"), nil
    if a then a:close() end
    support.run_io(function()
      local st1, st2 = fs.stat(dir), fs.stat("/dev/shm")
      if not st2 or st1.dev == st2.dev then return end
      b = true
      local ok, err = fs.rename(dir .. "/b", shm)
      assert.is_nil(ok)
      is_err(err, "cross_device", "EXDEV", "tidal.fs.rename", dir .. "/b")
    end)
    if not b then pending("no second file system to rename across") end
  end)
end)

describe("tidal.fs misuse", function()
  it("raises naming the function and the fix", function()
    support.run(function()
      local cases = {
        { fs.read_file, { 42 }, "tidal.fs.read_file: path must be a string, got number" },
        { fs.read_file, { "a\0b" }, "tidal.fs.read_file: the path contains a zero byte" },
        { fs.read_file, { "x", { mx = 1 } }, "tidal.fs.read_file: unknown option 'mx' (known: max)" },
        { fs.read_file, { "x", { max = -1 } }, "option 'max' must be a non-negative integer" },
        { fs.read_file, { "x", 5 }, "tidal.fs.read_file: options must be a table, got number" },
        { fs.write_file, { "x", {} }, "tidal.fs.write_file: data must be a string, got table" },
        { fs.write_file, { "x", "d", { atomic = true, append = true } },
          "options 'atomic' and 'append' cannot be combined" },
        { fs.write_file, { "x", "d", { mode = "644" } }, "option 'mode' must be permission bits" },
        { fs.write_file, { "x", "d", { sync = 1 } }, "option 'sync' must be a boolean, got number" },
        { fs.write_file, { "x", "d", { atomc = true } },
          "unknown option 'atomc' (known: append, atomic, mode, sync)" },
        { fs.mkdir, { "x", { parent = true } }, "unknown option 'parent' (known: mode, parents)" },
        { fs.readdir, { "x", { type = true } }, "unknown option 'type' (known: types)" },
        { fs.remove, { "x", { recursive = "yes" } }, "option 'recursive' must be a boolean" },
        { fs.rename, { "x" }, "tidal.fs.rename: to must be a string, got nil" },
        { fs.open, { "x", 1 }, "tidal.fs.open: mode must be a string, got number" },
        { fs.stat, {}, "tidal.fs.stat: path must be a string, got nil" },
      }
      for _, c in ipairs(cases) do
        local ok, err = pcall(c[1], table.unpack(c[2]))
        assert.is_false(ok)
        assert.truthy(tostring(err):find(c[3], 1, true), tostring(err))
      end
    end)
    local ok, err = pcall(fs.stat, "/")
    assert.is_false(ok)
    assert.truthy(tostring(err):find("tidal.fs.stat: not inside a tidal task", 1, true), tostring(err))
  end)
end)

describe("tidal.fs never blocks the loop; cancellation leaks nothing", function()
  it("a read_file blocked in the pool (a FIFO with no writer) lets the others run", function()
    support.run_io(function()
      local fifo = dir .. "/fifo"
      sh("mkfifo " .. fifo)
      local ticks = 0
      local reader = tidal.spawn(function() return fs.read_file(fifo) end)
      for _ = 1, 5 do
        tidal.sleep(0.01)
        ticks = ticks + 1
      end
      assert.are.equal(5, ticks)
      assert.is_false(reader:is_finished())
      local w = assert(fs.open(fifo, "w")) -- the reader's open completes too
      assert(w:write("through the fifo"))
      assert.is_true(w:close())
      assert.are.equal("through the fifo", reader:await())
    end)
  end)

  it("a cancelled read_file whose job runs on finishes in the background", function()
    support.run_io(function()
      local fifo = dir .. "/fifo"
      sh("mkfifo " .. fifo)
      local ok, err = tidal.timeout(0.05, fs.read_file, fifo)
      assert.is_false(ok)
      assert.are.equal("timeout", err.kind)
      -- the job still waits in open(2); give it a writer: it reads, closes
      local w = assert(fs.open(fifo, "w"))
      assert(w:write("x"))
      assert.is_true(w:close())
    end)
  end)

  it("a cancelled fs.open whose job runs on closes the descriptor it opened", function()
    support.run_io(function()
      local fifo = dir .. "/fifo"
      sh("mkfifo " .. fifo)
      local h = tidal.spawn(function() return fs.open(fifo, "r") end)
      tidal.sleep(0.05)
      h:abort()
      local ok, err = h:join()
      assert.is_false(ok)
      assert.are.equal("cancelled", err.kind)
      local w = assert(fs.open(fifo, "w"))
      assert.is_true(w:close())
    end)
  end)

  it("jobs cancelled before they start never run (a saturated pool)", function()
    if not support.can_spawn then return pending("needs a child process") end
    local out, status = support.lua(([[
      local tidal = require("tidal")
      local fs = tidal.fs
      local hooks = require("tidal.testhooks")
      local dir = %q
      local fifo = dir .. "/fifo"
      os.execute("mkfifo " .. fifo)
      tidal.run(function() end) -- (process-wide descriptors: libuv's signal pipe)
      local fds0 = 0
      for _ in pairs(hooks.fds()) do fds0 = fds0 + 1 end
      tidal.run({blocking_threads = 2}, function()
        local file = assert(fs.open(dir .. "/kept", "w"))
        assert(file:write("data"))
        -- two opens block both pool threads
        local a = tidal.spawn(fs.open, fifo)
        local b = tidal.spawn(fs.open, fifo)
        tidal.sleep(0.05)
        -- queued behind them: cancelled before they start
        local ok, err = tidal.timeout(0.05, fs.write_file, dir .. "/never", "x")
        print("write_file", ok, err.kind)
        ok, err = tidal.timeout(0.05, fs.mkdir, dir .. "/never-dir")
        print("mkdir", ok, err.kind)
        -- a close cancelled before its job started: closed in the background
        ok, err = tidal.timeout(0.05, file.close, file)
        print("close", ok, err.kind, tostring(file))
        a:abort(); b:abort()
        local w = assert(io.open(fifo, "w")) -- releases both opens
        w:close()
      end)
      local f = io.open(dir .. "/never")
      print("ran", f ~= nil, io.open(dir .. "/never-dir") ~= nil)
      f = io.open(dir .. "/kept")
      print("kept", f:read("a"))
      f:close()
      local fds1 = 0
      for _ in pairs(hooks.fds()) do fds1 = fds1 + 1 end
      print("fds", fds1 - fds0)
    ]]):format(dir))
    assert.are.equal(0, status, out)
    assert.are.equal(table.concat({
      "write_file\tfalse\ttimeout",
      "mkdir\tfalse\ttimeout",
      "close\tfalse\ttimeout\ttidal.File (closed)",
      "ran\tfalse\tfalse",
      "kept\tdata",
      "fds\t0",
      "",
    }, "\n"), out)
  end)
end)

describe("File on a pipe: cancelled reads and writes lose nothing", function()
  it("a cancelled read keeps what arrived for the next read", function()
    support.run_io(function()
      local fifo = dir .. "/fifo"
      sh("mkfifo " .. fifo)
      local rh = tidal.spawn(fs.open, fifo, "r")
      local w = assert(fs.open(fifo, "w"))
      local r = assert(rh:await())
      assert(w:setvbuf("no"))
      assert(w:write("par"))
      local ok, err = tidal.timeout(0.1, r.read, r, "l")
      assert.is_false(ok)
      assert.are.equal("timeout", err.kind)
      assert(w:write("tial\nnext\n"))
      assert.are.equal("partial", r:read("l"))
      assert.are.equal("next", r:read("l"))
      local pos, serr = r:seek()
      assert.is_nil(pos)
      assert.are.equal("ESPIPE", serr.errno)
      assert.is_true(w:close())
      assert.is_nil(r:read("l"))
      assert.is_true(r:close())
    end)
  end)

  it("a write cancelled while it runs completes in the background", function()
    support.run_io(function()
      local fifo = dir .. "/fifo"
      sh("mkfifo " .. fifo)
      local rh = tidal.spawn(fs.open, fifo, "r")
      local w = assert(fs.open(fifo, "w"))
      local r = assert(rh:await())
      local big = ("0123456789abcdef"):rep(64 * 1024) -- 1 MiB: fills the pipe
      local ok, err = tidal.timeout(0.1, w.write, w, big)
      assert.is_false(ok)
      assert.are.equal("timeout", err.kind)
      local reader = tidal.spawn(r.read, r, "a")
      assert.is_true(w:close()) -- waits for the background write
      assert.are.equal(big, reader:await())
      assert.is_true(r:close())
    end)
  end)
end)
