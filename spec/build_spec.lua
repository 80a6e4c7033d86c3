-- Build hygiene: every C file of the core is built by the rockspec; the
-- test-only ones (csrc/test/: tidal.testhooks, built by the Makefile)
-- never are.
describe("the rockspec", function()
  it("lists every csrc/<layer>/*.c file but the test-only ones, and nothing else", function()
    local f = assert(io.open("tidal-scm-1.rockspec"))
    local spec = f:read("a")
    f:close()
    local listed = {}
    for path in spec:gmatch('"(csrc/[%w_/]+%.c)"') do listed[path] = true end
    local p = assert(io.popen("find csrc -name '*.c' ! -path 'csrc/test/*'"))
    local present = {}
    for path in p:lines() do present[path] = true end
    p:close()
    assert.is_not_nil(next(present), "no C files found")
    for path in pairs(present) do assert.is_true(listed[path] ~= nil, path .. " is not in the rockspec") end
    for path in pairs(listed) do assert.is_true(present[path] ~= nil, path .. " is listed but missing") end
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
