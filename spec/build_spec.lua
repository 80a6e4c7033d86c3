-- Build hygiene: every C file of the core is built by the rockspec; the
-- test-only ones (tidal.testhooks: HOOKS_SRC in the Makefile) never are.
describe("the rockspec", function()
  it("lists every csrc/**.c file but the test-only ones, and nothing else", function()
    local f = assert(io.open("tidal-scm-1.rockspec"))
    local spec = f:read("a")
    f:close()
    f = assert(io.open("Makefile"))
    local hooks = assert(f:read("a"):match("\nHOOKS_SRC%s*:=%s*([^\n]+)"))
    f:close()
    local test_only = {}
    for path in hooks:gmatch("%S+") do test_only[path] = true end
    local listed = {}
    for path in spec:gmatch('"(csrc/[%w_/]+%.c)"') do listed[path] = true end
    local p = assert(io.popen("ls csrc/*.c csrc/*/*.c"))
    local present = {}
    for path in p:lines() do
      if not test_only[path] then present[path] = true end
    end
    p:close()
    for path in pairs(present) do assert.is_true(listed[path] ~= nil, path .. " is not in the rockspec") end
    for path in pairs(listed) do assert.is_true(present[path] ~= nil, path .. " is listed but missing") end
  end)
end)
