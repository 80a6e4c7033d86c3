/*
** sched.c: the scheduler's core. The run queue, the anchor slots, and park
** / wake / cancel: the interface every waiting call is built on (described
** in kernel.h), with the guard that keeps Lua code from resuming a task's
** coroutine itself.
**
** Lua code never runs from a libuv callback: callbacks only move tasks to
** the run queue, and the scheduler resumes them afterwards. So no error
** ever unwinds through libuv frames.
*/
#include "kernel.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
  if (w->hostloop && !w->running) tidal__host_kick(w); /* (a host's loop) */
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
  /* (a C function has LUA_MINSTACK slots without asking) */
  if (lua_gettop(L) >= LUA_MINSTACK && !lua_checkstack(L, 1))
    luaL_error(L, "tidal: stack overflow");
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

/* Is r running a finalizer? Lua runs __gc with hooks off and turns its
** errors into warnings: a return hook would fire later, in whatever code r
** runs next. */
static int in_finalizer(lua_State *r) {
  lua_Debug ar;
  for (int level = 1; lua_getstack(r, level, &ar); level++) {
    if (lua_getinfo(r, "n", &ar) && ar.namewhat != NULL &&
        strcmp(ar.namewhat, "metamethod") == 0 && ar.name != NULL &&
        strcmp(ar.name, "__gc") == 0)
      return 1;
  }
  return 0;
}

/* Lua code resumed or closed the coroutine L of a task, instead of the
** scheduler: raises the message on top (popped) in the thread that did it.
** The resume or close itself cannot fail (a yielded coroutine is resumable
** and closable to Lua), so the error is raised as that call returns: the
** thread is found by following the resumes from the running task (or the
** main thread), and gets a return hook until then. Failing that, or in a
** finalizer, the message is reported (the host's hook, or stderr). */
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
  if (r == NULL || in_finalizer(r)) {
    tidal__report_text(L, ctx->w, TIDAL_REPORT_OTHER, -1);
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

