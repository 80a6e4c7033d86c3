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
**
** An op made once and given to select again and again (the common loop)
** is checked once: the second time select sees it, it gets the metatable
** of TT_OPHOT, the same but with a finalizer, and enters the per-type
** cache of checked objects (TIDAL_HOT), which its finalizer clears. An op
** made for one select only pays no finalizer.
*/
#include "flow.h"

#include <string.h>

#define OP_MT "tidal.Op"

typedef struct op {
  lua_CFunction run;
  tidal_try_fn try;
  tidal_tryfast_fn fast; /* or NULL */
  void *target;          /* the memory of uservalue 1, for fast */
  const char *name;
  int nargs; /* target + arguments, in uservalues 1.. */
  uint8_t used; /* seen by select before */
  uint8_t dead; /* finalized (TT_OPHOT): never cached again */
} op;

/* Pushes an op over stack[first .. first+nargs-1] (target, arguments). */
void tidal__op_new(lua_State *L, tidal_ctx *ctx, const char *name,
                   lua_CFunction run, tidal_try_fn try, int first, int nargs) {
  op *o = (op *)lua_newuserdatauv(L, sizeof *o, nargs);
  o->run = run;
  o->try = try;
  o->fast = NULL;
  o->target = NULL;
  o->name = name;
  o->nargs = nargs;
  o->used = o->dead = 0;
  for (int i = 0; i < nargs; i++) {
    lua_pushvalue(L, first + i);
    lua_setiuservalue(L, -2, i + 1);
  }
  tidal__setmt(L, &ctx->aux, TT_OP);
}

/* the new op on top, over a userdata target */
void tidal__op_fast(lua_State *L, tidal_tryfast_fn fast) {
  op *o = (op *)lua_touserdata(L, -1);
  lua_getiuservalue(L, -1, 1);
  o->target = lua_touserdata(L, -1);
  lua_pop(L, 1);
  o->fast = o->target != NULL ? fast : NULL;
}

/* TT_OP or TT_OPHOT for an op at idx, else 0 (one metatable check; a
** value with a metatable of its own is no op) */
static int op_type(lua_State *L, const tidal_actx *a, int idx) {
  int tt = 0;
  if (lua_getmetatable(L, idx)) {
    const void *mt = lua_topointer(L, -1);
    lua_pop(L, 1);
    tt = mt == a->mt[TT_OP] ? TT_OP : mt == a->mt[TT_OPHOT] ? TT_OPHOT : 0;
  }
  return tt;
}

static op *to_op(lua_State *L, tidal_actx *a, int idx) {
  op *o = (op *)lua_touserdata(L, idx);
  return o != NULL && op_type(L, a, idx) ? o : NULL;
}

int tidal__op_is(lua_State *L, tidal_ctx *ctx, int idx) {
  return to_op(L, &ctx->aux, idx) != NULL;
}

static op *check_op(lua_State *L, const char *fname) {
  tidal_actx *a = (tidal_actx *)lua_touserdata(L, lua_upvalueindex(1));
  op *o = to_op(L, a, 1);
  if (o == NULL) /* (raises) */
    return (op *)tidal__checkud(L, 1, TT_OP, fname);
  return o;
}

/* The op p at idx (absolute) seen by select for the first time, or out of
** the cache: checked by its metatable. NULL if it is no op. */
static op *check_select_op(lua_State *L, tidal_actx *a, int idx, op *p) {
  int tt = op_type(L, a, idx);
  if (tt == TT_OP) {
    if (p->used) { /* the second time: worth a finalizer */
      luaL_checkstack(L, 2, "tidal: op");
      lua_pushvalue(L, idx);
      tidal__setmt(L, a, TT_OPHOT);
      lua_pop(L, 1);
      TIDAL_HOT(a, TT_OPHOT, p) = p;
    }
    p->used = 1;
    return p;
  }
  if (tt == TT_OPHOT) {
    if (!p->dead) TIDAL_HOT(a, TT_OPHOT, p) = p; /* (was pushed out) */
    return p;
  }
  return NULL;
}

const void *tidal__op_get(lua_State *L, tidal_ctx *ctx, int idx) {
  op *o = (op *)lua_touserdata(L, idx);
  if (o == NULL || TIDAL_HOT(&ctx->aux, TT_OPHOT, o) == o) return o;
  return check_select_op(L, &ctx->aux, idx, o);
}

int tidal__op_try_fast(lua_State *L, const void *o) {
  const op *p = (const op *)o;
  return p->fast != NULL ? p->fast(L, p->target) : -2;
}

const void *tidal__op_push(lua_State *L, tidal_ctx *ctx, int idx, int *nargs) {
  idx = lua_absindex(L, idx);
  const op *o = (const op *)tidal__op_get(L, ctx, idx);
  if (o == NULL) return NULL;
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
  op *o = check_op(L, "Op:__call");
  lua_settop(L, 1);
  for (int i = 1; i <= o->nargs; i++) lua_getiuservalue(L, 1, i);
  lua_remove(L, 1);
  return o->run(L);
}

static int l_tostring(lua_State *L) {
  op *o = check_op(L, "Op:__tostring");
  lua_pushfstring(L, "tidal.Op (%s)", o->name);
  return 1;
}

/* TT_OPHOT's finalizer: out of the cache, for good */
static int l_gc(lua_State *L) {
  tidal_actx *a = (tidal_actx *)lua_touserdata(L, lua_upvalueindex(1));
  op *o = (op *)tidal__toud(L, a, 1, TT_OPHOT);
  if (o == NULL) return 0;
  o->dead = 1;
  if (TIDAL_HOT(a, TT_OPHOT, o) == o) TIDAL_HOT(a, TT_OPHOT, o) = NULL;
  return 0;
}

static const luaL_Reg meta[] = {
    {"__call", l_call}, {"__tostring", l_tostring}, {NULL, NULL}};
static const luaL_Reg hot_meta[] = {{"__call", l_call},
                                    {"__tostring", l_tostring},
                                    {"__gc", l_gc},
                                    {NULL, NULL}};

/* stack: module, ctx */
void tidal__op_open(lua_State *L) {
  tidal__newtype(L, TT_OP, OP_MT, "Op", meta, NULL);
  tidal__newtype(L, TT_OPHOT, OP_MT ".reused", "Op", hot_meta, NULL);
  /* the same name to Lua code (luaL_typeerror, luaL_tolstring) */
  tidal_actx *a = (tidal_actx *)lua_touserdata(L, -1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, a->mt_ref[TT_OPHOT]);
  lua_pushliteral(L, OP_MT);
  lua_setfield(L, -2, "__name");
  lua_pop(L, 1);
}
