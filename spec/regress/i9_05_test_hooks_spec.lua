-- Issue 9 item 5: the transfer test hooks (_xencode, _xdiscard, _xdecode,
-- ...) were reachable from any script through require("tidal.core"), and
-- discarding a buffer twice (or decoding after a discard) is a
-- use-after-free of the handles it holds. They live in tidal.testhooks now,
-- a module the Makefile builds into the test trees only.
local support = require("support")

-- what the rock's build and install run (LuaRocks' make backend runs the
-- Makefile's rock-build and rock-install: see the rockspec), as make -n
-- prints it for a fresh set of flags (so that nothing is up to date)
local function rock_commands()
  local p = assert(io.popen("make -n rock-build rock-install CFLAGS='-O0 -DTIDAL_DRY_RUN_" ..
    os.time() .. "' INST_PREFIX=/nonexistent/rock INST_LIBDIR=/nonexistent/lib " ..
    "INST_LUADIR=/nonexistent/lua 2>&1"))
  local out = p:read("a")
  assert.is_true(p:close(), out)
  return out
end

describe("issue 9 item 5: test hooks do not ship in tidal.core", function()
  it("tidal.core has no test hooks", function()
    -- (once tidal is loaded, require("tidal.core") is a proxy: index it)
    local core = require("tidal.core")
    local found = {}
    for _, k in ipairs({ "_xcopy", "_xrun", "_xencode", "_xdecode", "_xdiscard", "_xbench",
      "_xprobe", "_xprobe_live" }) do
      if core[k] ~= nil then found[#found + 1] = k end
    end
    assert.same({}, found)
    if support.can_spawn then -- and in a state that loads only tidal.core
      local out = support.lua([[
        for k in pairs(require("tidal.core")) do
          if k:match("^_x") then print(k) end
        end
        print("end")
      ]])
      assert.equal("end\n", out)
    end
  end)

  it("the rockspec neither builds nor installs them", function()
    local env = {}
    assert(loadfile("tidal-scm-1.rockspec", "t", env))()
    assert.equal("make", env.build.type)
    if not support.can_spawn then return end
    local out = rock_commands()
    assert.truthy(out:find("csrc/kernel/task.c", 1, true), out)
    for _, bad in ipairs({ "csrc/test/", "hooks", "xprobe" }) do
      assert.is_nil(out:find(bad, 1, true), "the rock builds or installs " .. bad .. ":\n" .. out)
    end
  end)

  it("a script cannot discard a buffer twice", function()
    if not support.can_spawn then return end
    local out, status = support.lua([[
      local tidal = require("tidal")
      local core = require("tidal.core")
      if core._xencode == nil and core._xdiscard == nil and core._xdecode == nil then
        print("no hooks")
        return
      end
      tidal.run(function()
        local tx = tidal.channel()
        local s = core._xencode(tx)
        core._xdiscard(s)
        core._xdiscard(s) -- the channel's last reference, again
        core._xdecode(s)
        collectgarbage()
      end)
      print("survived")
    ]])
    assert.equal(0, status, out)
    assert.equal("no hooks\n", out)
  end)

  it("the test trees have them, in tidal.testhooks", function()
    local hooks = require("tidal.testhooks")
    assert.equal("function", type(hooks.encode))
    assert.equal(42, hooks.decode(hooks.encode(42)))
  end)
end)
