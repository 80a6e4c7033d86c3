-- The code blocks of README.md and docs/*.md run as written.
--
-- Every ```lua block of those files is either a complete program or a
-- fragment, by one rule:
--
--   * A block that contains `require("tidal")` is a COMPLETE PROGRAM. It
--     runs in a child process, `timeout 30 lua5.4 <block>`, and must exit
--     with status 0. A program that needs an HTTP server reads its base URL
--     from $TIDAL_EXAMPLE_URL (with a default for readers); this spec starts
--     the fixture server (spec/fixtures/server.py) and sets it.
--   * Every other block is a FRAGMENT (a snippet that uses names it does not
--     define, e.g. `rx` or `url`). A fragment is not run, but it must still
--     be valid Lua: it is compiled. So write `-- ...` in a fragment, never
--     a bare `...` placeholder.
--
-- Printed output: in a complete program, a line of the form
--     print(...)   --> expected   (an optional remark in parentheses)
-- states what that print writes. The expected text (the remark dropped) must
-- be one of the lines the program prints, in the order of the `-->` lines;
-- runs of blanks and tabs count as one space. Only `-->` after a print is
-- checked, so use a plain `--` comment for anything else.
local support = require("support")
local fixtures = require("fixtures.http")

local function read(path)
  local f = assert(io.open(path))
  local s = f:read("a")
  f:close()
  return s
end

local function doc_files()
  local files = { "README.md" }
  local p = assert(io.popen("ls docs/*.md"))
  for name in p:lines() do files[#files + 1] = name end
  p:close()
  return files
end

-- { file, line, code } for every ```lua block
local function lua_blocks(path)
  local blocks, cur, n = {}, nil, 0
  for line in (read(path) .. "\n"):gmatch("(.-)\n") do
    n = n + 1
    if cur then
      if line:match("^```%s*$") then
        blocks[#blocks + 1] = cur
        cur = nil
      else
        cur.code = cur.code .. line .. "\n"
      end
    elseif line:match("^```lua%s*$") then
      cur = { file = path, line = n + 1, code = "" }
    end
  end
  assert(cur == nil, path .. ": a ```lua block is not closed")
  return blocks
end

local function is_program(code)
  return code:find('require%s*%(?%s*["\']tidal["\']') ~= nil
end

local function squeeze(s)
  return (s:gsub("[ \t]+", " "):gsub("^ ", ""):gsub(" $", ""))
end

-- the texts promised by `print(...) --> text` lines, in order
local function expectations(code)
  local out = {}
  for line in code:gmatch("[^\n]+") do
    local want = line:match("^%s*print%(.*%)%s*%-%->%s*(.-)%s*$")
    if want then
      want = squeeze(want:gsub("%s+%b()$", ""))
      out[#out + 1] = want
    end
  end
  return out
end

local function shq(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- runs a block in a child lua5.4 with a 30 s limit: output, exit status
local function run_program(code, env)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(code)
  f:close()
  local vars = {}
  for k, v in pairs(env) do vars[#vars + 1] = k .. "=" .. shq(v) end
  local p = assert(io.popen("env " .. table.concat(vars, " ")
    .. " timeout 30 lua5.4 " .. path .. " 2>&1", "r"))
  local out = p:read("a")
  local _, _, status = p:close()
  os.remove(path)
  return out, status
end

local all = {}
for _, path in ipairs(doc_files()) do
  for _, b in ipairs(lua_blocks(path)) do all[#all + 1] = b end
end

describe("docs code blocks", function()
  it("are found (README and docs/*.md have ```lua blocks)", function()
    local programs = 0
    for _, b in ipairs(all) do
      if is_program(b.code) then programs = programs + 1 end
    end
    assert.is_true(#all >= 10, "found " .. #all .. " blocks")
    assert.is_true(programs >= 8, "found " .. programs .. " complete programs")
  end)

  it("fragments are valid Lua (not run: they lack require(\"tidal\"))", function()
    for _, b in ipairs(all) do
      if not is_program(b.code) then
        local fn, err = load(b.code, "=" .. b.file .. ":" .. b.line, "t")
        assert.is_truthy(fn, ("%s:%d: the fragment does not compile: %s")
          :format(b.file, b.line, tostring(err)))
      end
    end
  end)

  it("the `-->` rule reads the expected text of a print", function()
    assert.are.same({ "a b", "42", "true 42" }, expectations(table.concat({
      "print(a:await(), b:await())   --> a  b   (after 1 s, not 2)",
      "  print(h:await())          --> 42   (or re-raises the task's error)",
      "local x = 1 --> not a print: not checked",
      "print(h:join()) --> true\t42",
    }, "\n")))
  end)
end)

if not support.can_spawn then
  describe("docs programs", function()
    pending("needs child processes (and the fixture server)")
  end)
  return
end

describe("docs programs", function()
  local srv

  setup(function() srv = fixtures.start_server() end)
  teardown(function() fixtures.stop_server(srv) end)

  for _, b in ipairs(all) do
    if is_program(b.code) then
      local first = b.code:match("\n%s*([^\n]*[%w][^\n]*)") or ""
      it(("%s:%d runs (%s)"):format(b.file, b.line, first:sub(1, 50)), function()
        local out, status = run_program(b.code, {
          TIDAL_EXAMPLE_URL = srv.base,
        })
        local where = ("%s:%d"):format(b.file, b.line)
        assert.are.equal(0, status, where .. " exited with " .. tostring(status)
          .. (status == 124 and " (killed after 30 s)" or "") .. ":\n" .. out)
        local lines = {}
        for l in out:gmatch("[^\n]*") do lines[#lines + 1] = squeeze(l) end
        local at = 1
        for _, want in ipairs(expectations(b.code)) do
          local found
          for i = at, #lines do
            if lines[i] == want then found = i; break end
          end
          assert.is_truthy(found, ("%s: expected a printed line %q (after line %d"
            .. " of the output), got:\n%s"):format(where, want, at - 1, out))
          at = found + 1
        end
      end)
    end
  end
end)
