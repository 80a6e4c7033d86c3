/*
** error.c: error objects and tracebacks.
**
** Failures of an expected kind (a closed channel, a timeout, cancellation)
** are tables {kind = "...", message = "..."} with the metatable
** "tidal.Error" (__tostring gives the message). Errors keep their identity
** everywhere: a value raised in a task is the same value at await and out of
** run. The traceback of the task where an error was first raised is kept
** beside it: in a weak table keyed by the error for tables and userdata, and
** in a small bounded table for strings (which cannot be weak keys).
*/
#include "auxlib/auxlib.h"

#include <stdarg.h>

#define STBS_MAX 256

void tidal__error_push(lua_State *L, const char *kind, const char *fmt, ...) {
  va_list ap;
  lua_createtable(L, 0, 2);
  lua_pushstring(L, kind);
  lua_setfield(L, -2, "kind");
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  lua_setfield(L, -2, "message");
  luaL_setmetatable(L, TIDAL_ERROR_MT);
}

const char *tidal__error_kind(lua_State *L, int idx) {
  const char *kind = NULL;
  if (lua_type(L, idx) != LUA_TTABLE || !lua_getmetatable(L, idx)) return NULL;
  luaL_getmetatable(L, TIDAL_ERROR_MT);
  if (lua_rawequal(L, -1, -2)) {
    lua_getfield(L, idx, "kind");
    kind = lua_tostring(L, -1); /* kept alive by the error table */
    lua_pop(L, 1);
  }
  lua_pop(L, 2);
  return kind;
}

static int tostring_protected(lua_State *L) {
  luaL_tolstring(L, 1, NULL);
  return 1;
}

void tidal__push_errstring(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  if (lua_type(L, idx) == LUA_TSTRING || lua_type(L, idx) == LUA_TNUMBER) {
    lua_pushstring(L, lua_tostring(L, idx));
    return;
  }
  lua_pushcfunction(L, tostring_protected);
  lua_pushvalue(L, idx);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK || !lua_isstring(L, -1)) {
    lua_pop(L, 1);
    lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, idx));
  }
}

/* tb at index tb: record it for the error at index err. */
void tidal__traceback_set(lua_State *L, tidal_actx *a, int err, int tb) {
  err = lua_absindex(L, err);
  tb = lua_absindex(L, tb);
  if (lua_isnil(L, err)) return;
  if (lua_type(L, err) == LUA_TSTRING) {
    if (a->nstbs >= STBS_MAX) { /* forget the oldest generation */
      lua_newtable(L);
      lua_rawseti(L, LUA_REGISTRYINDEX, a->stbs_ref);
      a->nstbs = 0;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, a->stbs_ref);
    a->nstbs++;
  } else if (lua_type(L, err) == LUA_TNUMBER ||
             lua_type(L, err) == LUA_TBOOLEAN) {
    return;
  } else {
    lua_rawgeti(L, LUA_REGISTRYINDEX, a->tbs_ref);
  }
  lua_pushvalue(L, err);
  lua_pushvalue(L, tb);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

/* Pushes the traceback recorded for the error at err and returns 1, or
** pushes nothing and returns 0. */
int tidal__traceback_get(lua_State *L, tidal_actx *a, int err) {
  int t = lua_type(L, err);
  err = lua_absindex(L, err);
  if (t == LUA_TNIL || t == LUA_TNUMBER || t == LUA_TBOOLEAN) return 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX,
              t == LUA_TSTRING ? a->stbs_ref : a->tbs_ref);
  lua_pushvalue(L, err);
  if (lua_rawget(L, -2) == LUA_TSTRING) {
    lua_remove(L, -2);
    return 1;
  }
  lua_pop(L, 2);
  return 0;
}

static int l_error_tostring(lua_State *L) {
  lua_getfield(L, 1, "message");
  if (!lua_isstring(L, -1)) {
    lua_getfield(L, 1, "kind");
    lua_pushfstring(L, "tidal error (%s)",
                    lua_isstring(L, -1) ? lua_tostring(L, -1) : "?");
  }
  return 1;
}

/* stack: module, ctx */
void tidal__aux_open(lua_State *L) {
  tidal_actx *a = (tidal_actx *)lua_touserdata(L, -1);
  if (a->error_mt_ref != LUA_NOREF) return; /* loaded before in this state */
  luaL_newmetatable(L, TIDAL_ERROR_MT);
  lua_pushcfunction(L, l_error_tostring);
  lua_setfield(L, -2, "__tostring");
  a->error_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  a->tbs_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_newtable(L);
  a->stbs_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}
