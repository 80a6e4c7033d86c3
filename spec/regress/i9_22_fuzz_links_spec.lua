-- Issue 9 item 22: `make fuzz` no longer linked: the fuzz target missed
-- buf.c, and transfer.c pulled in every primitive through its static table
-- of handle types. The value layer now links alone (handle types register
-- themselves with it), and .ci/run runs the fuzzer briefly so that it
-- cannot rot again. This spec links the fuzzer's sources (as the Makefile
-- lists them) with the seed generator, using the system compiler, and runs
-- it.
local support = require("support")

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1", "r"))
  local out = p:read("a")
  local ok = p:close()
  return ok, out
end

describe("issue 9 item 22: the fuzz target links", function()
  it("the value layer links alone, with the seed generator", function()
    if not support.can_spawn or not sh("command -v cc >/dev/null") then return end
    local f = assert(io.open("Makefile"))
    local mk = f:read("a")
    f:close()
    local srcs = assert(mk:match("\nFUZZ_SRC%s*:=%s*([^\n]+)"), "FUZZ_SRC in the Makefile")
    local dir = os.tmpname()
    os.remove(dir)
    assert(sh("mkdir -p " .. dir .. "/seeds"))
    local ok, out = sh(("cc -std=c11 -Wall -Wextra -Werror -DTIDAL_XFER_FIXED_KEY -Icsrc "
      .. "$(pkg-config --cflags lua5.4) -o %s/seeds-gen fuzz/seeds.c %s "
      .. "-l:liblua5.4.a -luv -lm -ldl"):format(dir, srcs))
    assert(ok, out)
    ok, out = sh(("%s/seeds-gen %s/seeds && ls %s/seeds | wc -l"):format(dir, dir, dir))
    sh("rm -rf " .. dir)
    assert(ok, out)
    assert.is_true(tonumber(out:match("%d+")) >= 10, out)
  end)

  it("CI runs the fuzzer", function()
    local f = assert(io.open(".ci/run"))
    local ci = f:read("a")
    f:close()
    assert.truthy(ci:match("make fuzz FUZZ_SECONDS="), "a brief fuzz run in .ci/run")
  end)
end)
