/*
** host.c: the host C API declared in tidal.h -- a program that owns its
** main loop (a game, an editor) creates a runtime, polls its backend fd
** beside its own work and steps it (examples/host.c), or runs it on its
** own libuv loop (examples/uv_host.c). Each call runs protected: misuse
** and memory errors come back as -1 / NULL with a message pushed.
*/
#include "lib.h"

#include <math.h>

static int host_new(lua_State *L) {
  tidal_ctx *ctx = tidal__ctx(L);
  tidal__rt_check_idle(L, ctx, "tidal_runtime_new");
  tidal__rt_new(L, ctx, 0, (uv_loop_t *)lua_touserdata(L, 1),
                "tidal_runtime_new");
  return 1;
}

tidal_runtime *tidal_runtime_new(lua_State *L, struct uv_loop_s *loop) {
  if (tidal__ctx(L) == NULL) {
    lua_pushliteral(L, "tidal_runtime_new: load tidal.core first");
    return NULL;
  }
  lua_pushcfunction(L, host_new);
  lua_pushlightuserdata(L, loop);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) return NULL;
  return (tidal_runtime *)lua_touserdata(L, -1);
}

tidal_runtime *tidal_toruntime(lua_State *L, int idx) {
  tidal_ctx *ctx = tidal__ctx(L);
  return ctx == NULL
             ? NULL
             : (tidal_runtime *)tidal__toud(L, &ctx->aux, idx, TT_RUNTIME);
}

/* stack: rt (light), nargs, fn, args... */
static int host_spawn(lua_State *L) {
  tidal_runtime *rt = (tidal_runtime *)lua_touserdata(L, 1);
  if (rt == NULL) luaL_error(L, "tidal_runtime_spawn: no runtime (NULL)");
  if (rt->closed) luaL_error(L, "tidal_runtime_spawn: the runtime is closed");
  if (!lua_isfunction(L, 3))
    luaL_error(L,
               "tidal_runtime_spawn: expected a function below the %d "
               "argument(s), got %s",
               (int)lua_tointeger(L, 2), luaL_typename(L, 3));
  tidal__spawn(L, &rt->w, 3);
  return 1;
}

int tidal_runtime_spawn(lua_State *L, tidal_runtime *rt, int nargs) {
  if (nargs < 0 || lua_gettop(L) < nargs + 1) {
    lua_pushliteral(L, "tidal_runtime_spawn: fewer values on the stack than "
                       "a function and nargs arguments");
    return -1;
  }
  int fn = lua_gettop(L) - nargs;
  lua_pushcfunction(L, host_spawn);
  lua_pushlightuserdata(L, rt);
  lua_pushinteger(L, nargs);
  lua_rotate(L, fn, 3); /* host_spawn, rt, nargs, fn, args... */
  return lua_pcall(L, nargs + 3, 1, 0) == LUA_OK ? 0 : -1;
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
  tidal__rt_check_own_loop(L, rt, "tidal_runtime_step");
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
  return rt == NULL || rt->closed || rt->w.hostloop ? -1
                                                    : uv_backend_fd(rt->w.loop);
}

double tidal_runtime_next_timeout(tidal_runtime *rt) {
  return rt == NULL ? -1 : tidal__rt_next_timeout(rt);
}

int tidal_runtime_tasks(tidal_runtime *rt) {
  return rt == NULL || rt->closed ? 0 : (int)rt->w.st.alive;
}

static int host_close(lua_State *L) {
  tidal_runtime *rt = (tidal_runtime *)lua_touserdata(L, 1);
  if (rt == NULL || rt->closed) return 0;
  if (rt->w.running)
    luaL_error(L, "tidal_runtime_close: cannot close a runtime from inside "
                  "it");
  tidal__rt_check_idle(L, tidal__ctx(L), "tidal_runtime_close");
  tidal__rt_shutdown(L, rt);
  return 0;
}

int tidal_runtime_close(lua_State *L, tidal_runtime *rt) {
  lua_pushcfunction(L, host_close);
  lua_pushlightuserdata(L, rt);
  return lua_pcall(L, 1, 0, 0) == LUA_OK ? 0 : -1;
}

void tidal_runtime_set_report(tidal_runtime *rt, tidal_report_fn fn, void *ud) {
  if (rt == NULL || rt->closed) return;
  tidal_family *f = rt->w.family;
  uv_mutex_lock(&f->ext_lock);
  f->report = fn;
  f->report_ud = fn ? ud : NULL;
  uv_mutex_unlock(&f->ext_lock);
  /* and for what the state reports outside the runtime (a failed task's
  ** handle collected after close, lua_close) */
  rt->w.ctx->report = fn;
  rt->w.ctx->report_ud = fn ? ud : NULL;
}
