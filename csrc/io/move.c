/*
** move.c: a Stream, Listener or UdpSocket sent to another worker (as an
** argument of spawn_parallel, in a message) moves there.
**
** libuv handles cannot change loops, so a move is detach + rebuild,
** riding the value layer's handle types (tidal_xtype):
**   share   (the sender, during the encode) refuses an object that is
**           closed or busy (a task waits on it, writes are queued, ...);
**           else it duplicates the descriptor (F_DUPFD_CLOEXEC) into an
**           io_move record with the unread bytes, closes the object, and
**           marks the userdata moved: using it raises "... moved to
**           another worker".
**   push    (the receiver, during the decode) makes a userdata holding the
**           record. Nothing else happens here: the receiving state may have
**           no runtime yet (a spawn_blocking job), and the decode of the
**           rest of the message may still fail (the message then stays in
**           its channel for the next receiver).
**   adopt   (io__adopt, at the userdata's first use in a runtime) claims
**           the record and builds the object on that worker's loop. A
**           buffer decoded twice (a broadcast) gives two userdatas: the
**           first used takes the object, the other says another receiver
**           took it.
**   drop    releases the buffer's reference; the last reference closes a
**           descriptor nobody adopted (a message never received).
**   unshare (the encode failed after share, e.g. {stream, print}): gives
**           the record back to the sending userdata, which adopts it at
**           its next use: a failed send leaves the stream usable.
** Within one worker nothing moves: local channels pass the userdata.
*/
#include "net.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define STREAM_MT "tidal.Stream"
#define LISTENER_MT "tidal.Listener"
#define UDP_MT "tidal.UdpSocket"

io_move *io__move_new(int tt, int kind) {
  io_move *m = (io_move *)calloc(1, sizeof *m);
  if (m == NULL) return NULL;
  atomic_init(&m->refs, 1);
  atomic_init(&m->taken, 0);
  m->tt = tt;
  m->kind = kind;
  m->fd = -1;
  return m;
}

void io__move_release(io_move *m) {
  if (atomic_fetch_sub(&m->refs, 1) != 1) return;
  if (m->fd >= 0) {
    close(m->fd);
    if (m->path != NULL) { /* a unix listener nobody took: as its close */
      struct stat st;
      if (lstat(m->path, &st) == 0 && S_ISSOCK(st.st_mode) &&
          st.st_dev == m->dev && st.st_ino == m->ino)
        unlink(m->path);
    }
  }
  tidal__buf_free(&m->pending);
  free(m->path);
  free(m);
}

void io__ud_forget(io_ud *u) {
  if (u->move != NULL) {
    io__move_release(u->move);
    u->move = NULL;
    u->state = IO_UD_CLOSED;
  }
}

int io__ud_close(lua_State *L, int tt, const char *fname, int gc,
                 void (*close_core)(void *core)) {
  io_ud *u =
      gc ? (io_ud *)tidal__checkud(L, 1, tt, fname) : io__ud(L, tt, fname);
  if (gc) io__ud_unhot(L, tt, u);
  if (u->core != NULL)
    close_core(u->core);
  else
    io__ud_forget(u);
  return 0;
}

/* ---------------------------------------------------------------- xtype */

static void *share(lua_State *L, int idx, int tt) {
  io_ud *u = (io_ud *)lua_touserdata(L, idx);
  io_move *m;
  int rc;
  if (u->state == IO_UD_PENDING) { /* passed on before any use here */
    m = u->move;
    if (atomic_load(&m->taken)) return NULL; /* another receiver took it */
    u->move = NULL;
    u->state = IO_UD_MOVED;
    m->origin = u; /* (the userdata's reference becomes the buffer's) */
    return m;
  }
  if (u->core == NULL) return NULL;
  if (tt == TT_STREAM ? io__stream_busy((io_stream *)u->core) != NULL
      : tt == TT_LISTENER ? io__listener_busy((io_listener *)u->core) != NULL
                          : io__udp_busy(u->core) != NULL)
    return NULL;
  if ((m = io__move_new(tt, 0)) == NULL) return NULL;
  rc = tt == TT_STREAM     ? io__stream_detach((io_stream *)u->core, m)
       : tt == TT_LISTENER ? io__listener_detach((io_listener *)u->core, m)
                           : io__udp_detach(u->core, m);
  if (rc != 0) {
    io__move_release(m);
    return NULL;
  }
  u->state = IO_UD_MOVED;
  m->origin = u;
  return m;
}

static void *share_stream(lua_State *L, int idx) {
  return share(L, idx, TT_STREAM);
}
static void *share_listener(lua_State *L, int idx) {
  return share(L, idx, TT_LISTENER);
}
static void *share_udp(lua_State *L, int idx) {
  return share(L, idx, TT_UDP);
}

/* Why share refused the userdata at idx. */
static int refusal(lua_State *L, int idx, int tt, const char *mt) {
  io_ud *u = (io_ud *)lua_touserdata(L, idx);
  const char *why = NULL;
  if (u->core != NULL)
    why = tt == TT_STREAM     ? io__stream_busy((io_stream *)u->core)
          : tt == TT_LISTENER ? io__listener_busy((io_listener *)u->core)
                              : io__udp_busy(u->core);
  if (why != NULL) {
    lua_pushfstring(L, "%s that %s it now", mt, why);
    return 1;
  }
  if (u->state == IO_UD_MOVED || u->state == IO_UD_TAKEN ||
      u->state == IO_UD_PENDING) {
    lua_pushfstring(L, "%s that moved to another worker", mt);
    return 1;
  }
  return 0; /* "closed <mt>" */
}

static int refusal_stream(lua_State *L, int idx) {
  return refusal(L, idx, TT_STREAM, STREAM_MT);
}
static int refusal_listener(lua_State *L, int idx) {
  return refusal(L, idx, TT_LISTENER, LISTENER_MT);
}
static int refusal_udp(lua_State *L, int idx) {
  return refusal(L, idx, TT_UDP, UDP_MT);
}

/* The encode failed: the sender's userdata gets the record back. */
static void unshare(lua_State *L, void *obj) {
  io_move *m = (io_move *)obj;
  io_ud *u = m->origin;
  (void)L;
  m->origin = NULL;
  u->move = m; /* (the buffer's reference becomes the userdata's) */
  u->state = IO_UD_PENDING;
}

static void push(lua_State *L, void *obj) {
  io_move *m = (io_move *)obj;
  tidal_ctx *ctx = tidal__ctx_need(L);
  io_ud *u = (io_ud *)lua_newuserdatauv(L, sizeof *u, 0);
  u->core = NULL;
  u->move = NULL;
  u->tag = NULL;
  u->state = IO_UD_CLOSED;
  tidal__setmt(L, &ctx->aux, m->tt);
  u->tag = ctx->aux.mt[m->tt];
  atomic_fetch_add(&m->refs, 1);
  u->move = m;
  u->state = IO_UD_PENDING;
}

static void drop(void *obj) {
  io__move_release((io_move *)obj);
}

static const tidal_xtype stream_xtype = {STREAM_MT, share_stream, push, drop};
static const tidal_xtype listener_xtype = {LISTENER_MT, share_listener, push,
                                           drop};
static const tidal_xtype udp_xtype = {UDP_MT, share_udp, push, drop};
static const tidal_xhooks stream_hooks = {refusal_stream, unshare};
static const tidal_xhooks listener_hooks = {refusal_listener, unshare};
static const tidal_xhooks udp_hooks = {refusal_udp, unshare};

/* ---------------------------------------------------------------- adopt */

io_obj *io__adopt(lua_State *L, io_ud *u, int tt, const char *fname) {
  tidal_worker *w = tidal__cur_worker(L);
  io_move *m = u->move;
  io_worker *iw;
  io_obj *o = NULL;
  int rc;
  if (w == NULL)
    luaL_error(L,
               "%s: a %s that moved here can be used only inside a tidal "
               "runtime (wrap the code in tidal.run)",
               fname, io__what(tt));
  if (atomic_exchange(&m->taken, 1) != 0) { /* another receiver took it */
    u->move = NULL;
    u->state = IO_UD_TAKEN;
    io__move_release(m);
    return NULL;
  }
  iw = io__worker(w);
  if (iw == NULL) {
    rc = UV_ENOMEM;
  } else if (tt == TT_STREAM) {
    io_stream *s;
    rc = io__stream_rebuild(iw, m, &s);
    o = rc == 0 ? &s->obj : NULL;
  } else if (tt == TT_LISTENER) {
    io_listener *l;
    rc = io__listener_rebuild(iw, m, &l);
    o = rc == 0 ? &l->obj : NULL;
  } else {
    rc = io__udp_rebuild(iw, m, &o);
  }
  u->move = NULL;
  io__move_release(m);
  if (rc != 0) {
    u->state = IO_UD_CLOSED;
    luaL_error(L, "%s: cannot take over the %s that moved here: %s (%s)",
               fname, io__what(tt), uv_strerror(rc), uv_err_name(rc));
  }
  io__ud_attach(u, o);
  return o;
}

/* stack: module, ctx */
void io__move_open(lua_State *L) {
  (void)L;
  tidal__xfer_register_hooks(&stream_xtype, &stream_hooks);
  tidal__xfer_register_hooks(&listener_xtype, &listener_hooks);
  tidal__xfer_register_hooks(&udp_xtype, &udp_hooks);
}
