/*
** record.c: records -- the meeting point of a task (or a spawn_blocking
** job) and everyone who waits for it, whatever their worker.
**
** A record is reference-counted and guarded by a mutex. It holds the
** work's function and arguments (copied, until the target starts them),
** then its outcome (copied). Tasks waiting in await/join put a node on its
** list and park (rhandle.c); whoever finishes the record takes the nodes
** under the lock and wakes each task on its own worker (directly, or
** through that worker's remote queue). A waiter cancelled before that
** removes its node; one cancelled after it was taken is woken anyway and
** raises then (wake, then take: kernel.h).
**
** A record subscribes to the task that runs its work (the kernel tells it
** when the task is done, and asks it whether another thread aborted it);
** whoever runs the work gives it a cancel callback, which an abort runs on
** the target worker.
*/
#include "parallel.h"

#include <stdlib.h>

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
  r->cancel = NULL; /* nothing left to cancel */
  r->cancel_arg = NULL;
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

/* ---------------------------------------------- the task's subscriber */

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

/* Cancels the task that runs the record's work (on its worker). */
static void cancel_task(void *arg) {
  tidal_task *t = (tidal_task *)arg;
  tidal__cancel(t, CK_ABORT);
  /* if it runs on without waiting, its Lua code is interrupted */
  if (t->co != NULL) tidal__irq_set(t->co);
}

int tidal__record_subscribe(tidal_record *r, tidal_task *t) {
  r->sub.cls = &record_sub;
  if (tidal__task_subscribe(t, &r->sub)) return -1;
  uv_mutex_lock(&r->mu);
  r->task = t;
  r->cancel = cancel_task;
  r->cancel_arg = t;
  uv_mutex_unlock(&r->mu);
  return 0;
}

tidal_record *tidal__record_of(tidal_task *t) {
  tidal_sub *sub = tidal__task_sub_find(t, &record_sub);
  return sub ? tidal__container_of(sub, tidal_record, sub) : NULL;
}

/* ------------------------------------------------------------ outcome */

/* Pushes the outcome of done record r: raise: results or raise; else
** true, ... / false, err. */
int tidal__record_push_outcome(lua_State *L, tidal_record *r, int raise) {
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


/* ------------------------------------------------------------- abort */

/* On the record's target: what runs its work (a task, a job) is only
** changed on this thread (the lock is for the readers of other threads). */
static void abort_msg(tidal_worker *w, lua_State *L, void *arg) {
  tidal_record *r = (tidal_record *)arg;
  (void)L;
  (void)w;
  uv_mutex_lock(&r->mu);
  void (*cancel)(void *) = r->cancel;
  void *cancel_arg = r->cancel_arg;
  uv_mutex_unlock(&r->mu);
  if (cancel != NULL) cancel(cancel_arg);
  tidal__record_unref(r);
}

/* The target finishes the record (under its lock) before it can go away,
** so while the record is not done, posting to it is safe. */
void tidal__record_abort(tidal_record *r, tidal_worker *cur) {
  uv_mutex_lock(&r->mu);
  if (!r->done) {
    r->abort = 1;
    tidal__record_ref(r);
    if (tidal__wake_remote(r->target, NULL, abort_msg, r))
      tidal__record_unref(r);
    /* a task busy on another worker never gets to the message */
    if (r->interrupt && r->target != cur) tidal__irq_arm(r->target);
  }
  uv_mutex_unlock(&r->mu);
}

void tidal__record_target(tidal_record *r, tidal_worker *w, uint64_t id,
                          int interrupt) {
  uv_mutex_lock(&r->mu);
  r->target = w;
  r->id = id;
  r->interrupt = (uint8_t)interrupt;
  uv_mutex_unlock(&r->mu);
}

void tidal__record_on_cancel(tidal_record *r, void (*cancel)(void *arg),
                             void *arg) {
  uv_mutex_lock(&r->mu);
  r->cancel = cancel;
  r->cancel_arg = arg;
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
