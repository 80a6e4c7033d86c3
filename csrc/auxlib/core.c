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

#include <stdio.h>
#include <string.h>

#define CTX_KEY "tidal.ctx"

tidal_ctx *tidal__ctx(lua_State *L) {
  tidal_ctx *ctx;
  lua_getfield(L, LUA_REGISTRYINDEX, CTX_KEY);
  ctx = (tidal_ctx *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  return ctx;
}

tidal_ctx *tidal__ctx_need(lua_State *L) {
  tidal_ctx *ctx = tidal__ctx(L);
  if (ctx != NULL) return ctx;
  /* A handle arrived in a state that never loaded tidal.core (a pool state,
  ** a state a host made): load it, so the handle has its type and
  ** methods there. */
  luaL_requiref(L, "tidal.core", luaopen_tidal_core, 0);
  lua_pop(L, 1);
  if ((ctx = tidal__ctx(L)) == NULL) { /* package.loaded had another one */
    lua_pushcfunction(L, luaopen_tidal_core);
    lua_call(L, 0, 1);
    lua_pop(L, 1);
    ctx = tidal__ctx(L);
  }
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
  ctx->msgh_ref = ctx->error_mt_ref = LUA_NOREF;
  ctx->tbs_ref = ctx->stbs_ref = ctx->names_ref = LUA_NOREF;
  ctx->nstbs = 0;
  ctx->pool = 0;
  ctx->job = NULL;
  for (int i = 0; i < TT_N; i++) {
    ctx->mt[i] = NULL;
    ctx->mt_ref[i] = LUA_NOREF;
    for (int j = 0; j < 4; j++) ctx->hot[i][j] = NULL;
  }
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

static const char *const type_names[TT_N] = {
    "JoinHandle", "Runtime",  "Group",          "Sender",        "Receiver",
    "OneshotSender", "OneshotReceiver", "BroadcastSender", "BroadcastReceiver",
    "WatchSender",   "WatchReceiver",   "Mutex",           "RwLock",
    "Guard",         "Semaphore",       "Permit",          "Notify",
    "Op",            "JoinHandle",      "FailureReport"};

const char *tidal__typename(int tt) {
  return type_names[tt];
}

void tidal__newtype(lua_State *L, int tt, const char *name,
                    const luaL_Reg *meta, const luaL_Reg *methods) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, -1);
  if (ctx->mt[tt] != NULL) return; /* loaded before in this state */
  luaL_newmetatable(L, name);
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
  ctx->mt[tt] = lua_topointer(L, -1);
  ctx->mt_ref[tt] = luaL_ref(L, LUA_REGISTRYINDEX);
}

void *tidal__toud(lua_State *L, tidal_ctx *ctx, int idx, int tt) {
  void *p = lua_touserdata(L, idx);
  if (p != NULL && lua_getmetatable(L, idx)) {
    const void *mt = lua_topointer(L, -1);
    lua_pop(L, 1);
    if (mt == ctx->mt[tt]) return p;
  }
  return NULL;
}

void *tidal__checkud(lua_State *L, int idx, int tt, const char *fname) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  void *p = tidal__toud(L, ctx, idx, tt);
  if (p == NULL) {
    if (idx == 1)
      luaL_error(L, "%s: expected a %s as self, got %s (call it with ':')",
                 fname, type_names[tt], luaL_typename(L, idx));
    else
      luaL_error(L, "%s: argument #%d must be a %s, got %s", fname, idx - 1,
                 type_names[tt], luaL_typename(L, idx));
  }
  return p;
}

int tidal__closed_error(lua_State *L, const char *fname, const char *what) {
  return luaL_error(L, "%s: attempt to use a closed %s", fname, what);
}

void tidal__setmt(lua_State *L, tidal_ctx *ctx, int tt) {
  if (ctx == NULL) ctx = tidal__ctx_need(L); /* (see there) */
  lua_rawgeti(L, LUA_REGISTRYINDEX, ctx->mt_ref[tt]);
  lua_setmetatable(L, -2);
}

int luaopen_tidal_core(lua_State *L) {
  lua_newtable(L);
  push_ctx(L);
  tidal__error_open(L);
  tidal__task_open(L);
  tidal__runtime_open(L);
  tidal__time_open(L);
  tidal__timeout_open(L);
  tidal__group_open(L);
  tidal__channel_open(L);
  tidal__oneshot_open(L);
  tidal__broadcast_open(L);
  tidal__watch_open(L);
  tidal__lock_open(L);
  tidal__semaphore_open(L);
  tidal__notify_open(L);
  tidal__op_open(L);
  tidal__parallel_open(L);
  tidal__blocking_open(L);
  tidal__introspect_open(L);
  tidal__http_open(L);
  lua_pop(L, 1);
  lua_pushliteral(L, TIDAL_VERSION);
  lua_setfield(L, -2, "_VERSION");
  return 1;
}

/* ------------------------------------------------------ orphaned waits */

static int orphan_cancel(tidal_task *t) {
  (void)t;
  return 1; /* registered nowhere any more */
}

static const tidal_waitop orphan_op = {"(an object that was finalized)",
                                       orphan_cancel};

void tidal__wq_orphan(tidal_wq *q, tidal_worker *cur) {
  tidal_task *t;
  while ((t = tidal__wq_pop(q)) != NULL) {
    t->qprev = NULL;
    t->op = &orphan_op;
    t->wobj = NULL;
    if ((t->flags & TF_XWAIT) && t->w == cur) { /* no other thread wakes it */
      t->flags &= ~TF_XWAIT;
      tidal__external(cur, -1);
    }
  }
}
