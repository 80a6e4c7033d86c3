/*
** task.c: tasks and their JoinHandles. A task is a Lua coroutine owned by
** the C struct tidal_task, which is the payload of the JoinHandle userdata
** (see kernel.h for the layout of its uservalues).
**
** A task gets its coroutine only when it first runs, from the worker's pool
** of idle coroutines; when it ends the coroutine goes back to the pool. So a
** burst of short tasks spawned before any runs costs one userdata each, not
** one coroutine each. A coroutine runs task after task without returning
** (see run_body): between two tasks it waits, idle, in a yield.
**
** The body runs under lua_pcallk inside the coroutine (run_body): errors and
** cancellations unwind there, <close> variables run (and may still wait),
** and the message handler records the traceback where the error was raised.
*/
#include "kernel.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define UV_FN 1  /* uservalue: the function (until the task is done) */
#define UV_ARG 2 /* uservalue: its first argument (unless in t->v) */
#define UV_OUT 1 /* uservalue: first result, or packed results / failure */

const char *tidal__state_name(const tidal_task *t) {
  static const char *const names[] = {"new", "runnable", "running", "parked",
                                      "done"};
  return names[t->state];
}

/* Pushes the handle of alive task t. */
void tidal__push_handle(lua_State *L, tidal_task *t) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->w->anchors_ref);
  lua_rawgeti(L, -1, t->slot);
  lua_remove(L, -2);
}

void tidal__push_label(lua_State *L, tidal_task *t, int handle) {
  if (t->flags & TF_NAMED) {
    tidal_ctx *ctx = tidal__ctx(L);
    if (handle)
      lua_pushvalue(L, handle);
    else
      tidal__push_handle(L, t);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ctx->names_ref);
    lua_insert(L, -2);
    lua_rawget(L, -2);
    lua_remove(L, -2);
    if (lua_isstring(L, -1)) {
      lua_pushfstring(L, "task %I (%s)", (lua_Integer)t->id,
                      lua_tostring(L, -1));
      lua_remove(L, -2);
      return;
    }
    lua_pop(L, 1);
  }
  lua_pushfstring(L, "task %I", (lua_Integer)t->id);
}

/* Pushes "source:line" where task t (handle at ud) is: the innermost Lua
** frame of its coroutine, or where its function is defined if it has not
** started. */
void tidal__push_where(lua_State *L, tidal_task *t, int ud) {
  lua_Debug ar;
  ud = lua_absindex(L, ud);
  if (t->state == TS_NEW) {
    lua_getiuservalue(L, ud, 1);
    if (lua_type(L, -1) == LUA_TFUNCTION) {
      lua_getinfo(L, ">S", &ar);
      lua_pushfstring(L, "%s:%d (not started)", ar.short_src, ar.linedefined);
    } else {
      lua_pop(L, 1);
      lua_pushliteral(L, "? (not started)");
    }
    return;
  }
  if (t->co != NULL) {
    for (int level = 0; lua_getstack(t->co, level, &ar); level++) {
      lua_getinfo(t->co, "Sl", &ar);
      if (ar.currentline > 0) {
        lua_pushfstring(L, "%s:%d", ar.short_src, ar.currentline);
        return;
      }
    }
  }
  lua_pushliteral(L, "?");
}

/* ----------------------------------------------------------------- spawn */

/* One value a task keeps in C (t->v) instead of a uservalue of its handle:
** its only argument, then its only result, when it is nil, a boolean, a
** number or a light userdata (nothing for the collector to see). */
static int is_scalar(int type) {
  return type == LUA_TNIL || type == LUA_TBOOLEAN || type == LUA_TNUMBER ||
         type == LUA_TLIGHTUSERDATA;
}

/* The value at idx, of the given type (is_scalar), into t->v. */
static void keep_scalar(lua_State *L, tidal_task *t, int idx, int type) {
  switch (type) {
  case LUA_TNIL:
    t->vt = TV_NIL;
    break;
  case LUA_TBOOLEAN:
    t->vt = TV_BOOL;
    t->v.i = lua_toboolean(L, idx);
    break;
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx)) {
      t->vt = TV_INT;
      t->v.i = lua_tointeger(L, idx);
    } else {
      t->vt = TV_FLT;
      t->v.n = lua_tonumber(L, idx);
    }
    break;
  default:
    t->vt = TV_LUD;
    t->v.p = lua_touserdata(L, idx);
    break;
  }
}

static void push_scalar(lua_State *L, const tidal_task *t) {
  switch (t->vt) {
  case TV_NIL:
    lua_pushnil(L);
    break;
  case TV_BOOL:
    lua_pushboolean(L, (int)t->v.i);
    break;
  case TV_INT:
    lua_pushinteger(L, t->v.i);
    break;
  case TV_FLT:
    lua_pushnumber(L, t->v.n);
    break;
  default:
    lua_pushlightuserdata(L, t->v.p);
    break;
  }
}

/* Sets every uservalue of the handle at h (absolute) to nil. */
static void clear_uvs(lua_State *L, int h) {
  int i = 1;
  do
    lua_pushnil(L);
  while (lua_setiuservalue(L, h, i++)); /* (0 past the last one) */
}

/* Whether the handle at h (absolute) has n uservalues. */
static int has_uv(lua_State *L, int h, int n) {
  int has = lua_getiuservalue(L, h, n) != LUA_TNONE;
  lua_pop(L, 1);
  return has;
}

/* A new task: every field zero, but for a few. Field by field: a memset
** of the whole struct compiles to a rep stos, several times slower on
** the new memory of every handle. */
static void task_init(tidal_task *t, int nres, int flags) {
  _Static_assert(sizeof(tidal_task) == 96,
                 "task_init sets every field of tidal_task");
  t->co = NULL;
  t->w = NULL;
  t->qnext = t->qprev = NULL;
  t->op = NULL;
  t->wobj = NULL;
  t->ext = NULL;
  t->id = 0;
  t->slot = 0;
  t->nres = nres;
  t->v.i = 0; /* (and k) */
  t->flags = (uint16_t)flags;
  t->state = TS_NEW;
  t->cancel = t->budget = t->tmo = 0;
  t->vt = TV_NONE;
  t->coslot = 0;
}

/* t, whose handle is on top, becomes a live task of w: the anchors table
** keeps the handle (and so its coroutine) while it lives. */
static void anchor(lua_State *L, tidal_worker *w, tidal_task *t) {
  t->w = w;
  t->slot = tidal__slot_alloc(w);
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->anchors_ref);
  lua_pushvalue(L, -2);
  lua_rawseti(L, -2, t->slot);
  lua_pop(L, 1);
  w->st.alive++;
  atomic_store_explicit(&w->load, (int)w->st.alive, memory_order_relaxed);
}

/* Spawns stack[first] (options table optional) with the values above it as
** arguments; pushes the JoinHandle. */
tidal_task *tidal__spawn(lua_State *L, tidal_worker *w, int first) {
  tidal_ctx *ctx = w->ctx;
  int top = lua_gettop(L);
  int fn = first;
  int ty = lua_type(L, fn);
  if (ty == LUA_TTABLE && !tidal__is_callable(L, fn)) fn++;
  if (ty != LUA_TFUNCTION && (fn > top || !tidal__is_callable(L, fn)))
    luaL_error(L,
               "tidal.spawn: expected a function to run as the task%s, got %s",
               fn > first ? " after the options table" : "",
               fn > top ? "no value" : luaL_typename(L, fn));
  int nargs = top - fn;
  int aty = nargs == 1 ? lua_type(L, top) : LUA_TNONE;
  int scalar = nargs == 1 && is_scalar(aty); /* kept in t->v */
  int nuv = nargs == 0 || scalar ? 1 : 1 + nargs;
  int name = 0;
  if (nargs > TIDAL_MAX_ARGS) /* they live in the handle's uservalues */
    luaL_error(L, "tidal.spawn: too many arguments (%d; at most %d: pass a "
                  "table instead)", nargs, TIDAL_MAX_ARGS);
  if (fn > first) {
    static const char *const known[] = {"name", NULL};
    tidal__check_option_names(L, first, "tidal.spawn", known);
    int ty = lua_getfield(L, first, "name");
    if (ty == LUA_TSTRING)
      name = 1;
    else if (ty != LUA_TNIL)
      luaL_error(L, "tidal.spawn: option 'name' must be a string, got %s",
                 luaL_typename(L, -1));
    else
      lua_pop(L, 1);
    /* the name string stays on the stack until it is in the names table */
  }
  tidal_task *t = (tidal_task *)lua_newuserdatauv(L, sizeof *t, nuv);
  task_init(t, nargs, 0); /* (nres: the arguments, until it starts) */
  tidal__setmt(L, &ctx->aux, TT_HANDLE);
  lua_pushvalue(L, fn);
  lua_setiuservalue(L, -2, UV_FN);
  if (scalar) {
    keep_scalar(L, t, top, aty);
  } else {
    for (int i = 1; i <= nargs; i++) {
      lua_pushvalue(L, fn + i);
      lua_setiuservalue(L, -2, UV_FN + i);
    }
  }
  if (name) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, ctx->names_ref);
    lua_pushvalue(L, -2);
    lua_pushvalue(L, -4);
    lua_rawset(L, -3);
    lua_pop(L, 1);
    lua_remove(L, -2); /* the name: now kept alive by names[handle] */
    t->flags |= TF_NAMED;
  }
  t->id = w->next_id++;
  w->st.spawned++;
  if (w->closing) { /* shutting down: cancelled before it could start */
    t->state = TS_DONE;
    t->flags |= TF_CANCELLED | TF_NOSTART;
    t->cancel = CK_SHUTDOWN;
    w->st.cancelled++;
    return t;
  }
  anchor(L, w, t);
  tidal__runq_push(w, t);
  return t;
}

tidal_task *tidal__spawn_internal(lua_State *L, tidal_worker *w, int fnidx) {
  tidal_task *t;
  fnidx = lua_absindex(L, fnidx);
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->ipool_ref);
  if (w->nipool > 0) {
    lua_rawgeti(L, -1, w->nipool);
    lua_pushnil(L);
    lua_rawseti(L, -3, w->nipool--);
    lua_remove(L, -2);
    t = (tidal_task *)lua_touserdata(L, -1);
  } else {
    lua_pop(L, 1);
    t = (tidal_task *)lua_newuserdatauv(L, sizeof *t, 2);
    tidal__setmt(L, &w->ctx->aux, TT_HANDLE);
  }
  task_init(t, 0, TF_INTERNAL);
  lua_pushvalue(L, fnidx);
  lua_setiuservalue(L, -2, UV_FN);
  t->id = w->next_id++;
  w->st.spawned++;
  anchor(L, w, t);
  return t;
}

void tidal__spawn_internal_done(lua_State *L, tidal_worker *w, int hidx) {
  tidal_task *t = (tidal_task *)lua_touserdata(L, hidx);
  if (t->state != TS_DONE || t->w != NULL) return; /* not released: keep */
  hidx = lua_absindex(L, hidx);
  clear_uvs(L, hidx);
  t->vt = TV_NONE;
  if (w->nipool >= TIDAL_POOL_MAX) return;
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->ipool_ref);
  lua_pushvalue(L, hidx);
  lua_rawseti(L, -2, ++w->nipool);
  lua_pop(L, 1);
}

/* ------------------------------------------------------------- task body */

/* Message handler: runs where the error was raised, stack intact. */
static int task_msgh(lua_State *L) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  tidal_task *t = ctx->cur;
  if (t == NULL) return 1;
  if (t->cancel && tidal__error_kind(L, 1) != NULL) return 1; /* our own */
  if (t->flags & TF_RERAISE) {
    t->flags &= ~TF_RERAISE;
    /* recorded where first raised */
    if (tidal__traceback_get(L, &ctx->aux, 1)) {
      lua_pop(L, 1);
      return 1;
    }
  }
  lua_pushliteral(L, "in ");
  tidal__push_label(L, t, 0);
  lua_concat(L, 2);
  luaL_traceback(L, L, lua_tostring(L, -1), 1);
  tidal__traceback_set(L, &ctx->aux, 1, lua_gettop(L));
  lua_settop(L, 1);
  return 1;
}

static void store_results(lua_State *L, tidal_task *t, int h, int first,
                          int n) {
  int type = LUA_TNONE;
  t->nres = n;
  if (n == 0 || (n == 1 && is_scalar(type = lua_type(L, first)))) {
    if (n) keep_scalar(L, t, first, type);
    lua_pushnil(L); /* the function goes */
    lua_setiuservalue(L, h, UV_FN);
  } else if (n == 1 || has_uv(L, h, n)) {
    for (int i = 0; i < n; i++) {
      lua_pushvalue(L, first + i);
      lua_setiuservalue(L, h, UV_OUT + i);
    }
  } else {
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
      lua_pushvalue(L, first + i);
      lua_rawseti(L, -2, i + 1);
    }
    lua_setiuservalue(L, h, UV_OUT);
    t->flags |= TF_PACKED;
  }
}

/* the handle at h, the error at err */
static void store_failure(lua_State *L, tidal_task *t, int h, int err) {
  tidal_ctx *ctx = t->w->ctx;
  const char *kind = tidal__error_kind(L, err);
  if (t->cancel && kind &&
      (strcmp(kind, "cancelled") == 0 || strcmp(kind, "deadlock") == 0 ||
       strcmp(kind, "interrupted") == 0))
    t->flags |= TF_CANCELLED;
  else
    t->flags |= TF_FAILED;
  lua_createtable(L, 2, 0);
  lua_pushvalue(L, err);
  lua_rawseti(L, -2, 1);
  if (tidal__traceback_get(L, &ctx->aux, err)) lua_rawseti(L, -2, 2);
  if ((t->flags & TF_FAILED) && !(t->flags & TF_INTERNAL)) {
    /* Handles have no __gc (a finalizer would cost every task): a failed
    ** one gets a report object instead, collected with it, whose __gc says
    ** the error if nobody observed it. It refers back to the handle. */
    lua_newuserdatauv(L, 0, 1);
    tidal__setmt(L, &ctx->aux, TT_REPORT);
    lua_pushvalue(L, h);
    lua_setiuservalue(L, -2, 1);
    lua_rawseti(L, -2, 3);
  }
  lua_setiuservalue(L, h, UV_OUT);
  if ((t->flags & TF_FAILED) && !(t->flags & TF_INTERNAL) &&
      (t->ext == NULL || (t->ext->joiners == NULL && t->ext->set == NULL &&
                          t->ext->subs == NULL))) {
    /* nobody waits for it yet: report it if nobody ever does, once its
    ** handle is dropped (the scheduler looks for that soon: sched.c) */
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->w->side_ref);
    lua_rawgeti(L, -1, SIDE_UNOBSERVED);
    lua_pushvalue(L, h);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    lua_pop(L, 2);
    t->w->report_every = TIDAL_REPORT_AFTER;
    if (t->w->report_at == 0)
      t->w->report_at = uv_hrtime() + TIDAL_REPORT_AFTER;
  }
}

/*
** A task's coroutine runs one task after another: when a task ends, the
** coroutine stays inside its base function and yields, idle, back to the
** scheduler, which keeps it in the worker's pool for the next task. So the
** closer and the message handler are set up once per coroutine, not once
** per task (a to-be-closed variable costs a close at every return). Its
** stack:
**   1 closer (to-be-closed)  2 message handler  3 IDLE_KEY
**   4 the worker's anchors table
**   5 the task's handle      6 its function      7.. its arguments
** An ended task's body yields IDLE_KEY as its one value, which no Lua code
** can yield: that is how step tells an end from a wait. Or, when the next
** task in the run queue has not started yet, the coroutine runs it at once
** (chain, below).
*/
#define CO_MSGH 2
#define CO_KEY 3
#define CO_ANCHORS 4
#define CO_HANDLE 5
#define CO_FN 6
static const char idle_key = 0;
#define IDLE_KEY ((void *)&idle_key)

static int body_k(lua_State *L, int status, lua_KContext k);
static int ran_outside(lua_State *L, tidal_task *t);
static int chain(lua_State *L, tidal_worker *w, tidal_task *t);
static int idle_k(lua_State *L, int status, lua_KContext kc);

/* The body of the task at CO_HANDLE ended with status: its outcome is
** stored. Returns 1 when the next task is set up to run in this coroutine
** (chain). *ctx: the state's context. */
static int task_end(lua_State *L, int status, tidal_ctx **ctx) {
  tidal_task *t = (tidal_task *)lua_touserdata(L, CO_HANDLE);
  *ctx = t->w->ctx;
  if ((*ctx)->cur != t) return ran_outside(L, t);
  if (status == LUA_OK || status == LUA_YIELD)
    store_results(L, t, CO_HANDLE, CO_FN, lua_gettop(L) - CO_HANDLE);
  else
    store_failure(L, t, CO_HANDLE, CO_FN);
  lua_settop(L, CO_ANCHORS);
  return chain(L, t->w, t);
}

/* No task runs in the coroutine now: it yields, idle, to the scheduler. */
static int go_idle(lua_State *L, tidal_ctx *ctx) {
  lua_pushvalue(L, CO_KEY); /* IDLE_KEY: the task ended */
  return lua_yieldk(L, 1, (lua_KContext)ctx, idle_k);
}

/* stack: as above, with the task's handle, function and arguments. The
** tasks of a chain run in this loop, one after the other. */
static int run_body(lua_State *L) {
  tidal_ctx *ctx;
  int status;
  do
    status = lua_pcallk(L, lua_gettop(L) - CO_FN, LUA_MULTRET, CO_MSGH, 0,
                        body_k);
  while (task_end(L, status, &ctx));
  return go_idle(L, ctx);
}

/* Resumed while idle: by the scheduler, with the next task's handle,
** function and arguments; or by Lua code holding a finished task's
** coroutine (coroutine.running() kept past its end): refused, as a resume
** of a waiting task is (sched.c), and it stays idle. */
static int idle_k(lua_State *L, int status, lua_KContext kc) {
  tidal_ctx *ctx = (tidal_ctx *)kc;
  tidal_task *t = ctx->cur;
  (void)status;
  if (t != NULL && t->co == L && t->state == TS_RUNNING) return run_body(L);
  lua_settop(L, CO_ANCHORS);
  if (lua_checkstack(L, 2)) {
    lua_pushliteral(L,
                    "coroutine.resume: cannot resume the coroutine of a "
                    "finished task: tidal keeps it for later tasks, and only "
                    "its scheduler may resume it");
    tidal__refuse(L);
  }
  return lua_yieldk(L, 0, kc, idle_k);
}

/* The body returned after it waited at least once (a continuation). */
static int body_k(lua_State *L, int status, lua_KContext k) {
  tidal_ctx *ctx;
  (void)k;
  if (task_end(L, status, &ctx)) return run_body(L);
  return go_idle(L, ctx);
}

/* The base function of a new task coroutine: stack as above. */
static int co_main(lua_State *L) {
  lua_toclose(L, 1);
  return run_body(L);
}

/* Closes t's coroutine for the scheduler (the closer then stays quiet). */
static void reset_co(tidal_worker *w, tidal_task *t) {
  tidal_ctx *ctx = w->ctx;
  tidal_task *prev = ctx->cur;
  ctx->cur = t;
  lua_resetthread(t->co);
  ctx->cur = prev;
}

/* Finds the live task of w whose coroutine is co, or NULL. */
static tidal_task *task_of(lua_State *L, tidal_worker *w, lua_State *co) {
  tidal_task *found = NULL;
  if (w == NULL || !lua_checkstack(L, 4)) return NULL;
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->anchors_ref);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    tidal_task *t = (tidal_task *)lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (t != NULL && t->co == co && t->state != TS_DONE) {
      found = t;
      lua_pop(L, 1);
      break;
    }
  }
  lua_pop(L, 1);
  return found;
}

/* Finds the live task whose coroutine is co: on the worker running now,
** or on another open runtime of this state (Lua code may close a task's
** coroutine between two steps of its runtime, or from another runtime). */
static tidal_task *task_anywhere(lua_State *L, tidal_ctx *ctx,
                                 lua_State *co) {
  tidal_task *t = task_of(L, ctx->w, co);
  for (tidal_worker *w = ctx->runtimes; t == NULL && w != NULL;
       w = w->rt_next)
    if (w != ctx->w) t = task_of(L, w, co);
  return t;
}

/* Lua code closed t's coroutine, or ran it to its end (see below): its
** frames are gone, so its wait is withdrawn at once (nothing is handed to
** it any more) and the scheduler finishes it as cancelled when it next
** comes to it. Pushes t's label. */
static void closed_by_lua(lua_State *L, tidal_task *t) {
  t->cancel = CK_CLOSED;
  if (t->state == TS_PARKED) {
    const tidal_waitop *op = t->op;
    void *obj = t->wobj;
    int withdrawn = op->cancel == NULL || op->cancel(t);
    if ((op->abandon != NULL && op->abandon(t, obj)) || withdrawn)
      tidal__wake(t, 0); /* the scheduler finishes it */
  }
  tidal__push_label(L, t, 0);
}

/*
** __close of the value every task coroutine keeps at its base (the
** closer). It runs when Lua code closes a task's coroutine (coroutine.close
** on a captured coroutine.running(), which Lua allows on any suspended
** coroutine), and when the scheduler resets one (then it is quiet, as it is
** for an idle coroutine: no live task runs in it). The code that closed a
** task's coroutine gets an error.
*/
static int l_task_closed(lua_State *L) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  tidal_task *t = ctx->cur;
  if (t != NULL && t->co == L) return 0; /* the scheduler resets it */
  if ((t = task_anywhere(L, ctx, L)) == NULL || t->cancel == CK_CLOSED)
    return 0;
  const char *where = t->state == TS_PARKED && t->op ? t->op->name : NULL;
  closed_by_lua(L, t);
  /* An error raised here would go through the message handler of a call
  ** that lua_closethread has already discarded: raised in the closer. */
  lua_pushfstring(L,
                  "coroutine.close: closed the coroutine of %s%s%s: the task "
                  "is cancelled (to cancel a task, use its JoinHandle's "
                  "abort())",
                  lua_tostring(L, -1), where ? " while it waited in " : "",
                  where ? where : "");
  tidal__refuse(L);
  return 0;
}

/* t's body ended in a resume by Lua code (coroutine.resume on a task that
** did a plain coroutine.yield), not the scheduler's: t is cancelled, and
** the error ends the coroutine and goes to the resumer. */
static int ran_outside(lua_State *L, tidal_task *t) {
  closed_by_lua(L, t);
  return luaL_error(L,
                    "coroutine.resume: ran the coroutine of %s outside "
                    "tidal's scheduler to its end: the task is cancelled "
                    "(only the scheduler may resume a task)",
                    lua_tostring(L, -1));
}

/* ------------------------------------------------------------- scheduler */

/*
** The worker's coroutine table (pool_ref) holds every coroutine of the
** worker, idle or running a task, at a slot of its own (t->coslot while a
** task runs in it), so that neither taking an idle one nor giving it back
** touches a Lua table: the idle ones are a stack in C (w->idle).
*/
static int co_slot_alloc(tidal_worker *w) {
  if (w->co_nfree > 0) return w->co_free[--w->co_nfree];
  return ++w->co_next;
}

static void co_slot_free(tidal_worker *w, int slot) {
  if (w->co_nfree == w->co_free_cap) {
    int cap = w->co_free_cap ? w->co_free_cap * 2 : 64;
    int *v = realloc(w->co_free, (size_t)cap * sizeof *v);
    if (v == NULL) return; /* the slot is just not reused */
    w->co_free = v;
    w->co_free_cap = cap;
  }
  w->co_free[w->co_nfree++] = slot;
}

/* No task runs in co (at slot) any more: it goes back to the pool when
** recycle says it is idle and there is room, else out of the coroutine
** table (pool: its index on L, or 0). */
static void co_put(tidal_worker *w, lua_State *L, int pool, lua_State *co,
                   int slot, int recycle) {
  if (w->ctx->rf_thread == co) /* it resumed a task and ended at once? */
    tidal__unhook(L, w->ctx);
  if (recycle && w->npool < TIDAL_POOL_MAX) {
    if (w->npool == w->idle_cap) {
      int cap = w->idle_cap ? w->idle_cap * 2 : 16;
      struct tidal_idle *v = realloc(w->idle, (size_t)cap * sizeof *v);
      if (v != NULL) {
        w->idle = v;
        w->idle_cap = cap;
      }
    }
    if (w->npool < w->idle_cap) {
      w->idle[w->npool].co = co;
      w->idle[w->npool].slot = slot;
      w->npool++;
      return;
    }
  }
  tidal__irq_quiesce(w); /* (no thread may be setting a hook on it) */
  if (pool) {
    lua_pushnil(L);
    lua_rawseti(L, pool, slot);
  } else {
    lua_rawgeti(L, LUA_REGISTRYINDEX, w->pool_ref);
    lua_pushnil(L);
    lua_rawseti(L, -2, slot);
    lua_pop(L, 1);
  }
  co_slot_free(w, slot);
}

/* co's top is its worker's anchors table: pushes t's handle, function and
** arguments above it (2 + nargs values). The arguments leave the handle:
** from now on they are the task's own (it may drop them). */
static void load(lua_State *co, tidal_task *t, int nargs) {
  lua_rawgeti(co, -1, t->slot);
  lua_getiuservalue(co, -1, UV_FN);
  if (t->vt != TV_NONE) {
    push_scalar(co, t);
    t->vt = TV_NONE;
  } else if (nargs > 0) {
    int h = lua_gettop(co) - 1;
    for (int i = 0; i < nargs; i++) lua_getiuservalue(co, h, UV_ARG + i);
    for (int i = 0; i < nargs; i++) {
      lua_pushnil(co);
      lua_setiuservalue(co, h, UV_ARG + i);
    }
  }
}

static void start(tidal_worker *w, lua_State *L, int anchors, int pool,
                  tidal_task *t) {
  lua_State *co = NULL;
  int nargs = t->nres; /* before the start, nres counts the arguments */
  int slot = 0, fresh = 0;
  (void)anchors;
  while (w->npool > 0) {
    w->npool--;
    co = w->idle[w->npool].co;
    slot = w->idle[w->npool].slot;
    if (lua_status(co) == LUA_YIELD) break; /* idle, as it should be */
    co_put(w, L, pool, co, slot, 0); /* Lua code closed it meanwhile */
    co = NULL;
  }
  /* (nargs is at most TIDAL_MAX_ARGS) */
  if (co == NULL) {
    fresh = 1;
    co = lua_newthread(L);
    if (!lua_checkstack(co, nargs + 8))
      luaL_error(L, "tidal: not enough memory to start a task");
    slot = co_slot_alloc(w);
    lua_rawseti(L, pool, slot); /* the table holds it from now on */
    lua_pushcfunction(co, co_main);
    lua_rawgeti(co, LUA_REGISTRYINDEX, w->ctx->closer_ref);
    lua_rawgeti(co, LUA_REGISTRYINDEX, w->ctx->msgh_ref);
    lua_pushlightuserdata(co, IDLE_KEY);
    lua_rawgeti(co, LUA_REGISTRYINDEX, w->anchors_ref);
  } else if (!lua_checkstack(co, nargs + 3)) {
    co_put(w, L, pool, co, slot, 1);
    luaL_error(L, "tidal: not enough memory to start a task");
  }
  load(co, t, nargs);
  t->co = co;
  t->coslot = slot;
  /* resume with: [closer, msgh, key, anchors,] handle, fn, args */
  t->nres = (fresh ? 6 : 2) + nargs;
}

/* Tells t's subscribers that it is done (its handle at hidx). */
static void publish(lua_State *L, tidal_task *t, int hidx) {
  tidal_sub *sub;
  while ((sub = t->ext->subs) != NULL) {
    t->ext->subs = sub->next;
    sub->next = NULL;
    sub->cls->release(sub, L, t, hidx);
  }
}

/* How release leaves the coroutine of a task that ran */
enum { CO_DROP, CO_RECYCLE, CO_KEEP };

/* t is done: out of the anchors table (at anchors on L), its coroutine
** put as co_how says (pool: the coroutine table's index on L, or 0). */
static void release(tidal_worker *w, lua_State *L, int anchors, int pool,
                    tidal_task *t, int co_how) {
  lua_State *co = t->co;
  if (t->ext != NULL && t->ext->subs != NULL) { /* they read the outcome */
    lua_rawgeti(L, anchors, t->slot);
    publish(L, t, lua_gettop(L));
    lua_pop(L, 1);
  }
  if (co != NULL) {
    t->co = NULL;
    if (co_how != CO_KEEP)
      co_put(w, L, pool, co, t->coslot, co_how == CO_RECYCLE);
  }
  lua_pushnil(L);
  lua_rawseti(L, anchors, t->slot);
  tidal__slot_free(w, t->slot);
  t->slot = 0;
  t->w = NULL;
  if (t->ext != NULL) { /* back to the free list, chained through joiners */
    t->ext->joiners = (tidal_task *)w->free_exts;
    w->free_exts = t->ext;
    t->ext = NULL;
  }
}

tidal_task_ext *tidal__task_ext(tidal_task *t) {
  tidal_worker *w = t->w;
  if (t->ext != NULL) return t->ext;
  if (w->free_exts != NULL) {
    t->ext = w->free_exts;
    w->free_exts = (tidal_task_ext *)t->ext->joiners;
  } else if ((t->ext = (tidal_task_ext *)malloc(sizeof *t->ext)) == NULL) {
    return NULL;
  }
  memset(t->ext, 0, sizeof *t->ext);
  return t->ext;
}

static void done(tidal_worker *w, tidal_task *t) {
  tidal_task *j;
  t->state = TS_DONE; /* (its coroutine goes in release) */
  w->st.alive--;
  atomic_store_explicit(&w->load, (int)w->st.alive, memory_order_relaxed);
  w->st.finished++;
  if (t->flags & TF_FAILED) w->st.failed++;
  if (t->flags & TF_CANCELLED) w->st.cancelled++;
  if (t->ext != NULL) {
    tidal_taskset *set = t->ext->set;
    while ((j = t->ext->joiners) != NULL) {
      tidal__list_remove(&t->ext->joiners, j);
      tidal__wake(j, 0);
    }
    if (set != NULL) {
      tidal__taskset_remove(set, t);
      set->member_done(set, t);
    }
  }
}

int tidal__taskset_add(tidal_taskset *s, tidal_task *t) {
  tidal_task_ext *e = tidal__task_ext(t);
  if (e == NULL) return -1;
  e->set = s;
  e->sprev = NULL;
  e->snext = s->live;
  if (s->live) s->live->ext->sprev = t;
  s->live = t;
  s->nlive++;
  return 0;
}

void tidal__taskset_remove(tidal_taskset *s, tidal_task *t) {
  tidal_task_ext *e = t->ext;
  if (e->sprev)
    e->sprev->ext->snext = e->snext;
  else
    s->live = e->snext;
  if (e->snext) e->snext->ext->sprev = e->sprev;
  e->snext = e->sprev = NULL;
  e->set = NULL;
  s->nlive--;
}

int tidal__task_subscribe(tidal_task *t, tidal_sub *sub) {
  tidal_task_ext *e = tidal__task_ext(t);
  if (e == NULL) return -1;
  sub->next = e->subs;
  e->subs = sub;
  return 0;
}

tidal_sub *tidal__task_sub_find(tidal_task *t, const tidal_subclass *cls) {
  if (t->ext == NULL) return NULL;
  for (tidal_sub *sub = t->ext->subs; sub != NULL; sub = sub->next)
    if (sub->cls == cls) return sub;
  return NULL;
}

void tidal__task_finish_unstarted(tidal_task *t) {
  t->flags |= TF_CANCELLED | TF_NOSTART;
  done(t->w, t); /* still queued: released when the scheduler pops it */
}

/* An error escaped the coroutine's base function (out of memory while
** storing results):
** record it as the task's failure. */
static void escaped(tidal_worker *w, lua_State *L, int anchors, tidal_task *t) {
  lua_rawgeti(L, anchors, t->slot);
  lua_createtable(L, 2, 0);
  lua_xmove(t->co, L, 1);
  lua_rawseti(L, -2, 1);
  lua_setiuservalue(L, -2, UV_OUT);
  lua_pop(L, 1);
  t->nres = 0;
  t->vt = TV_NONE;
  t->flags = (uint16_t)((t->flags & ~TF_PACKED) | TF_FAILED);
  reset_co(w, t);
}

/* t's coroutine was closed (or run to its end) by Lua code, not by the
** scheduler: it ends as cancelled, with an error that says so. */
static void finish_closed(tidal_worker *w, lua_State *L, int anchors,
                          tidal_task *t) {
  lua_rawgeti(L, anchors, t->slot);
  lua_createtable(L, 1, 0);
  tidal__error_push(L, "cancelled",
                    "task %I was cancelled: Lua code closed its coroutine "
                    "or resumed it outside the scheduler",
                    (lua_Integer)t->id);
  lua_rawseti(L, -2, 1);
  lua_setiuservalue(L, -2, UV_OUT);
  lua_pop(L, 1);
  t->nres = 0;
  t->vt = TV_NONE;
  t->flags = (t->flags & ~(TF_PACKED | TF_FAILED)) | TF_CANCELLED;
  t->cancel = CK_CLOSED;
  tidal__scopes_drop(w, t); /* their continuations will never run */
  tidal__irq_quiesce(w);    /* its coroutine is dropped below */
  done(w, t);
  release(w, L, anchors, 0, t, CO_DROP);
}

/* t ran for dt ns in one go: other tasks, timers and I/O waited that long.
** Said once per task, with where it finally waited. */
static void report_slow(lua_State *L, tidal_task *t, uint64_t dt, int st) {
  int top = lua_gettop(L);
  t->flags |= TF_SLOW;
  tidal__push_label(L, t, 0);
  if (st == LUA_YIELD)
    luaL_traceback(L, t->co, "it then waited at:", 0);
  else
    lua_pushliteral(L, "it then finished");
  char secs[32];
  snprintf(secs, sizeof secs, "%.2f", (double)dt / 1e9);
  lua_pushfstring(L,
                  "%s ran %s s without waiting (other tasks, timers and "
                  "I/O waited meanwhile; move CPU-heavy work to "
                  "tidal.spawn_blocking or yield now and then); %s",
                  lua_tostring(L, -2), secs, lua_tostring(L, -1));
  tidal__report_text(L, t->w, TIDAL_REPORT_SLOW, -1);
  lua_settop(L, top);
}

/*
** A chain. t's body ended in its coroutine L, which the scheduler loop
** resumed for it: when the next task in the run queue has not started yet,
** it starts here and now, in the same coroutine, instead of L yielding to
** the loop and the loop resuming it again for that task. A burst of spawned
** tasks so costs no coroutine switch per task. The order tasks run in is
** the same, every task of a chain counts as a step of the loop's batch (so
** I/O is polled as often), and a slow one is reported as after a step.
** Not in a nested step, nor for the main task, nor when a resumer was
** hooked (sched.c: tidal__refuse), nor when the ending task is in a task
** set (its member_done may cancel the next task) or has subscribers (they
** get its handle on the scheduler's stack). Returns 1 when the next task
** is set up on L's stack.
*/
static int chain(lua_State *L, tidal_worker *w, tidal_task *t) {
  tidal_task *u = w->rq_head;
  if (u == NULL || u->state != TS_NEW || t != w->top || w->nested ||
      u == w->main || t == w->main || w->handoffs >= w->batch_left ||
      w->ctx->rf_thread != NULL ||
      (t->ext != NULL && (t->ext->set != NULL || t->ext->subs != NULL)) ||
      !lua_checkstack(L, u->nres + 8))
    return 0;
  if (w->slow_ns) { /* t's slice ends, u's begins */
    uint64_t now = tidal__coarse_ns();
    if (!(t->flags & TF_SLOW) && now - w->slice0 > w->slow_ns)
      report_slow(L, t, now - w->slice0, LUA_OK);
    w->slice0 = now;
  }
  int slot = t->coslot, nargs = u->nres;
  done(w, t); /* (wakes its joiners: behind u in the queue) */
  release(w, L, CO_ANCHORS, 0, t, CO_KEEP);
  tidal__runq_pop(w); /* u */
  w->st.resumes++;
  w->handoffs++; /* (a step of the batch) */
  w->top = u;
  load(L, u, nargs);
  u->co = L;
  u->coslot = slot;
  u->nres = 0;
  u->state = TS_RUNNING;
  u->budget = TIDAL_BUDGET;
  u->flags &= ~TF_HANDOFF;
  w->ctx->cur = u;
  return 1;
}

/* anchors 0 (a handoff): pushes the anchor and pool tables on L now that
** step needs them (the caller resets L's top after the step). */
static void need_tables(tidal_worker *w, lua_State *L, int *anchors,
                        int *pool) {
  if (*anchors != 0) return;
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->anchors_ref);
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->pool_ref);
  *pool = lua_gettop(L);
  *anchors = *pool - 1;
}

/* Runs t (popped from the run queue, or never queued) until it waits or
** ends. Returns 1 when it is done. anchors and pool: the indices of the
** worker's tables on L, or 0 (a handoff, whose task most often only
** waits again): pushed when needed, with 8 free slots on L. */
static int step(tidal_worker *w, lua_State *L, int anchors, int pool,
                tidal_task *t) {
  tidal_ctx *ctx = w->ctx;
  tidal_task *prev = ctx->cur;
  int nres, st, ended;
  if (t->state != TS_RUNNABLE) need_tables(w, L, &anchors, &pool);
  if (t->state == TS_DONE) { /* cancelled before it started */
    lua_rawgeti(L, anchors, t->slot);
    clear_uvs(L, lua_gettop(L));
    lua_pop(L, 1);
    t->vt = TV_NONE;
    release(w, L, anchors, pool, t, CO_DROP);
    return 1;
  }
  if (t->state == TS_NEW) {
    start(w, L, anchors, pool, t);
  } else if (t->cancel == CK_CLOSED || lua_status(t->co) != LUA_YIELD) {
    need_tables(w, L, &anchors, &pool);
    finish_closed(w, L, anchors, t); /* Lua code closed its coroutine */
    return 1;
  }
  t->state = TS_RUNNING;
  t->budget = TIDAL_BUDGET;
  t->flags &= ~TF_HANDOFF;
  ctx->cur = t;
  uint64_t saved = w->slice0;
  if (w->slow_ns) /* (the clock is coarse: a step's end is the next start) */
    w->slice0 = w->slice_end ? w->slice_end : tidal__coarse_ns();
  else
    w->slice0 = 0;
  w->slice_end = 0;
  lua_State *co = t->co;
  lua_State *prev_co = tidal__irq_enter(w, co);
  st = lua_resume(co, L, t->nres, &nres);
  tidal__irq_leave(w, prev_co);
  if (ctx->cur != t && ctx->cur != NULL && ctx->cur->co == co)
    t = ctx->cur; /* a chain ran the next tasks in t's coroutine (chain) */
  /* the body ended: the coroutine yielded IDLE_KEY (see body_k) */
  ended = st == LUA_YIELD && nres == 1 &&
          lua_touserdata(t->co, -1) == IDLE_KEY;
  if (st != LUA_YIELD || (ended && w->npool >= TIDAL_POOL_MAX))
    tidal__irq_quiesce(w); /* co is about to be reset or dropped */
  ctx->cur = prev;
  w->st.resumes++;
  uint64_t t0 = w->slice0; /* a handoff restarts the slice */
  w->slice0 = saved;
  if (t0) {
    uint64_t now = tidal__coarse_ns();
    if (!(t->flags & TF_SLOW) && now - t0 > w->slow_ns)
      report_slow(L, t, now - t0, ended ? LUA_OK : st);
    w->slice_end = now;
  }
  if (st == LUA_YIELD && !ended) {
    if (nres != 0) lua_pop(t->co, nres); /* (a wait yields none) */
    /* a plain coroutine.yield() from the task body: treat as tidal.yield */
    if (t->state == TS_RUNNING) tidal__requeue(t);
    return 0;
  }
  need_tables(w, L, &anchors, &pool);
  if (ended)
    lua_pop(t->co, 1); /* idle: back to the pool */
  else
    escaped(w, L, anchors, t);
  done(w, t);
  release(w, L, anchors, pool, t, ended ? CO_RECYCLE : CO_DROP);
  return 1;
}

int tidal__run_batch(tidal_worker *w, lua_State *L, int max) {
  tidal_task *t;
  int n = 0;
  luaL_checkstack(L, 8, "tidal: scheduler");
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->anchors_ref);
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->pool_ref);
  int anchors = lua_gettop(L) - 1, pool = anchors + 1;
  w->slice_end = 0; /* (time passed since the last batch) */
  while (n < max && (t = tidal__runq_pop(w)) != NULL) {
    int fin;
    n++;
    w->top = t;
    w->nested = 0; /* (left raised by an error out of a nested step) */
    w->handing = NULL;
    w->batch_left = max - n; /* (for chains, as handoffs: see chain) */
    fin = step(w, L, anchors, pool, t);
    w->top = NULL;
    n += w->handoffs;
    w->handoffs = 0;
    if (fin && t == w->main) break;
  }
  lua_pop(L, 2);
  return n;
}

/*
** Handoff. t, the task the loop resumed, is about to park, and the loop would
** run the queue's head next. Run it here instead, nested on t's C stack; if
** that woke t and t is now first in line, t goes on without yielding at all:
** the loop would have resumed it next anyway. Two tasks that hand work to
** each other (a request and its reply) so cost one coroutine switch instead
** of two, and the order tasks run in is the same as without it. One level
** only (a nested task never hands off), and every nested step counts against
** the loop's batch, so I/O is polled as often as before. Returns 1 when t
** continues: it is running again, out of the queue.
*/
int tidal__handoff(lua_State *L, tidal_task *t) {
  tidal_worker *w = t->w;
  tidal_task *u = w->rq_head;
  int top = lua_gettop(L);
  /* the 2 tables step pushes if it needs them, and the 6 slots it uses (as
  ** in run_batch); a C function has LUA_MINSTACK slots without asking */
  if (u == w->main || (top + 8 > LUA_MINSTACK && !lua_checkstack(L, 8)))
    return 0;
  tidal__runq_pop(w);
  w->nested++;
  w->handoffs++;
  w->handing = t; /* parked, yet on the C stack: not to be resumed */
  step(w, L, 0, 0, u);
  lua_settop(L, top);
  w->handing = NULL;
  w->nested--;
  if (w->slow_ns) /* u's time is not t's */
    w->slice0 = w->slice_end ? w->slice_end : tidal__coarse_ns();
  w->slice_end = 0; /* t runs on: it is no step's start */
  if (w->rq_head != t || t->nres != 0) return 0;
  tidal__runq_pop(w);
  t->state = TS_RUNNING; /* (ctx->cur is t again: step restored it) */
  w->st.resumes++;
  return 1;
}

/* From inside the running task (stack L): run t now, nested, instead of
** waiting for its turn. Used by select to start branches eagerly, and to let
** cancelled branches unwind at once. Returns 1 when t is done. A running
** task (the caller, or one that resumed it nested) is not resumed again:
** it unwinds when control comes back to it. */
int tidal__run_now(lua_State *L, tidal_task *t) {
  tidal_worker *w = t->w;
  int fin;
  if (t->state == TS_PARKED || t->state == TS_RUNNING || t == w->handing)
    return 0; /* not now */
  if (t->flags & TF_QUEUED) tidal__runq_remove(w, t);
  luaL_checkstack(L, 8, "tidal: nested run");
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->anchors_ref);
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->pool_ref);
  w->nested++;
  fin = step(w, L, lua_gettop(L) - 1, lua_gettop(L), t);
  w->nested--;
  w->slice_end = 0; /* the caller runs on: it is no step's start */
  lua_pop(L, 2);
  return fin;
}

/* Shutdown found t parked with nothing left to wake it: close its coroutine
** without letting it run again (its <close> handlers run, but cannot
** wait). */
void tidal__task_finish_forced(tidal_worker *w, lua_State *L, tidal_task *t) {
  tidal__irq_quiesce(w); /* its coroutine is reset below */
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->anchors_ref);
  int anchors = lua_gettop(L);
  if (t->state == TS_PARKED) {
    if (t->op && t->op->cancel) t->op->cancel(t);
    w->st.parked--;
    if (t->op && t->op->abandon) t->op->abandon(t, t->wobj);
  }
  if (t->flags & TF_XWAIT) {
    t->flags &= ~TF_XWAIT;
    tidal__external(w, -1);
  }
  if (t->co) reset_co(w, t);
  tidal__scopes_drop(w, t); /* their continuations will never run */
  lua_rawgeti(L, anchors, t->slot); /* its outcome: {err}, its function goes */
  lua_createtable(L, 1, 0);
  tidal__push_cancel_error(L, t);
  lua_rawseti(L, -2, 1);
  lua_setiuservalue(L, -2, UV_OUT);
  lua_pop(L, 1);
  t->nres = 0;
  t->vt = TV_NONE;
  t->flags = (t->flags & ~(TF_PACKED | TF_FAILED)) | TF_CANCELLED;
  done(w, t);
  release(w, L, anchors, 0, t, CO_DROP);
  lua_pop(L, 1);
}

/* -------------------------------------------------------------- outcomes */

/* Pushes the outcome of done task t (handle at idx). raise: results, or
** raise the error; else true, results... / false, err. */
int tidal__push_outcome(lua_State *L, tidal_task *t, int idx, int raise) {
  t->flags |= TF_OBSERVED;
  if (t->flags & (TF_FAILED | TF_CANCELLED)) {
    if (!raise) lua_pushboolean(L, 0);
    if (t->flags & TF_NOSTART) {
      tidal__push_cancel_error(L, t);
    } else if (lua_getiuservalue(L, idx, UV_OUT) == LUA_TTABLE) {
      lua_rawgeti(L, -1, 1);
      lua_remove(L, -2);
    } else { /* (cannot happen: every end stores {err}) */
      lua_pop(L, 1);
      tidal__push_cancel_error(L, t);
    }
    if (!raise) return 2;
    tidal_ctx *ctx = tidal__ctx(L);
    if (ctx->cur && ctx->cur->co == L) ctx->cur->flags |= TF_RERAISE;
    return lua_error(L);
  }
  int n = t->nres;
  luaL_checkstack(L, n + 1, "tidal: too many results");
  if (!raise) lua_pushboolean(L, 1);
  if (t->vt != TV_NONE) { /* one scalar, in C */
    push_scalar(L, t);
  } else if (t->flags & TF_PACKED) {
    lua_getiuservalue(L, idx, UV_OUT);
    for (int i = 1; i <= n; i++) lua_rawgeti(L, -i, i);
    lua_remove(L, -n - 1);
  } else {
    for (int i = 0; i < n; i++) lua_getiuservalue(L, idx, UV_OUT + i);
  }
  return n + !raise;
}

/* The failure of task t (handle at idx): "error\ntraceback", to the host's
** report hook or stderr. */
static void report(lua_State *L, tidal_task *t, int idx, const char *why) {
  int top = lua_gettop(L);
  t->flags |= TF_REPORTED;
  lua_getiuservalue(L, idx, UV_OUT);
  lua_rawgeti(L, -1, 1);
  tidal__push_errstring(L, -1);
  lua_rawgeti(L, -3, 2);
  tidal__push_label(L, t, idx);
  lua_pushfstring(L, "%s failed and %s:\n%s\n%s", lua_tostring(L, -1), why,
                  lua_tostring(L, -3),
                  lua_isstring(L, -2) ? lua_tostring(L, -2) : "");
  tidal__report_text(L, tidal__ctx(L) ? tidal__ctx(L)->w : NULL,
                     TIDAL_REPORT_ERROR, -1);
  lua_settop(L, top);
}

static int unobserved(const tidal_task *t) {
  return (t->flags & (TF_FAILED | TF_OBSERVED | TF_REPORTED)) == TF_FAILED;
}

/* A full collection finalizes the report objects of the failed tasks whose
** handles were dropped: they say the error (l_report_gc). */
int tidal__report_dropped(lua_State *L, tidal_worker *w) {
  int left = 0;
  lua_gc(L, LUA_GCCOLLECT);
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->side_ref);
  lua_rawgeti(L, -1, SIDE_UNOBSERVED);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    tidal_task *t = (tidal_task *)lua_touserdata(L, -2);
    lua_pop(L, 1);
    if (unobserved(t)) {
      left = 1;
      lua_pop(L, 1);
      break;
    }
  }
  lua_pop(L, 2);
  return left;
}

/* At runtime close: report failed tasks whose error nobody observed. */
void tidal__report_unobserved(lua_State *L, tidal_worker *w) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->side_ref);
  lua_rawgeti(L, -1, SIDE_UNOBSERVED);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    tidal_task *t = (tidal_task *)lua_touserdata(L, -2);
    lua_pop(L, 1);
    if (unobserved(t))
      report(L, t, lua_gettop(L), "its error was never observed");
  }
  lua_pop(L, 2);
}

/* __gc of a failed task's report object: its handle is being collected */
static int l_report_gc(lua_State *L) {
  tidal__checkud(L, 1, TT_REPORT, "FailureReport:__gc");
  if (lua_getiuservalue(L, 1, 1) == LUA_TUSERDATA) {
    tidal_task *t = (tidal_task *)lua_touserdata(L, -1);
    if (t->state == TS_DONE && unobserved(t))
      report(L, t, lua_gettop(L), "its error was never observed");
  }
  return 0;
}

static const luaL_Reg report_meta[] = {{"__gc", l_report_gc}, {NULL, NULL}};

static const luaL_Reg closer_meta[] = {{"__close", l_task_closed},
                                       {NULL, NULL}};

static int nothing(lua_State *L) {
  (void)L;
  return 0;
}

/* Remembers lcorolib's resume, close and wrap functions (sched.c knows
** them on the stack of a thread that resumes or closes a task's coroutine).
*/
static void find_corolib(lua_State *L, tidal_ctx *ctx) {
  int top = lua_gettop(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  if (lua_getfield(L, -1, "coroutine") == LUA_TTABLE) {
    if (lua_getfield(L, -1, "resume") == LUA_TFUNCTION)
      ctx->co_resume = lua_tocfunction(L, -1);
    if (lua_getfield(L, -2, "close") == LUA_TFUNCTION)
      ctx->co_close = lua_tocfunction(L, -1);
    lua_pop(L, 2);
    if (lua_getfield(L, -1, "wrap") == LUA_TFUNCTION &&
        lua_tocfunction(L, -1) != NULL) {
      lua_pushcfunction(L, nothing); /* any function will do */
      if (lua_pcall(L, 1, 1, 0) == LUA_OK)
        ctx->co_wrap = lua_tocfunction(L, -1);
    }
  }
  lua_settop(L, top);
}

/* stack: module, ctx. The kernel's part of the state: the tasks' message
** handler and closer, FailureReport, and lcorolib's functions. */
void tidal__kernel_open(lua_State *L) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, -1);
  if (ctx->msgh_ref != LUA_NOREF) return; /* loaded before */
  ctx->co_resume = ctx->co_close = ctx->co_wrap = NULL;
  ctx->rf_thread = NULL;
  ctx->rf_hook = NULL;
  ctx->rf_mask = ctx->rf_count = 0;
  find_corolib(L, ctx);
  lua_newuserdatauv(L, 0, 0); /* the closer */
  lua_createtable(L, 0, 2);
  lua_pushvalue(L, -3);
  luaL_setfuncs(L, closer_meta, 1);
  lua_pushliteral(L, "tidal.TaskCloser");
  lua_setfield(L, -2, "__name");
  lua_setmetatable(L, -2);
  ctx->closer_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  tidal__newtype(L, TT_REPORT, "tidal.FailureReport", "FailureReport",
                 report_meta, NULL);
  lua_pushvalue(L, -1);
  lua_pushcclosure(L, task_msgh, 1);
  ctx->msgh_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

/* ---------------------------------------------------------------- joiners */

int tidal__task_join(tidal_task *h, tidal_task *waiter) {
  if (tidal__task_ext(h) == NULL) return -1;
  tidal__list_push(&h->ext->joiners, waiter);
  return 0;
}

void tidal__task_unjoin(tidal_task *h, tidal_task *waiter) {
  tidal__list_remove(&h->ext->joiners, waiter);
}

void tidal__task_release(lua_State *L, tidal_task *t, int started) {
  /* a handle kept by the program must not keep what the task held (a lock
  ** guard, a permit, a sender) from being collected and released */
  clear_uvs(L, lua_gettop(L));
  t->vt = TV_NONE;
  t->nres = 0;
  if (started) { /* its outcome, as a task that failed: {err} */
    lua_createtable(L, 2, 0);
    tidal__push_cancel_error(L, t);
    lua_rawseti(L, -2, 1);
    lua_setiuservalue(L, -2, UV_OUT);
  }
}
