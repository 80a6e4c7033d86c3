-- tidal.fs.open's File against Lua's own io library: the contract.
--
-- For a table of file contents and a table of programs (sequences of
-- reads, seeks, writes, flushes, setvbuf), the same program runs on a copy
-- of the file opened with io.open and on another opened with
-- tidal.fs.open; every call must return the same values (an error as
-- "nil + an error", whatever its form), and the files must hold the same
-- bytes afterwards. The one documented difference: io returns
-- (nil, message, errno number) where a File returns (nil, err) with an
-- error object.
local tidal = require("tidal")
local fs = require("tidal.fs")
local support = require("support")

-- every test ends with the descriptors it began with, and no child
support.guard_io()

-- (no shell: the ThreadSanitizer run cannot start one)
local function tmpdir()
  local d = os.tmpname()
  os.remove(d)
  support.run(function() assert(fs.mkdir(d)) end)
  return d
end

local function rmdir(d)
  support.run(function() assert(fs.remove(d, { recursive = true })) end)
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

-- a comparable description of one value
local function describe_value(v)
  local ty = type(v)
  if ty == "number" then
    if v ~= v then return "number:nan" end
    return math.type(v) .. ":" .. string.format("%.17g", v)
  elseif ty == "string" then
    return ("string:%q"):format(v)
  elseif ty == "userdata" then
    return "self" -- f:write returns the file itself
  end
  return ty .. ":" .. tostring(v)
end

-- results of a call as a list of descriptions; an error return (nil and
-- more values) is "nil", "ERROR"
local function outcome(ok, ...)
  if not ok then return { "RAISED" } end
  local n = select("#", ...)
  local first = (...)
  if first == nil and n >= 2 and select(2, ...) ~= nil then
    return { "nil", "ERROR" }
  end
  local out = {}
  for i = 1, n do out[i] = describe_value((select(i, ...))) end
  return out
end

local function join(list)
  return table.concat(list, ", ")
end

-- (the sanitizer and valgrind runs shrink the work)
local MAXREADS = support.scaled(20000)

-- Runs program (a list of steps) on the file object f; step:
--   {"read", fmt...}       {"seek", [whence [, off]]}   {"write", v...}
--   {"flush"}  {"setvbuf", mode [, size]}
--   {"lines", fmt...}      all values of f:lines(fmt...) until it ends
--   {"drain", fmt...}      f:read(fmt...) until its first value is nil (or
--                          three times "" in a row, or MAXREADS reads)
--   {"close"}
local function run_program(f, program)
  local log = {}
  for i, step in ipairs(program) do
    local op = step[1]
    local args = table.pack(table.unpack(step, 2, step.n or #step))
    local res
    if op == "lines" then
      local vals = {}
      for a, b, c in f:lines(table.unpack(args, 1, args.n)) do
        vals[#vals + 1] = join(outcome(true, a, b, c))
        if #vals >= MAXREADS then break end
      end
      res = vals
    elseif op == "drain" then
      local vals, empty = {}, 0
      for _ = 1, MAXREADS do
        local r = table.pack(f:read(table.unpack(args, 1, args.n)))
        vals[#vals + 1] = join(outcome(true, table.unpack(r, 1, r.n)))
        if r[1] == nil then break end
        empty = r[1] == "" and empty + 1 or 0
        if empty == 3 then break end
      end
      res = vals
    else
      res = outcome(pcall(f[op], f, table.unpack(args, 1, args.n)))
    end
    log[i] = op .. "(" .. join(res) .. ")"
  end
  return log
end

-- The contents every program is tried on.
local digits250 = ("1234567890"):rep(25)
local contents = {
  empty = "",
  no_final_newline = "hello",
  lines = "alpha\nbeta\n\ngamma\n",
  crlf = "one\r\ntwo\r\n\r\nthree",
  only_newlines = "\n\n\n",
  numerals = "1 2.5 0x1p4 .5 1e 7 1e5 nan -3 +4 0x10 0xA.8p1 - + 1e+ 12abc "
    .. "  \t\n 42\n 0x 00 1.e2 0x.8 ..5 3.",
  long_numeral = digits250 .. " 5",
  numeral_at_200 = ("1"):rep(199) .. "5 7",
  spaces_then_eof = "12   \n\t  ",
  binary = (function()
    local t = {}
    for i = 0, 255 do t[#t + 1] = string.char(i) end
    return table.concat(t):rep(3)
  end)(),
  long_line = ("x"):rep(70000) .. "\nshort\n" .. ("y"):rep(140000),
  many_lines = (function()
    local t = {}
    for i = 1, support.scaled(5000) do
      t[#t + 1] = ("line %d %s"):format(i, ("z"):rep(i % 37))
    end
    return table.concat(t, "\n") .. "\n"
  end)(),
}

-- Programs on a file opened "rb".
local read_programs = {
  { { "drain", "l" } },
  { { "drain", "L" } },
  { { "drain" } },
  { { "drain", "*l" } },
  { { "drain", "n" } },
  { { "drain", "*n" } },
  { { "drain", "a" } },
  { { "read", "a" }, { "read", "a" }, { "read", "l" } },
  { { "drain", 1 } },
  { { "drain", 7 } },
  { { "drain", 70001 } },
  { { "read", 0 }, { "read", 3 }, { "drain", 0, 2 } },
  { { "drain", "l", "l" } },
  { { "drain", "n", "n", "n" } },
  { { "drain", "n", "l" } },
  { { "drain", "l", "n", 2, "L" } },
  { { "read", "a", "a", "l", 0 } },
  { { "lines" } },
  { { "lines", "L" } },
  { { "lines", 4 } },
  { { "lines", "n" } },
  { { "lines", "l", "l" } },
  { { "read", 2 }, { "seek" }, { "seek", "cur", -1 }, { "read", "l" },
    { "seek", "set", 3 }, { "read", "L" }, { "seek", "end" }, { "read", 1 },
    { "read", 0 }, { "seek", "end", -3 }, { "read", "a" }, { "seek", "set" },
    { "read", "n" }, { "seek", "cur" } },
  { { "seek", "set", -1 }, { "read", "l" }, { "seek", "end", 10 },
    { "read", "a" }, { "read", "l" }, { "seek", "cur", -5 } },
  { { "read", "l" }, { "seek", "cur", 70000 }, { "read", "l" },
    { "seek", "set", 69999 }, { "read", 3 } },
  { { "write", "x" }, { "read", "l" }, { "flush" } },
}

-- Programs that write: {mode, steps}; the file starts with the content.
local write_programs = {
  { "wb", { { "write", "abc", 12, 3.5, -0.0, "\n", 1e300, math.mininteger },
            { "seek" }, { "read", "l" }, { "seek", "set" }, { "read", "a" } } },
  { "w+b", { { "write", "abc", 12, 3.5, "\n" }, { "seek", "set" },
             { "drain", "l" }, { "write", "end" }, { "seek", "set", 1 },
             { "read", "a" } } },
  { "r+b", { { "read", "l" }, { "write", "XY" }, { "seek" }, { "read", "l" },
             { "seek", "set" }, { "read", "a" } } },
  { "r+b", { { "write", "AB" }, { "read", "l" }, { "write", "CD" },
             { "seek", "cur", -1 }, { "read", 3 }, { "seek", "end", 2 },
             { "write", "tail" }, { "seek", "set" }, { "read", "a" } } },
  { "ab", { { "seek" }, { "write", "more\n" }, { "seek" }, { "write", 1, 2 },
            { "read", "a" }, { "flush" }, { "seek", "set" }, { "write", "z" } } },
  { "a+b", { { "seek" }, { "read", "l" }, { "write", "ZZ" }, { "seek" },
             { "read", "a" }, { "seek", "set" }, { "read", "a" } } },
  { "wb", { { "setvbuf", "no" }, { "write", "a" }, { "write", "b\n" },
            { "setvbuf", "line" }, { "write", "c" }, { "write", "d\ne" },
            { "setvbuf", "full", 4 }, { "write", ("q"):rep(10) },
            { "flush" }, { "seek", "cur", -3 }, { "write", "E" } } },
  { "wb", { { "write", ("big"):rep(50000) }, { "seek", "set", 10 },
            { "write", "!" }, { "seek", "end", -1 }, { "write", "?" } } },
  { "r+b", { { "seek", "set", 5 }, { "write", "." }, { "seek", "set", 2 },
             { "read", 10 }, { "write", "-" }, { "seek", "cur", 0 },
             { "read", "a" } } },
  { "rb", { { "write", "nope" }, { "read", "l" } } },
  { "w", { { "write", "text mode is binary on POSIX\n" }, { "seek", "set" },
           { "read", "L" } } },
}

local function with_files(content, fn)
  local dir = tmpdir()
  local a, b = dir .. "/io", dir .. "/tidal"
  write_raw(a, content)
  write_raw(b, content)
  local ok, err = pcall(fn, a, b)
  os.remove(a)
  os.remove(b)
  os.remove(dir)
  assert(ok, err)
end

-- Runs program with io on path a and with tidal.fs on path b (inside a
-- task), returns both logs and both final contents.
local function differential(mode, program, a, b)
  local fa = assert(io.open(a, mode))
  local la = run_program(fa, program)
  fa:close()
  local lb = support.run_io(function()
    local fb = assert(fs.open(b, mode))
    local log = run_program(fb, program)
    assert(fb:close())
    return log
  end)
  return la, lb, read_raw(a), read_raw(b)
end

local function name_of(program)
  local parts = {}
  for _, step in ipairs(program) do
    local args = {}
    for i = 2, #step do args[#args + 1] = ("%q"):format(step[i]):sub(1, 12) end
    parts[#parts + 1] = step[1] .. "(" .. table.concat(args, ",") .. ")"
  end
  local s = table.concat(parts, " ")
  return #s > 70 and s:sub(1, 67) .. "..." or s
end

local content_names = {}
for k in pairs(contents) do content_names[#content_names + 1] = k end
table.sort(content_names)

describe("tidal.fs File: differential against io (reads)", function()
  for _, program in ipairs(read_programs) do
    it(name_of(program), function()
      for _, cname in ipairs(content_names) do
        with_files(contents[cname], function(a, b)
          local la, lb, ca, cb = differential("rb", program, a, b)
          assert.are.same(la, lb, "content '" .. cname .. "'")
          assert.are.equal(ca, cb, "content '" .. cname .. "'")
        end)
      end
    end)
  end
end)

describe("tidal.fs File: differential against io (writes)", function()
  local starts = { "", "hello\nworld\n", contents.many_lines }
  for _, wp in ipairs(write_programs) do
    local mode, program = wp[1], wp[2]
    it(mode .. ": " .. name_of(program), function()
      for _, start in ipairs(starts) do
        with_files(start, function(a, b)
          local la, lb, ca, cb = differential(mode, program, a, b)
          assert.are.same(la, lb, ("start of %d bytes"):format(#start))
          assert.are.equal(ca, cb, ("start of %d bytes"):format(#start))
        end)
      end
    end)
  end
end)

describe("tidal.fs File: what io does not have", function()
  local dir
  before_each(function() dir = tmpdir() end)
  after_each(function() rmdir(dir) end)

  it("read errors are error objects with kind, errno and the path", function()
    support.run_io(function()
      local path = dir .. "/w"
      local f = assert(fs.open(path, "w"))
      local v, err = f:read("l")
      assert.is_nil(v)
      assert.is_true(tidal.is_error(err))
      assert.are.equal("EBADF", err.errno)
      assert.are.equal(path, err.path)
      assert.truthy(err.message:find(path, 1, true), err.message)
      assert.truthy(err.message:find("File:read", 1, true), err.message)
      f:close()
    end)
  end)

  it("open: invalid modes raise, naming the mode", function()
    support.run_io(function()
      for _, mode in ipairs({ "q", "rw", "r++", "", "x", "rx", "ax", "+" }) do
        local ok, err = pcall(fs.open, dir .. "/m", mode)
        assert.is_false(ok, mode)
        assert.truthy(tostring(err):find("tidal.fs.open: invalid mode '" .. mode
          .. "'", 1, true), tostring(err))
      end
    end)
  end)

  it("open: 'x' after w fails with already_exists on an existing file", function()
    support.run_io(function()
      local path = dir .. "/x"
      local f = assert(fs.open(path, "wx"))
      assert(f:write("1"))
      assert(f:close())
      local g, err = fs.open(path, "w+bx")
      assert.is_nil(g)
      assert.are.equal("already_exists", err.kind)
      assert.are.equal("EEXIST", err.errno)
      assert.are.equal("1", read_raw(path))
    end)
  end)

  it("open: a missing file is not_found with the path in the message", function()
    support.run_io(function()
      local path = dir .. "/missing"
      local f, err = fs.open(path)
      assert.is_nil(f)
      assert.are.equal("not_found", err.kind)
      assert.are.equal("ENOENT", err.errno)
      assert.are.equal(path, err.path)
      assert.are.equal("tidal.fs.open: " .. path
        .. ": no such file or directory (ENOENT)", err.message)
    end)
  end)

  it("a closed file raises on use; close is idempotent", function()
    support.run_io(function()
      local f = assert(fs.open(dir .. "/c", "w"))
      assert.is_true(f:close())
      assert.is_true(f:close())
      for _, m in ipairs({ "read", "write", "seek", "lines", "flush", "setvbuf" }) do
        local ok, err = pcall(f[m], f, "no")
        assert.is_false(ok)
        assert.truthy(tostring(err):find("attempt to use a closed file", 1, true),
          m .. ": " .. tostring(err))
      end
      assert.truthy(tostring(f):find("closed", 1, true))
    end)
  end)

  it("bad arguments raise naming the method", function()
    support.run_io(function()
      local f = assert(fs.open(dir .. "/b", "w+"))
      local cases = {
        { "read", { "q" }, "File:read: invalid format 'q'" },
        { "read", { {} }, "File:read: invalid format (a table" },
        { "read", { -1 }, "File:read: a byte count must be a non-negative" },
        { "read", { 1.5 }, "File:read: a byte count must be" },
        { "lines", { "x" }, "File:lines: invalid format 'x'" },
        { "seek", { "middle" }, "File:seek: invalid whence 'middle'" },
        { "seek", { "set", 1.5 }, "File:seek: the offset must be an integer" },
        { "setvbuf", { "sometimes" }, "File:setvbuf: invalid mode 'sometimes'" },
        { "write", { "ok", {} }, "File:write: argument #2 must be a string or a number" },
      }
      for _, c in ipairs(cases) do
        local ok, err = pcall(f[c[1]], f, table.unpack(c[2]))
        assert.is_false(ok, c[1])
        assert.truthy(tostring(err):find(c[3], 1, true), tostring(err))
      end
      local ok, err = pcall(f.read, "not a file")
      assert.is_false(ok)
      assert.truthy(tostring(err):find("File:read: expected a File as self",
        1, true), tostring(err))
      assert.is_true(f:close())
    end)
  end)

  it("a File outlives its runtime closed; calls outside a task raise", function()
    local path = dir .. "/o"
    write_raw(path, "x")
    local f = support.run_io(function() return assert(fs.open(path)) end)
    -- (run_io: the runtime's end closed it: no descriptor is left)
    -- the runtime that made it has ended: the file was closed with it
    assert.are.equal("tidal.File (closed)", tostring(f))
    local ok, err = pcall(f.read, f)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("File:read: not inside a tidal task",
      1, true), tostring(err))
    support.run_io(function()
      local ok2, err2 = pcall(f.read, f)
      assert.is_false(ok2)
      assert.truthy(tostring(err2):find("File:read: attempt to use a closed file",
        1, true), tostring(err2))
    end)
    ok, err = pcall(fs.open, path)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("tidal.fs.open: not inside a tidal task",
      1, true), tostring(err))
  end)

  it("<close> flushes before the scope ends", function()
    support.run_io(function()
      local path = dir .. "/close"
      do
        local f <close> = assert(fs.open(path, "w"))
        f:write("kept")
      end
      assert.are.equal("kept", read_raw(path))
    end)
  end)

  it("two tasks reading lines concurrently each get whole lines, all of them", function()
    local path = dir .. "/shared"
    local t, n = {}, support.scaled(20000)
    for i = 1, n do t[i] = "line " .. i end
    write_raw(path, table.concat(t, "\n") .. "\n")
    local got = support.run_io(function()
      local f = assert(fs.open(path))
      local seen = {}
      local function reader()
        local count = 0
        for line in f:lines() do
          seen[#seen + 1] = line
          count = count + 1
        end
        return count
      end
      local a = tidal.spawn(reader)
      local b = tidal.spawn(reader)
      local na, nb = a:await(), b:await()
      assert.are.equal(n, na + nb)
      f:close()
      return seen
    end)
    table.sort(got, function(x, y)
      return tonumber(x:match("%d+")) < tonumber(y:match("%d+"))
    end)
    assert.are.same(t, got)
  end)

  it("f:stat() gives the size of what was written so far", function()
    support.run_io(function()
      local f = assert(fs.open(dir .. "/st", "w"))
      f:write(("x"):rep(1000))
      local st = assert(f:stat())
      assert.are.equal("file", st.type)
      assert.are.equal(1000, st.size)
      f:close()
    end)
  end)
end)
