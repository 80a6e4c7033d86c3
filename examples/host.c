/*
** host.c: embedding tidal in a program that owns its main loop (a game's
** frame loop, an editor). The host polls tidal's backend fd beside its own
** work, never waiting past tidal_runtime_next_timeout(), and steps the
** runtime once per frame.
**
** Build (from the project root; the core is compiled into the host):
**   gcc -std=c11 -Icsrc -I/usr/include/lua5.4 examples/host.c \
**       $(find csrc -name \*.c -not -path csrc/test/\*) \
**       -llua5.4 -luv -lcurl -lm -o host
** Run with LUA_PATH_5_4 pointing at lua/?.lua;lua/?/init.lua.
*/
#define _DEFAULT_SOURCE
#include <poll.h>
#include <stdio.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "tidal.h"

static const char *script =
    "local tidal = require('tidal')\n"
    "local rt = ...\n"
    "rt:spawn(function()\n"
    "  for i = 1, 3 do tidal.sleep(0.05); print('task A: tick ' .. i) end\n"
    "end)\n"
    "rt:spawn(function() tidal.sleep(0.12); print('task B: done') end)\n";

int main(void) {
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  luaL_requiref(L, "tidal.core", luaopen_tidal_core, 0);
  lua_pop(L, 1);

  tidal_runtime *rt = tidal_runtime_new(L, NULL); /* pushes the runtime */
  if (rt == NULL) {
    fprintf(stderr, "host: %s\n", lua_tostring(L, -1));
    return 1;
  }
  int rt_ref = luaL_ref(L, LUA_REGISTRYINDEX);

  if (luaL_loadstring(L, script) != LUA_OK) {
    fprintf(stderr, "host: %s\n", lua_tostring(L, -1));
    return 1;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt_ref);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    fprintf(stderr, "host: %s\n", lua_tostring(L, -1));
    return 1;
  }

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
    if (alive < 0) {
      fprintf(stderr, "host: %s\n", lua_tostring(L, -1));
      return 1;
    }
    frames++; /* the host draws a frame here */
  } while (alive > 0);

  printf("host: every task finished after %s frames\n",
         frames >= 8 ? "at least 8" : "too few");
  tidal_runtime_close(L, rt);
  luaL_unref(L, LUA_REGISTRYINDEX, rt_ref);
  lua_close(L);
  return 0;
}
