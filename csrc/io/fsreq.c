/*
** fsreq.c: a task parked on a job of libuv's thread pool (see fsreq.h).
**
** Cancelling the wait first tries uv_cancel: a job that has not started
** never runs (its callback still comes, with UV_ECANCELED). Either way the
** request becomes an orphan: the task unwinds at once, and the callback
** cleans up whatever the job produced. The worker's io state is held
** until the callback has run, which the worker's last uv_run waits for.
*/
#include "fsreq.h"

#include <stdlib.h>
#include <string.h>

/* the box's metatable: registry[&box_key] (internal, so not by name) */
static const char box_key = 0;

io_fsreq *io__fsreq_new(io_worker *iw, io_fsreq_fn run) {
  io_fsreq *r = (io_fsreq *)calloc(1, sizeof *r);
  if (r == NULL) return NULL;
  r->work.data = r;
  r->iw = iw;
  r->run = run;
  r->fd = -1;
  return r;
}

void io__fsreq_free(io_fsreq *r) {
  free(r->path);
  free(r->path2);
  tidal__buf_free(&r->buf);
  tidal__buf_free(&r->buf2);
  free(r);
}

static void release(io_fsreq *r) {
  if (r->release)
    r->release(r);
  else
    io__fsreq_free(r);
}

/* ------------------------------------------------------------- the box */

static void unbox(io_fsbox *b) {
  io_fsreq *r = b->r;
  if (r == NULL || r->task != NULL) return; /* (in flight: its task's) */
  b->r = NULL;
  r->box = NULL;
  release(r);
}

static int box_gc(lua_State *L) {
  io_fsbox *b = (io_fsbox *)lua_touserdata(L, 1);
  if (b == NULL || !lua_getmetatable(L, 1)) return 0;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &box_key);
  if (lua_rawequal(L, -1, -2)) unbox(b);
  return 0;
}

static char *dup(const char *s) {
  size_t n = strlen(s) + 1;
  char *p = (char *)malloc(n);
  if (p != NULL) memcpy(p, s, n);
  return p;
}

io_fsreq *io__fsreq_push(lua_State *L, io_worker *iw, io_fsreq_fn run,
                         const char *fname, const char *path,
                         const char *path2) {
  io_fsbox *b = (io_fsbox *)lua_newuserdatauv(L, sizeof *b, 0);
  io_fsreq *r;
  b->r = NULL;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &box_key) == LUA_TNIL) {
    lua_pop(L, 1);
    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, box_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushliteral(L, "tidal.FsRequest");
    lua_setfield(L, -2, "__name");
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &box_key);
  }
  lua_setmetatable(L, -2);
  if ((r = io__fsreq_new(iw, run)) == NULL) goto nomem;
  b->r = r;
  r->box = b;
  if (path != NULL && (r->path = dup(path)) == NULL) goto nomem;
  if (path2 != NULL && (r->path2 = dup(path2)) == NULL) goto nomem;
  return r;
nomem:
  luaL_error(L, "%s: not enough memory", fname); /* the box frees r */
  return NULL;
}

void io__fsreq_done(lua_State *L, int idx) {
  unbox((io_fsbox *)lua_touserdata(L, idx));
}

/* ------------------------------------------------------------ the job */

static void work_cb(uv_work_t *w) {
  io_fsreq *r = (io_fsreq *)w->data;
  r->run(r);
}

static void after_cb(uv_work_t *w, int status) {
  io_fsreq *r = (io_fsreq *)w->data;
  io_worker *iw = r->iw;
  if (status == UV_ECANCELED) r->result = UV_ECANCELED; /* never ran */
  if (r->after) r->after(r);
  if (r->task != NULL) {
    tidal__wake(r->task, 0); /* its continuation takes r */
  } else {
    if (r->orphan) r->orphan(r);
    if (r->box == NULL) release(r); /* (else its box frees it) */
  }
  io__release(iw); /* (last: it may free the io state) */
}

int io__fsreq_start(io_fsreq *r) {
  int rc = uv_queue_work(r->iw->w->loop, &r->work, work_cb, after_cb);
  if (rc == 0) io__hold(r->iw);
  return rc;
}

int io__fsreq_cancel(tidal_task *t) {
  io_fsreq *r = (io_fsreq *)t->wobj;
  uv_cancel((uv_req_t *)&r->work); /* fails once it runs: then it finishes */
  r->task = NULL;
  if (r->box != NULL) { /* the callback frees it now */
    r->box->r = NULL;
    r->box = NULL;
  }
  return 1;
}

int io__fsreq_park(lua_State *L, tidal_task *t, io_fsreq *r,
                   const tidal_waitop *op, lua_KFunction k) {
  (void)L;
  r->task = t;
  return tidal__park(L, t, op, r, k);
}

io_fsreq *io__fsreq_take(lua_State *L, tidal_task *t) {
  io_fsbox *b = (io_fsbox *)lua_touserdata(L, -1);
  io_fsreq *r;
  /* withdrawn by io__fsreq_cancel: the request is its callback's */
  if (t->flags & TF_WAKECANCEL) tidal__resumed(L, t);
  r = b->r;
  r->task = NULL; /* (now the box may free it) */
  if (t->cancel | t->tmo) { /* done, but cancelled before we ran */
    if (r->orphan) r->orphan(r);
    unbox(b);
    tidal__resumed(L, t); /* raises */
  }
  return r;
}

const char *io__path_check(lua_State *L, int idx, const char *fname) {
  size_t len;
  const char *s =
      lua_type(L, idx) == LUA_TSTRING ? lua_tolstring(L, idx, &len) : NULL;
  if (s == NULL)
    luaL_error(L, "%s: expected a path (string), got %s", fname,
               luaL_typename(L, idx));
  if (strlen(s) != len)
    luaL_error(L, "%s: the path contains a zero byte", fname);
  return s;
}
