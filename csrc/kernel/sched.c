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

#include <stdio.h>
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

/* The object q belongs to becomes shared with other threads (on its
** owning thread, before they can see it): a task already waiting on it can
** now be woken from another thread, so it counts as waiting on one (see
** tidal__external), as if it had parked with tidal__park_shared. */
void tidal__wq_shared(tidal_wq *q) {
  for (tidal_task *t = q->head; t != NULL; t = t->qnext) {
    if (!(t->flags & TF_XWAIT)) {
      t->flags |= TF_XWAIT;
      tidal__external(t->w, 1);
    }
  }
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

static int orphan_cancel(tidal_task *t) {
  (void)t;
  return 1; /* registered nowhere any more */
}

static const tidal_waitop orphan_op = {"(an object that was finalized)",
                                       orphan_cancel, NULL};

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
    if (ctx->pool)
      luaL_error(L,
                 "%s: cannot wait in a spawn_blocking job, which runs "
                 "outside any task (use the try_ methods there, or wrap the "
                 "code that waits in tidal.run: it blocks the pool thread "
                 "while it waits)",
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

/*
** Every yield of a task goes through task_yield, and every resume of a
** yielded task through guard_k, which checks that the scheduler resumed it.
** Lua code can resume a task's coroutine itself (coroutine.resume on a
** captured coroutine.running(), the usual callback-to-coroutine adapter):
** the continuation of the wait would then run, re-register the task or take
** what was meant for it, and the scheduler's queues would no longer match
** its tasks. Instead guard_k drops what the resumer passed, yields straight
** back (the task stays parked, its wait untouched) and reports the misuse
** (refuse).
**
** The real continuation is t->k: the wait's (under park_key) or the
** function to call again after a budget yield (restart_key). The key, which
** only C can produce, is left on top of the task's stack: whatever a
** resumer passes lands above it.
*/
static const char park_key = 0, restart_key = 0;

static int guard_k(lua_State *L, int status, lua_KContext kc);

static int task_yield(lua_State *L, tidal_task *t, lua_KFunction k,
                      const char *key) {
  if (!lua_checkstack(L, 1)) luaL_error(L, "tidal: stack overflow");
  t->k = k;
  lua_pushlightuserdata(L, (void *)key);
  return lua_yieldk(L, 0, (lua_KContext)t, guard_k);
}

/* The thread x is resuming (or closing): x is running coroutine.resume(co),
** coroutine.close(co) or a function made by coroutine.wrap (lcorolib's, as
** found at load). */
static lua_State *resuming(tidal_ctx *ctx, lua_State *x) {
  lua_Debug ar;
  lua_State *co = NULL;
  if (!lua_getstack(x, 0, &ar) || !lua_checkstack(x, 2)) return NULL;
  lua_getinfo(x, "f", &ar);
  lua_CFunction f = lua_tocfunction(x, -1);
  if (f != NULL && (f == ctx->co_resume || f == ctx->co_close)) {
    if (lua_getlocal(x, &ar, 1) != NULL) {
      co = lua_tothread(x, -1);
      lua_pop(x, 1);
    }
  } else if (f != NULL && f == ctx->co_wrap) {
    if (lua_getupvalue(x, -1, 1) != NULL) {
      co = lua_tothread(x, -1);
      lua_pop(x, 1);
    }
  }
  lua_pop(x, 1);
  return co;
}

static const char refuse_key = 0; /* registry: the message to raise */
static const char hooked_key = 0; /* registry: ctx->rf_thread, kept alive */

static void refuse_hook(lua_State *R, lua_Debug *ar);

/* Puts back the own hook of the thread refuse hooked, if any. */
void tidal__unhook(lua_State *L, tidal_ctx *ctx) {
  lua_State *r = ctx->rf_thread;
  if (r == NULL) return;
  if (lua_gethook(r) == refuse_hook)
    lua_sethook(r, ctx->rf_hook, ctx->rf_mask, ctx->rf_count);
  ctx->rf_thread = NULL;
  lua_pushnil(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &hooked_key);
}

/* Return hook of the resumer: the first function to return in it is the
** coroutine.resume (or close, or wrap function) that reached the task, so
** the refusal is raised from that call, inside any pcall around it. */
static void refuse_hook(lua_State *R, lua_Debug *ar) {
  tidal_ctx *ctx = tidal__ctx(R);
  if (ar->event != LUA_HOOKRET) return;
  if (ctx != NULL && ctx->rf_thread == R)
    tidal__unhook(R, ctx);
  else
    lua_sethook(R, NULL, 0, 0);
  luaL_where(R, 1);
  lua_rawgetp(R, LUA_REGISTRYINDEX, &refuse_key);
  lua_concat(R, 2);
  lua_error(R);
}

/* Lua code resumed or closed the coroutine L of a task, instead of the
** scheduler: raises the message on top (popped) in the thread that did it.
** The resume or close itself cannot fail (a yielded coroutine is resumable
** and closable to Lua), so the error is raised as that call returns: the
** thread is found by following the resumes from the running task (or the
** main thread), and gets a return hook until then. Failing that, the
** message goes to stderr. */
void tidal__refuse(lua_State *L) {
  tidal_ctx *ctx = tidal__ctx(L);
  lua_State *x, *r = NULL;
  if (ctx == NULL) {
    lua_pop(L, 1);
    return;
  }
  if (ctx->cur != NULL && ctx->cur->co != NULL) {
    x = ctx->cur->co;
  } else {
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    x = lua_tothread(L, -1);
    lua_pop(L, 1);
  }
  for (int depth = 0; x != NULL && x != L && depth < 200; depth++) {
    lua_State *co = resuming(ctx, x);
    if (co == L) {
      r = x;
      break;
    }
    x = co;
  }
  if (r == NULL) {
    fprintf(stderr, "tidal: %s\n", lua_tostring(L, -1));
    fflush(stderr);
    lua_pop(L, 1);
    return;
  }
  lua_rawsetp(L, LUA_REGISTRYINDEX, &refuse_key);
  if (ctx->rf_thread != r) {
    tidal__unhook(L, ctx);
    ctx->rf_hook = lua_gethook(r);
    ctx->rf_mask = lua_gethookmask(r);
    ctx->rf_count = lua_gethookcount(r);
    ctx->rf_thread = r;
    lua_pushthread(r);
    lua_xmove(r, L, 1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &hooked_key);
  }
  lua_sethook(r, refuse_hook, LUA_MASKRET, 0);
}

/* guard_k found t's coroutine (stack L) resumed by Lua code. */
static void refuse(lua_State *L, tidal_task *t) {
  if (!lua_checkstack(L, 6)) return;
  if (t->w != NULL && t->state != TS_DONE)
    tidal__push_label(L, t, 0);
  else
    lua_pushfstring(L, "task %I", (lua_Integer)t->id);
  if (t->state == TS_PARKED)
    lua_pushfstring(L,
                    "coroutine.resume: cannot resume the coroutine of %s: it "
                    "waits in %s, and only tidal's scheduler may resume it "
                    "(it goes on waiting); to wake a task from another one, "
                    "use a channel, a oneshot or a notify",
                    lua_tostring(L, -1), t->op ? t->op->name : "?");
  else
    lua_pushfstring(L,
                    "coroutine.resume: cannot resume the coroutine of %s: "
                    "only tidal's scheduler may resume it (it runs in its "
                    "turn); to wake a task from another one, use a channel, "
                    "a oneshot or a notify",
                    lua_tostring(L, -1));
  lua_remove(L, -2);
  tidal__refuse(L);
}

static int guard_k(lua_State *L, int status, lua_KContext kc) {
  tidal_task *t = (tidal_task *)kc;
  tidal_worker *w = t->w;
  const void *key;
  int i;
  (void)status;
  if (w != NULL && w->ctx->cur == t && t->state == TS_RUNNING && t->co == L) {
    /* the scheduler: the t->nres values it passed are above the key */
    if (t->nres == 0) {
      key = lua_touserdata(L, -1);
      lua_settop(L, -2);
    } else {
      key = lua_touserdata(L, -1 - t->nres);
      lua_rotate(L, -1 - t->nres, -1);
      lua_settop(L, -2);
    }
    if (key == &park_key) return t->k(L, LUA_YIELD, kc);
    /* after a budget yield: a cancellation that came meanwhile is raised
    ** here, even if the operation could complete at once, or a loop over
    ** always-ready operations would never see its timeout or abort */
    if ((t->cancel | t->tmo) && !(t->flags & TF_CSEEN))
      tidal__raise_cancel(L, t);
    return ((lua_CFunction)(void (*)(void))t->k)(L);
  }
  /* resumed by Lua code: leave everything as it was */
  for (i = lua_gettop(L); i > 0; i--) {
    key = lua_touserdata(L, i);
    if (lua_islightuserdata(L, i) && (key == &park_key || key == &restart_key))
      break;
  }
  if (i == 0) return luaL_error(L, "tidal: a task's stack was corrupted");
  lua_settop(L, i);
  refuse(L, t);
  return lua_yieldk(L, 0, kc, guard_k);
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
  return task_yield(L, t, k, &park_key);
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
  /* from a libuv callback: make the poll return at once (see tidal__poll) */
  if (w->polling) uv_stop(w->loop);
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

int tidal__budget_yield(lua_State *L, tidal_task *t, const tidal_restart *r) {
  tidal__requeue(t);
  return task_yield(L, t, (lua_KFunction)(void (*)(void))r->fn, &restart_key);
}

/* Requeue t and yield; k runs when the scheduler resumes it. */
int tidal__yield(lua_State *L, tidal_task *t, lua_KFunction k) {
  tidal__requeue(t);
  return task_yield(L, t, k, &park_key);
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
  t->flags |= TF_CSEEN; /* (budget yields, interrupt.c) */
  if (t->cancel == CK_NONE && tidal__scope_error(L, t)) return lua_error(L);
  if (t->cancel == CK_DEADLOCK && t->w != NULL) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->w->side_ref);
    lua_rawgeti(L, -1, SIDE_DEADLOCK);
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
  uv_stop(w->loop); /* so this uv_run does not go on to block */
}

int tidal__timer_start(tidal_worker *w, tidal_timer *tm, uint64_t due) {
  tm->due = due;
  tm->call = 0;
  return tidal__heap_push(&w->timers, tm);
}

int tidal__ctimer_start(tidal_worker *w, tidal_ctimer *ct, uint64_t due,
                        tidal_timer_fn fire) {
  ct->tm.due = due;
  ct->tm.call = 1;
  ct->fire = fire;
  return tidal__heap_push(&w->timers, &ct->tm);
}

void tidal__timer_stop(tidal_worker *w, tidal_timer *tm) {
  if (tm->pos) tidal__heap_remove(&w->timers, tm);
}

/* Arm the uv timer for the earliest of the heap's top, the next look for
** dropped failed tasks and limit (0: none).
** The delay is computed from the precise clock, so the timer fires at the
** deadline even when libuv's loop time uses a coarse clock. */
static void arm(tidal_worker *w, uint64_t limit) {
  tidal_timer *top = tidal__heap_top(&w->timers);
  uint64_t due = top ? top->due : 0;
  if (limit && (due == 0 || limit < due)) due = limit;
  if (w->report_at && (due == 0 || w->report_at < due)) due = w->report_at;
  /* armed for the report alone, the timer must not keep the loop alive:
  ** it wakes nobody, and deadlock detection looks at the loop */
  if (top == NULL && limit == 0)
    uv_unref((uv_handle_t *)&w->uvtimer);
  else
    uv_ref((uv_handle_t *)&w->uvtimer);
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
    if (top->call) {
      tidal_ctimer *ct = tidal__container_of(top, tidal_ctimer, tm);
      ct->fire(w, ct);
    } else { /* a task's own timer */
      tidal__wake(tidal__container_of(top, tidal_task, timer), 0);
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
  unsigned ours = w->armed && uv_has_ref((uv_handle_t *)&w->uvtimer) ? 1 : 0;
  return w->loop->active_handles > ours || w->loop->active_reqs.count > 0 ||
         atomic_load(&w->remote_pending);
}

/* A task failed and nobody waited for it: its error is reported when its
** handle is collected (task.c), so collect soon after, and again later,
** less and less often, while such a handle is still held. Never on the
** hot path: only after a failure nobody waited for. */
static void report(tidal_worker *w, lua_State *L) {
  if (w->closing || !tidal__report_dropped(L, w)) {
    w->report_at = 0; /* (shutting down: every one is reported then) */
    return;
  }
  if (w->report_every < TIDAL_REPORT_MAX) w->report_every *= 2;
  w->report_at = uv_hrtime() + w->report_every;
}

/* Polls the loop once: without blocking, or (block) until an I/O event, a
** remote wake or the earliest deadline (or max_wait_ns, if sooner).
**
** libuv runs due timers before it polls for I/O, and then polls with the
** timeout of the next active timer, or none at all. So when our timer is
** already due as uv_run starts (the deadline passed while tasks ran or the
** collector did), it fires first and the poll would then block with no
** timeout at all while an async handle keeps the loop alive. The timer's
** callback therefore stops the loop, and so does any callback that wakes a
** task (tidal__wake): uv_run then polls without blocking and returns. */
void tidal__poll(tidal_worker *w, lua_State *L, int block,
                 uint64_t max_wait_ns) {
  w->st.polls++;
  if (!block) {
    if (loop_has_io(w)) {
      arm(w, 0);
      w->polling = 1;
      uv_run(w->loop, UV_RUN_NOWAIT);
      w->polling = 0;
    }
  } else {
    arm(w, max_wait_ns ? uv_hrtime() + max_wait_ns : 0);
    w->polling = 1;
    uv_run(w->loop, UV_RUN_ONCE);
    w->polling = 0;
  }
  expire(w);
  tidal__drain_remote(w, L);
  if (w->report_at && uv_hrtime() >= w->report_at) report(w, L);
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
  w->anchors_ref = w->pool_ref = w->side_ref = w->ipool_ref = LUA_NOREF;
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  w->L = lua_tothread(L, -1);
  lua_pop(L, 1);
  w->ctx = ctx;
  w->next_id = 1;
  /* Lua allocations first: they may raise, and nothing needs undoing yet */
  w->anchors_ref = new_ref_table(L, 0, NULL);
  w->pool_ref = new_ref_table(L, 0, NULL);
  w->ipool_ref = new_ref_table(L, 0, NULL);
  lua_createtable(L, SIDE_N, 0);
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_rawseti(L, -2, SIDE_UNOBSERVED); /* failed tasks: weak keys */
  w->side_ref = luaL_ref(L, LUA_REGISTRYINDEX);

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
  luaL_unref(L, LUA_REGISTRYINDEX, w->side_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, w->ipool_ref);
  w->anchors_ref = w->pool_ref = w->side_ref = w->ipool_ref = LUA_NOREF;
  return rc;
}

int tidal__ext_set(tidal_worker *w, const tidal_ext_class *c, void *data) {
  if (!w->handles_open) return UV_ECANCELED;
  for (int i = 0; i < w->next_ext; i++)
    if (w->ext[i].cls == c) {
      w->ext[i].data = data;
      return 0;
    }
  if (w->next_ext == TIDAL_EXT_MAX) return UV_ENOMEM;
  w->ext[w->next_ext].cls = c;
  w->ext[w->next_ext].data = data;
  w->next_ext++;
  return 0;
}

/* The worker starts shutting down: the extensions stop work in flight. */
void tidal__ext_shutdown(tidal_worker *w) {
  for (int i = 0; i < w->next_ext; i++)
    if (w->ext[i].cls->shutdown) w->ext[i].cls->shutdown(w, w->ext[i].data);
}

void tidal__worker_close_handles(tidal_worker *w) {
  if (!w->handles_open) return;
  w->handles_open = 0;
  for (int i = 0; i < w->next_ext; i++) {
    tidal_ext *e = &w->ext[i];
    if (e->cls->close) e->cls->close(w, e->data);
    e->data = NULL;
  }
  w->next_ext = 0;
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
    luaL_unref(L, LUA_REGISTRYINDEX, w->side_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, w->ipool_ref);
  }
  w->anchors_ref = w->pool_ref = w->side_ref = w->ipool_ref = LUA_NOREF;
}
