/*
** uv_host.c: a C host whose own libuv loop runs tidal. The host has a
** repeating timer of its own; tidal's tasks run from the same loop's
** phases whenever the host runs it, without a thread of their own. Once
** the host's timer is closed and every task is done, uv_run returns: tidal
** holds no reference on the loop while no task is alive. Reports (here: a
** task whose error nobody observed) go to the host's log, not to stderr.
**
** Build against an installed rock (see the README, "Embedding in a C
** host"):
**   ROCK=$(luarocks --lua-version=5.4 show --rock-dir tidal)
**   export PKG_CONFIG_PATH=$ROCK/host/lib/pkgconfig
**   cc -std=c11 examples/uv_host.c $(pkg-config --cflags --libs tidal) \
**      -o uv_host
**   eval "$(luarocks --lua-version=5.4 path)"; ./uv_host
*/
#define _DEFAULT_SOURCE /* uv.h needs POSIX types (tidal.h does not) */
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <uv.h>

#include <tidal.h>

static const char *tasks =
    "local tidal, rt = require('tidal'), ...\n"
    "local tx, rx = tidal.channel()\n"
    "rt:spawn(function()\n"
    "  for i = 1, 3 do tidal.sleep(0.03); tx:send('tick ' .. i) end\n"
    "  tx:close()\n"
    "end)\n"
    "rt:spawn(function()\n"
    "  for msg in rx.recv, rx do print('task: ' .. msg) end\n"
    "  print('task: channel closed')\n"
    "end)\n"
    "rt:spawn(function() tidal.sleep(0.01); error('nobody awaits me') end)\n";

/* the host's own log: the report hook writes there */
static void host_log(void *ud, tidal_report_kind kind, const char *msg) {
  int *reports = (int *)ud;
  (*reports)++;
  printf("host log: %s report: %.*s\n",
         kind == TIDAL_REPORT_ERROR ? "error" : "other",
         (int)strcspn(msg, "\n"), msg);
}

static void host_tick(uv_timer_t *t) {
  int *n = (int *)t->data;
  if (++*n == 4) uv_close((uv_handle_t *)t, NULL); /* the host is done */
}

static int fail(lua_State *L, const char *what) {
  fprintf(stderr, "uv_host: %s: %s\n", what, lua_tostring(L, -1));
  return 1;
}

int main(void) {
  uv_loop_t loop;
  uv_timer_t timer;
  int ticks = 0, reports = 0;
  uv_loop_init(&loop);
  uv_timer_init(&loop, &timer);
  timer.data = &ticks;
  uv_timer_start(&timer, host_tick, 20, 20);

  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  luaL_requiref(L, "tidal.core", luaopen_tidal_core, 0);
  lua_pop(L, 1);
  tidal_runtime *rt = tidal_runtime_new(L, &loop);
  if (rt == NULL) return fail(L, "tidal_runtime_new");
  tidal_runtime_set_report(rt, host_log, &reports);
  int rt_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* keep it referenced */

  if (luaL_loadstring(L, tasks) != LUA_OK) return fail(L, "load");
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt_ref);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) return fail(L, "spawning");

  uv_run(&loop, UV_RUN_DEFAULT); /* the host's loop runs everything */
  printf("host: uv_run returned; host ticks: %d, tasks alive: %d\n", ticks,
         tidal_runtime_tasks(rt));

  tidal_runtime_close(L, rt);
  luaL_unref(L, LUA_REGISTRYINDEX, rt_ref);
  lua_close(L);
  uv_run(&loop, UV_RUN_DEFAULT); /* closed handles finish closing */
  printf("host: reports: %d, uv_loop_close: %s\n", reports,
         uv_loop_close(&loop) == 0 ? "ok" : "busy");
  return 0;
}
