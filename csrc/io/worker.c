/*
** worker.c: the io layer's per-worker state, and the userdata helper that
** every io type shares.
**
** The state is a worker extension, created on first use. It holds the
** read scratch buffer that libuv's alloc callbacks hand out, the free
** lists of write requests and stream cores, and the list of live io
** objects. When the runtime ends, the worker's close hook (run after
** every task finished, before the loop closes) shuts every live object
** down: no Lua runs then, and nobody is parked. The state itself is freed
** once the last libuv callback into it has run (io__hold/io__release):
** close callbacks run after the hook, when the loop runs again.
**
** SIGPIPE: libuv writes with write(2), which raises SIGPIPE on a socket or
** pipe whose reader is gone; a server must get EPIPE instead. So on first
** use the io layer sets SIGPIPE to SIG_IGN if it had its default action
** (as Node and Python do), once per process. A host that installed its
** own handler keeps it. Children get the default back: libuv's child
** setup resets every signal disposition before exec.
*/
#include "io.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

static uv_once_t sigpipe_once = UV_ONCE_INIT;

static void sigpipe_ignore(void) {
  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) == 0 && !(sa.sa_flags & SA_SIGINFO) &&
      sa.sa_handler == SIG_DFL) {
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGPIPE, &sa, NULL);
  }
}

static void iw_free(io_worker *iw) {
  io__stream_free_lists(iw);
  free(iw->scratch);
  free(iw);
}

void io__release(io_worker *iw) {
  if (--iw->holds == 0 && iw->closed) iw_free(iw);
}

/* The worker's close hook. */
static void io_close(tidal_worker *w, void *data) {
  io_worker *iw = (io_worker *)data;
  (void)w;
  iw->closed = 1;
  iw->holds++; /* (a shutdown's close callback cannot free it under us) */
  while (iw->live) {
    io_obj *o = iw->live;
    io__live_remove(iw, o);
    io__ud_detach(o, IO_UD_CLOSED);
    o->shutdown(o);
  }
  io__release(iw);
}

static const tidal_ext_class io_ext = {"io", io_close, NULL};

io_worker *io__worker(tidal_worker *w) {
  io_worker *iw = (io_worker *)tidal__ext_get(w, &io_ext);
  if (iw != NULL) return iw;
  if (!w->handles_open) return NULL; /* closing */
  uv_once(&sigpipe_once, sigpipe_ignore);
  iw = (io_worker *)calloc(1, sizeof *iw);
  if (iw == NULL) return NULL;
  iw->scratch = (char *)malloc(IO_SCRATCH);
  if (iw->scratch == NULL) {
    free(iw);
    return NULL;
  }
  iw->w = w;
  if (tidal__ext_set(w, &io_ext, iw) != 0) {
    free(iw->scratch);
    free(iw);
    return NULL;
  }
  return iw;
}

io_worker *io__worker_check(lua_State *L, const char *fname) {
  tidal_worker *w = tidal__cur_worker(L);
  io_worker *iw;
  if (w == NULL)
    luaL_error(L, "%s: not inside a tidal runtime (wrap the code in "
                  "tidal.run)",
               fname);
  iw = io__worker(w);
  if (iw == NULL) luaL_error(L, "%s: out of memory", fname);
  return iw;
}

void io__live_add(io_worker *iw, io_obj *o) {
  o->iw = iw;
  o->prev = NULL;
  o->next = iw->live;
  if (iw->live) iw->live->prev = o;
  iw->live = o;
}

void io__live_remove(io_worker *iw, io_obj *o) {
  if (o->prev)
    o->prev->next = o->next;
  else if (iw->live == o)
    iw->live = o->next;
  else
    return; /* not in the list */
  if (o->next) o->next->prev = o->prev;
  o->next = o->prev = NULL;
}

/* ----------------------------------------------------- userdata helper */

static const char *const whats[] = {"stream", "listener", "UDP socket",
                                    "file",   "child",    "signal listener"};

const char *io__what(int tt) {
  return (tt >= TT_STREAM && tt <= TT_SIGLISTEN) ? whats[tt - TT_STREAM]
                                                 : "object";
}

io_ud *io__ud_new(lua_State *L, int tt, int nuv) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  io_ud *u = (io_ud *)lua_newuserdatauv(L, sizeof *u, nuv);
  u->core = NULL;
  u->move = NULL;
  u->tag = NULL;
  u->state = IO_UD_CLOSED;
  tidal__setmt(L, &ctx->aux, tt);
  u->tag = ctx->aux.mt[tt];
  return u;
}

void io__ud_attach(io_ud *u, io_obj *o) {
  u->core = o;
  u->state = IO_UD_OPEN;
  o->ud = u;
}

void io__ud_detach(io_obj *o, int st) {
  if (o == NULL || o->ud == NULL) return;
  o->ud->core = NULL;
  o->ud->state = (uint8_t)st;
  o->ud = NULL;
}

void io__ud_unhot(lua_State *L, int tt, io_ud *u) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  u->tag = NULL;
  if (ctx != NULL && TIDAL_HOT(&ctx->aux, tt, u) == u) TIDAL_HOT(&ctx->aux, tt, u) = NULL;
}

io_ud *io__ud(lua_State *L, int tt, const char *fname) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  io_ud *u = (io_ud *)tidal__self(L, &ctx->aux, tt, fname);
  TIDAL_HOT(&ctx->aux, tt, u) = u;
  return u;
}

void *io__check(lua_State *L, int tt, const char *fname) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  io_ud *u = (io_ud *)lua_touserdata(L, 1);
  io_obj *o;
  if (u == NULL || TIDAL_HOT(&ctx->aux, tt, u) != u) {
    u = (io_ud *)tidal__checkud(L, 1, tt, fname);
    TIDAL_HOT(&ctx->aux, tt, u) = u;
  }
  o = (io_obj *)u->core;
  if (o == NULL && u->state == IO_UD_PENDING)
    o = io__adopt(L, u, tt, fname);
  if (o == NULL) {
    const char *what = io__what(tt);
    if (u->state == IO_UD_MOVED)
      luaL_error(L, "%s: attempt to use a %s that moved to another worker",
                 fname, what);
    if (u->state == IO_UD_TAKEN)
      luaL_error(L,
                 "%s: attempt to use a %s that moved to another worker "
                 "(another receiver took it)",
                 fname, what);
    tidal__closed_error(L, fname, what);
  }
  if (ctx->w != NULL && ctx->w != o->iw->w)
    luaL_error(L, "%s: this %s belongs to another runtime", fname,
               io__what(tt));
  return o;
}
