/*
** op.c: wait operations as values -- rx:recv_op(), tx:send_op(v),
** tidal.sleep_op(s), m:lock_op(). An op is callable: op() performs the wait
** (it is rx:recv(), tx:send(v), ...), so it can be a branch of tidal.select
** like any function. select also knows how to try an op without waiting:
** when an op branch can complete at once, it completes in the selecting
** task with no child task at all, which keeps the common "one branch is
** already ready" case cheap.
**
** An op holds its target object and arguments in uservalues, and two C
** functions of its primitive: run (the waiting method) and try (complete
** without waiting, or report "not ready").
*/
#include "flow.h"

#include <string.h>

#define OP_MT "tidal.Op"

typedef struct op {
  lua_CFunction run;
  tidal_try_fn try;
  const char *name;
  int nargs; /* target + arguments, in uservalues 1.. */
} op;

/* Pushes an op over stack[first .. first+nargs-1] (target, arguments). */
void tidal__op_new(lua_State *L, tidal_ctx *ctx, const char *name,
                   lua_CFunction run, tidal_try_fn try, int first, int nargs) {
  op *o = (op *)lua_newuserdatauv(L, sizeof *o, nargs);
  o->run = run;
  o->try = try;
  o->name = name;
  o->nargs = nargs;
  for (int i = 0; i < nargs; i++) {
    lua_pushvalue(L, first + i);
    lua_setiuservalue(L, -2, i + 1);
  }
  tidal__setmt(L, &ctx->aux, TT_OP);
}

/* If the value at idx is an op: pushes its target and arguments and returns
** the op (the caller then calls op->try with their base). Else NULL. */
const void *tidal__op_push(lua_State *L, tidal_ctx *ctx, int idx, int *nargs) {
  op *o = (op *)tidal__toud(L, &ctx->aux, idx, TT_OP);
  if (o == NULL) return NULL;
  idx = lua_absindex(L, idx);
  /* (a C function has LUA_MINSTACK slots without asking) */
  if (lua_gettop(L) + o->nargs + 4 > LUA_MINSTACK)
    luaL_checkstack(L, o->nargs + 4, "tidal: op");
  for (int i = 1; i <= o->nargs; i++) lua_getiuservalue(L, idx, i);
  *nargs = o->nargs;
  return o;
}

int tidal__op_try(lua_State *L, const void *o, int base) {
  return ((const op *)o)->try(L, base);
}

/* op(): perform the wait, as the method would (the stack becomes the
** method's: target, arguments) */
static int l_call(lua_State *L) {
  op *o = (op *)tidal__checkud(L, 1, TT_OP, "Op:__call");
  lua_settop(L, 1);
  for (int i = 1; i <= o->nargs; i++) lua_getiuservalue(L, 1, i);
  lua_remove(L, 1);
  return o->run(L);
}

static int l_tostring(lua_State *L) {
  op *o = (op *)tidal__checkud(L, 1, TT_OP, "Op:__tostring");
  lua_pushfstring(L, "tidal.Op (%s)", o->name);
  return 1;
}

static const luaL_Reg meta[] = {
    {"__call", l_call}, {"__tostring", l_tostring}, {NULL, NULL}};

/* stack: module, ctx */
void tidal__op_open(lua_State *L) {
  tidal__newtype(L, TT_OP, OP_MT, "Op", meta, NULL);
}
