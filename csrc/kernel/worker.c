/*
** worker.c: the worker -- one OS thread, one libuv loop, one Lua state,
** one run queue: its life (init, extensions, closing its handles, freeing
** it) and the wakes and calls that other threads post to it (its remote
** queue, drained after each poll).
*/
#include "kernel.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ----------------------------------------------------------- remote wakes */

/* The async handle only interrupts uv_run; what was posted runs after
** uv_run returns (tidal__drain_remote), outside any libuv callback, so it
** may run Lua code. */
static void async_cb(uv_async_t *a) {
  (void)a;
}

static void check_cb(uv_check_t *c) {
  tidal_uvh *h = tidal__container_of(c, tidal_uvh, check);
  if (h->w != NULL) tidal__host_check(h->w);
}

/* The handles' memory goes with the last close callback. */
static void uvh_close_cb(uv_handle_t *x) {
  tidal_uvh *h;
  switch (x->type) {
  case UV_TIMER:
    h = tidal__container_of(x, tidal_uvh, timer);
    break;
  case UV_ASYNC:
    h = tidal__container_of(x, tidal_uvh, async);
    break;
  case UV_CHECK:
    h = tidal__container_of(x, tidal_uvh, check);
    break;
  default:
    h = tidal__container_of(x, tidal_uvh, idle);
    break;
  }
  if (--h->open == 0) free(h);
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
    uv_ref((uv_handle_t *)&w->h->async);
  else
    uv_unref((uv_handle_t *)&w->h->async);
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
  uv_async_send(&w->h->async);
out:
  atomic_fetch_sub(&w->posters, 1);
  return rc;
}

/* --------------------------------------------------------------- reports */

void tidal__report_msg(lua_State *L, tidal_worker *w, int kind,
                       const char *msg) {
  tidal_report_fn fn = NULL;
  void *ud = NULL;
  tidal_family *f = w != NULL ? w->family : NULL;
  if (f != NULL) {
    uv_mutex_lock(&f->ext_lock);
    fn = f->report;
    ud = f->report_ud;
    uv_mutex_unlock(&f->ext_lock);
  }
  if (fn == NULL && L != NULL) {
    tidal_ctx *ctx = tidal__ctx(L);
    if (ctx != NULL) {
      fn = ctx->report;
      ud = ctx->report_ud;
    }
  }
  if (fn != NULL) {
    fn(ud, (tidal_report_kind)kind, msg);
  } else {
    fprintf(stderr, "tidal: %s\n", msg);
    fflush(stderr);
  }
}

void tidal__report_text(lua_State *L, tidal_worker *w, int kind, int idx) {
  tidal__report_msg(L, w, kind,
                    lua_type(L, idx) == LUA_TSTRING ? lua_tostring(L, idx)
                                                    : "error");
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
  w->h = (tidal_uvh *)calloc(1, sizeof *w->h);
  if (w->h == NULL) {
    rc = UV_ENOMEM;
    uv_mutex_destroy(&w->rlock);
    goto fail_loop;
  }
  uv_timer_init(w->loop, &w->h->timer);
  rc = uv_async_init(w->loop, &w->h->async, async_cb);
  if (rc) {
    uv_close((uv_handle_t *)&w->h->timer, uvh_close_cb);
    w->h->open = 1;
    if (host_loop == NULL) uv_run(w->loop, UV_RUN_NOWAIT);
    w->h = NULL; /* (freed by its close callback) */
    uv_mutex_destroy(&w->rlock);
    goto fail_loop;
  }
  uv_unref((uv_handle_t *)&w->h->async);
  w->h->open = 2;
  if (host_loop != NULL) {
    /* the tasks run from the loop's check phase; neither handle keeps the
    ** loop alive on its own (the idle one only while tasks are ready) */
    w->hostloop = 1;
    uv_check_init(w->loop, &w->h->check);
    uv_idle_init(w->loop, &w->h->idle);
    w->h->open = 4;
    uv_check_start(&w->h->check, check_cb);
    uv_unref((uv_handle_t *)&w->h->check);
  }
  w->h->w = w;
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
  /* last set, first closed: the runtime's own Ctrl-C watcher, set as
  ** block_on starts, closes after io's signal watchers, so the SIGINT
  ** disposition it puts back is not undone by libuv's (SIG_DFL) when they
  ** stop */
  for (int i = w->next_ext - 1; i >= 0; i--) {
    tidal_ext *e = &w->ext[i];
    if (e->cls->close) e->cls->close(w, e->data);
    e->data = NULL;
  }
  w->next_ext = 0;
  tidal_uvh *h = w->h;
  h->w = NULL;
  w->h = NULL;
  uv_close((uv_handle_t *)&h->timer, uvh_close_cb);
  uv_close((uv_handle_t *)&h->async, uvh_close_cb);
  if (w->hostloop) {
    /* the host runs its loop later: the close callbacks free h then */
    uv_close((uv_handle_t *)&h->check, uvh_close_cb);
    uv_close((uv_handle_t *)&h->idle, uvh_close_cb);
  }
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
  free(w->idle); /* (the coroutines go with the table at pool_ref) */
  w->idle = NULL;
  w->npool = w->idle_cap = 0;
  free(w->co_free);
  w->co_free = NULL;
  w->co_nfree = w->co_free_cap = w->co_next = 0;
  if (L != NULL) {
    luaL_unref(L, LUA_REGISTRYINDEX, w->anchors_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, w->pool_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, w->side_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, w->ipool_ref);
  }
  w->anchors_ref = w->pool_ref = w->side_ref = w->ipool_ref = LUA_NOREF;
}
