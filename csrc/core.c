/*
** core.c: luaopen_tidal_core and the per-state context.
**
** Every function of the module, and every method of tidal's userdata
** types, has the state's context as upvalue 1: it says which worker's
** scheduler is running in this state and which task it is resuming. There
** is no process-global state, so runtimes in different Lua states (or
** different threads) never meet.
*/
#include "tidal_int.h"

#define CTX_KEY "tidal.ctx"

tidal_ctx *tidal__ctx(lua_State *L) {
  tidal_ctx *ctx;
  lua_getfield(L, LUA_REGISTRYINDEX, CTX_KEY);
  ctx = (tidal_ctx *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  return ctx;
}

/* Pushes the state's context, creating it on first use. */
static tidal_ctx *push_ctx(lua_State *L) {
  tidal_ctx *ctx;
  if (lua_getfield(L, LUA_REGISTRYINDEX, CTX_KEY) == LUA_TUSERDATA)
    return (tidal_ctx *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  ctx = (tidal_ctx *)lua_newuserdatauv(L, sizeof *ctx, 0);
  ctx->w = NULL;
  ctx->cur = NULL;
  ctx->msgh_ref = ctx->handle_mt_ref = ctx->error_mt_ref = LUA_NOREF;
  ctx->tbs_ref = ctx->stbs_ref = ctx->names_ref = LUA_NOREF;
  ctx->nstbs = 0;
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, CTX_KEY);
  return ctx;
}

/* Sets funcs into the table at -2 with the context (at -1) as upvalue;
** both stay on the stack. */
void tidal__register(lua_State *L, const luaL_Reg *funcs) {
  lua_pushvalue(L, -2);
  lua_pushvalue(L, -2);
  luaL_setfuncs(L, funcs, 1);
  lua_pop(L, 1);
}

int luaopen_tidal_core(lua_State *L) {
  lua_newtable(L);
  push_ctx(L);
  tidal__error_open(L);
  tidal__task_open(L);
  tidal__runtime_open(L);
  tidal__time_open(L);
  tidal__introspect_open(L);
  tidal__http_open(L);
  lua_pop(L, 1);
  lua_pushliteral(L, TIDAL_VERSION);
  lua_setfield(L, -2, "_VERSION");
  return 1;
}
