-- Build hygiene: every C file of the core is built by the rockspec.
describe("the rockspec", function()
  it("lists every csrc/*.c file, and nothing else", function()
    local f = assert(io.open("tidal-scm-1.rockspec"))
    local spec = f:read("a")
    f:close()
    local listed = {}
    for path in spec:gmatch('"(csrc/[%w_]+%.c)"') do listed[path] = true end
    local p = assert(io.popen("ls csrc/*.c"))
    local present = {}
    for path in p:lines() do present[path] = true end
    p:close()
    for path in pairs(present) do assert.is_true(listed[path] ~= nil, path .. " is not in the rockspec") end
    for path in pairs(listed) do assert.is_true(present[path] ~= nil, path .. " is listed but missing") end
  end)
end)
