/*
** ctx.c: the kernel's part of the per-state context (tidal_ctx), which
** extends aux's (tidal_actx, its first member): which worker's scheduler
** runs in this state now, which task it resumes, and the kernel's
** registry tables.
*/
#include "kernel.h"

/* stack: module. Pushes the state's context, creating it on first use. */
void tidal__ctx_open(lua_State *L) {
  int created;
  tidal_ctx *ctx = (tidal_ctx *)tidal__actx_push(L, sizeof *ctx, &created);
  if (!created) return;
  ctx->w = NULL;
  ctx->runtimes = NULL;
  ctx->cur = NULL;
  ctx->msgh_ref = ctx->names_ref = ctx->closer_ref = LUA_NOREF;
  ctx->pool = 0;
  ctx->host_hook = NULL;
  ctx->host_data = NULL;
  /* task names: weak keys, handle -> name */
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  ctx->names_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}
