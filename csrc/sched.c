/*
** sched.c: the worker. One OS thread, one libuv loop, one Lua state, one
** run queue. Owns park / wake / cancel (the interface every waiting call is
** built on, described in tidal_int.h), the timer glue between the worker's
** deadline heap and libuv, polling, and wakes that arrive from other
** threads.
**
** Lua code never runs from a libuv callback: callbacks only move tasks to
** the run queue, and the scheduler resumes them afterwards. So no error
** ever unwinds through libuv frames.
*/
#include "tidal_int.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ wait queues */

void tidal__wq_push(tidal_wq *q, tidal_task *t) {
  t->qnext = NULL;
  t->qprev = q->tail;
  if (q->tail)
    q->tail->qnext = t;
  else
    q->head = t;
  q->tail = t;
}

void tidal__wq_push_front(tidal_wq *q, tidal_task *t) {
  t->qprev = NULL;
  t->qnext = q->head;
  if (q->head)
    q->head->qprev = t;
  else
    q->tail = t;
  q->head = t;
}

void tidal__wq_remove(tidal_wq *q, tidal_task *t) {
  if (t->qprev)
    t->qprev->qnext = t->qnext;
  else
    q->head = t->qnext;
  if (t->qnext)
    t->qnext->qprev = t->qprev;
  else
    q->tail = t->qprev;
  t->qnext = t->qprev = NULL;
}

void tidal__list_push(tidal_task **head, tidal_task *t) {
  t->qprev = NULL;
  t->qnext = *head;
  if (*head) (*head)->qprev = t;
  *head = t;
}

void tidal__list_remove(tidal_task **head, tidal_task *t) {
  if (t->qprev)
    t->qprev->qnext = t->qnext;
  else
    *head = t->qnext;
  if (t->qnext) t->qnext->qprev = t->qprev;
  t->qnext = t->qprev = NULL;
}

tidal_task *tidal__wq_pop(tidal_wq *q) {
  tidal_task *t = q->head;
  if (t) {
    q->head = t->qnext;
    if (q->head)
      q->head->qprev = NULL;
    else
      q->tail = NULL;
    t->qnext = NULL;
  }
  return t;
}

/* ------------------------------------------------------------- run queue */

/* The run queue is intrusive too: a task in it is never parked, so it
** reuses the wait-queue link. Pushing can never fail. */

void tidal__runq_push(tidal_worker *w, tidal_task *t) {
  t->flags |= TF_QUEUED;
  t->qnext = NULL;
  t->qprev = w->rq_tail;
  if (w->rq_len++)
    w->rq_tail->qnext = t;
  else
    w->rq_head = t;
  w->rq_tail = t;
}

tidal_task *tidal__runq_pop(tidal_worker *w) {
  tidal_task *t = w->rq_head;
  if (t == NULL) return NULL;
  w->rq_head = t->qnext;
  if (--w->rq_len == 0)
    w->rq_tail = NULL;
  else
    w->rq_head->qprev = NULL;
  t->qnext = t->qprev = NULL;
  t->flags &= ~TF_QUEUED;
  return t;
}

void tidal__runq_remove(tidal_worker *w, tidal_task *t) {
  if (t->qprev)
    t->qprev->qnext = t->qnext;
  else
    w->rq_head = t->qnext;
  if (t->qnext)
    t->qnext->qprev = t->qprev;
  else
    w->rq_tail = t->qprev;
  w->rq_len--;
  t->qnext = t->qprev = NULL;
  t->flags &= ~TF_QUEUED;
}

/* ----------------------------------------------------------------- slots */

int tidal__slot_alloc(tidal_worker *w) {
  if (w->nfree > 0) return w->free_slots[--w->nfree];
  return ++w->next_slot;
}

void tidal__slot_free(tidal_worker *w, int slot) {
  if (w->nfree == w->free_cap) {
    int cap = w->free_cap ? w->free_cap * 2 : 256;
    int *v = realloc(w->free_slots, (size_t)cap * sizeof *v);
    if (v == NULL) return; /* the slot is just not reused */
    w->free_slots = v;
    w->free_cap = cap;
  }
  w->free_slots[w->nfree++] = slot;
}

/* ------------------------------------------------------ park/wake/cancel */

tidal_task *tidal__task_check(lua_State *L, const char *fname) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  tidal_task *t = ctx->cur;
  if (t == NULL || t->co != L) {
    if (t != NULL)
      luaL_error(L,
                 "%s: called from a plain coroutine inside a task; only the "
                 "task itself can wait (run the code in the task, or start "
                 "it with tidal.spawn instead of coroutine.create/wrap)",
                 fname);
    luaL_error(L, "%s: not inside a tidal task (wrap the code in tidal.run)",
               fname);
  }
  return t;
}

tidal_task *tidal__wait_begin(lua_State *L, const char *fname) {
  tidal_task *t = tidal__task_check(L, fname);
  if (!lua_isyieldable(L))
    luaL_error(L,
               "%s: cannot wait here: Lua cannot yield across this C call "
               "(a module's top level run by require, a table.sort or "
               "string.gsub callback, a __gc or __close run by the "
               "collector, a metamethod or iterator called from C); move "
               "the wait out of it",
               fname);
  return t;
}

static int park(lua_State *L, tidal_task *t, const tidal_waitop *op,
                void *obj, lua_KFunction k, int xthread) {
  t->state = TS_PARKED;
  t->op = op;
  t->wobj = obj;
  t->flags &= ~TF_WAKECANCEL;
  if (xthread) {
    t->flags |= TF_XWAIT;
    tidal__external(t->w, 1);
  }
  t->w->st.parked++;
  if ((t->cancel | t->tmo) && (op->cancel == NULL || op->cancel(t))) {
    /* cancelled (sticky): withdrawn before waiting at all */
    t->w->st.parked--;
    if (xthread) {
      t->flags &= ~TF_XWAIT;
      tidal__external(t->w, -1);
    }
    t->state = TS_RUNNING;
    t->op = NULL;
    t->wobj = NULL;
    return tidal__raise_cancel(L, t);
  }
  /* (if op->cancel said a wake is on its way, wait for it) */
  if (!xthread && t->w->rq_head != NULL && t == t->w->top &&
      !t->w->nested) {
    if (t->flags & TF_HANDOFF) { /* k of a handoff: no C recursion */
      t->flags &= ~TF_HANDOFF;
    } else if (tidal__handoff(L, t)) {
      int n;
      t->flags |= TF_HANDOFF;
      n = k(L, LUA_YIELD, (lua_KContext)t); /* as if resumed */
      t->flags &= ~TF_HANDOFF;
      return n;
    }
  }
  return lua_yieldk(L, 0, (lua_KContext)t, k);
}

int tidal__park(lua_State *L, tidal_task *t, const tidal_waitop *op,
                void *obj, lua_KFunction k) {
  return park(L, t, op, obj, k, 0);
}

int tidal__park_shared(lua_State *L, tidal_task *t, const tidal_waitop *op,
                       void *obj, lua_KFunction k) {
  return park(L, t, op, obj, k, 1);
}

void tidal__wake(tidal_task *t, int nvalues) {
  tidal_worker *w = t->w;
  if (t->flags & TF_XWAIT) {
    t->flags &= ~TF_XWAIT;
    tidal__external(w, -1);
  }
  t->state = TS_RUNNABLE;
  t->op = NULL;
  t->wobj = NULL;
  t->nres = nvalues;
  w->st.parked--;
  tidal__runq_push(w, t);
}

void tidal__requeue(tidal_task *t) {
  t->state = TS_RUNNABLE;
  t->nres = 0;
  tidal__runq_push(t->w, t);
}

/* A task resumes from a wait: raise if its wait was withdrawn, or if it was
** cancelled after the wake but before it ran (its operation is not observed
** yet, so it is withdrawn too: the waker's ops pass such wakes on, see
** tidal__wake_lost). */
void tidal__resumed(lua_State *L, tidal_task *t) {
  if ((t->flags & TF_WAKECANCEL) || (t->cancel | t->tmo)) {
    t->flags &= ~TF_WAKECANCEL;
    tidal__raise_cancel(L, t);
  }
}

/* Was t woken for its operation, but is about to raise a cancellation
** instead? Then the primitive must pass the wake on to the next waiter. */
int tidal__wake_lost(tidal_task *t) {
  return !(t->flags & TF_WAKECANCEL) && (t->cancel | t->tmo);
}

static int budget_k(lua_State *L, int status, lua_KContext k) {
  (void)status;
  return ((const tidal_restart *)k)->fn(L);
}

int tidal__budget_yield(lua_State *L, tidal_task *t, const tidal_restart *r) {
  tidal__requeue(t);
  return lua_yieldk(L, 0, (lua_KContext)r, budget_k);
}

/* Withdraw a parked task's wait so that it raises where it waits. */
void tidal__interrupt(tidal_task *t) {
  if (t->state != TS_PARKED) return; /* raised at its next wait */
  if (t->op->cancel == NULL || t->op->cancel(t)) {
    tidal__wake(t, 0);
    t->flags |= TF_WAKECANCEL;
  }
}

void tidal__cancel(tidal_task *t, int kind) {
  if (t->state == TS_DONE) return;
  if (kind > t->cancel) {
    t->cancel = (uint8_t)kind;
    t->flags &= ~TF_CSEEN; /* a new one: not seen yet */
  }
  if (t->state == TS_NEW)
    tidal__task_finish_unstarted(t);
  else
    tidal__interrupt(t);
}

int tidal__raise_cancel(lua_State *L, tidal_task *t) {
  if (t->cancel != CK_NONE) t->flags |= TF_CSEEN;
  if (t->cancel == CK_NONE && tidal__scope_error(L, t)) return lua_error(L);
  if (t->cancel == CK_DEADLOCK && t->w != NULL) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->w->aux_ref);
    lua_rawgeti(L, -1, AUX_DEADLOCK);
    if (!lua_isnil(L, -1)) return lua_error(L);
    lua_pop(L, 2);
  }
  tidal__push_cancel_error(L, t);
  return lua_error(L);
}

void tidal__push_cancel_error(lua_State *L, tidal_task *t) {
  if (t->cancel == CK_INTERRUPT) { /* Ctrl-C, as lua5.4 says it */
    tidal__error_push(L, "interrupted", "interrupted");
    return;
  }
  tidal__error_push(L, "cancelled", "task %I was cancelled%s%s",
                    (lua_Integer)t->id,
                    (t->flags & TF_NOSTART) ? " before it started" : "",
                    t->cancel == CK_SHUTDOWN ? " (the runtime shut down)" : "");
}

/* ---------------------------------------------------------------- timers */

static void uvtimer_cb(uv_timer_t *h) {
  tidal_worker *w = (tidal_worker *)h->data;
  w->armed = 0; /* one-shot; expiry happens after uv_run returns */
}

int tidal__timer_start(tidal_worker *w, tidal_timer *tm, uint64_t due) {
  tm->due = due;
  return tidal__heap_push(&w->timers, tm);
}

void tidal__timer_stop(tidal_worker *w, tidal_timer *tm) {
  if (tm->pos) tidal__heap_remove(&w->timers, tm);
}

/* Arm the uv timer for the earliest of the heap's top and limit (0: none).
** The delay is computed from the precise clock, so the timer fires at the
** deadline even when libuv's loop time uses a coarse clock. */
static void arm(tidal_worker *w, uint64_t limit) {
  tidal_timer *top = tidal__heap_top(&w->timers);
  uint64_t due = top ? top->due : 0;
  if (limit && (due == 0 || limit < due)) due = limit;
  if (due == 0) {
    if (w->armed) {
      uv_timer_stop(&w->uvtimer);
      w->armed = 0;
    }
    return;
  }
  if (w->armed == due) return;
  uint64_t now = uv_hrtime();
  uint64_t ms = due > now ? (due - now + 999999) / 1000000 : 0;
  uv_update_time(w->loop);
  uv_timer_start(&w->uvtimer, uvtimer_cb, ms, 0);
  w->armed = due;
}

static void expire(tidal_worker *w) {
  tidal_timer *top = tidal__heap_top(&w->timers);
  if (top == NULL) return;
  uint64_t now = uv_hrtime();
  while ((top = tidal__heap_top(&w->timers)) != NULL && top->due <= now) {
    tidal__heap_remove(&w->timers, top);
    switch (top->kind) {
    case TK_SLEEP:
      tidal__wake(tidal__container_of(top, tidal_task, timer), 0);
      break;
    case TK_SCOPE:
      tidal__scope_fire(w, tidal__container_of(top, tidal_scope, timer));
      break;
    default:
      break;
    }
  }
}

/* Whether anything could still wake a task: timers, I/O, other threads. */
int tidal__pending(tidal_worker *w) {
  if (w->rq_len || w->timers.n || atomic_load(&w->remote_pending)) return 1;
  arm(w, 0);
  return uv_loop_alive(w->loop);
}

/* Is there anything libuv must look at? Skipping uv_run when nothing but
** our own timer is active saves a syscall per poll on busy schedulers. */
static int loop_has_io(tidal_worker *w) {
  unsigned ours = w->armed ? 1 : 0;
  return w->loop->active_handles > ours || w->loop->active_reqs.count > 0 ||
         atomic_load(&w->remote_pending);
}

void tidal__poll(tidal_worker *w, lua_State *L, int block,
                 uint64_t max_wait_ns) {
  w->st.polls++;
  if (!block) {
    if (loop_has_io(w)) {
      arm(w, 0);
      uv_run(w->loop, UV_RUN_NOWAIT);
    }
  } else {
    arm(w, max_wait_ns ? uv_hrtime() + max_wait_ns : 0);
    uv_run(w->loop, UV_RUN_ONCE);
  }
  expire(w);
  tidal__drain_remote(w, L);
}

/* About to wait for timers, I/O or other threads with nothing to run: if
** tasks ran since the last time, collect garbage in full, so that
** finalizers close the channel ends and guards that tasks dropped -- a
** receiver waiting on another worker may be waiting for exactly that. At
** most every 50 ms: returns how long to wait at most before calling again
** (0: no need). */
uint64_t tidal__idle_gc(tidal_worker *w, lua_State *L) {
  const uint64_t every = 50000000u;
  if (w->rq_len || w->st.resumes == w->gc_resumes) return 0;
  uint64_t now = tidal__coarse_ns();
  if (now - w->gc_at < every) /* not yet: the caller waits no longer */
    return every - (now - w->gc_at) + 1;
  w->gc_at = now;
  w->gc_resumes = w->st.resumes;
  lua_gc(L, LUA_GCCOLLECT);
  return 0;
}

/* ------------------------------------------------------------ remote wakes */

/* The async handle only interrupts uv_run; what was posted runs after
** uv_run returns (tidal__drain_remote), outside any libuv callback, so it
** may run Lua code. */
static void async_cb(uv_async_t *a) {
  (void)a;
}

/* Runs what other threads posted to w (scheduler context, stack L). */
void tidal__drain_remote(tidal_worker *w, lua_State *L) {
  if (!atomic_load(&w->remote_pending)) return;
  uv_mutex_lock(&w->rlock);
  tidal_remote *v = w->remote;
  size_t n = w->nremote;
  w->remote = NULL;
  w->nremote = w->remote_cap = 0;
  atomic_store(&w->remote_pending, 0);
  uv_mutex_unlock(&w->rlock);
  for (size_t i = 0; i < n; i++) {
    if (v[i].fn)
      v[i].fn(w, L, v[i].arg);
    else if (v[i].task->state == TS_PARKED)
      tidal__wake(v[i].task, 0);
  }
  free(v);
}

void tidal__wake_any(tidal_worker *cur, tidal_task *t) {
  if (t->w == cur)
    tidal__wake(t, 0);
  else
    tidal__wake_remote(t->w, t, NULL, NULL);
}

/* The async handle keeps the loop alive (uv_run waits for posts) while a
** task waits on something another thread completes, and in a worker thread
** until it is told to stop. Otherwise an idle loop means nothing can wake
** anyone. */
void tidal__async_ref(tidal_worker *w) {
  if (!w->handles_open) return;
  if (w->external > 0 || (w->index > 0 && !w->stop))
    uv_ref((uv_handle_t *)&w->async);
  else
    uv_unref((uv_handle_t *)&w->async);
}

void tidal__external(tidal_worker *w, int delta) {
  w->external += delta;
  tidal__async_ref(w);
}

/* Any thread: run fn(w, arg) on w's thread, or (fn == NULL) wake task t,
** which must stay parked until then. Returns 0, UV_ENOMEM, or UV_ECANCELED
** once w is gone (tidal__worker_retire): then nothing runs. */
int tidal__wake_remote(tidal_worker *w, tidal_task *t, tidal_remote_fn fn,
                       void *arg) {
  int rc = 0;
  /* Dekker with tidal__worker_retire: it sets gone, then waits for posters
  ** to leave; so once it has seen none, nobody touches the loop's async
  ** handle, and no post comes after its last drain. */
  atomic_fetch_add(&w->posters, 1);
  if (atomic_load(&w->gone)) {
    rc = UV_ECANCELED;
    goto out;
  }
  uv_mutex_lock(&w->rlock);
  if (w->nremote == w->remote_cap) {
    size_t cap = w->remote_cap ? w->remote_cap * 2 : 16;
    tidal_remote *v = realloc(w->remote, cap * sizeof *v);
    if (v == NULL) {
      uv_mutex_unlock(&w->rlock);
      rc = UV_ENOMEM;
      goto out;
    }
    w->remote = v;
    w->remote_cap = cap;
  }
  w->remote[w->nremote].task = t;
  w->remote[w->nremote].fn = fn;
  w->remote[w->nremote].arg = arg;
  w->nremote++;
  atomic_store(&w->remote_pending, 1);
  uv_mutex_unlock(&w->rlock);
  uv_async_send(&w->async);
out:
  atomic_fetch_sub(&w->posters, 1);
  return rc;
}

/* ------------------------------------------------------------- lifecycle */

static int new_ref_table(lua_State *L, int narr, const char *mode) {
  lua_createtable(L, narr, 0);
  if (mode) {
    lua_createtable(L, 0, 1);
    lua_pushstring(L, mode);
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
  }
  return luaL_ref(L, LUA_REGISTRYINDEX);
}

int tidal__worker_init(tidal_worker *w, lua_State *L, tidal_ctx *ctx,
                       uv_loop_t *host_loop) {
  int rc;
  memset(w, 0, sizeof *w);
  w->anchors_ref = w->pool_ref = w->aux_ref = w->ipool_ref = LUA_NOREF;
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  w->L = lua_tothread(L, -1);
  lua_pop(L, 1);
  w->ctx = ctx;
  w->next_id = 1;
  /* Lua allocations first: they may raise, and nothing needs undoing yet */
  w->anchors_ref = new_ref_table(L, 0, NULL);
  w->pool_ref = new_ref_table(L, 0, NULL);
  w->ipool_ref = new_ref_table(L, 0, NULL);
  lua_createtable(L, AUX_N, 0);
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_rawseti(L, -2, AUX_UNOBSERVED); /* failed tasks: weak keys */
  w->aux_ref = luaL_ref(L, LUA_REGISTRYINDEX);

  if (host_loop != NULL) {
    w->loop = host_loop;
  } else {
    rc = uv_loop_init(&w->own_loop);
    if (rc) goto fail_lua;
    w->loop = &w->own_loop;
  }
  rc = uv_mutex_init(&w->rlock);
  if (rc) goto fail_loop;
  uv_timer_init(w->loop, &w->uvtimer);
  w->uvtimer.data = w;
  rc = uv_async_init(w->loop, &w->async, async_cb);
  if (rc) {
    uv_close((uv_handle_t *)&w->uvtimer, NULL);
    uv_run(w->loop, UV_RUN_NOWAIT);
    uv_mutex_destroy(&w->rlock);
    goto fail_loop;
  }
  w->async.data = w;
  uv_unref((uv_handle_t *)&w->async);
  w->handles_open = 1;
  return 0;

fail_loop:
  if (w->loop == &w->own_loop) uv_loop_close(&w->own_loop);
fail_lua:
  luaL_unref(L, LUA_REGISTRYINDEX, w->anchors_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, w->pool_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, w->aux_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, w->ipool_ref);
  w->anchors_ref = w->pool_ref = w->aux_ref = w->ipool_ref = LUA_NOREF;
  return rc;
}

void tidal__worker_close_handles(tidal_worker *w) {
  if (!w->handles_open) return;
  w->handles_open = 0;
  for (int i = 0; i < TIDAL_EXT_N; i++) {
    tidal_ext *e = &w->ext[i];
    if (e->close) e->close(w, e->data);
    e->close = NULL;
    e->data = NULL;
  }
  uv_close((uv_handle_t *)&w->uvtimer, NULL);
  uv_close((uv_handle_t *)&w->async, NULL);
  if (w->loop == &w->own_loop) {
    /* no callback of ours runs after this: run the close callbacks now */
    while (uv_run(w->loop, UV_RUN_DEFAULT) != 0) {
    }
    uv_loop_close(w->loop);
  }
  /* drain anything posted after the last async callback */
  free(w->remote);
  w->remote = NULL;
  w->nremote = w->remote_cap = 0;
  uv_mutex_destroy(&w->rlock);
}

void tidal__worker_free(tidal_worker *w) {
  lua_State *L = w->L;
  tidal_task_ext *e;
  tidal__scopes_drop(w, NULL);
  tidal__groups_free(w);
  while ((e = w->free_exts) != NULL) {
    w->free_exts = (tidal_task_ext *)e->joiners;
    free(e);
  }
  tidal__heap_free(&w->timers);
  free(w->free_slots);
  w->free_slots = NULL;
  w->nfree = w->free_cap = 0;
  if (L != NULL) {
    luaL_unref(L, LUA_REGISTRYINDEX, w->anchors_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, w->pool_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, w->aux_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, w->ipool_ref);
  }
  w->anchors_ref = w->pool_ref = w->aux_ref = w->ipool_ref = LUA_NOREF;
}
