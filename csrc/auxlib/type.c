/*
** type.c: the per-state context (aux's part) and tidal's userdata types.
**
** Every function of the module, and every method of tidal's userdata
** types, has the state's context as upvalue 1: it says (in the kernel's
** part) which worker's scheduler is running in this state and which task
** it is resuming, and (here) which metatables are tidal's. There is no
** process-global state but the opener below, so runtimes in different Lua
** states (or different threads) never meet.
*/
#include "auxlib/auxlib.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#define CTX_KEY "tidal.ctx"

/* -------------------------------------------------------------- context */

tidal_actx *tidal__actx(lua_State *L) {
  tidal_actx *a;
  lua_getfield(L, LUA_REGISTRYINDEX, CTX_KEY);
  a = (tidal_actx *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  return a;
}

tidal_actx *tidal__actx_push(lua_State *L, size_t size, int *created) {
  tidal_actx *a;
  *created = 0;
  if (lua_getfield(L, LUA_REGISTRYINDEX, CTX_KEY) == LUA_TUSERDATA) {
    a = (tidal_actx *)lua_touserdata(L, -1);
    if (a->size < size)
      luaL_error(L, "tidal: the state's context is too small");
    return a;
  }
  lua_pop(L, 1);
  if (size < sizeof *a) size = sizeof *a;
  a = (tidal_actx *)lua_newuserdatauv(L, size, 0);
  memset(a, 0, size);
  a->size = size;
  a->error_mt_ref = a->tbs_ref = a->stbs_ref = LUA_NOREF;
  a->nstbs = 0;
  for (int i = 0; i < TIDAL_TT_MAX; i++) {
    a->mt[i] = NULL;
    a->mt_ref[i] = LUA_NOREF;
    a->tname[i] = "?";
    for (int j = 0; j < 4; j++) a->hot[i][j] = NULL;
  }
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, CTX_KEY);
  *created = 1;
  return a;
}

/* The one process-wide value: the same function in every state. */
static _Atomic(lua_CFunction) opener;

void tidal__actx_opener(lua_CFunction open) {
  atomic_store_explicit(&opener, open, memory_order_release);
}

tidal_actx *tidal__actx_need(lua_State *L) {
  tidal_actx *a = tidal__actx(L);
  lua_CFunction open;
  if (a != NULL) return a;
  /* A handle arrived in a state that never loaded tidal.core (a pool state,
  ** a state a host made): load it, so the handle has its type and methods
  ** there. (A handle exists only once tidal.core opened in some state.) */
  open = atomic_load_explicit(&opener, memory_order_acquire);
  if (open == NULL) luaL_error(L, "tidal: tidal.core was never loaded");
  luaL_requiref(L, "tidal.core", open, 0);
  lua_pop(L, 1);
  if ((a = tidal__actx(L)) == NULL) { /* package.loaded had another one */
    lua_pushcfunction(L, open);
    lua_call(L, 0, 1);
    lua_pop(L, 1);
    a = tidal__actx(L);
  }
  return a;
}

/* ---------------------------------------------------------------- types */

/* Sets funcs into the table at -2 with the context (at -1) as upvalue;
** both stay on the stack. */
void tidal__register(lua_State *L, const luaL_Reg *funcs) {
  lua_pushvalue(L, -2);
  lua_pushvalue(L, -2);
  luaL_setfuncs(L, funcs, 1);
  lua_pop(L, 1);
}

int tidal__is_callable(lua_State *L, int idx) {
  if (lua_type(L, idx) == LUA_TFUNCTION) return 1;
  if (luaL_getmetafield(L, idx, "__call") != LUA_TNIL) {
    lua_pop(L, 1);
    return 1;
  }
  return 0;
}

void tidal__check_callable(lua_State *L, int idx, const char *fname,
                           const char *what) {
  if (!tidal__is_callable(L, idx))
    luaL_error(L, "%s: expected %s, got %s", fname, what,
               lua_type(L, idx) == LUA_TNONE ? "no value"
                                             : luaL_typename(L, idx));
}

const char *tidal__describe(lua_State *L, int idx) {
  switch (lua_type(L, idx)) {
  case LUA_TNONE:
    return lua_pushliteral(L, "no value");
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx))
      return lua_pushfstring(L, "%I", (LUAI_UACINT)lua_tointeger(L, idx));
    return lua_pushfstring(L, "%f", (LUAI_UACNUMBER)lua_tonumber(L, idx));
  case LUA_TBOOLEAN:
    return lua_pushstring(L, lua_toboolean(L, idx) ? "true" : "false");
  case LUA_TSTRING: {
    size_t n;
    const char *str = lua_tolstring(L, idx, &n);
    char buf[64];
    if (n > 40)
      snprintf(buf, sizeof buf, "string '%.37s...'", str);
    else
      snprintf(buf, sizeof buf, "string '%s'", str);
    return lua_pushstring(L, buf);
  }
  default:
    return lua_pushstring(L, luaL_typename(L, idx));
  }
}

void tidal__check_option_names(lua_State *L, int idx, const char *fname,
                               const char *const known[]) {
  idx = lua_absindex(L, idx);
  luaL_checkstack(L, 4, fname);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int i = 0;
    lua_pop(L, 1);
    if (lua_type(L, -1) == LUA_TSTRING) {
      const char *k = lua_tostring(L, -1);
      while (known[i] != NULL && strcmp(known[i], k) != 0) i++;
    } else {
      while (known[i] != NULL) i++;
    }
    if (known[i] == NULL) {
      luaL_Buffer b;
      const char *k = lua_type(L, -1) == LUA_TSTRING
                          ? lua_pushfstring(L, "'%s'", lua_tostring(L, -1))
                          : tidal__describe(L, -1);
      luaL_buffinit(L, &b);
      for (i = 0; known[i] != NULL; i++) {
        if (i) luaL_addstring(&b, ", ");
        luaL_addstring(&b, known[i]);
      }
      luaL_pushresult(&b);
      luaL_error(L, "%s: unknown option %s (known: %s)", fname, k,
                 lua_tostring(L, -1));
    }
  }
}

const char *tidal__typename(const tidal_actx *a, int tt) {
  return a->tname[tt];
}

void tidal__newtype(lua_State *L, int tt, const char *mtname,
                    const char *tname, const luaL_Reg *meta,
                    const luaL_Reg *methods) {
  tidal_actx *a = (tidal_actx *)lua_touserdata(L, -1);
  if (a->mt[tt] != NULL) return; /* loaded before in this state */
  luaL_newmetatable(L, mtname);
  if (meta) {
    lua_pushvalue(L, -2);
    luaL_setfuncs(L, meta, 1);
  }
  if (methods) {
    lua_newtable(L);
    lua_pushvalue(L, -3);
    luaL_setfuncs(L, methods, 1);
    lua_setfield(L, -2, "__index");
  }
  a->mt[tt] = lua_topointer(L, -1);
  a->mt_ref[tt] = luaL_ref(L, LUA_REGISTRYINDEX);
  a->tname[tt] = tname;
}

void *tidal__toud(lua_State *L, const tidal_actx *a, int idx, int tt) {
  void *p = lua_touserdata(L, idx);
  if (p != NULL && lua_getmetatable(L, idx)) {
    const void *mt = lua_topointer(L, -1);
    lua_pop(L, 1);
    if (mt == a->mt[tt]) return p;
  }
  return NULL;
}

/* checkud's error, out of its hot path (a context's type names, not a
** static table: keeping the context in a register cost every check) */
#if defined(__GNUC__)
__attribute__((noinline, cold))
#endif
static int bad_ud(lua_State *L, int idx, int tt, const char *fname) {
  tidal_actx *a = (tidal_actx *)lua_touserdata(L, lua_upvalueindex(1));
  if (idx == 1)
    return luaL_error(L, "%s: expected a %s as self, got %s (call it with "
                         "':')",
                      fname, a->tname[tt], luaL_typename(L, idx));
  return luaL_error(L, "%s: argument #%d must be a %s, got %s", fname,
                    idx - 1, a->tname[tt], luaL_typename(L, idx));
}

void *tidal__checkud(lua_State *L, int idx, int tt, const char *fname) {
  void *p = tidal__toud(
      L, (tidal_actx *)lua_touserdata(L, lua_upvalueindex(1)), idx, tt);
  if (p == NULL) bad_ud(L, idx, tt, fname);
  return p;
}

int tidal__closed_error(lua_State *L, const char *fname, const char *what) {
  return luaL_error(L, "%s: attempt to use a closed %s", fname, what);
}

void tidal__setmt(lua_State *L, tidal_actx *a, int tt) {
  if (a == NULL) a = tidal__actx_need(L); /* (see there) */
  lua_rawgeti(L, LUA_REGISTRYINDEX, a->mt_ref[tt]);
  lua_setmetatable(L, -2);
}
