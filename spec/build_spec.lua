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
