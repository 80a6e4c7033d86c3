-- Embedding (issue 12): tidal.h on its own, the installed library and
-- header, C hosts built from the installed rock only (their own frame
-- loop, their own libuv loop, two states on two threads, lua_close with
-- tasks parked), runtimes on luv's loop, and what the rock exports. The C
-- programs run under valgrind (no definite leak, no invalid access).
local support = require("support")

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("a")
  local ok, _, code = p:close()
  return out, ok, code
end

local function trim(s) return (s:gsub("%s+$", "")) end

local core_so = package.searchpath("tidal.core", package.cpath)
local tree = core_so and core_so:match("^(.*)/lib/lua/5%.4/tidal/core%.so$")
local rockdir = tree and trim((sh("luarocks --lua-version=5.4 --tree='" .. tree ..
  "' show --rock-dir tidal")))
-- the sanitizer trees link their objects with the sanitizers' runtimes:
-- C hosts are built and checked from the plain tree (make test, valgrind)
local sanitized = support.sanitizer ~= nil
local VALGRIND = "valgrind -q --leak-check=full --errors-for-leak-kinds=definite " ..
  "--show-leak-kinds=definite --error-exitcode=97 "

local function need_host()
  if sanitized then return pending("C hosts are checked in the plain tree") end
  if not support.can_spawn then return pending("needs a child process") end
  assert.truthy(rockdir and rockdir:match("^/"), "no rock directory: " .. tostring(rockdir))
  return true
end

-- Builds src against the installed rock (pkg-config tidal) only.
local function build_host(src)
  local exe = os.tmpname()
  local out, ok = sh("PKG_CONFIG_PATH='" .. rockdir .. "/host/lib/pkgconfig' " ..
    "cc -std=c11 -g -Wall -Wextra -Werror " .. src ..
    " $(PKG_CONFIG_PATH='" .. rockdir .. "/host/lib/pkgconfig' pkg-config --cflags --libs tidal)" ..
    " -o " .. exe)
  assert.is_true(ok, out)
  return exe
end

local function run_valgrind(cmd, env)
  local out, ok, code = sh((env or "") .. " timeout 120 " .. VALGRIND .. cmd)
  assert.are_not.equal(97, code, "valgrind: " .. out)
  assert.is_true(ok, out)
  return out
end

local function lines(s)
  local t = {}
  for l in s:gmatch("[^\n]+") do t[#t + 1] = l end
  return t
end

describe("tidal.h", function()
  it("compiles alone under -std=c11 -Wall -Wextra -pedantic (no uv.h, no _DEFAULT_SOURCE)", function()
    local src = os.tmpname() .. ".c"
    local f = assert(io.open(src, "w"))
    f:write([[
#include "tidal.h"
int use(lua_State *L, struct uv_loop_s *loop);
int use(lua_State *L, struct uv_loop_s *loop) {
  tidal_runtime *rt = tidal_runtime_new(L, loop);
  tidal_report_fn fn = 0;
  tidal_report_kind k = TIDAL_REPORT_SLOW;
  (void)fn;
  (void)k;
  return rt != 0 && TIDAL_VERSION_NUM >= 100 && TIDAL_VERSION[0] != 0;
}
#ifdef _DEFAULT_SOURCE
#error "tidal.h defined _DEFAULT_SOURCE"
#endif
]])
    f:close()
    local out, ok = sh("cc -std=c11 -Wall -Wextra -Werror -pedantic -fsyntax-only -Icsrc " ..
      "$(pkg-config --cflags lua5.4) " .. src)
    os.remove(src)
    assert.is_true(ok, out)
  end)

  it("declares no function that the library lacks (the old tidal_runtime_spawn)", function()
    if sanitized then return pending("checked in the plain tree") end
    local f = assert(io.open("csrc/tidal.h"))
    local h = f:read("a")
    f:close()
    local declared = {}
    for name in h:gmatch("\nTIDAL_API[^;(]-([%w_]+)%s*%(") do declared[name] = true end
    assert.is_true(declared.tidal_runtime_spawn, "tidal_runtime_spawn is declared")
    local out, ok = sh("nm -D --defined-only '" .. core_so .. "'")
    assert.is_true(ok, out)
    local exported = {}
    for name in out:gmatch("%x+ T ([%w_]+)") do exported[name] = true end
    for name in pairs(declared) do
      assert.is_true(exported[name] ~= nil, name .. " is declared but not exported")
    end
  end)
end)

describe("the installed tidal.core", function()
  it("exports only luaopen_tidal_core and the tidal_* functions of tidal.h", function()
    if sanitized then return pending("checked in the plain tree") end
    local out, ok = sh("nm -D --defined-only '" .. core_so .. "'")
    assert.is_true(ok, out)
    local names = {}
    for name in out:gmatch("%x+ %a ([%w_@.]+)") do names[#names + 1] = name end
    assert.is_true(#names >= 10, out)
    for _, name in ipairs(names) do
      assert.is_truthy(name == "luaopen_tidal_core" or name:match("^tidal_%l"),
        "exported: " .. name)
      assert.is_falsy(name:match("^tidal__") or name:match("^http__"), name)
    end
  end)

  it("comes with tidal.h, libtidal.a and tidal.pc in the rock's directory", function()
    if sanitized then return pending("checked in the plain tree") end
    for _, p in ipairs({ "/host/include/tidal.h", "/host/lib/libtidal.a",
                         "/host/lib/pkgconfig/tidal.pc" }) do
      local f = io.open(rockdir .. p)
      assert.is_truthy(f, rockdir .. p .. " is missing")
      f:close()
    end
    local out, ok = sh("PKG_CONFIG_PATH='" .. rockdir .. "/host/lib/pkgconfig' " ..
      "pkg-config --modversion tidal")
    assert.is_true(ok, out)
    assert.are.equal(require("tidal")._VERSION, trim(out))
  end)
end)

describe("C hosts built from the installed rock", function()
  it("examples/host.c: a 60 Hz frame loop polls tidal's fd and steps it", function()
    if need_host() ~= true then return end
    local exe = build_host("examples/host.c")
    local out = run_valgrind(exe)
    os.remove(exe)
    -- task A's ticks come in order; B's line (0.25 s) falls between ticks 2
    -- and 3 when the machine keeps up (not checked: valgrind under load)
    local got = lines(out)
    assert.are.equal("host: every task finished after at least 8 frames", table.remove(got), out)
    local a = {}
    for _, l in ipairs(got) do if l:match("^task A") then a[#a + 1] = l end end
    assert.are.same({ "task A: tick 1", "task A: tick 2", "task A: tick 3" }, a)
    table.sort(got)
    assert.are.same({ "task A: tick 1", "task A: tick 2", "task A: tick 3", "task B: done" }, got)
  end)

  it("examples/uv_host.c: the host's own libuv loop runs the tasks; uv_run returns; reports go to its log",
    function()
    if need_host() ~= true then return end
    local exe = build_host("examples/uv_host.c")
    local out = run_valgrind(exe)
    os.remove(exe)
    local got = lines(out)
    -- the tasks' lines in order; the report comes when the dropped handle
    -- is collected (any time after the failure)
    local tasks, reports = {}, {}
    for _, l in ipairs(got) do
      if l:match("^task: ") then tasks[#tasks + 1] = l end
      if l:match("^host log: ") then reports[#reports + 1] = l end
    end
    assert.are.same({ "task: tick 1", "task: tick 2", "task: tick 3",
      "task: channel closed" }, tasks)
    assert.are.same({ "host log: error report: task 3 failed and its error was never observed:" },
      reports)
    assert.are.equal("host: uv_run returned; host ticks: 4, tasks alive: 0", got[#got - 1])
    assert.are.equal("host: reports: 1, uv_loop_close: ok", got[#got])
    assert.is_nil(out:match("tidal: "), "something went to stderr: " .. out)
  end)

  it("the C API: spawn with arguments, the report hook, misuse, after close", function()
    if need_host() ~= true then return end
    local exe = build_host("spec/fixtures/c_api.c")
    -- no tidal.core on package.cpath: the host's worker threads must load
    -- the one linked into it
    local out = run_valgrind(exe, "LUA_CPATH_5_4='/nonexistent/?.so'")
    os.remove(exe)
    for _, l in ipairs(lines(out)) do
      assert.is_nil(l:match("FAILED"), out)
    end
    assert.are.equal(24, #lines(out), out)
    assert.truthy(out:find("the busy task (task 2) was reported slow: yes\n", 1, true), out)
    assert.truthy(out:find("error reports: 1: task 3 failed and its error was never observed:",
      1, true), out)
  end)

  it("two states on two threads, each with a runtime, then closed with tasks parked: no leak, no late callback",
    function()
    if need_host() ~= true then return end
    local exe = build_host("spec/fixtures/embed_threads.c")
    local out = run_valgrind(exe)
    os.remove(exe)
    assert.are.equal(table.concat({
      "thread 1 (own loop): sum 1275",
      "thread 2 (host loop): sum 2550",
      "ok",
      "",
    }, "\n"), out)
  end)
end)

local has_luv = pcall(require, "luv")

describe("a runtime on luv's loop", function()
  local function luv_child(code)
    if not has_luv then return pending("luv is not installed (lua-luv)") end
    if not support.can_spawn then return pending("needs a child process") end
    return support.lua(code)
  end

  it("luv's context starts with its loop pointer (what tidal reads, per luv.h)", function()
    local h = "/usr/include/lua5.4/luv/luv.h"
    local f = io.open(h)
    if not f then return pending("luv.h is not installed (lua-luv-dev)") end
    f:close()
    if not support.can_spawn then return pending("needs a child process") end
    local src = os.tmpname() .. ".c"
    f = assert(io.open(src, "w"))
    f:write([[
#define _DEFAULT_SOURCE
#include <stddef.h>
#include <luv/luv.h>
_Static_assert(offsetof(luv_ctx_t, loop) == 0, "luv_ctx_t starts with the loop");
]])
    f:close()
    local out, ok = sh("cc -std=c11 -fsyntax-only $(pkg-config --cflags lua5.4) " .. src)
    os.remove(src)
    assert.is_true(ok, out)
    local out2, status = luv_child([[
      local uv = require("luv")
      local ctx = debug.getregistry().luv_context
      assert(type(ctx) == "userdata", "no luv_context in the registry")
      print("ok")
    ]])
    assert.are.equal(0, status, out2)
  end)

  it("examples/luv_loop.lua: luv timers and tidal tasks share one loop; uv.run drives both and returns", function()
    local out, status = luv_child(io.open("examples/luv_loop.lua"):read("a"))
    if out == nil then return end
    assert.are.equal(0, status, out)
    local got = lines(out)
    table.sort(got, function(a, b) return a < b end)
    assert.are.same({
      "sleeper: done",
      "task got: luv tick 1",
      "task got: luv tick 2",
      "task got: luv tick 3",
      "task spawned from a luv timer",
      "task: slept 0.03 s",
      "task: the channel is closed",
      "uv.run returned after well under 2 s; tasks alive: 0",
    }, got)
    -- the receiver's lines keep their order
    assert.truthy(out:find("tick 1.*tick 2.*tick 3.*the channel is closed"), out)
  end)

  it("runs under valgrind with no leak, and exits cleanly with tasks parked (no close)", function()
    if not has_luv then return pending("luv is not installed (lua-luv)") end
    if sanitized or not support.can_spawn then return pending("checked in the plain tree") end
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write([[
      local uv = require("luv")
      local tidal = require("tidal")
      local rt = tidal.runtime({ loop = uv, workers = 1 })
      local _, rx = tidal.channel()
      rt:spawn(function() tidal.sleep(30) end)
      rt:spawn(function() rx:recv() end)
      rt:spawn(function()
        tidal.spawn_parallel(function() require("tidal").sleep(30) end):await()
      end)
      local t = uv.new_timer()
      t:start(50, 0, function() t:close(); uv.stop() end)
      uv.run()
      print("parked: " .. #rt:tasks())
    ]])
    f:close()
    local out = run_valgrind("lua5.4 " .. path)
    local out2 = run_valgrind("lua5.4 examples/luv_loop.lua")
    os.remove(path)
    assert.are.equal("parked: 3\n", out)
    assert.truthy(out2:find("tasks alive: 0"), out2)
  end)

  it("holds no reference on the loop while no task is alive, and none after close", function()
    local out, status = luv_child([[
      local uv = require("luv")
      local tidal = require("tidal")
      local rt = tidal.runtime({ loop = uv })
      assert(uv.loop_alive() == false, "an idle runtime keeps luv's loop alive")
      assert(uv.run() == false)
      local h = rt:spawn(function() tidal.sleep(0.02) return "slept" end)
      assert(uv.loop_alive(), "a task's sleep does not keep the loop alive")
      uv.run()
      print(h:join())
      rt:spawn(function() tidal.sleep(10) end)
      rt:close() -- (outside uv.run: cancels the sleeper, runs no loop)
      print(tostring(rt))
      uv.run()
      print("alive after close: " .. tostring(uv.loop_alive()))
    ]])
    if out == nil then return end
    assert.are.equal(0, status, out)
    assert.are.equal("true\tslept\ntidal.Runtime (closed)\nalive after close: false\n", out)
  end)

  it("can be closed from a luv callback while its tasks wait", function()
    local out, status = luv_child([[
      local uv = require("luv")
      local tidal = require("tidal")
      local rt = tidal.runtime({ loop = uv })
      local log = {}
      rt:spawn(function()
        -- (the timer starts once the task runs: a task cancelled before it
        -- first runs never runs)
        local t = uv.new_timer()
        t:start(20, 0, function() t:close(); rt:close(); log[#log + 1] = "closed" end)
        local ok, err = pcall(tidal.sleep, 10)
        log[#log + 1] = "sleeper: " .. tostring(ok) .. " " .. tostring(err.kind)
      end)
      uv.run()
      print(table.concat(log, ", "))
    ]])
    if out == nil then return end
    assert.are.equal(0, status, out)
    assert.are.equal("sleeper: false cancelled, closed\n", out)
  end)

  it("misuse raises errors that name the function and the fix", function()
    local out, status = luv_child([[
      local uv = require("luv")
      local tidal = require("tidal")
      local function err(f, ...) local ok, e = pcall(f, ...) assert(not ok) return tostring(e) end
      print(err(tidal.runtime, { loop = {} }))
      print(err(tidal.runtime, { loop = 42 }))
      print(err(tidal.run, { loop = uv }, function() end))
      local rt = tidal.runtime({ loop = uv })
      print(err(rt.step, rt))
      print(err(rt.block_on, rt, function() end))
      print(rt:backend_fd(), rt:next_timeout())
      local h = rt:spawn(function() return tidal.spawn_blocking(function() end) end)
      uv.run()
      print(select(2, h:join()))
      rt:close()
    ]])
    if out == nil then return end
    assert.are.equal(0, status, out)
    local got = lines(out)
    assert.truthy(got[1]:find("tidal.runtime: option 'loop' must be the luv module (require 'luv')", 1, true), out)
    assert.truthy(got[2]:find("option 'loop' must be the luv module (require 'luv'), got number", 1, true), out)
    assert.truthy(got[3]:find("tidal.run: option 'loop' is for tidal.runtime (run luv's loop with uv.run() instead)",
      1, true), out)
    assert.truthy(got[4]:find("Runtime:step: this runtime runs on a host's loop", 1, true), out)
    assert.truthy(got[5]:find("Runtime:block_on: this runtime runs on a host's loop", 1, true), out)
    assert.are.equal("nil\tnil", got[6])
    assert.truthy(got[7]:find("tidal.spawn_blocking: not available in a runtime on a host's loop", 1, true), out)
  end)

  it("a task that runs uv.run itself does not run its runtime's tasks nested", function()
    local out, status = luv_child([[
      local uv = require("luv")
      local tidal = require("tidal")
      local rt = tidal.runtime({ loop = uv })
      local log = {}
      rt:spawn(function()
        rt:spawn(function() log[#log + 1] = "other task" end)
        local t = uv.new_timer()
        t:start(10, 0, function() t:close() end)
        uv.run() -- nested in the task: the other task waits for the outer turn
        log[#log + 1] = "nested run returned"
      end)
      uv.run()
      print(table.concat(log, ", "))
    ]])
    if out == nil then return end
    assert.are.equal(0, status, out)
    assert.are.equal("nested run returned, other task\n", out)
  end)
end)

describe("the README's Lua frame loop (examples/frame_loop.lua)", function()
  it("waits on rt:next_timeout() between frames instead of spinning", function()
    if not support.can_spawn then return pending("needs a child process") end
    local out, status = support.lua(io.open("examples/frame_loop.lua"):read("a"))
    assert.are.equal(0, status, out)
    assert.are.equal(table.concat({
      "task: tick 1",
      "task: tick 2",
      "task: tick 3",
      "frames: 10 or more; the CPU was mostly idle",
      "",
    }, "\n"), out)
  end)

  it("runs under valgrind with no leak", function()
    if sanitized or not support.can_spawn then return pending("checked in the plain tree") end
    local out = run_valgrind("lua5.4 examples/frame_loop.lua")
    assert.truthy(out:find("task: tick 1\ntask: tick 2\ntask: tick 3\nframes: ", 1, true), out)
  end)
end)

describe("the rockspecs", function()
  it("pass luarocks lint, and the versioned one builds like the scm one", function()
    if not support.can_spawn then return pending("needs a child process") end
    local version = require("tidal")._VERSION
    local versioned = "tidal-" .. version .. "-1.rockspec"
    for _, spec in ipairs({ "tidal-scm-1.rockspec", versioned }) do
      local out, ok = sh("luarocks --lua-version=5.4 lint " .. spec)
      assert.is_true(ok, spec .. ": " .. out)
    end
    local function build_part(path)
      local f = assert(io.open(path))
      local s = f:read("a")
      f:close()
      return s:match("\nbuild = .*")
    end
    assert.are.equal(build_part("tidal-scm-1.rockspec"), build_part(versioned))
  end)
end)
