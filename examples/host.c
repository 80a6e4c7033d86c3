/*
** host.c: embedding tidal in a program that owns its main loop (a game's
** frame loop, an editor). At 60 frames a second the host polls tidal's fd
** beside its own work, never waiting past tidal_runtime_next_timeout() or
** the next frame, and steps the runtime once per frame.
**
** Build against an installed rock (see the README, "Embedding in a C
** host"):
**   ROCK=$(luarocks --lua-version=5.4 show --rock-dir tidal)
**   export PKG_CONFIG_PATH=$ROCK/host/lib/pkgconfig
**   cc -std=c11 examples/host.c $(pkg-config --cflags --libs tidal) -o host
** Run with tidal's Lua files on the path:
**   eval "$(luarocks --lua-version=5.4 path)"; ./host
*/
#define _POSIX_C_SOURCE 200809L /* poll */
#include <poll.h>
#include <stdio.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <tidal.h>

/* The tasks: Lua code, spawned from C. */
static const char *task_a =
    "local tidal = require('tidal')\n"
    "for i = 1, 3 do tidal.sleep(0.1); print('task A: tick ' .. i) end\n";
static const char *task_b = "local tidal = require('tidal')\n"
                            "local name = ...\n"
                            "tidal.sleep(0.25)\n"
                            "print('task ' .. name .. ': done')\n";

static int fail(lua_State *L, const char *what) {
  fprintf(stderr, "host: %s: %s\n", what, lua_tostring(L, -1));
  lua_close(L);
  return 1;
}

int main(void) {
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  luaL_requiref(L, "tidal.core", luaopen_tidal_core, 0);
  lua_pop(L, 1);

  tidal_runtime *rt = tidal_runtime_new(L, NULL); /* pushes the runtime */
  if (rt == NULL) return fail(L, "tidal_runtime_new");
  int rt_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* keep it referenced */

  if (luaL_loadstring(L, task_a) != LUA_OK) return fail(L, "task A");
  if (tidal_runtime_spawn(L, rt, 0) != 0) return fail(L, "spawn A");
  lua_pop(L, 1); /* (its JoinHandle) */
  if (luaL_loadstring(L, task_b) != LUA_OK) return fail(L, "task B");
  lua_pushliteral(L, "B");
  if (tidal_runtime_spawn(L, rt, 1) != 0) return fail(L, "spawn B");
  lua_pop(L, 1);

  int frames = 0, alive;
  do {
    /* a 60 Hz frame: wait for tidal's fd (or the host's own), at most
    ** until tidal's next timer or the next frame */
    double t = tidal_runtime_next_timeout(rt);
    int ms = t < 0 ? 16 : (int)(t * 1000 + 0.999);
    if (ms > 16) ms = 16;
    struct pollfd p = {tidal_runtime_backend_fd(rt), POLLIN, 0};
    poll(&p, 1, ms);
    alive = tidal_runtime_step(L, rt, 0);
    if (alive < 0) return fail(L, "tidal_runtime_step");
    frames++; /* the host draws a frame here */
  } while (alive > 0);

  printf("host: every task finished after %s frames\n",
         frames >= 8 ? "at least 8" : "too few");
  tidal_runtime_close(L, rt);
  luaL_unref(L, LUA_REGISTRYINDEX, rt_ref);
  lua_close(L);
  return 0;
}
