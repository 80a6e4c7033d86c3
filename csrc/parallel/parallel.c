/*
** parallel.c: tidal.spawn_parallel and JoinHandles that work across
** workers.
**
** A record is the meeting point of a task and everyone who waits for it,
** whatever their worker: reference-counted, guarded by a mutex, holding the
** task's function and arguments (copied, until the target worker starts
** it) and then its outcome (copied). Tasks waiting in await/join put a node
** on the record's list and park; the worker that finishes the task takes
** the nodes under the lock and wakes each task on its own worker (directly,
** or through that worker's remote queue). A waiter cancelled before that
** removes its node; one cancelled after it was taken is woken anyway and
** raises then (wake, then take: tidal_int.h).
**
** A remote JoinHandle ("tidal.RemoteHandle", with the JoinHandle methods)
** points at a record; it crosses states by reference. A plain JoinHandle
** that is copied to another state gets a record too, on demand.
*/
#include "tidal_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RHANDLE_MT "tidal.RemoteHandle"


typedef struct rwaiter {
  struct rwaiter *next, *prev;
  tidal_task *t;
  uint8_t woken; /* taken by the publisher: the task will be woken */
} rwaiter;

struct tidal_record {
  tidal_sub sub; /* of its task, while it runs on this process's worker */
  atomic_int refs;
  uv_mutex_t mu;
  uint8_t done, outcome, observed, abort;
  struct tidal_bjob *job; /* spawn_blocking: its job (target's thread) */
  tidal_buf in;  /* function and arguments, until the target starts them */
  tidal_buf out; /* the outcome: a table {ok=, n=, ...} or {ok=false, ...} */
  rwaiter *waiters;
  tidal_worker *target; /* where the task runs */
  tidal_task *task;     /* the running task (touched by target only) */
  uint64_t id;
  char name[40];
};

typedef struct rhandle {
  tidal_record *r;
} rhandle;

/* --------------------------------------------------------------- records */

tidal_record *tidal__record_new(void) {
  tidal_record *r = (tidal_record *)calloc(1, sizeof *r);
  if (r == NULL) return NULL;
  if (uv_mutex_init(&r->mu)) {
    free(r);
    return NULL;
  }
  atomic_init(&r->refs, 1);
  return r;
}

void tidal__record_ref(tidal_record *r) {
  atomic_fetch_add(&r->refs, 1);
}

void tidal__record_unref(tidal_record *r) {
  if (atomic_fetch_sub(&r->refs, 1) != 1) return;
  if (r->in.data) tidal__xfer_discard(r->in.data, r->in.len);
  if (r->out.data) tidal__xfer_discard(r->out.data, r->out.len);
  tidal__buf_free(&r->in);
  tidal__buf_free(&r->out);
  uv_mutex_destroy(&r->mu);
  free(r);
}

/* Stores the outcome (buf: encoded, or empty for a bare cancellation) and
** wakes every waiter. cur: the worker running this. */
void tidal__record_finish(tidal_record *r, tidal_worker *cur, int outcome,
                          tidal_buf *buf) {
  rwaiter *n;
  uv_mutex_lock(&r->mu);
  r->out = *buf;
  r->outcome = (uint8_t)outcome;
  r->done = 1;
  r->task = NULL;
  while ((n = r->waiters) != NULL) {
    r->waiters = n->next;
    n->woken = 1;
    tidal__wake_any(cur, n->t);
  }
  uv_mutex_unlock(&r->mu);
}

/* Encodes {ok = ..., ...} from the values on top of L (count n); falls back
** to a string message when a value cannot be copied. */
void tidal__encode_outcome(lua_State *L, int ok, int n, const char *kind,
                           tidal_buf *buf) {
  int first = lua_gettop(L) - n + 1;
  lua_createtable(L, n, 4);
  for (int i = 1; i <= n; i++) {
    lua_pushvalue(L, first + i - 1);
    lua_rawseti(L, -2, i);
  }
  lua_pushboolean(L, ok);
  lua_setfield(L, -2, "ok");
  lua_pushinteger(L, n);
  lua_setfield(L, -2, "n");
  if (kind != NULL) {
    lua_pushstring(L, kind);
    lua_setfield(L, -2, "kind");
  }
  if (tidal__xfer_encode(L, lua_gettop(L), 1, ok ? "results" : "error",
                         buf)) {
    /* not copyable: say so, as a failure the awaiter can read */
    const char *why = lua_tostring(L, -1);
    lua_createtable(L, 1, 2);
    if (ok)
      lua_pushfstring(L, "tidal.spawn_parallel: the task's results %s",
                      why ? why : "cannot be copied");
    else
      tidal__push_errstring(L, first); /* the error, as text (never raises) */
    lua_rawseti(L, -2, 1);
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "ok");
    lua_pushinteger(L, 1);
    lua_setfield(L, -2, "n");
    buf->len = 0;
    if (tidal__xfer_encode(L, lua_gettop(L), 1, "error", buf)) buf->len = 0;
    lua_pop(L, 2);
  }
  lua_settop(L, first - 1);
}

/* The task of record r finished on this worker (the kernel tells its
** subscriber); its handle is at hidx. */
static void publish(tidal_sub *sub, lua_State *L, tidal_task *t, int hidx) {
  tidal_record *r = tidal__container_of(sub, tidal_record, sub);
  tidal_buf buf = {NULL, 0, 0};
  int outcome = TIDAL_R_OK;
  int top = lua_gettop(L);
  if (t->flags & TF_CANCELLED) {
    outcome = TIDAL_R_CANCELLED;
  } else {
    int n = tidal__push_outcome(L, t, hidx, 0);
    int ok = lua_toboolean(L, -n);
    if (!ok) {
      outcome = TIDAL_R_FAILED;
      /* error value and its traceback */
      if (!tidal__traceback_get(L, &t->w->ctx->aux, -1)) lua_pushnil(L);
      tidal__encode_outcome(L, 0, 2, NULL, &buf);
    } else {
      tidal__encode_outcome(L, 1, n - 1, NULL, &buf);
    }
  }
  lua_settop(L, top);
  tidal__record_finish(r, t->w, outcome, &buf);
  tidal__record_unref(r);
}

static int aborted(tidal_sub *sub) {
  return tidal__record_aborted(tidal__container_of(sub, tidal_record, sub));
}

static const tidal_subclass record_sub = {publish, aborted};

/* Pushes the outcome of done record r: raise: results or raise; else
** true, ... / false, err. */
static int push_outcome(lua_State *L, tidal_record *r, int raise) {
  int n;
  uv_mutex_lock(&r->mu); /* l_rgc of another state reads it */
  r->observed = 1;
  uv_mutex_unlock(&r->mu);
  if (r->outcome == TIDAL_R_CANCELLED) {
    if (!raise) lua_pushboolean(L, 0);
    tidal__error_push(L, "cancelled", "task %I was cancelled",
                      (lua_Integer)r->id);
    return raise ? lua_error(L) : 2;
  }
  if (r->out.len == 0 ||
      tidal__xfer_decode(L, r->out.data, r->out.len) != 1) {
    if (!raise) lua_pushboolean(L, 0);
    lua_pushfstring(L, "task %I: its outcome could not be copied",
                    (lua_Integer)r->id);
    return raise ? lua_error(L) : 2;
  }
  int t = lua_gettop(L);
  lua_getfield(L, t, "ok");
  int ok = lua_toboolean(L, -1);
  lua_getfield(L, t, "n");
  n = (int)lua_tointeger(L, -1);
  lua_pop(L, 2);
  luaL_checkstack(L, n + 2, "tidal: too many results");
  if (ok) {
    if (!raise) lua_pushboolean(L, 1);
    for (int i = 1; i <= n; i++) lua_rawgeti(L, t, i);
    return n + !raise;
  }
  /* failure: the error value (a copy), with its traceback kept for it */
  if (!raise) lua_pushboolean(L, 0);
  lua_rawgeti(L, t, 1);
  lua_rawgeti(L, t, 2);
  if (lua_isstring(L, -1)) tidal__traceback_set(L, tidal__actx(L), -2, -1);
  lua_pop(L, 1);
  if (raise) return lua_error(L);
  return 2;
}

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
  r->sub.cls = &record_sub;
  if (tidal__task_subscribe(t, &r->sub))
    return luaL_error(L, "not enough memory");
  uv_mutex_lock(&r->mu);
  r->task = t;
  uv_mutex_unlock(&r->mu);
  return 0;
}

/* The task will never run: release what its arguments hold now (channel
** ends, handles), not when the last JoinHandle is collected. */
static void drop_input(tidal_record *r) {
  if (r->in.data) tidal__xfer_discard(r->in.data, r->in.len);
  tidal__buf_free(&r->in);
}

static void start_msg(tidal_worker *w, lua_State *L, void *arg) {
  tidal_record *r = (tidal_record *)arg;
  atomic_fetch_sub(&w->assigned, 1);
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

/* On the record's target: its job, or its task, are only changed by this
** thread (the lock is for the readers of other threads). */
static void abort_msg(tidal_worker *w, lua_State *L, void *arg) {
  tidal_record *r = (tidal_record *)arg;
  (void)L;
  (void)w;
  uv_mutex_lock(&r->mu);
  struct tidal_bjob *job = r->job;
  tidal_task *t = r->task;
  uv_mutex_unlock(&r->mu);
  if (job != NULL) {
    tidal__blocking_cancel(job); /* a queued job never runs */
  } else if (t != NULL) {
    tidal__cancel(t, CK_ABORT);
    /* if it runs on without waiting, its Lua code is interrupted */
    if (t->co != NULL) tidal__irq_set(t->co);
  }
  tidal__record_unref(r);
}

/* ------------------------------------------------------------- handles */

tidal_record **tidal__push_rhandle(lua_State *L, tidal_ctx *ctx,
                                   tidal_record *r) {
  rhandle *h = (rhandle *)lua_newuserdatauv(L, sizeof *h, 0);
  h->r = NULL;
  tidal__setmt(L, &ctx->aux, TT_RHANDLE);
  h->r = r; /* takes the caller's reference */
  return &h->r;
}

/* The record of the remote handle at 1; raises once it was finalized. */
static tidal_record *check_rh(lua_State *L, const char *fname) {
  tidal_record *r = ((rhandle *)tidal__checkud(L, 1, TT_RHANDLE, fname))->r;
  if (r == NULL) tidal__closed_error(L, fname, "JoinHandle");
  return r;
}

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
  r->id = atomic_fetch_add(&w->family->next_id, 1);
  r->target = tidal__family_pick(w->family);
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

typedef struct rnode {
  rwaiter n;
  tidal_record *r;
} rnode;

static int rnode_cancel(tidal_task *t) {
  rnode *n = (rnode *)t->wobj;
  tidal_record *r = n->r;
  int withdrawn = 0;
  uv_mutex_lock(&r->mu);
  if (!n->n.woken) {
    if (n->n.prev)
      n->n.prev->next = n->n.next;
    else
      r->waiters = n->n.next;
    if (n->n.next) n->n.next->prev = n->n.prev;
    withdrawn = 1;
  }
  uv_mutex_unlock(&r->mu);
  return withdrawn; /* else the wake is on its way */
}

static const tidal_waitop rawait_op = {"JoinHandle:await", rnode_cancel, NULL};
static const tidal_waitop rjoin_op = {"JoinHandle:join", rnode_cancel, NULL};

static int rwait_k(lua_State *L, lua_KContext k, int raise) {
  tidal_task *t = (tidal_task *)k;
  tidal__resumed(L, t);
  lua_settop(L, 1);
  tidal_record *r = ((rhandle *)lua_touserdata(L, 1))->r;
  if (r == NULL) /* its __gc was called while it waited */
    return tidal__closed_error(L, raise ? "JoinHandle:await"
                                        : "JoinHandle:join", "JoinHandle");
  return push_outcome(L, r, raise);
}

static int rawait_k(lua_State *L, int status, lua_KContext k) {
  (void)status;
  return rwait_k(L, k, 1);
}

static int rjoin_k(lua_State *L, int status, lua_KContext k) {
  (void)status;
  return rwait_k(L, k, 0);
}

static int l_rawait(lua_State *L);
static int l_rjoin(lua_State *L);
static const tidal_restart rawait_again = {l_rawait};
static const tidal_restart rjoin_again = {l_rjoin};

static int rwait(lua_State *L, int raise, const char *fname) {
  tidal_record *r = check_rh(L, fname);
  uv_mutex_lock(&r->mu);
  int done = r->done;
  uv_mutex_unlock(&r->mu);
  lua_settop(L, 1);
  if (done) {
    /* ready at once: still spends the budget, as any wait does */
    tidal_task *t = ((tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1)))->cur;
    if (t != NULL && t->co == L && lua_isyieldable(L))
      TIDAL_SPEND(L, t, raise ? &rawait_again : &rjoin_again);
    return push_outcome(L, r, raise);
  }
  tidal_task *t = tidal__wait_begin(L, fname);
  rnode *n = (rnode *)lua_newuserdatauv(L, sizeof *n, 0); /* kept at 2 */
  memset(n, 0, sizeof *n);
  n->n.t = t;
  n->r = r;
  uv_mutex_lock(&r->mu);
  if (r->done) {
    uv_mutex_unlock(&r->mu);
    lua_settop(L, 1);
    return push_outcome(L, r, raise);
  }
  n->n.next = r->waiters;
  if (r->waiters) r->waiters->prev = &n->n;
  r->waiters = &n->n;
  uv_mutex_unlock(&r->mu);
  return tidal__park_shared(L, t, raise ? &rawait_op : &rjoin_op, n,
                            raise ? rawait_k : rjoin_k);
}

static int l_rawait(lua_State *L) {
  return rwait(L, 1, "JoinHandle:await");
}

static int l_rjoin(lua_State *L) {
  return rwait(L, 0, "JoinHandle:join");
}

/* The target finishes the record (under its lock) before it can go away,
** so while the record is not done, posting to it is safe. */
static int l_rabort(lua_State *L) {
  tidal_record *r = check_rh(L, "JoinHandle:abort");
  tidal_worker *cur = tidal__cur_worker(L);
  uv_mutex_lock(&r->mu);
  if (!r->done) {
    r->abort = 1;
    tidal__record_ref(r);
    if (tidal__wake_remote(r->target, NULL, abort_msg, r))
      tidal__record_unref(r);
    /* a task busy on another worker never gets to the message */
    if (r->job == NULL && r->target != cur) tidal__irq_arm(r->target);
  }
  uv_mutex_unlock(&r->mu);
  return 0;
}

/* For blocking.c: the job's record, set up before it is queued (id and
** target never change after this: other threads read them). */
void tidal__record_set_job(tidal_record *r, struct tidal_bjob *job,
                           tidal_worker *w, uint64_t id) {
  uv_mutex_lock(&r->mu);
  r->job = job;
  r->target = w;
  r->id = id;
  uv_mutex_unlock(&r->mu);
}

/* The job is over: aborting it has nothing left to cancel. */
void tidal__record_clear_job(tidal_record *r) {
  uv_mutex_lock(&r->mu);
  r->job = NULL;
  uv_mutex_unlock(&r->mu);
}

int tidal__record_aborted(tidal_record *r) {
  uv_mutex_lock(&r->mu);
  int a = r->abort;
  uv_mutex_unlock(&r->mu);
  return a;
}

tidal_buf *tidal__record_input(tidal_record *r) {
  return &r->in;
}

static int l_ris_finished(lua_State *L) {
  tidal_record *r = check_rh(L, "JoinHandle:is_finished");
  uv_mutex_lock(&r->mu);
  lua_pushboolean(L, r->done);
  uv_mutex_unlock(&r->mu);
  return 1;
}

static int l_rid(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)check_rh(L, "JoinHandle:id")->id);
  return 1;
}

static int l_rname(lua_State *L) {
  tidal_record *r = check_rh(L, "JoinHandle:name");
  if (!r->name[0]) return 0;
  lua_pushstring(L, r->name);
  return 1;
}

static int l_rtostring(lua_State *L) {
  tidal_record *r = ((rhandle *)tidal__checkud(L, 1, TT_RHANDLE,
                                              "JoinHandle:__tostring"))->r;
  if (r == NULL) {
    lua_pushliteral(L, "tidal.JoinHandle: parallel task (finalized)");
    return 1;
  }
  uv_mutex_lock(&r->mu);
  int done = r->done, outcome = r->outcome;
  uv_mutex_unlock(&r->mu);
  lua_pushfstring(L, "tidal.JoinHandle: parallel task %I%s%s%s (%s)",
                  (lua_Integer)r->id, r->name[0] ? " (" : "", r->name,
                  r->name[0] ? ")" : "",
                  !done                      ? "running"
                  : outcome == TIDAL_R_OK          ? "done"
                  : outcome == TIDAL_R_FAILED      ? "failed"
                                             : "cancelled");
  return 1;
}

static int l_rgc(lua_State *L) {
  rhandle *h = (rhandle *)tidal__checkud(L, 1, TT_RHANDLE, "JoinHandle:__gc");
  if (h->r == NULL) return 0;
  tidal_record *r = h->r;
  h->r = NULL;
  uv_mutex_lock(&r->mu);
  int report = r->done && r->outcome == TIDAL_R_FAILED && !r->observed &&
               atomic_load(&r->refs) == 1;
  uv_mutex_unlock(&r->mu);
  if (report && push_outcome(L, r, 0) == 2) {
    tidal__push_errstring(L, -1);
    char id[32];
    snprintf(id, sizeof id, "%llu", (unsigned long long)r->id);
    lua_pushfstring(L, "parallel task %s failed and its error was never "
                       "observed:\n%s", id, lua_tostring(L, -1));
    tidal_ctx *ctx = tidal__ctx(L);
    tidal__report_text(L, ctx ? ctx->w : NULL, TIDAL_REPORT_ERROR, -1);
    lua_settop(L, 1);
  }
  tidal__record_unref(r);
  return 0;
}

/* ------------------------------------------------- sharing as a handle */

static void *rh_share(lua_State *L, int idx) {
  rhandle *h = (rhandle *)lua_touserdata(L, idx);
  if (h == NULL || h->r == NULL) return NULL;
  tidal__record_ref(h->r);
  return h->r;
}

static void rh_push(lua_State *L, void *obj) {
  tidal_ctx *ctx = tidal__ctx_need(L);
  tidal__record_ref((tidal_record *)obj);
  tidal__push_rhandle(L, ctx, (tidal_record *)obj);
}

static void rh_drop(void *obj) {
  tidal__record_unref((tidal_record *)obj);
}

static const tidal_xtype rhandle_xtype = {RHANDLE_MT, rh_share, rh_push,
                                          rh_drop};

/* A plain JoinHandle copied to another state: a record on demand, which
** the task publishes into when it finishes. */
static void *h_share(lua_State *L, int idx) {
  tidal_task *t = (tidal_task *)lua_touserdata(L, idx);
  tidal_record *r;
  if (t == NULL || (t->flags & TF_INTERNAL)) return NULL;
  if (t->state != TS_DONE) {
    tidal_sub *sub = tidal__task_sub_find(t, &record_sub);
    if (sub != NULL) {
      r = tidal__container_of(sub, tidal_record, sub);
    } else {
      if ((r = tidal__record_new()) == NULL) return NULL;
      r->id = t->id;
      r->target = t->w;
      r->task = t;
      r->sub.cls = &record_sub;
      if (tidal__task_subscribe(t, &r->sub)) { /* the task's reference */
        tidal__record_unref(r);
        return NULL;
      }
    }
    tidal__record_ref(r);
    return r;
  }
  /* done: a finished record with its outcome copied now */
  if ((r = tidal__record_new()) == NULL) return NULL;
  r->id = t->id;
  tidal_buf buf = {NULL, 0, 0};
  int top = lua_gettop(L);
  int outcome = TIDAL_R_OK;
  if (t->flags & TF_CANCELLED) {
    outcome = TIDAL_R_CANCELLED;
  } else {
    int n = tidal__push_outcome(L, t, lua_absindex(L, idx), 0);
    if (!lua_toboolean(L, -n)) {
      outcome = TIDAL_R_FAILED;
      lua_pushnil(L);
      tidal__encode_outcome(L, 0, 2, NULL, &buf);
    } else {
      tidal__encode_outcome(L, 1, n - 1, NULL, &buf);
    }
  }
  lua_settop(L, top);
  r->out = buf;
  r->outcome = (uint8_t)outcome;
  r->done = 1;
  return r;
}

static const tidal_xtype handle_xtype = {TIDAL_HANDLE_MT, h_share, rh_push,
                                         rh_drop};

static const luaL_Reg methods[] = {{"await", l_rawait},
                                   {"join", l_rjoin},
                                   {"abort", l_rabort},
                                   {"is_finished", l_ris_finished},
                                   {"id", l_rid},
                                   {"name", l_rname},
                                   {NULL, NULL}};

static const luaL_Reg meta[] = {
    {"__gc", l_rgc}, {"__tostring", l_rtostring}, {NULL, NULL}};

static const luaL_Reg funcs[] = {{"spawn_parallel", l_spawn_parallel},
                                 {NULL, NULL}};

/* stack: module, ctx */
void tidal__parallel_open(lua_State *L) {
  tidal__newtype(L, TT_RHANDLE, RHANDLE_MT, "JoinHandle", meta, methods);
  tidal__xfer_register(&rhandle_xtype);
  tidal__xfer_register(&handle_xtype);
  tidal__register(L, funcs);
}
