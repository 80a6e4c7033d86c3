/*
** blocking.c: tidal.spawn_blocking(fn, ...) runs fn on libuv's thread pool,
** where it may block or burn CPU without stalling the worker's loop.
**
** fn and its arguments are copied (transfer.c) into a Lua state taken from
** the runtime's pool of idle states (created on demand with the standard
** libraries and the host's package.path / package.cpath, so `require`
** works; reused, not created per call). The results -- or the error and its
** traceback -- are copied back and the JoinHandle's record is finished on
** the worker that queued the job. Aborting a job that is still queued
** cancels it (it never runs); aborting a running one interrupts its Lua code
** (a count hook raises a "cancelled" error in it, see interrupt.c) and
** discards whatever it returns; a runtime the job runs (tidal.run, rt:step)
** has its main task cancelled and its running Lua code interrupted, and
** rt:step raises the job's cancellation. At shutdown the worker's jobs are
** cancelled and interrupted the same way, so a runaway job cannot keep the
** process alive; a C function that does not return (a blocking read) can.
*/
#include "parallel.h"

#include <lualib.h>

#include <stdlib.h>
#include <string.h>

/* The runtime's idle Lua states: an extension of its family, made on
** first use and freed with it (after every worker thread is joined). */
typedef struct spool {
  uv_mutex_t lock; /* guards the states, and the jobs' L, inner, stop */
  lua_State **states;
  int n, cap;
} spool;

typedef struct tidal_bjob {
  uv_work_t req;
  tidal_record *r;
  tidal_family *f;
  spool *pool;
  tidal_worker *w; /* queued it; after_work runs on its loop */
  struct tidal_bjob *next, *prev; /* w's unfinished jobs (w's thread) */
  lua_State *L; /* the pool state running it, under pool->lock */
  tidal_worker *inner; /* a runtime running in the job, under pool->lock */
  int stop;     /* cancelled (abort, shutdown): written under pool->lock */
  int listed;   /* in w's list */
  tidal_buf out;
  int outcome;
} tidal_bjob;

/* w's unfinished jobs: an extension of the worker (blocking_ext) */
typedef struct bjobs {
  tidal_bjob *head;
} bjobs;

/* --------------------------------------------------------- state pool */

static void *spool_create(tidal_family *f) {
  spool *p = (spool *)calloc(1, sizeof *p);
  (void)f;
  if (p != NULL && uv_mutex_init(&p->lock)) {
    free(p);
    p = NULL;
  }
  return p;
}

static void spool_free(tidal_family *f, void *data) {
  spool *p = (spool *)data;
  (void)f;
  for (int i = 0; i < p->n; i++) lua_close(p->states[i]);
  free(p->states);
  uv_mutex_destroy(&p->lock);
  free(p);
}

static const tidal_fext_class spool_class = {"blocking.states", spool_create,
                                             spool_free};

/* A pool state: the standard libraries, the host's package paths, and
** tidal.core with its context, so that the handles a job gets (channel
** ends, locks, JoinHandles...) have their types and methods there. Jobs
** run outside any task: waiting methods say how to wait there. */
static int setup_state(lua_State *L) {
  tidal_family *f = (tidal_family *)lua_touserdata(L, 1);
  luaL_openlibs(L);
  lua_getglobal(L, "package");
  lua_pushstring(L, f->path);
  lua_setfield(L, -2, "path");
  lua_pushstring(L, f->cpath);
  lua_setfield(L, -2, "cpath");
  tidal__ctx_need(L)->pool = 1;
  return 0;
}

static lua_State *pool_take(spool *p, tidal_family *f) {
  lua_State *L = NULL;
  uv_mutex_lock(&p->lock);
  if (p->n > 0) L = p->states[--p->n];
  uv_mutex_unlock(&p->lock);
  if (L != NULL) return L;
  if ((L = luaL_newstate()) == NULL) return NULL;
  lua_pushcfunction(L, setup_state);
  lua_pushlightuserdata(L, f);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    lua_close(L);
    return NULL;
  }
  return L;
}

static void pool_give(spool *p, lua_State *L) {
  lua_settop(L, 0);
  uv_mutex_lock(&p->lock);
  if (p->n == p->cap) {
    int cap = p->cap ? p->cap * 2 : 8;
    lua_State **v = (lua_State **)realloc(p->states, (size_t)cap * sizeof *v);
    if (v == NULL) {
      uv_mutex_unlock(&p->lock);
      lua_close(L);
      return;
    }
    p->states = v;
    p->cap = cap;
  }
  p->states[p->n++] = L;
  uv_mutex_unlock(&p->lock);
}

/* ---------------------------------------------------------- the job */

static int msgh(lua_State *L) {
  luaL_traceback(L, L, NULL, 1);
  lua_setglobal(L, "\1tidal_traceback"); /* read back right after */
  return 1;
}

static int run_protected(lua_State *L) {
  tidal_bjob *job = (tidal_bjob *)lua_touserdata(L, 1);
  tidal_buf *in = tidal__record_input(job->r);
  lua_settop(L, 0);
  lua_pushcfunction(L, msgh);
  int n = tidal__xfer_decode(L, in->data, in->len);
  if (n < 1) {
    job->outcome = TIDAL_R_FAILED;
    lua_pushnil(L);
    tidal__encode_outcome(L, 0, 2, NULL, &job->out);
    return 0;
  }
  if (lua_pcall(L, n - 1, LUA_MULTRET, 1) == LUA_OK) {
    job->outcome = TIDAL_R_OK;
    tidal__encode_outcome(L, 1, lua_gettop(L) - 1, NULL, &job->out);
  } else {
    job->outcome = TIDAL_R_FAILED;
    lua_getglobal(L, "\1tidal_traceback");
    lua_pushnil(L);
    lua_setglobal(L, "\1tidal_traceback");
    tidal__encode_outcome(L, 0, 2, NULL, &job->out);
  }
  return 0;
}

/* Set on a running job's state to interrupt it: raises a cancellation in
** its Lua code (never in a finalizer: then it comes back later). */
static void job_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  if (tidal__irq_in_finalizer(L)) {
    lua_sethook(L, job_hook, LUA_MASKCOUNT, TIDAL_IRQ_GRACE / 16);
    return;
  }
  tidal__error_push(L, "cancelled", "tidal.spawn_blocking: the job was "
                                    "cancelled");
  lua_error(L);
}

static void job_runtime(void *data, tidal_worker *w);

/* On a thread of the pool. */
static void work_cb(uv_work_t *req) {
  tidal_bjob *job = (tidal_bjob *)req->data;
  lua_State *L;
  int stop;
  if (tidal__record_aborted(job->r)) {
    job->outcome = TIDAL_R_CANCELLED;
    return;
  }
  if ((L = pool_take(job->pool, job->f)) == NULL) {
    job->outcome = TIDAL_R_CANCELLED;
    return;
  }
  uv_mutex_lock(&job->pool->lock);
  stop = job->stop;
  if (!stop) job->L = L; /* from now on, stopping it interrupts L */
  uv_mutex_unlock(&job->pool->lock);
  if (stop) {
    job->outcome = TIDAL_R_CANCELLED;
    pool_give(job->pool, L);
    return;
  }
  tidal_ctx *ctx = tidal__ctx(L);
  ctx->host_hook = job_runtime;
  ctx->host_data = job;
  lua_pushcfunction(L, run_protected);
  lua_pushlightuserdata(L, job);
  int st = lua_pcall(L, 1, 0, 0);
  ctx->host_hook = NULL;
  ctx->host_data = NULL;
  uv_mutex_lock(&job->pool->lock);
  job->L = NULL;
  uv_mutex_unlock(&job->pool->lock);
  lua_sethook(L, NULL, 0, 0); /* a hook set too late must not hit a later job */
  if (st != LUA_OK) { /* out of memory: a broken state */
    job->outcome = TIDAL_R_FAILED;
    if (job->out.data) tidal__xfer_discard(job->out.data, job->out.len);
    tidal__buf_free(&job->out);
    lua_close(L);
    return;
  }
  /* The job's copies of handles are garbage now: collect them before the
  ** job is reported done, so that the channel ends and oneshot senders it
  ** was given are closed by then (a `for v in rx` loop over a channel a
  ** job fed ends with the job), not whenever this state collects next. */
  lua_settop(L, 0);
  if (tidal__xfer_has_handles(tidal__record_input(job->r)->data,
                              tidal__record_input(job->r)->len) ||
      tidal__xfer_has_handles(job->out.data, job->out.len))
    lua_gc(L, LUA_GCCOLLECT);
  pool_give(job->pool, L);
}

static void bjobs_close(tidal_worker *w, void *data);
static void bjobs_shutdown(tidal_worker *w, void *data);

/* w's extension (the kernel closes it with the worker, and runs its
** shutdown hook when the worker starts shutting down) */
static const tidal_ext_class blocking_ext = {"blocking", bjobs_close,
                                             bjobs_shutdown};

static void unlist(tidal_bjob *job) {
  bjobs *js;
  if (!job->listed) return;
  js = (bjobs *)tidal__ext_get(job->w, &blocking_ext);
  job->listed = 0;
  if (job->prev)
    job->prev->next = job->next;
  else
    js->head = job->next;
  if (job->next) job->next->prev = job->prev;
  job->next = job->prev = NULL;
}

/* On the worker of a runtime running inside a job that was stopped: its
** main task is cancelled (where it waits), and with it the runtime. */
static void stop_inner(tidal_worker *w, lua_State *L, void *arg) {
  (void)L;
  (void)arg;
  if (w->main != NULL) tidal__cancel(w->main, CK_ABORT);
}

/* The kernel's host hook of a pool state while it runs a job: a runtime's
** loop starts (w) or stops (NULL) running in the job (tidal.run there).
** Stopping the job then cancels that runtime's main task. */
static void job_runtime(void *data, tidal_worker *w) {
  tidal_bjob *job = (tidal_bjob *)data;
  int stop;
  uv_mutex_lock(&job->pool->lock);
  /* leaving: the interruption stop_job asked for ends with this entry: a
  ** runtime kept (in a global) for a later job must not carry it there */
  if (w == NULL && job->inner != NULL)
    atomic_fetch_and(&job->inner->irq, ~IRQ_SHUTDOWN);
  job->inner = w;
  stop = job->stop;
  uv_mutex_unlock(&job->pool->lock);
  if (w != NULL && stop) stop_inner(w, NULL, NULL); /* (w's thread: at once) */
}

/* Was the job this pool state runs (if any) stopped: aborted, or its
** runtime shut down? */
int tidal__blocking_stopped(tidal_ctx *ctx) {
  tidal_bjob *job;
  int stop;
  if (ctx->host_hook != job_runtime) return 0;
  job = (tidal_bjob *)ctx->host_data;
  uv_mutex_lock(&job->pool->lock);
  stop = job->stop;
  uv_mutex_unlock(&job->pool->lock);
  return stop;
}

/* w's thread: a queued job never runs, a running one is interrupted (and a
** runtime it runs in tidal.run has its main task cancelled, and the Lua
** code it runs now interrupted). */
static void stop_job(tidal_bjob *job) {
  uv_mutex_lock(&job->pool->lock);
  job->stop = 1;
  if (job->L != NULL)
    lua_sethook(job->L, job_hook, LUA_MASKCOUNT, TIDAL_IRQ_GRACE);
  if (job->inner != NULL) {
    tidal__wake_remote(job->inner, NULL, stop_inner, NULL);
    /* a busy task there never lets that worker see the post: interrupt
    ** its Lua code as at shutdown (job->inner stays valid while we hold
    ** the lock: job_runtime takes it when the runtime leaves) */
    tidal__irq_request(job->inner, IRQ_SHUTDOWN);
  }
  uv_mutex_unlock(&job->pool->lock);
  uv_cancel((uv_req_t *)&job->req); /* fails (harmless) once it runs */
}

/* Shutdown of w: stop every job it queued (their after_cb still runs, on
** w's loop, before the loop closes). */
static void bjobs_shutdown(tidal_worker *w, void *data) {
  bjobs *js = (bjobs *)data;
  (void)w;
  for (tidal_bjob *job = js->head; job != NULL; job = job->next)
    if (!job->stop) stop_job(job);
}

static void bjobs_close(tidal_worker *w, void *data) {
  bjobs *js = (bjobs *)data;
  bjobs_shutdown(w, js);
  while (js->head != NULL) unlist(js->head); /* the list goes away */
  free(js);
}

/* Back on the worker's loop. */
static void after_cb(uv_work_t *req, int status) {
  tidal_bjob *job = (tidal_bjob *)req->data;
  tidal_buf none = {NULL, 0, 0};
  int outcome = job->outcome;
  tidal_buf *in = tidal__record_input(job->r);
  unlist(job);
  /* the job is over: what its arguments hold is released now */
  if (in->data) tidal__xfer_discard(in->data, in->len);
  tidal__buf_free(in);
  if (status == UV_ECANCELED || job->stop || tidal__record_aborted(job->r))
    outcome = TIDAL_R_CANCELLED;
  if (outcome == TIDAL_R_CANCELLED) {
    if (job->out.data) tidal__xfer_discard(job->out.data, job->out.len);
    tidal__buf_free(&job->out);
    tidal__record_finish(job->r, job->w, outcome, &none);
  } else {
    tidal__record_finish(job->r, job->w, outcome, &job->out);
  }
  tidal__record_unref(job->r); /* (finish cleared its cancel callback) */
  free(job);
}

/* The record's cancel callback while the job is queued or runs (w's
** thread): an abort stops it. */
static void cancel_job(void *arg) {
  stop_job((tidal_bjob *)arg);
}

/* tidal.spawn_blocking(fn, ...) -> JoinHandle */
static int l_spawn_blocking(lua_State *L) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  tidal_worker *w = ctx->w;
  if (w == NULL || w->family == NULL)
    return luaL_error(L, "tidal.spawn_blocking: not inside a tidal task "
                         "(wrap the code in tidal.run)");
  if (w->hostloop) /* its jobs' ends need that loop, which close does not
                     run (tidal.h) */
    return luaL_error(L, "tidal.spawn_blocking: not available in a runtime "
                         "on a host's loop (use tidal.spawn_parallel, or a "
                         "runtime with its own loop)");
  if (lua_type(L, 1) != LUA_TFUNCTION)
    return luaL_error(L,
                      "tidal.spawn_blocking: expected a Lua function to run "
                      "on the thread pool, got %s",
                      lua_type(L, 1) == LUA_TNONE ? "no value"
                                                  : luaL_typename(L, 1));
  bjobs *js = (bjobs *)tidal__ext_get(w, &blocking_ext);
  if (js == NULL && !w->closing) {
    if ((js = (bjobs *)calloc(1, sizeof *js)) == NULL)
      return luaL_error(L, "tidal.spawn_blocking: not enough memory");
    if (tidal__ext_set(w, &blocking_ext, js)) {
      free(js);
      return luaL_error(L, "tidal.spawn_blocking: not enough memory");
    }
  }
  spool *pool = (spool *)tidal__family_ext(w->family, &spool_class);
  if (pool == NULL)
    return luaL_error(L, "tidal.spawn_blocking: not enough memory");
  /* everything that may raise comes before the record and job exist */
  int n = lua_gettop(L);
  luaL_checkstack(L, 4, "tidal.spawn_blocking");
  tidal_record **slot = tidal__push_rhandle(L, ctx, NULL); /* closed */
  tidal_record *r = tidal__record_new();
  tidal_bjob *job = (tidal_bjob *)calloc(1, sizeof *job);
  if (r == NULL || job == NULL) {
    free(job);
    if (r) tidal__record_unref(r);
    return luaL_error(L, "tidal.spawn_blocking: not enough memory");
  }
  if (w->closing) { /* shutting down: cancelled before it could start */
    tidal_buf none = {NULL, 0, 0};
    free(job);
    tidal__record_target(r, w, atomic_fetch_add(&w->family->next_id, 1), 0);
    tidal__record_finish(r, w, TIDAL_R_CANCELLED, &none);
    *slot = r; /* the handle (on top) takes the caller's reference */
    return 1;
  }
  if (tidal__xfer_encode(L, 1, n, "args", tidal__record_input(r))) {
    lua_pushfstring(L, "tidal.spawn_blocking: %s (copy only plain data, Lua "
                       "functions and tidal handles to the thread pool)",
                    lua_tostring(L, -1));
    free(job);
    tidal__record_unref(r);
    return lua_error(L);
  }
  job->r = r;
  job->f = w->family;
  job->pool = pool;
  job->w = w;
  job->req.data = job;
  tidal__record_target(r, w, atomic_fetch_add(&w->family->next_id, 1), 0);
  tidal__record_on_cancel(r, cancel_job, job);
  tidal__record_ref(r); /* the job's */
  int rc = uv_queue_work(w->loop, &job->req, work_cb, after_cb);
  if (rc) {
    tidal__record_on_cancel(r, NULL, NULL);
    tidal__record_unref(r);
    tidal__record_unref(r);
    free(job);
    return luaL_error(L, "tidal.spawn_blocking: %s", uv_strerror(rc));
  }
  job->next = js->head;
  if (js->head) js->head->prev = job;
  js->head = job;
  job->listed = 1;
  *slot = r; /* the handle (on top) takes the caller's reference */
  return 1;
}

static const luaL_Reg funcs[] = {{"spawn_blocking", l_spawn_blocking},
                                 {NULL, NULL}};

/* stack: module, ctx */
void tidal__blocking_open(lua_State *L) {
  tidal__register(L, funcs);
}
