/*
** host.c: the host C API declared in tidal.h -- a program that owns its
** main loop (a game, an editor) creates a runtime, polls its backend fd
** beside its own work and steps it (examples/host.c).
*/
#include "lib.h"

#include <math.h>

static int host_new(lua_State *L) {
  tidal__rt_new(L, tidal__ctx(L), 0, "tidal_runtime_new");
  return 1;
}

tidal_runtime *tidal_runtime_new(lua_State *L, uv_loop_t *loop) {
  if (tidal__ctx(L) == NULL) {
    lua_pushliteral(L, "tidal_runtime_new: load tidal.core first");
    return NULL;
  }
  if (loop != NULL) {
    lua_pushliteral(L, "tidal_runtime_new: running on a host's loop is not "
                       "supported yet; pass NULL");
    return NULL;
  }
  lua_pushcfunction(L, host_new);
  if (lua_pcall(L, 0, 1, 0) != LUA_OK) return NULL;
  return (tidal_runtime *)lua_touserdata(L, -1);
}

static int host_step(lua_State *L) {
  tidal_runtime *rt = (tidal_runtime *)lua_touserdata(L, 1);
  tidal_ctx *ctx = tidal__ctx(L);
  double timeout = lua_tonumber(L, 2);
  if (rt == NULL) luaL_error(L, "tidal_runtime_step: no runtime (NULL)");
  if (rt->closed) luaL_error(L, "tidal_runtime_step: the runtime is closed");
  if (ctx == NULL)
    luaL_error(L, "tidal_runtime_step: tidal.core is not loaded in this "
                  "Lua state");
  tidal__rt_check_idle(L, ctx, "tidal_runtime_step");
  if (isnan(timeout))
    luaL_error(L, "tidal_runtime_step: timeout must be a number of seconds, "
                  "got nan");
  if (timeout > 3600.0 * 24 * 365) timeout = 3600.0 * 24 * 365; /* (a year) */
  tidal__worker_step(L, &rt->w, timeout); /* (negative: do not wait) */
  return 0;
}

int tidal_runtime_step(lua_State *L, tidal_runtime *rt, double timeout) {
  lua_pushcfunction(L, host_step);
  lua_pushlightuserdata(L, rt);
  lua_pushnumber(L, timeout);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) return -1;
  return rt->w.st.alive > 0;
}

int tidal_runtime_backend_fd(tidal_runtime *rt) {
  return rt->closed ? -1 : uv_backend_fd(rt->w.loop);
}

double tidal_runtime_next_timeout(tidal_runtime *rt) {
  return tidal__rt_next_timeout(rt);
}

static int host_close(lua_State *L) {
  tidal_runtime *rt = (tidal_runtime *)lua_touserdata(L, 1);
  tidal__rt_shutdown(L, rt);
  return 0;
}

void tidal_runtime_close(lua_State *L, tidal_runtime *rt) {
  lua_pushcfunction(L, host_close);
  lua_pushlightuserdata(L, rt);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) lua_pop(L, 1);
}
