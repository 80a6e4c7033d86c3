/*
** loop.c: the run loops of a worker -- block_on (run a main task until it
** is done, detecting deadlock), step (one round for a host that drives the
** runtime from its own loop), shutdown (cancel every task and let it
** unwind), a worker thread's scheduler, and dropping a worker whose
** runtime was collected. The Runtime object (lib/runtime.c) and the host C
** API (lib/host.c) are built on these.
*/
#include "kernel.h"

#include <limits.h>
#include <stdio.h>

/* ------------------------------------------------------------- deadlock */

/* Nothing can run and nothing can wake anyone: fail the main task with an
** error that lists every parked task and where it waits. */
static void deadlock(lua_State *L, tidal_worker *w) {
  int n = 1;
  lua_pushliteral(L,
                  "deadlock: every task is waiting and nothing can wake them:");
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->anchors_ref);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    tidal_task *t = (tidal_task *)lua_touserdata(L, -1);
    if (t->state == TS_PARKED) {
      luaL_checkstack(L, 4, "tidal: deadlock report");
      lua_pushliteral(L, "\n  ");
      tidal__push_label(L, t, lua_gettop(L) - 1);
      lua_pushfstring(L, " waits in %s at ", t->op ? t->op->name : "?");
      tidal__push_where(L, t, lua_gettop(L) - 3);
      lua_concat(L, 4);
      lua_insert(L, -4); /* below anchors, key, value */
      n++;
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  lua_concat(L, n);
  tidal__error_push(L, "deadlock", "%s", lua_tostring(L, -1));
  lua_remove(L, -2);
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->side_ref);
  lua_insert(L, -2);
  lua_rawseti(L, -2, SIDE_DEADLOCK);
  lua_pop(L, 1);
  tidal__cancel(w->main, CK_DEADLOCK);
}

/* ------------------------------------------------------------- the loops */

/* Ctrl-C: the main task is cancelled with kind "interrupted"; if it then
** runs on without waiting, its Lua code is interrupted (interrupt.c). */
static void interrupt_main(tidal_task *main) {
  tidal__cancel(main, CK_INTERRUPT);
  if (main->state != TS_DONE && main->co != NULL) tidal__irq_set(main->co);
}

static int block_on_loop(lua_State *L) {
  tidal_worker *w = (tidal_worker *)lua_touserdata(L, 1);
  tidal_task *main = w->main;
  for (;;) {
    tidal__run_batch(w, L, TIDAL_POLL_EVERY);
    if (main->state == TS_DONE) break;
    if (tidal__sigint_take(w)) {
      interrupt_main(main);
      continue;
    }
    if (w->rq_len) {
      tidal__poll(w, L, 0, 0);
    } else if (tidal__pending(w)) {
      uint64_t retry = w->external ? tidal__idle_gc(w, L) : 0;
      if (!w->rq_len) tidal__poll(w, L, 1, retry);
    } else {
      /* idle: let finalizers close what was dropped, then look again */
      lua_gc(L, LUA_GCCOLLECT);
      if (w->rq_len || tidal__pending(w)) continue;
      if (main->cancel == CK_DEADLOCK && main->state == TS_PARKED) {
        tidal__task_finish_forced(w, L, main); /* cannot be woken at all */
        break;
      }
      deadlock(L, w);
    }
  }
  return 0;
}

/* Cancels every task and lets them unwind. Blocking jobs are stopped, and
** a task that runs on without waiting (a loop that never reaches a wait)
** is interrupted (interrupt.c), so shutdown cannot wait forever on Lua
** code. On a host's loop, which this must not run (it may be running it
** now), a task still waiting once the others are done is closed where it
** waits. */
static int shutdown_loop(lua_State *L) {
  tidal_worker *w = (tidal_worker *)lua_touserdata(L, 1);
  tidal__ext_shutdown(w); /* work in flight stops (blocking jobs) */
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->anchors_ref);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    tidal_task *t = (tidal_task *)lua_touserdata(L, -1);
    tidal__cancel(t, CK_SHUTDOWN);
    if (t->state != TS_DONE && t->co != NULL) tidal__irq_set(t->co);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  while (w->st.alive > 0 || w->rq_len > 0) {
    if (w->rq_len) {
      tidal__run_batch(w, L, INT_MAX);
      tidal__poll(w, L, 0, 0);
    } else if (w->hostloop && atomic_load(&w->remote_pending)) {
      tidal__drain_remote(w, L); /* (a host's loop is not run here) */
    } else if (!w->hostloop && (w->timers.n || uv_loop_alive(w->loop))) {
      tidal__poll(w, L, 1, 0);
    } else { /* parked with nothing to wake them: close them as they are */
      lua_rawgeti(L, LUA_REGISTRYINDEX, w->anchors_ref);
      lua_pushnil(L);
      while (lua_next(L, -2)) {
        tidal_task *t = (tidal_task *)lua_touserdata(L, -1);
        lua_pop(L, 1);
        if (t->state == TS_PARKED) /* clears only the current key */
          tidal__task_finish_forced(w, L, t);
      }
      lua_pop(L, 1);
    }
  }
  tidal__report_unobserved(L, w);
  return 0;
}

static int step_loop(lua_State *L) {
  tidal_worker *w = (tidal_worker *)lua_touserdata(L, 1);
  double timeout = lua_tonumber(L, 2);
  if (w->rq_len == 0 && timeout > 0)
    tidal__poll(w, L, 1, (uint64_t)(timeout * 1e9) + 1);
  else
    tidal__poll(w, L, 0, 0);
  if (w->rq_len) tidal__run_batch(w, L, (int)w->rq_len);
  return 0;
}

/* Runs loop(w, extra) protected, with ctx->w set; rethrows its error. */
static void enter(lua_State *L, tidal_worker *w, lua_CFunction loop,
                  double extra) {
  tidal_ctx *ctx = w->ctx;
  int st;
  ctx->w = w;
  w->running = 1;
  if (ctx->host_hook) ctx->host_hook(ctx->host_data, w); /* (a job's) */
  lua_pushcfunction(L, loop);
  lua_pushlightuserdata(L, w);
  lua_pushnumber(L, extra);
  st = lua_pcall(L, 2, 0, 0);
  if (ctx->host_hook) ctx->host_hook(ctx->host_data, NULL);
  ctx->w = NULL;
  ctx->cur = NULL;
  w->running = 0;
  if (st != LUA_OK) {
    tidal__sigint_stop(w);
    lua_error(L);
  }
}

/* Runs stack[first..top] as the main task until it is done; pushes its
** handle and returns it. Ctrl-C is watched from here on: the caller stops
** watching (tidal.run after shutting down). */
tidal_task *tidal__block_on(lua_State *L, tidal_worker *w, int first) {
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "main");
  lua_setfield(L, -2, "name");
  lua_insert(L, first);
  tidal_task *main = tidal__spawn(L, w, first);
  w->main = main;
  tidal__sigint_start(w);
  enter(L, w, block_on_loop, 0);
  tidal__sigint_take(w); /* too late for main: nothing left to act on */
  w->main = NULL;
  return main;
}

void tidal__worker_step(lua_State *L, tidal_worker *w, double timeout) {
  enter(L, w, step_loop, timeout);
}

/* Worker 0's tasks unwind first (the caller then marks its runtime closed
** and calls tidal__worker_close). */
void tidal__worker_unwind(lua_State *L, tidal_worker *w) {
  w->closing = 1;
  enter(L, w, shutdown_loop, 0);
}

/* w (worker 0 of a runtime) runs in its state: listed in the state's open
** runtimes, where task.c finds a task by its coroutine. */
void tidal__worker_list(tidal_worker *w) {
  w->rt_next = w->ctx->runtimes;
  w->ctx->runtimes = w;
}

/* w's runtime is closed: out of its state's list of open runtimes. */
static void unlist(tidal_worker *w) {
  tidal_worker **p = &w->ctx->runtimes;
  while (*p != NULL && *p != w) p = &(*p)->rt_next;
  if (*p != NULL) *p = w->rt_next;
  w->rt_next = NULL;
}

/* Every worker thread cancels its own tasks and ends; no callback runs
** after this returns. */
void tidal__worker_close(lua_State *L, tidal_worker *w) {
  unlist(w);
  if (w->family) tidal__family_stop(w->family);
  tidal__worker_retire(w, L); /* late posts run (and finish as cancelled) */
  tidal__worker_close_handles(w); /* (stops watching Ctrl-C) */
  tidal__irq_quiesce(w);
  tidal__worker_free(w);
  if (w->family) tidal__family_free(w->family);
  w->family = NULL;
}

static int worker_loop(lua_State *L) {
  tidal_worker *w = (tidal_worker *)lua_touserdata(L, 1);
  while (!w->stop) {
    uint64_t retry = 0;
    tidal__run_batch(w, L, TIDAL_POLL_EVERY);
    if (!w->rq_len) retry = tidal__idle_gc(w, L);
    tidal__poll(w, L, w->rq_len == 0, retry);
  }
  return 0;
}

/* Runs loop protected; an error (out of memory) is reported, not fatal. */
static int run_reporting(lua_State *L, tidal_worker *w, lua_CFunction loop) {
  lua_pushcfunction(L, loop);
  lua_pushlightuserdata(L, w);
  w->ctx->w = w;
  w->running = 1;
  int st = lua_pcall(L, 1, 0, 0);
  w->ctx->w = NULL;
  w->ctx->cur = NULL;
  w->running = 0;
  if (st != LUA_OK) {
    char msg[400];
    snprintf(msg, sizeof msg, "worker %d: %s", w->index,
             lua_isstring(L, -1) ? lua_tostring(L, -1) : "error");
    tidal__report_msg(NULL, w, TIDAL_REPORT_OTHER, msg);
    lua_pop(L, 1);
  }
  return st;
}

/* A worker thread's scheduler: runs until the runtime stops it, then
** cancels its tasks and lets them unwind. */
void tidal__worker_run(lua_State *L, tidal_worker *w) {
  while (run_reporting(L, w, worker_loop) != LUA_OK && !w->stop) {
  }
  w->closing = 1;
  run_reporting(L, w, shutdown_loop);
}


double tidal__worker_next_timeout(tidal_worker *w) {
  if (w->rq_len) return 0;
  tidal_timer *top = tidal__heap_top(&w->timers);
  if (top != NULL) {
    uint64_t now = uv_hrtime();
    return top->due > now ? (double)(top->due - now) / 1e9 : 0;
  }
  if (!uv_loop_alive(w->loop)) return -1;
  int ms = uv_backend_timeout(w->loop);
  return ms < 0 ? -1 : ms / 1e3;
}

/* A runtime collected without close(): free the loop without running any
** task code (a finalizer must not resume coroutines). Tasks are dropped
** as they are; those who hear of a task's end (subscribers) hear it was
** cancelled. */
void tidal__worker_drop(lua_State *L, tidal_worker *w) {
  unlist(w);
  /* Withdraw the waits first, while every task is intact: a parked task is
  ** registered in the wait queue of its primitive, which may outlive this
  ** runtime (a channel or lock shared with other code); left there, a later
  ** send or release would wake a task that no longer exists. */
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->anchors_ref);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    tidal_task *t = (tidal_task *)lua_touserdata(L, -1);
    if (t->state == TS_PARKED && t->op != NULL && t->op->cancel != NULL) {
      t->op->cancel(t);
      t->state = TS_RUNNABLE; /* in no queue now; dropped below */
      t->op = NULL;
      t->wobj = NULL;
    }
    lua_pop(L, 1);
  }
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    tidal_task *t = (tidal_task *)lua_touserdata(L, -1);
    int started = t->co != NULL;
    t->state = TS_DONE;
    t->flags |= TF_CANCELLED | (started ? 0 : TF_NOSTART);
    t->co = NULL;
    if (t->cancel < CK_SHUTDOWN) t->cancel = CK_SHUTDOWN;
    tidal__task_release(L, t, started);
    if (t->ext != NULL) {
      tidal_sub *sub; /* a copy of its handle elsewhere hears it now */
      /* a task set outliving the runtime (a group) forgets it */
      if (t->ext->set != NULL) tidal__taskset_remove(t->ext->set, t);
      while ((sub = t->ext->subs) != NULL) {
        t->ext->subs = sub->next;
        sub->next = NULL;
        sub->cls->release(sub, L, t, lua_gettop(L)); /* (cancelled) */
      }
      t->ext->joiners = (tidal_task *)w->free_exts; /* freed below */
      w->free_exts = t->ext;
      t->ext = NULL;
    }
    t->w = NULL;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  w->closing = 1;
  if (w->family) tidal__family_stop(w->family);
  tidal__worker_retire(w, L); /* runs no task code: see the posts there */
  tidal__worker_close_handles(w);
  tidal__irq_quiesce(w);
  tidal__worker_free(w);
  if (w->family) tidal__family_free(w->family);
  w->family = NULL;
}

