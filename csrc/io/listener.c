/*
** listener.c: TCP and unix-domain listeners.
**
** The listening socket is our own (socket, bind, listen), watched by a
** uv_poll, and the accepting task calls accept4 itself: at once first (a
** busy server accepts without a poll round), again after each readable
** wake. We do not use uv_listen because of what libuv 1.44 does when
** descriptors run out (src/unix/stream.c, uv__server_io and
** uv__emfile_trick): on EMFILE it closes its reserve descriptor, accepts
** and immediately closes every pending connection (the clients see a
** reset), and if it cannot reopen the reserve, it loops in uv__server_io
** calling the connection callback with UV_EMFILE for as long as the
** descriptors stay exhausted: the loop never returns. Here, on EMFILE or
** ENFILE the poll stops and a retry timer starts (10 ms, doubling up to
** 1 s, back to 10 ms after a success); pending connections wait in the
** kernel's backlog; accept returns the error once for the attempt that
** failed, and a later accept waits for the timer. So at most one error
** per backoff interval, never a busy loop, and no connection is dropped.
**
** Owning the socket also gives SO_REUSEPORT (libuv 1.44 has no
** UV_TCP_REUSEPORT), and a cancelled accept loses nothing: a connection
** nobody accepted stays in the kernel's backlog.
*/
#define _GNU_SOURCE /* accept4 */
#include "net.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LISTENER_MT "tidal.Listener"
#define BACKOFF_FIRST 10
#define BACKOFF_MAX 1000


/* ------------------------------------------------------------ lifecycle */

static void close_cb(uv_handle_t *h) {
  io_listener *l = (io_listener *)h->data;
  io_worker *iw;
  if (--l->nclose > 0) return;
  iw = l->obj.iw;
  free(l);
  io__release(iw);
}

/* The port or path is free again when close returns: uv_close removed the
** poll from epoll (synchronously), so the descriptor can go now. */
static void close_handles(io_listener *l) {
  l->closing = 1;
  l->nclose = 2;
  uv_close((uv_handle_t *)&l->poll, close_cb);
  uv_close((uv_handle_t *)&l->retry, close_cb);
  close(l->fd);
  l->fd = -1;
  if (l->path != NULL) {
    struct stat st;
    if (lstat(l->path, &st) == 0 && S_ISSOCK(st.st_mode) &&
        st.st_dev == l->dev && st.st_ino == l->ino)
      unlink(l->path);
    free(l->path);
    l->path = NULL;
  }
}

static void listener_shutdown(io_obj *o) {
  close_handles((io_listener *)o);
}

static void ref(io_listener *l) {
  if (l->nparked++ == 0) {
    uv_ref((uv_handle_t *)&l->poll);
    uv_ref((uv_handle_t *)&l->retry);
  }
}

static void unref(io_listener *l) {
  if (--l->nparked == 0) {
    uv_unref((uv_handle_t *)&l->poll);
    uv_unref((uv_handle_t *)&l->retry);
  }
}

static void listener_close(io_listener *l) {
  tidal_task *t;
  if (l->closing) return;
  io__ud_detach(&l->obj, IO_UD_CLOSED);
  while ((t = tidal__wq_pop(&l->acceptors)) != NULL) {
    unref(l);
    tidal__wake(t, 0); /* its continuation finds it closed */
  }
  io__live_remove(l->obj.iw, &l->obj);
  close_handles(l);
}

/* ---------------------------------------------------------------- accept */

static void wake_head(io_listener *l) {
  tidal_task *t = tidal__wq_pop(&l->acceptors);
  if (t != NULL) {
    unref(l);
    l->nwoken++;
    tidal__wake(t, 0);
  }
}

static void poll_cb(uv_poll_t *p, int status, int events) {
  io_listener *l = (io_listener *)p->data;
  (void)status;
  (void)events;
  if (l->acceptors.head == NULL) {
    /* Nobody waits: stop watching, lazily. Not at the first such
    ** callback: a busy accept loop is just between two accepts then, and
    ** each stop and start costs two epoll_ctl. The poll is level-triggered,
    ** so an idle listener with connections pending is seen at most twice. */
    if (l->nwoken == 0 && ++l->idle_polls >= 2) {
      uv_poll_stop(p);
      l->polling = 0;
    }
  } else if (l->nwoken == 0) {
    wake_head(l);
  }
}

static void retry_cb(uv_timer_t *tm) {
  io_listener *l = (io_listener *)tm->data;
  l->backoff = 0;
  if (l->nwoken == 0) wake_head(l);
}

static int start_poll(io_listener *l) {
  int rc = 0;
  if (!l->polling) {
    rc = uv_poll_start(&l->poll, UV_READABLE, poll_cb);
    if (rc == 0) l->polling = 1;
  }
  return rc;
}

static void start_backoff(io_listener *l) {
  l->backoff_ms = l->backoff_ms == 0 ? BACKOFF_FIRST
                  : l->backoff_ms * 2 > BACKOFF_MAX ? BACKOFF_MAX
                                                    : l->backoff_ms * 2;
  if (l->polling) {
    uv_poll_stop(&l->poll);
    l->polling = 0;
  }
  l->backoff = 1;
  uv_timer_start(&l->retry, retry_cb, l->backoff_ms, 0);
}

static int accept_cancel(tidal_task *t) {
  io_listener *l = (io_listener *)t->wobj;
  tidal__wq_remove(&l->acceptors, t);
  unref(l);
  return 1;
}

static const tidal_waitop accept_op = {"Listener:accept", accept_cancel, NULL};

static int accept_k(lua_State *L, int status, lua_KContext k);

static int park(lua_State *L, io_listener *l, tidal_task *t, int front) {
  if (front)
    tidal__wq_push_front(&l->acceptors, t);
  else
    tidal__wq_push(&l->acceptors, t);
  ref(l);
  return tidal__park(L, t, &accept_op, l, accept_k);
}

/* errors accept(2) documents as the connection's, not the listener's */
static int transient(int e) {
  return e == ECONNABORTED || e == EINTR || e == EPROTO || e == ENETDOWN ||
         e == ENOPROTOOPT || e == EHOSTDOWN || e == ENONET ||
         e == EHOSTUNREACH || e == EOPNOTSUPP || e == ENETUNREACH;
}

/* stack: 1 = listener, 2 = the Stream userdata (closed) */
static int accept_body(lua_State *L, io_listener *l, tidal_task *t,
                       int front) {
  struct sockaddr_storage sa;
  io_stream *s;
  int fd, rc;
  if (!front && (l->acceptors.head || l->nwoken || l->backoff))
    return park(L, l, t, 0);
  l->idle_polls = 0;
  for (;;) {
    socklen_t len = sizeof sa;
    fd = accept4(l->fd, (struct sockaddr *)&sa, &len,
                 SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) break;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      rc = start_poll(l);
      if (rc != 0) return io__fail(L, rc, "Listener:accept", NULL);
      return park(L, l, t, front);
    }
    if (transient(errno)) continue;
    rc = uv_translate_sys_error(errno);
    if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
        errno == ENOMEM)
      start_backoff(l);
    return io__fail(L, rc, "Listener:accept", NULL);
  }
  l->backoff_ms = 0;
  rc = io__stream_from_fd(l->obj.iw, l->kind, IO_R | IO_W, fd, l->rbuf, &s);
  if (rc == 0 && l->kind == IO_TCP) {
    memcpy(&s->peer, &sa, sizeof sa);
#ifndef __linux__ /* Linux: inherited from the listening socket */
    rc = io__stream_tcp_opts(s, l->nodelay, l->keepalive);
    if (rc != 0) io__stream_close(s);
#endif
  }
  /* more connections may be pending */
  if (l->acceptors.head && l->nwoken == 0 && !l->backoff) wake_head(l);
  if (rc != 0) return io__fail(L, rc, "Listener:accept", NULL);
  io__stream_attach(L, 2, s);
  lua_settop(L, 2);
  if (l->kind == IO_TCP) {
    io__addr_push(L, (struct sockaddr *)&sa, sizeof sa);
  } else {
    lua_pushliteral(L, ""); /* (a unix client is nearly always unnamed) */
    lua_pushnil(L);
  }
  return 3;
}

static int accept_k(lua_State *L, int status, lua_KContext k) {
  tidal_task *t = (tidal_task *)k;
  io_listener *l = (io_listener *)((io_ud *)lua_touserdata(L, 1))->core;
  (void)status;
  if (l != NULL && io__woken(t)) {
    l->nwoken--;
    if (tidal__wake_lost(t) && !l->backoff) wake_head(l);
  }
  tidal__resumed(L, t);
  if (l == NULL)
    return io__fail_kind(L, "closed", "Listener:accept: the listener was "
                                      "closed");
  return accept_body(L, l, t, 1);
}

static int accept_again(lua_State *L) {
  tidal_task *t = tidal__task_check(L, "Listener:accept");
  io_listener *l = (io_listener *)((io_ud *)lua_touserdata(L, 1))->core;
  if (l == NULL)
    return io__fail_kind(L, "closed", "Listener:accept: the listener was "
                                      "closed");
  return accept_body(L, l, t, 0);
}
static const tidal_restart accept_restart = {accept_again};

/* l:accept() -> stream, peer host, peer port | nil, err */
static int l_accept(lua_State *L) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  io_listener *l =
      (io_listener *)io__self(L, ctx, TT_LISTENER, "Listener:accept");
  tidal_task *t = tidal__wait_ok(L, ctx->cur, "Listener:accept");
  lua_settop(L, 1);
  io__stream_newud(L); /* before anything is acquired */
  TIDAL_SPEND(L, t, &accept_restart);
  return accept_body(L, l, t, 0);
}

/* ---------------------------------------------------------------- other */

static int l_port(lua_State *L) {
  io_listener *l = (io_listener *)io__check(L, TT_LISTENER, "Listener:port");
  struct sockaddr_storage sa;
  socklen_t len = sizeof sa;
  if (l->kind != IO_TCP ||
      getsockname(l->fd, (struct sockaddr *)&sa, &len) != 0) {
    lua_pushnil(L);
    return 1;
  }
  io__addr_push(L, (struct sockaddr *)&sa, len);
  return 1;
}

static int l_local_addr(lua_State *L) {
  io_listener *l =
      (io_listener *)io__check(L, TT_LISTENER, "Listener:local_addr");
  struct sockaddr_storage sa;
  socklen_t len = sizeof sa;
  memset(&sa, 0, sizeof sa);
  if (getsockname(l->fd, (struct sockaddr *)&sa, &len) != 0)
    return io__fail(L, uv_translate_sys_error(errno), "Listener:local_addr",
                    NULL);
  io__addr_push(L, (struct sockaddr *)&sa, len);
  return 2;
}

static void close_core(void *core) { listener_close((io_listener *)core); }

static int l_close(lua_State *L) {
  return io__ud_close(L, TT_LISTENER, "Listener:close", 0, close_core);
}

static int l_gc(lua_State *L) {
  return io__ud_close(L, TT_LISTENER, "Listener:__gc", 1, close_core);
}

static int l_tostring(lua_State *L) {
  io_ud *u = (io_ud *)tidal__checkud(L, 1, TT_LISTENER, "Listener:__tostring");
  io_listener *l = (io_listener *)u->core;
  struct sockaddr_storage sa;
  socklen_t len = sizeof sa;
  if (l == NULL) {
    lua_pushstring(L, u->state == IO_UD_CLOSED    ? "tidal.Listener (closed)"
                      : u->state == IO_UD_PENDING ? "tidal.Listener (moved here)"
                                                  : "tidal.Listener (moved)");
    return 1;
  }
  memset(&sa, 0, sizeof sa);
  getsockname(l->fd, (struct sockaddr *)&sa, &len);
  io__addr_push(L, (struct sockaddr *)&sa, len);
  if (l->kind == IO_TCP) {
    io__addr_push_label(L, lua_tostring(L, -2), (int)lua_tointeger(L, -1));
    lua_pushfstring(L, "tidal.Listener (tcp %s)", lua_tostring(L, -1));
  } else {
    lua_pushfstring(L, "tidal.Listener (unix %s)", lua_tostring(L, -2));
  }
  return 1;
}

/* ------------------------------------------------------------- creation */

/* Makes l's handles and puts it in the live list; l->fd listens. */
static int setup(io_worker *iw, io_listener *l) {
  int rc = uv_poll_init_socket(iw->w->loop, &l->poll, l->fd);
  if (rc != 0) return rc;
  uv_timer_init(iw->w->loop, &l->retry);
  l->poll.data = l->retry.data = l;
  uv_unref((uv_handle_t *)&l->poll);
  uv_unref((uv_handle_t *)&l->retry);
  io__hold(iw);
  l->obj.shutdown = listener_shutdown;
  io__live_add(iw, &l->obj);
  return 0;
}

/* setup, and links l to the userdata at ud. */
static int finish(lua_State *L, io_worker *iw, io_listener *l, int ud) {
  int rc = setup(iw, l);
  if (rc == 0) io__ud_attach((io_ud *)lua_touserdata(L, ud), &l->obj);
  return rc;
}

static int sys_err(void) {
  return uv_translate_sys_error(errno);
}

#ifdef __linux__
static int sock_opts(int fd, int nodelay, int keepalive) {
  int one = 1;
  if (nodelay &&
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
    return sys_err();
  if (keepalive > 0 &&
      (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one) != 0 ||
       setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &keepalive,
                  sizeof keepalive) != 0))
    return sys_err();
  return 0;
}
#endif

/* core._net_listen(ip, port, backlog, reuseaddr, reuseport, v6only,
** nodelay, keepalive, read_buffer [, name]) -> listener | nil, err |
** false (ip is not an IP address: resolve it first) */
static int l_listen(lua_State *L) {
  const char *fname = "tidal.net.listen";
  const char *ip = luaL_checkstring(L, 1);
  int port = io__check_port(L, 2, 1, fname);
  int backlog = (int)luaL_optinteger(L, 3, IO_BACKLOG);
  int reuseaddr = lua_isnoneornil(L, 4) || lua_toboolean(L, 4);
  int reuseport = lua_toboolean(L, 5), v6only = lua_toboolean(L, 6);
  const char *name = luaL_optstring(L, 10, ip);
  struct sockaddr_storage sa;
  io_worker *iw = io__worker_check(L, fname);
  io_listener *l;
  int rc, one = 1, ud;
  if (io__addr_parse(ip, port, 0, &sa) != 0) {
    lua_pushboolean(L, 0);
    return 1;
  }
  io__ud_new(L, TT_LISTENER, 0);
  ud = lua_gettop(L);
  l = (io_listener *)calloc(1, sizeof *l);
  if (l == NULL) {
    rc = UV_ENOMEM;
    goto fail;
  }
  l->fd = -1;
  l->kind = IO_TCP;
  l->nodelay = lua_isnoneornil(L, 7) || lua_toboolean(L, 7);
  l->keepalive = (int)lua_tointeger(L, 8);
  l->rbuf = (size_t)lua_tointeger(L, 9);
  l->fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (l->fd < 0) {
    rc = sys_err();
    goto fail;
  }
  if ((reuseaddr && setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one,
                               sizeof one) != 0) ||
      (reuseport && setsockopt(l->fd, SOL_SOCKET, SO_REUSEPORT, &one,
                               sizeof one) != 0) ||
      (sa.ss_family == AF_INET6 &&
       setsockopt(l->fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only) !=
           0) ||
      bind(l->fd, (struct sockaddr *)&sa,
           sa.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                    : sizeof(struct sockaddr_in)) != 0 ||
      listen(l->fd, backlog) != 0) {
    rc = sys_err();
    goto fail;
  }
#ifdef __linux__
  /* accepted sockets inherit TCP_NODELAY and the keepalive settings from
  ** the listening socket: set them once here, not per connection */
  if ((rc = sock_opts(l->fd, l->nodelay, l->keepalive)) != 0) goto fail;
#endif
  if ((rc = finish(L, iw, l, ud)) != 0) goto fail;
  return 1;
fail:
  if (l != NULL) {
    if (l->fd >= 0) close(l->fd);
    free(l);
  }
  io__fail(L, rc, fname, "%s:%d", name, port);
  io__error_field(L, "host", name);
  lua_pushinteger(L, port);
  lua_setfield(L, -2, "port");
  return 2;
}

/* core._net_listen_unix(path, backlog, mode, unlink) -> listener | nil,
** err */
static int l_listen_unix(lua_State *L) {
  const char *fname = "tidal.net.listen_unix";
  size_t plen;
  const char *path = luaL_checklstring(L, 1, &plen);
  int backlog = (int)luaL_optinteger(L, 2, IO_BACKLOG);
  int mode = lua_isnoneornil(L, 3) ? -1 : (int)lua_tointeger(L, 3);
  int unlink_first = lua_toboolean(L, 4);
  io_worker *iw = io__worker_check(L, fname);
  struct sockaddr_un sa;
  struct stat st;
  io_listener *l = NULL;
  int rc, ud;
  io__ud_new(L, TT_LISTENER, 0);
  ud = lua_gettop(L);
  if (plen >= sizeof sa.sun_path || plen == 0 || strlen(path) != plen) {
    rc = plen == 0 || strlen(path) != plen ? UV_EINVAL : UV_ENAMETOOLONG;
    goto fail;
  }
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  memcpy(sa.sun_path, path, plen);
  l = (io_listener *)calloc(1, sizeof *l);
  if (l == NULL || (l->fd = -1, l->path = strdup(path)) == NULL) {
    rc = UV_ENOMEM;
    goto fail;
  }
  l->fd = -1;
  l->kind = IO_UNIX;
  l->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (l->fd < 0) {
    rc = sys_err();
    goto fail;
  }
  if (unlink_first && lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
    unlink(path);
  if (bind(l->fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    rc = sys_err();
    free(l->path); /* not ours: never unlink it */
    l->path = NULL;
    goto fail;
  }
  if (lstat(path, &st) == 0) {
    l->dev = st.st_dev;
    l->ino = st.st_ino;
  }
  if ((mode >= 0 && chmod(path, (mode_t)mode) != 0) ||
      listen(l->fd, backlog) != 0) {
    rc = sys_err();
    unlink(path);
    goto fail;
  }
  if ((rc = finish(L, iw, l, ud)) != 0) {
    unlink(path);
    goto fail;
  }
  return 1;
fail:
  if (l != NULL) {
    if (l->fd >= 0) close(l->fd);
    free(l->path);
    free(l);
  }
  io__fail(L, rc, fname, "%s", path);
  io__error_field(L, "path", path);
  return 2;
}

/* ----------------------------------------------------------------- move */

static int setup(io_worker *iw, io_listener *l);

const char *io__listener_busy(io_listener *l) {
  if (l->nparked > 0 || l->nwoken > 0 || l->acceptors.head)
    return "a task waits on";
  if (l->backoff) return "waits out a descriptor shortage in";
  return NULL;
}

int io__listener_detach(io_listener *l, io_move *m) {
  m->fd = fcntl(l->fd, F_DUPFD_CLOEXEC, 3);
  if (m->fd < 0) return uv_translate_sys_error(errno);
  m->kind = l->kind;
  m->nodelay = l->nodelay;
  m->keepalive = l->keepalive;
  m->rmax = l->rbuf;
  m->path = l->path; /* removing the socket file moves with it */
  m->dev = l->dev;
  m->ino = l->ino;
  l->path = NULL;
  listener_close(l);
  return 0;
}

int io__listener_rebuild(io_worker *iw, io_move *m, io_listener **out) {
  io_listener *l = (io_listener *)calloc(1, sizeof *l);
  int rc;
  if (l == NULL) return UV_ENOMEM;
  l->fd = m->fd;
  l->kind = m->kind;
  l->nodelay = m->nodelay;
  l->keepalive = m->keepalive;
  l->rbuf = m->rmax;
  if ((rc = setup(iw, l)) != 0) {
    free(l);
    return rc;
  }
  m->fd = -1;
  l->path = m->path;
  l->dev = m->dev;
  l->ino = m->ino;
  m->path = NULL;
  *out = l;
  return 0;
}

static const luaL_Reg methods[] = {{"accept", l_accept},
                                   {"port", l_port},
                                   {"local_addr", l_local_addr},
                                   {"close", l_close},
                                   {NULL, NULL}};

static const luaL_Reg meta[] = {{"__gc", l_gc},
                                {"__close", l_close},
                                {"__tostring", l_tostring},
                                {NULL, NULL}};

static const luaL_Reg funcs[] = {{"_net_listen", l_listen},
                                 {"_net_listen_unix", l_listen_unix},
                                 {NULL, NULL}};

/* stack: module, ctx */
void io__listener_open(lua_State *L) {
  tidal__newtype(L, TT_LISTENER, LISTENER_MT, "Listener", meta, methods);
  tidal__register(L, funcs);
}
