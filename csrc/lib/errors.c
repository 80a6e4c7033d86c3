/*
** errors.c: tidal.error, tidal.is_error and tidal.traceback, the Lua side
** of the error objects and tracebacks of auxlib/error.c.
*/
#include "lib.h"

#include <string.h>

/* tidal.traceback(err): where err was first raised in a task, or nil */
static int l_traceback(lua_State *L) {
  tidal_actx *a = (tidal_actx *)lua_touserdata(L, lua_upvalueindex(1));
  luaL_checkany(L, 1);
  if (!tidal__traceback_get(L, a, 1)) lua_pushnil(L);
  return 1;
}

/* tidal.error(kind, message): an error object like the runtime's own */
static int l_error_new(lua_State *L) {
  const char *kind = luaL_checkstring(L, 1);
  const char *msg = luaL_optstring(L, 2, kind);
  tidal__error_push(L, kind, "%s", msg);
  return 1;
}

/* tidal.is_error(v [, kind]) */
static int l_is_error(lua_State *L) {
  const char *kind = tidal__error_kind(L, 1);
  const char *want = luaL_optstring(L, 2, NULL);
  lua_pushboolean(L, kind != NULL && (want == NULL || strcmp(kind, want) == 0));
  return 1;
}

static const luaL_Reg funcs[] = {{"traceback", l_traceback},
                                 {"error", l_error_new},
                                 {"is_error", l_is_error},
                                 {NULL, NULL}};

/* stack: module, ctx */
void tidal__errors_open(lua_State *L) {
  tidal__register(L, funcs);
}
