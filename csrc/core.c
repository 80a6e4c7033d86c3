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

static const char *const type_names[TT_N] = {
    "JoinHandle", "Runtime",  "Group",          "Sender",        "Receiver",
    "OneshotSender", "OneshotReceiver", "BroadcastSender", "BroadcastReceiver",
    "WatchSender",   "WatchReceiver",   "Mutex",           "RwLock",
    "Guard",         "Semaphore",       "Permit",          "Notify",
    "Op",            "JoinHandle",      "FailureReport",   "Interval",
    "Stream",        "Listener",        "UdpSocket",       "File",
    "Child",         "SignalListener"};

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

void tidal__setmt(lua_State *L, tidal_ctx *ctx, int tt) {
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
  tidal__net_open(L);
  tidal__fs_open(L);
  tidal__process_open(L);
  tidal__signal_open(L);
  lua_pop(L, 1);
  lua_pushliteral(L, TIDAL_VERSION);
  lua_setfield(L, -2, "_VERSION");
  return 1;
}
