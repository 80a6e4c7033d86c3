/*
** spawn.c: tidal.spawn_parallel([opts,] fn, ...) -- a task on another
** worker of the runtime (the least loaded one), given its function and
** arguments copied, with a remote JoinHandle (rhandle.c) over its record
** (record.c).
*/
#include "parallel.h"

#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------ on the target */

typedef struct start_args {
  tidal_record *r;
  tidal_worker *w;
} start_args;

static int start_protected(lua_State *L) {
  start_args *a = (start_args *)lua_touserdata(L, 1);
  tidal_record *r = a->r;
  int base = lua_gettop(L);
  if (r->name[0]) {
    lua_createtable(L, 0, 1);
    lua_pushstring(L, r->name);
    lua_setfield(L, -2, "name");
  }
  int n = tidal__xfer_decode(L, r->in.data, r->in.len);
  if (n < 1) return lua_error(L);
  tidal__xfer_discard(r->in.data, r->in.len);
  tidal__buf_free(&r->in);
  tidal_task *t = tidal__spawn(L, a->w, base + 1);
  if (t->state == TS_DONE) return 0; /* shutting down: never runs */
  if (tidal__record_subscribe(r, t)) /* (it cancels t when aborted) */
    return luaL_error(L, "not enough memory");
  return 0;
}

/* The task will never run: release what its arguments hold now (channel
** ends, handles), not when the last JoinHandle is collected. */
static void drop_input(tidal_record *r) {
  if (r->in.data) tidal__xfer_discard(r->in.data, r->in.len);
  tidal__buf_free(&r->in);
}

/* Spawns r's task on w, or finishes r when it cannot run. */
static void start(tidal_worker *w, lua_State *L, tidal_record *r) {
  tidal_buf none = {NULL, 0, 0};
  start_args a = {r, w};
  uv_mutex_lock(&r->mu);
  int aborted = r->abort;
  uv_mutex_unlock(&r->mu);
  if (w->closing || aborted) {
    drop_input(r);
    tidal__record_finish(r, w, TIDAL_R_CANCELLED, &none);
    tidal__record_unref(r);
    return;
  }
  int top = lua_gettop(L);
  lua_pushcfunction(L, start_protected);
  lua_pushlightuserdata(L, &a);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK || r->task == NULL) {
    tidal_buf buf = {NULL, 0, 0};
    drop_input(r);
    if (lua_gettop(L) > top && lua_isstring(L, -1)) { /* could not start */
      lua_pushnil(L);
      tidal__encode_outcome(L, 0, 2, NULL, &buf); /* (pops both) */
      tidal__record_finish(r, w, TIDAL_R_FAILED, &buf);
    } else {
      tidal__record_finish(r, w, TIDAL_R_CANCELLED, &none);
    }
    tidal__record_unref(r);
  } /* else the task holds the target's reference until it publishes */
  lua_settop(L, top);
}

/* The worker's assigned count drops only once the task counts in its load
** (or will never run): between the two, tidal__family_pick saw the worker
** empty and placed the next task there too, beside a task that never
** waits, while another worker was idle. */
static void start_msg(tidal_worker *w, lua_State *L, void *arg) {
  start(w, L, (tidal_record *)arg);
  atomic_fetch_sub(&w->assigned, 1);
}

/* ------------------------------------------------------- the caller */

/* tidal.spawn_parallel([opts,] fn, ...) */
static int l_spawn_parallel(lua_State *L) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  tidal_worker *w = ctx->w;
  int fn = 1;
  if (w == NULL)
    return luaL_error(L, "tidal.spawn_parallel: not inside a tidal task "
                         "(wrap the code in tidal.run)");
  if (lua_type(L, 1) == LUA_TTABLE && !tidal__is_callable(L, 1)) fn = 2;
  if (lua_type(L, fn) != LUA_TFUNCTION)
    return luaL_error(L,
                      "tidal.spawn_parallel: expected a Lua function to run "
                      "on a worker, got %s",
                      lua_type(L, fn) == LUA_TNONE ? "no value"
                                                   : luaL_typename(L, fn));
  /* everything that may raise comes before the record is allocated */
  char name[sizeof ((tidal_record *)0)->name] = "";
  if (fn == 2) {
    static const char *const known[] = {"name", NULL};
    tidal__check_option_names(L, 1, "tidal.spawn_parallel", known);
    int ty = lua_getfield(L, 1, "name");
    if (ty == LUA_TSTRING)
      snprintf(name, sizeof name, "%s", lua_tostring(L, -1));
    else if (ty != LUA_TNIL)
      return luaL_error(L, "tidal.spawn_parallel: option 'name' must be a "
                           "string, got %s", luaL_typename(L, -1));
    lua_pop(L, 1);
  }
  int n = lua_gettop(L) - fn + 1;
  if (n - 1 > TIDAL_MAX_ARGS)
    return luaL_error(L, "tidal.spawn_parallel: too many arguments (%d; at "
                         "most %d: pass a table instead)", n - 1,
                      TIDAL_MAX_ARGS);
  luaL_checkstack(L, 4, "tidal.spawn_parallel");
  tidal_record **slot = tidal__push_rhandle(L, ctx, NULL); /* closed */
  tidal_record *r = tidal__record_new();
  if (r == NULL) return luaL_error(L, "tidal.spawn_parallel: not enough memory");
  memcpy(r->name, name, sizeof name);
  if (tidal__xfer_encode(L, fn, n, "args", &r->in)) {
    lua_pushfstring(L, "tidal.spawn_parallel: %s (copy only plain data, Lua "
                       "functions and tidal handles to another worker)",
                    lua_tostring(L, -1));
    tidal__record_unref(r);
    return lua_error(L);
  }
  tidal__record_target(r, tidal__family_pick(w->family),
                       atomic_fetch_add(&w->family->next_id, 1), 1);
  tidal__record_ref(r); /* the target's */
  int rc = tidal__wake_remote(r->target, NULL, start_msg, r);
  if (rc) {
    atomic_fetch_sub(&r->target->assigned, 1);
    tidal__record_unref(r);
    if (rc != UV_ECANCELED) {
      tidal__record_unref(r);
      return luaL_error(L, "tidal.spawn_parallel: not enough memory");
    }
    /* the worker stopped meanwhile (the runtime is shutting down): as a
    ** task spawned then, it is cancelled before it starts */
    tidal_buf none = {NULL, 0, 0};
    drop_input(r);
    tidal__record_finish(r, w, TIDAL_R_CANCELLED, &none);
  }
  *slot = r; /* the handle (on top) takes the caller's reference */
  return 1;
}

static const luaL_Reg funcs[] = {{"spawn_parallel", l_spawn_parallel},
                                 {NULL, NULL}};

/* stack: module, ctx */
void tidal__parallel_open(lua_State *L) {
  tidal__register(L, funcs);
}
