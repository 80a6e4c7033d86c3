/*
** introspect.c: tidal.tasks() and tidal.stats().
*/
#include "lib.h"

static void set_str(lua_State *L, const char *k, const char *v) {
  lua_pushstring(L, v);
  lua_setfield(L, -2, k);
}

static void set_int(lua_State *L, const char *k, lua_Integer v) {
  lua_pushinteger(L, v);
  lua_setfield(L, -2, k);
}

int tidal__push_tasks(lua_State *L, tidal_worker *w) {
  tidal_ctx *ctx = w->ctx;
  int n = 0;
  lua_newtable(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->anchors_ref);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    tidal_task *t = (tidal_task *)lua_touserdata(L, -1);
    if (t->state != TS_DONE) {
      int h = lua_gettop(L);
      lua_createtable(L, 0, 6);
      set_int(L, "id", (lua_Integer)t->id);
      if (t->flags & TF_NAMED) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, ctx->names_ref);
        lua_pushvalue(L, h);
        lua_rawget(L, -2);
        lua_setfield(L, -3, "name");
        lua_pop(L, 1);
      }
      set_str(L, "state", ctx->cur == t ? "running" : tidal__state_name(t));
      if (t->state == TS_PARKED && t->op) set_str(L, "waiting", t->op->name);
      tidal__push_where(L, t, h);
      lua_setfield(L, -2, "where");
      if (!(t->flags & TF_INTERNAL)) { /* pooled handles are not shown */
        lua_pushvalue(L, h);
        lua_setfield(L, -2, "handle");
      }
      lua_rawseti(L, -5, ++n);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return 1;
}

int tidal__push_stats(lua_State *L, tidal_worker *w) {
  lua_createtable(L, 0, 12);
  set_int(L, "spawned", (lua_Integer)w->st.spawned);
  set_int(L, "alive", w->st.alive);
  set_int(L, "parked", w->st.parked);
  set_int(L, "runnable", w->rq_len);
  set_int(L, "finished", (lua_Integer)w->st.finished);
  set_int(L, "failed", (lua_Integer)w->st.failed);
  set_int(L, "cancelled", (lua_Integer)w->st.cancelled);
  set_int(L, "resumes", (lua_Integer)w->st.resumes);
  set_int(L, "polls", (lua_Integer)w->st.polls);
  set_int(L, "timers", w->timers.n);
  set_int(L, "pooled_coroutines", w->npool);
  /* per worker: one worker today; the same fields for each */
  lua_createtable(L, 1, 0);
  lua_pushvalue(L, -2);
  lua_rawseti(L, -2, 1);
  lua_setfield(L, -2, "workers");
  return 1;
}

static tidal_worker *current(lua_State *L, const char *fname) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  if (ctx->w == NULL)
    luaL_error(L,
               "%s: no runtime is running (call it inside tidal.run, or use "
               "rt:%s() on a runtime)",
               fname, fname + 6);
  return ctx->w;
}

static int l_tasks(lua_State *L) {
  return tidal__push_tasks(L, current(L, "tidal.tasks"));
}

static int l_stats(lua_State *L) {
  return tidal__push_stats(L, current(L, "tidal.stats"));
}

static int l_current(lua_State *L) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  tidal_task *t = ctx->cur;
  if (t == NULL || t->co != L) {
    lua_pushnil(L);
    return 1;
  }
  lua_pushinteger(L, (lua_Integer)t->id);
  return 1;
}

static const luaL_Reg funcs[] = {{"tasks", l_tasks},
                                 {"stats", l_stats},
                                 {"current_id", l_current},
                                 {NULL, NULL}};

/* stack: module, ctx */
void tidal__introspect_open(lua_State *L) {
  tidal__register(L, funcs);
}
