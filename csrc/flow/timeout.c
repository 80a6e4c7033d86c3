/*
** timeout.c: tidal.timeout(seconds, fn, ...) and tidal.timeout_at(deadline,
** fn, ...): a cancel scope with a
** deadline (kernel/scope.c). No extra coroutine: fn runs under a protected
** call in the current task. When the deadline passes, the task's pending
** wait is withdrawn and a "timeout" error is raised where it waits -- and
** at every later wait while the task is still inside the scope (sticky).
** The scope catches only its own expiry, so nested timeouts work: an outer
** expiry unwinds through the inner scope to the outer one.
*/
#include "flow.h"

#include <math.h>

static int timeout_k(lua_State *L, int status, lua_KContext k) {
  tidal_scope *sc = (tidal_scope *)k;
  int mine = status != LUA_OK && status != LUA_YIELD &&
             tidal__scope_owns(L, sc, -1);
  tidal__scope_close(L, sc);
  if (status == LUA_OK || status == LUA_YIELD) {
    lua_pushboolean(L, 1);
    lua_replace(L, 1); /* true in place of the seconds */
    return lua_gettop(L);
  }
  if (!mine) return lua_error(L); /* fn's own error, or a cancellation */
  lua_pushboolean(L, 0);
  lua_insert(L, -2);
  return 2;
}

/* tidal.timeout(seconds, fn, ...) -> true, ... | false, err */
static int l_timeout(lua_State *L) {
  tidal_task *t = tidal__task_check(L, "tidal.timeout");
  double s = HUGE_VAL;
  int ty = lua_type(L, 1);
  if (ty == LUA_TNUMBER) {
    s = lua_tonumber(L, 1);
    if (isnan(s))
      return luaL_error(L, "tidal.timeout: seconds must be a number, got nan");
  } else if (ty != LUA_TNIL) {
    return luaL_error(L,
                      "tidal.timeout: seconds must be a number (or nil for "
                      "no limit), got %s",
                      luaL_typename(L, 1));
  }
  tidal__check_callable(L, 2, "tidal.timeout", "a function to run");
  tidal_scope *sc = tidal__scope_open(t, s, "tidal.timeout");
  if (sc == NULL) return luaL_error(L, "tidal.timeout: not enough memory");
  int status = lua_pcallk(L, lua_gettop(L) - 2, LUA_MULTRET, 0,
                          (lua_KContext)sc, timeout_k);
  return timeout_k(L, status, (lua_KContext)sc);
}

/* tidal.timeout_at(deadline, fn, ...) -> true, ... | false, err: the same
** with a point in time on the tidal.now() clock */
static int l_timeout_at(lua_State *L) {
  tidal_task *t = tidal__task_check(L, "tidal.timeout_at");
  double at = HUGE_VAL;
  int ty = lua_type(L, 1);
  if (ty == LUA_TNUMBER) {
    at = lua_tonumber(L, 1);
    if (isnan(at))
      return luaL_error(L,
                        "tidal.timeout_at: the deadline must be a number "
                        "(a tidal.now() value), got nan");
  } else if (ty != LUA_TNIL) {
    return luaL_error(L,
                      "tidal.timeout_at: the deadline must be a number (a "
                      "tidal.now() value, or nil for no limit), got %s",
                      luaL_typename(L, 1));
  }
  tidal__check_callable(L, 2, "tidal.timeout_at", "a function to run");
  tidal_scope *sc = tidal__scope_open_at(t, at, "tidal.timeout_at");
  if (sc == NULL) return luaL_error(L, "tidal.timeout_at: not enough memory");
  int status = lua_pcallk(L, lua_gettop(L) - 2, LUA_MULTRET, 0,
                          (lua_KContext)sc, timeout_k);
  return timeout_k(L, status, (lua_KContext)sc);
}

static const luaL_Reg funcs[] = {
    {"timeout", l_timeout}, {"timeout_at", l_timeout_at}, {NULL, NULL}};

/* stack: module, ctx */
void tidal__timeout_open(lua_State *L) {
  tidal__register(L, funcs);
}
