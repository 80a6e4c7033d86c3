/*
** handle.c: the JoinHandle -- the Lua side of a task (the task itself, its
** outcome and those waiting for it are the kernel's: kernel/task.c) -- and
** tidal.spawn. A handle is the payload of its task's userdata, so its
** methods read the task directly.
*/
#include "lib.h"

static tidal_task *check_handle(lua_State *L, int idx, const char *fname) {
  return (tidal_task *)tidal__checkud(L, idx, TT_HANDLE, fname);
}

static int await_k(lua_State *L, int status, lua_KContext k);
static int join_k(lua_State *L, int status, lua_KContext k);

static int await_cancel(tidal_task *t) {
  tidal__task_unjoin((tidal_task *)t->wobj, t);
  return 1;
}

static const tidal_waitop await_op = {"JoinHandle:await", await_cancel, NULL};

static int wait_for(lua_State *L, const char *fname,
                    const tidal_restart *again, int raise, lua_KFunction k) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  tidal_task *h = (tidal_task *)tidal__toud(L, &ctx->aux, 1, TT_HANDLE);
  tidal_task *t = ctx->cur;
  if (h == NULL) check_handle(L, 1, fname); /* raises */
  if (h->state == TS_DONE) {
    /* ready at once: still spends the budget, as any wait does */
    if (t != NULL && t->co == L && lua_isyieldable(L))
      TIDAL_SPEND(L, t, again);
    return tidal__push_outcome(L, h, 1, raise); /* (above any extra) */
  }
  lua_settop(L, 1);
  t = tidal__wait_begin(L, fname);
  if (t == h)
    luaL_error(L, "%s: a task cannot wait for itself (it would never finish)",
               fname);
  if (h->w != t->w)
    luaL_error(L, "%s: the task belongs to another runtime", fname);
  TIDAL_SPEND(L, t, again);
  if (tidal__task_join(h, t)) luaL_error(L, "%s: not enough memory", fname);
  return tidal__park(L, t, &await_op, h, k);
}

static int l_await(lua_State *L);
static int l_join(lua_State *L);
static const tidal_restart await_again = {l_await};
static const tidal_restart join_again = {l_join};

static int l_await(lua_State *L) {
  return wait_for(L, "JoinHandle:await", &await_again, 1, await_k);
}

static int l_join(lua_State *L) {
  return wait_for(L, "JoinHandle:join", &join_again, 0, join_k);
}

static int wait_k(lua_State *L, lua_KContext k, int raise) {
  tidal_task *t = (tidal_task *)k;
  tidal__resumed(L, t);
  return tidal__push_outcome(L, (tidal_task *)lua_touserdata(L, 1), 1, raise);
}

static int await_k(lua_State *L, int status, lua_KContext k) {
  (void)status;
  return wait_k(L, k, 1);
}

static int join_k(lua_State *L, int status, lua_KContext k) {
  (void)status;
  return wait_k(L, k, 0);
}

static int l_abort(lua_State *L) {
  tidal_task *t = check_handle(L, 1, "JoinHandle:abort");
  tidal__cancel(t, CK_ABORT);
  return 0;
}

static int l_is_finished(lua_State *L) {
  tidal_task *t = check_handle(L, 1, "JoinHandle:is_finished");
  lua_pushboolean(L, t->state == TS_DONE);
  return 1;
}

static int l_id(lua_State *L) {
  tidal_task *t = check_handle(L, 1, "JoinHandle:id");
  lua_pushinteger(L, (lua_Integer)t->id);
  return 1;
}

static int l_name(lua_State *L) {
  tidal_task *t = check_handle(L, 1, "JoinHandle:name");
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  if (!(t->flags & TF_NAMED)) return 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, ctx->names_ref);
  lua_pushvalue(L, 1);
  lua_rawget(L, -2);
  return 1;
}

static int l_tostring(lua_State *L) {
  tidal_task *t = check_handle(L, 1, "JoinHandle:__tostring");
  const char *st = tidal__state_name(t);
  if (t->state == TS_DONE)
    st = (t->flags & TF_FAILED)      ? "failed"
         : (t->flags & TF_CANCELLED) ? "cancelled"
                                     : "done";
  lua_pushliteral(L, "tidal.JoinHandle: ");
  tidal__push_label(L, t, 1);
  lua_pushfstring(L, " (%s)", st);
  lua_concat(L, 3);
  return 1;
}

static const luaL_Reg handle_methods[] = {
    {"await", l_await},   {"join", l_join}, {"abort", l_abort},
    {"is_finished", l_is_finished}, {"id", l_id}, {"name", l_name},
    {NULL, NULL}};

static const luaL_Reg handle_meta[] = {
    {"__tostring", l_tostring}, {NULL, NULL}};

/* tidal.spawn([opts,] fn, ...) */
static int l_spawn(lua_State *L) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  if (ctx->w == NULL)
    luaL_error(L,
               "tidal.spawn: not inside a tidal task (wrap the code in "
               "tidal.run, or use rt:spawn on a runtime)");
  tidal__spawn(L, ctx->w, 1);
  return 1;
}

static const luaL_Reg funcs[] = {{"spawn", l_spawn}, {NULL, NULL}};

/* stack: module, ctx */
void tidal__handle_open(lua_State *L) {
  tidal__register(L, funcs);
  tidal__newtype(L, TT_HANDLE, TIDAL_HANDLE_MT, "JoinHandle", handle_meta,
                 handle_methods);
}
