/*
** family.c: the workers of one runtime. Worker 0 is the runtime's own (the
** thread that runs tidal.run or drives the runtime); `workers = N` adds N
** threads, each with its own libuv loop, Lua state and scheduler. Tasks
** never migrate: spawn_parallel places a task on the least-loaded worker
** and values are copied between the states (transfer.c).
**
** A worker thread starts a fresh Lua state with the standard libraries and
** the host state's package.path / package.cpath, loads tidal, and runs its
** scheduler until the runtime shuts down: then its tasks are cancelled and
** unwind, and the thread ends. Worker 0 joins the threads before the
** runtime's memory goes away, so a worker struct outlives every message
** that could be posted to it.
*/
#include "kernel.h"

#include <lualib.h>

#ifdef __linux__
#include <sys/prctl.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *dupstr(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = (char *)malloc(n);
  if (d != NULL) memcpy(d, s, n);
  return d;
}

/* Names the calling thread (Linux allows 15 bytes): prctl rather than
** pthread_setname_np, which sanitizers intercept. */
static void set_thread_name(const char *name) {
  char buf[16];
  if (name == NULL) return;
  snprintf(buf, sizeof buf, "%s", name);
#ifdef __linux__
  prctl(PR_SET_NAME, buf, 0, 0, 0);
#endif
}

typedef struct wstart {
  tidal_family *f;
  int index;
} wstart;

/* In the new state: load tidal (the core registers the context) and set up
** the worker. */
static int boot(lua_State *L) {
  tidal_family *f = (tidal_family *)lua_touserdata(L, 1);
  int i = (int)lua_tointeger(L, 2);
  tidal_worker *w = f->w[i];
  lua_getglobal(L, "package");
  lua_pushstring(L, f->path);
  lua_setfield(L, -2, "path");
  lua_pushstring(L, f->cpath);
  lua_setfield(L, -2, "cpath");
  /* this very tidal.core, even in a host that links it in (no copy of
  ** it is loaded from cpath) */
  tidal__actx_need(L);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "tidal");
  lua_call(L, 1, 0);
  int rc = tidal__worker_init(w, L, tidal__ctx(L), NULL);
  if (rc)
    luaL_error(L, "cannot create the event loop: %s", uv_strerror(rc));
  w->family = f;
  w->index = i;
  w->slow_ns = f->slow_ns;
  tidal__async_ref(w); /* wait for messages when idle */
  return 0;
}

static void worker_thread(void *arg) {
  wstart *s = (wstart *)arg;
  tidal_family *f = s->f;
  int i = s->index;
  tidal_worker *w = f->w[i];
  lua_State *L;
  free(s);
  set_thread_name(f->thread_name);
  L = luaL_newstate();
  if (L == NULL) {
    snprintf(f->start_error, sizeof f->start_error, "not enough memory");
    uv_sem_post(&f->ready);
    return;
  }
  luaL_openlibs(L);
  lua_pushcfunction(L, boot);
  lua_pushlightuserdata(L, f);
  lua_pushinteger(L, i);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
    snprintf(f->start_error, sizeof f->start_error, "%s",
             lua_tostring(L, -1));
    lua_close(L);
    uv_sem_post(&f->ready);
    return;
  }
  atomic_store(&w->started, 1);
  uv_sem_post(&f->ready);
  tidal__worker_run(L, w); /* until the runtime shuts down */
  tidal__worker_retire(w, L);
  tidal__worker_close_handles(w);
  tidal__irq_quiesce(w); /* nobody sets a hook in L any more */
  tidal__worker_free(w);
  lua_close(L);
}

/* The family's own allocations (the workers themselves aside). */
static void free_family(tidal_family *f) {
  free(f->w);
  free(f->threads);
  free(f->thread_name);
  free(f->path);
  free(f->cpath);
  free(f);
}

tidal_family *tidal__family_new(tidal_worker *w0, int nthreads,
                                const char *thread_name, const char *path,
                                const char *cpath, char *err, size_t errlen) {
  tidal_family *f = (tidal_family *)calloc(1, sizeof *f);
  if (f == NULL) goto oom;
  f->n = 1 + nthreads;
  f->w = (tidal_worker **)calloc((size_t)f->n, sizeof *f->w);
  f->threads = (uv_thread_t *)calloc((size_t)f->n, sizeof *f->threads);
  f->thread_name = thread_name ? dupstr(thread_name) : NULL;
  f->path = dupstr(path ? path : "");
  f->cpath = dupstr(cpath ? cpath : "");
  if (f->w == NULL || f->threads == NULL || f->path == NULL ||
      f->cpath == NULL || (thread_name && f->thread_name == NULL))
    goto oom;
  f->w[0] = w0;
  f->slow_ns = w0->slow_ns;
  w0->family = f;
  w0->index = 0;
  atomic_store(&w0->started, 1);
  atomic_init(&f->next_id, 1);
  if (uv_mutex_init(&f->ext_lock)) goto oom;
  if (uv_sem_init(&f->ready, 0)) {
    uv_mutex_destroy(&f->ext_lock);
    goto oom;
  }
  for (int i = 1; i < f->n; i++) {
    f->w[i] = (tidal_worker *)calloc(1, sizeof(tidal_worker));
    wstart *s = (wstart *)malloc(sizeof *s);
    if (f->w[i] == NULL || s == NULL) {
      free(s);
      snprintf(err, errlen, "not enough memory");
      break;
    }
    s->f = f;
    s->index = i;
    if (uv_thread_create(&f->threads[i], worker_thread, s) != 0) {
      free(s);
      snprintf(err, errlen, "cannot start a worker thread");
      break;
    }
    f->nstarted = i;
    uv_sem_wait(&f->ready);
    if (f->start_error[0]) {
      snprintf(err, errlen, "worker %d: %s", i, f->start_error);
      uv_thread_join(&f->threads[i]);
      f->nstarted = i - 1;
      break;
    }
  }
  if (err[0]) {
    tidal__family_stop(f);
    tidal__family_free(f);
    return NULL;
  }
  return f;
oom:
  snprintf(err, errlen, "not enough memory");
  if (f != NULL) free_family(f);
  return NULL;
}

static void stop_msg(tidal_worker *w, lua_State *L, void *arg) {
  (void)L;
  (void)arg;
  w->stop = 1;
  tidal__async_ref(w);
}

/* Ask every worker thread to cancel its tasks and end, and wait for them.
** Lua code busy on a worker is interrupted (interrupt.c). */
void tidal__family_stop(tidal_family *f) {
  for (int i = 1; i <= f->nstarted; i++)
    if (atomic_load(&f->w[i]->started)) {
      tidal__irq_request(f->w[i], IRQ_SHUTDOWN);
      tidal__wake_remote(f->w[i], NULL, stop_msg, NULL);
    }
  for (int i = 1; i <= f->nstarted; i++) uv_thread_join(&f->threads[i]);
  f->nstarted = 0;
}

/* After its last task: w refuses posts from now on (tidal__wake_remote
** says UV_ECANCELED, and spawn_parallel no longer picks it), and what was
** posted before runs now, so no message is dropped with the references it
** holds (a spawn_parallel's record and arguments are finished as
** cancelled). */
void tidal__worker_retire(tidal_worker *w, lua_State *L) {
  atomic_store(&w->gone, 1);
  while (atomic_load(&w->posters) != 0) uv_sleep(0);
  tidal__drain_remote(w, L);
}

void tidal__family_free(tidal_family *f) {
  for (int i = 1; i < f->n; i++) free(f->w[i]);
  for (int i = 0; i < f->next_ext; i++) f->ext[i].cls->free(f, f->ext[i].data);
  uv_mutex_destroy(&f->ext_lock);
  uv_sem_destroy(&f->ready);
  free_family(f);
}

void *tidal__family_ext(tidal_family *f, const tidal_fext_class *c) {
  void *data = NULL;
  int i;
  uv_mutex_lock(&f->ext_lock);
  for (i = 0; i < f->next_ext && f->ext[i].cls != c; i++) {
  }
  if (i < f->next_ext) {
    data = f->ext[i].data;
  } else if (i < TIDAL_EXT_MAX && (data = c->create(f)) != NULL) {
    f->ext[i].cls = c;
    f->ext[i].data = data;
    f->next_ext++;
  }
  uv_mutex_unlock(&f->ext_lock);
  return data;
}

/* The worker with the fewest live tasks, counting those on their way to it
** (ties: the lowest index), among those still taking work; the caller then
** sends it one more. */
tidal_worker *tidal__family_pick(tidal_family *f) {
  tidal_worker *best = f->w[0];
  int least = atomic_load(&best->load) + atomic_load(&best->assigned);
  for (int i = 1; i < f->n; i++) {
    int load = atomic_load(&f->w[i]->load) + atomic_load(&f->w[i]->assigned);
    if (atomic_load(&f->w[i]->irq) & IRQ_SHUTDOWN) continue; /* stopping */
    if (load < least) {
      least = load;
      best = f->w[i];
    }
  }
  atomic_fetch_add(&best->assigned, 1);
  return best;
}
