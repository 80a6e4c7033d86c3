/*
** poll.c: how a worker waits -- its deadline heap (timer.c) drives one
** libuv timer, the loop is polled (without blocking, or until an event, a
** remote wake or the earliest deadline), due timers fire after the poll,
** and idle workers collect garbage.
*/
#include "kernel.h"

static void uvtimer_cb(uv_timer_t *t) {
  tidal_worker *w = tidal__container_of(t, tidal_uvh, timer)->w;
  if (w == NULL) return;
  w->armed = 0;    /* one-shot; expiry happens after uv_run returns */
  if (w->hostloop) /* the host's uv_run: expiry comes in the check phase */
    tidal__host_kick(w);
  else
    uv_stop(w->loop); /* so this uv_run does not go on to block */
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
    uv_unref((uv_handle_t *)&w->h->timer);
  else
    uv_ref((uv_handle_t *)&w->h->timer);
  if (due == 0) {
    if (w->armed) {
      uv_timer_stop(&w->h->timer);
      w->armed = 0;
    }
    return;
  }
  if (w->armed == due) return;
  uint64_t now = uv_hrtime();
  uint64_t ms = due > now ? (due - now + 999999) / 1000000 : 0;
  uv_update_time(w->loop);
  uv_timer_start(&w->h->timer, uvtimer_cb, ms, 0);
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
  unsigned ours = w->armed && uv_has_ref((uv_handle_t *)&w->h->timer) ? 1 : 0;
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

/* What follows a poll: due timers fire, other threads' posts run, dropped
** failed tasks are reported when it is time. */
static void after_poll(tidal_worker *w, lua_State *L) {
  expire(w);
  tidal__drain_remote(w, L);
  if (w->report_at && uv_hrtime() >= w->report_at) report(w, L);
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
  after_poll(w, L);
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

/* ------------------------------------------------------ a host's loop */

/* Tasks are ready while the loop is elsewhere (a callback of the host's,
** a timer): the idle handle makes its next poll return at once, so the
** check phase comes soon. */
static void idle_cb(uv_idle_t *i) {
  (void)i; /* (its being active is what counts) */
}

void tidal__host_kick(tidal_worker *w) {
  if (w->idle_on || w->h == NULL) return;
  w->idle_on = 1;
  uv_idle_start(&w->h->idle, idle_cb);
}

static void idle_set(tidal_worker *w, int on) {
  if (on) {
    tidal__host_kick(w);
  } else if (w->idle_on) {
    w->idle_on = 0;
    uv_idle_stop(&w->h->idle);
  }
}

static int host_run(lua_State *L) {
  tidal_worker *w = (tidal_worker *)lua_touserdata(L, 1);
  uint64_t retry = 0;
  after_poll(w, L);
  tidal__run_batch(w, L, TIDAL_POLL_EVERY);
  if (!w->rq_len && w->st.alive > 0) retry = tidal__idle_gc(w, L);
  lua_pushinteger(L, (lua_Integer)retry);
  return 1;
}

/* The check phase of the host's loop: what a poll of its own loop would
** do, then as many tasks as a batch holds. Skipped while this state runs
** other tidal code (a task called uv.run: the loop is nested in it). */
void tidal__host_check(tidal_worker *w) {
  tidal_ctx *ctx = w->ctx;
  lua_State *L = w->L;
  uint64_t retry = 0;
  if (w->running || w->closing || ctx->w != NULL || ctx->cur != NULL) {
    idle_set(w, 0); /* the one running now takes care of it */
    return;
  }
  if (!lua_checkstack(L, 4)) return;
  ctx->w = w;
  w->running = 1;
  lua_pushcfunction(L, host_run);
  lua_pushlightuserdata(L, w);
  int st = lua_pcall(L, 1, 1, 0);
  ctx->w = NULL;
  ctx->cur = NULL;
  w->running = 0;
  if (st != LUA_OK) { /* out of memory: said, and tried again next turn */
    tidal__report_text(L, w, TIDAL_REPORT_OTHER, -1);
    lua_pop(L, 1);
  } else {
    retry = (uint64_t)lua_tointeger(L, -1);
    lua_pop(L, 1);
  }
  if (w->h == NULL) return; /* (closed meanwhile: cannot happen, but) */
  idle_set(w, w->rq_len > 0);
  arm(w, retry ? uv_hrtime() + retry : 0);
}
