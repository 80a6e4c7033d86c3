-- Issue 9 item 21: error paths and stack hygiene.
--   * more than 65,533 spawn arguments (a handle keeps them in its
--     uservalues, fewer than USHRT_MAX) were silently truncated: now a
--     clear error, for spawn and spawn_parallel alike;
--   * `slow_task = math.huge` was cast to an integer (undefined behaviour):
--     it now means "never report";
--   * tidal_runtime_step did not validate its timeout: NaN is misuse
--     (returns -1 with a message), negative does not wait, a huge one is a
--     year, none of them undefined behaviour;
--   * a granted lock or permit is never lost: the guard or permit exists
--     before the lock is taken (STYLE.md: create the userdata in a harmless
--     closed state first);
--   * spawn_parallel and spawn_blocking allocate nothing before the checks
--     that may raise (their handle is made first).
-- The C parts run in a host program built with UBSan (float-cast-overflow
-- included), so undefined behaviour fails the test.
local tidal = require("tidal")
local support = require("support")

local host = [[
#define _DEFAULT_SOURCE
#include <math.h>
#include <stdio.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include "tidal.h"

static const char *script =
    "local tidal = require('tidal')\n"
    "local rt = ...\n"
    "rt:spawn(function() tidal.sleep(0.05) end)\n"
    "tidal.run({slow_task = math.huge}, function()\n"
    "  local t = tidal.now() while tidal.now() - t < 0.05 do end\n"
    "end)\n";

int main(void) {
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  luaL_requiref(L, "tidal.core", luaopen_tidal_core, 0);
  lua_pop(L, 1);
  tidal_runtime *rt = tidal_runtime_new(L, NULL);
  if (rt == NULL) return 1;
  int ref = luaL_ref(L, LUA_REGISTRYINDEX);
  if (luaL_loadstring(L, script) != LUA_OK) return 2;
  lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    printf("script: %s\n", lua_tostring(L, -1));
    return 3;
  }
  int r = tidal_runtime_step(L, rt, NAN);
  printf("nan: %d %s\n", r, r < 0 ? lua_tostring(L, -1) : "");
  if (r < 0) lua_pop(L, 1);
  printf("negative: %d\n", tidal_runtime_step(L, rt, -1));
  printf("-inf: %d\n", tidal_runtime_step(L, rt, -INFINITY));
  int alive = 1, steps = 0;
  while (alive > 0 && steps < 100) {
    alive = tidal_runtime_step(L, rt, steps % 2 ? 1e300 : INFINITY);
    steps++;
  }
  printf("huge: %d after %s\n", alive, steps < 100 ? "a few steps" : "too many");
  tidal_runtime_close(L, rt);
  luaL_unref(L, LUA_REGISTRYINDEX, ref);
  lua_close(L);
  return 0;
}
]]

describe("issue 9 item 21: error paths and stack hygiene", function()
  it("refuses more spawn arguments than a handle can keep, and keeps all it can", function()
    local r = support.run(function()
      local args = {}
      for i = 1, 70000 do args[i] = i end
      local ok, err = pcall(tidal.spawn, function(...) return select("#", ...) end,
        table.unpack(args))
      local ok2, err2 = pcall(tidal.spawn_parallel, function(...) return select("#", ...) end,
        table.unpack(args))
      local most = tidal.spawn(function(...) return select("#", ...), (select(65533, ...)) end,
        table.unpack(args, 1, 65533))
      return { ok = ok, err = err, ok2 = ok2, err2 = err2, most = { most:await() } }
    end)
    assert.is_false(r.ok)
    assert.matches("tidal.spawn: too many arguments (70000; at most 65533: pass a table instead)",
      r.err, nil, true)
    assert.is_false(r.ok2)
    assert.matches("tidal.spawn_parallel: too many arguments (70000; at most 65533", r.err2, nil, true)
    assert.are.same({ 65533, 65533 }, r.most)
  end)

  it("a guard or permit made before the lock is taken: nothing is lost on any path", function()
    local r = support.run(function()
      local m, s = tidal.mutex(), tidal.semaphore(3)
      local out = {}
      for _ = 1, 200 do
        local g = m:try_lock()
        local p = s:try_acquire(2)
        assert(g and p and not m:try_lock() and not s:try_acquire(2))
        g:release()
        p:release()
      end
      -- waiters cancelled at every point still leave the lock free
      for i = 1, 50 do
        local g = m:lock()
        local h = tidal.spawn(function() local g2 = m:lock(); g2:release() end)
        local h2 = tidal.spawn(function() local p = s:acquire(3); p:release() end)
        local p = s:acquire(1)
        tidal.yield()
        if i % 2 == 0 then h:abort(); h2:abort() end
        g:release()
        p:release()
        h:join()
        h2:join()
      end
      out.free = m:try_lock() ~= nil
      out.avail = s:available()
      return out
    end)
    assert.is_true(r.free)
    assert.are.equal(3, r.avail)
  end)

  it("spawn_parallel and spawn_blocking refuse bad options and arguments cleanly", function()
    local r = support.run(function()
      local bad = setmetatable({}, { __index = function() error("boom in __index") end })
      local out = {}
      out[1] = select(2, pcall(tidal.spawn_parallel, bad, function() end))
      out[2] = select(2, pcall(tidal.spawn_parallel, { name = 5 }, function() end))
      out[3] = select(2, pcall(tidal.spawn_blocking, function() end, coroutine.create(print)))
      out[4] = select(2, pcall(tidal.spawn_parallel, function() end, io.stdout))
      -- still works afterwards
      out[5] = tidal.spawn_parallel({ name = "p" }, function(x) return x + 1 end, 1):await()
      out[6] = tidal.spawn_blocking(function(x) return x * 2 end, 21):await()
      return out
    end)
    assert.matches("boom in __index", r[1])
    assert.matches("tidal.spawn_parallel: option 'name' must be a string, got number", r[2], nil, true)
    assert.matches("tidal.spawn_blocking: cannot copy coroutine at args[2]", r[3], nil, true)
    assert.matches("tidal.spawn_parallel: cannot copy userdata (FILE*) at args[2]", r[4], nil, true)
    assert.are.equal(2, r[5])
    assert.are.equal(42, r[6])
  end)

  it("validates tidal_runtime_step's timeout and slow_task = math.huge (no undefined behaviour)", function()
    if not support.can_spawn or support.sanitizer then return end
    local src, exe = os.tmpname() .. ".c", os.tmpname()
    local f = assert(io.open(src, "w"))
    f:write(host)
    f:close()
    local cc = "gcc -std=c11 -O0 -fsanitize=undefined,float-cast-overflow " ..
      "-fno-sanitize-recover=all -Icsrc -I/usr/include/lua5.4 " .. src ..
      " $(ls csrc/*/*.c | grep -v ^csrc/test/) -llua5.4 -luv -lcurl -lm -o " .. exe .. " 2>&1"
    local p = assert(io.popen(cc))
    local log = p:read("a")
    assert.is_true(p:close(), log)
    p = assert(io.popen("LUA_PATH_5_4='lua/?.lua;lua/?/init.lua;;' " .. exe .. " 2>&1"))
    local out = p:read("a")
    local ok = p:close()
    os.remove(src)
    os.remove(exe)
    assert.is_true(ok, out)
    assert.matches("nan: %-1 tidal_runtime_step: timeout must be a number of seconds, got nan", out)
    assert.matches("negative: 1", out)
    assert.matches("%-inf: 1", out)
    assert.matches("huge: 0 after a few steps", out)
    assert.is_nil(out:match("ran [%d.]+ s without waiting"), out)
  end)
end)
