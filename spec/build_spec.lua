-- Build hygiene: every C file of the core is built by the rock (the
-- rockspec runs the Makefile's rock-build); the test-only ones (csrc/test/:
-- tidal.testhooks, built by the Makefile for the test trees) never are.
describe("the rockspec", function()
  it("builds every csrc/<layer>/*.c file but the test-only ones, and nothing else", function()
    if not require("support").can_spawn then return pending("needs a child process") end
    local env = {}
    assert(loadfile("tidal-scm-1.rockspec", "t", env))()
    assert.equal("make", env.build.type)
    assert.equal("rock-build", env.build.build_target)
    -- what rock-build compiles, for a fresh set of flags
    local p = assert(io.popen("make -n rock-build CFLAGS='-O0 -DTIDAL_DRY_RUN_" .. os.time() .. "' 2>&1"))
    local out = p:read("a")
    assert.is_true(p:close(), out)
    local listed = {}
    for path in out:gmatch(" %-c (csrc/[%w_/]+%.c) ") do listed[path] = true end
    p = assert(io.popen("find csrc -name '*.c' ! -path 'csrc/test/*'"))
    local present = {}
    for path in p:lines() do present[path] = true end
    p:close()
    assert.is_not_nil(next(present), "no C files found")
    for path in pairs(present) do assert.is_true(listed[path] ~= nil, path .. " is not built:\n" .. out) end
    for path in pairs(listed) do assert.is_true(present[path] ~= nil, path .. " is built but not in csrc") end
  end)

  it("builds the test-only module from csrc/test/ in the Makefile only", function()
    local f = assert(io.open("Makefile"))
    local mk = f:read("a")
    f:close()
    assert.truthy(mk:match("\nHOOKS_SRC%s*:=%s*%$%(wildcard csrc/test/%*%.c%)"), "HOOKS_SRC")
  end)
end)

-- The layer rules of the README's Layout section: no include of a higher
-- layer's header, no call or type name from a higher layer, no file outside
-- the layer folders, no cycle between folders.
describe("the layers", function()
  local function check(dir)
    local p = assert(io.popen("python3 tools/check_layers.py " .. dir .. " 2>&1"))
    local out = p:read("a")
    local ok, _, code = p:close()
    return ok == true and code == 0, out
  end

  it("of csrc/ point down only (tools/check_layers.py)", function()
    local ok, out = check("csrc")
    assert.is_true(ok, out)
    assert.truthy(out:find("layers OK", 1, true), out)
  end)

  it("checker fails on an upward include (a copy of csrc/ with one)", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert.is_true(os.execute("mkdir -p " .. dir .. " && cp -r csrc " .. dir .. "/"))
    local f = assert(io.open(dir .. "/csrc/kernel/wq.c", "a"))
    f:write('\n#include "sync/sync.h"\n')
    f:close()
    local ok, out = check(dir .. "/csrc")
    os.execute("rm -rf " .. dir)
    assert.is_false(ok, out)
    assert.truthy(out:find("kernel/wq.c", 1, true), out)
  end)
end)
