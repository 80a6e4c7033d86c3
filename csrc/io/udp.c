/*
** udp.c: UdpSocket over uv_udp_t.
**
** Received datagrams wait in a queue (copied out of the worker's scratch
** buffer) for FIFO readers. Receiving is on only while more readers wait
** than datagrams are queued: libuv 1.44's receive loop stops as soon as
** uv_udp_recv_stop runs, so the rest stays in the kernel's buffer (which
** drops what overflows, as UDP does). The queue is bounded by the readers.
**
** send_to tries uv_udp_try_send first; when the kernel would block, the
** datagram is copied into a send request and the sender waits for it (a
** sender cancelled then leaves it to complete in the background).
*/
#include "net.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define UDP_MT "tidal.UdpSocket"
#define UDP_MAX 65507 /* the largest IPv4 UDP payload */

typedef struct dgram {
  struct dgram *next;
  int err; /* a receive error reported in the queue's order, or 0 */
  struct sockaddr_storage from;
  size_t len;
  char data[];
} dgram;

typedef struct io_udp {
  io_obj obj; /* first */
  uv_udp_t h; /* h.data = this */
  dgram *head, *tail;
  int nq;
  tidal_wq readers;
  int nparked, nwoken;
  uint8_t receiving, closing, connected;
  int nsend; /* send requests in flight */
} io_udp;

typedef struct send_req {
  uv_udp_send_t req;
  io_udp *u;
  io_worker *iw;
  tidal_task *task; /* NULL: in the background */
  int status;
  size_t len;
  char data[];
} send_req;

/* ------------------------------------------------------------ lifecycle */

static void ref(io_udp *u) {
  if (u->nparked++ == 0) uv_ref((uv_handle_t *)&u->h);
}

static void unref(io_udp *u) {
  if (--u->nparked == 0) uv_unref((uv_handle_t *)&u->h);
}

static void close_cb(uv_handle_t *h) {
  io_udp *u = (io_udp *)h->data;
  io_worker *iw = u->obj.iw;
  while (u->head) {
    dgram *d = u->head;
    u->head = d->next;
    free(d);
  }
  free(u);
  io__release(iw);
}

static void udp_shutdown(io_obj *o) {
  io_udp *u = (io_udp *)o;
  u->closing = 1;
  uv_close((uv_handle_t *)&u->h, close_cb);
}

static void udp_close(io_udp *u) {
  tidal_task *t;
  if (u->closing) return;
  io__ud_detach(&u->obj, IO_UD_CLOSED);
  while ((t = tidal__wq_pop(&u->readers)) != NULL) {
    unref(u);
    tidal__wake(t, 0);
  }
  io__live_remove(u->obj.iw, &u->obj);
  udp_shutdown(&u->obj);
}

/* ------------------------------------------------------------- receive */

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  io_udp *u = (io_udp *)h->data;
  (void)suggested;
  buf->base = u->obj.iw->scratch;
  buf->len = IO_SCRATCH;
}

static void wake_reader(io_udp *u) {
  tidal_task *t = tidal__wq_pop(&u->readers);
  if (t != NULL) {
    unref(u);
    u->nwoken++;
    tidal__wake(t, 0);
  }
}

static void recv_cb(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf,
                    const struct sockaddr *addr, unsigned flags);

/* Receive only while more readers wait than datagrams are queued. */
static void recv_policy(io_udp *u) {
  int want = u->nparked + u->nwoken > u->nq;
  if (want && !u->receiving) {
    if (uv_udp_recv_start(&u->h, alloc_cb, recv_cb) == 0)
      u->receiving = 1;
  } else if (!want && u->receiving) {
    uv_udp_recv_stop(&u->h);
    u->receiving = 0;
  }
}

static void recv_cb(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf,
                    const struct sockaddr *addr, unsigned flags) {
  io_udp *u = (io_udp *)h->data;
  dgram *d;
  (void)flags;
  if (nread == 0 && addr == NULL) return; /* nothing more to read */
  d = (dgram *)malloc(sizeof *d + (nread > 0 ? (size_t)nread : 0));
  if (d == NULL) return; /* dropped, as the kernel would */
  d->next = NULL;
  d->err = nread < 0 ? (int)nread : 0;
  d->len = nread > 0 ? (size_t)nread : 0;
  memset(&d->from, 0, sizeof d->from);
  if (addr != NULL)
    memcpy(&d->from, addr,
           addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                       : sizeof(struct sockaddr_in));
  if (d->len) memcpy(d->data, buf->base, d->len);
  if (u->tail)
    u->tail->next = d;
  else
    u->head = d;
  u->tail = d;
  u->nq++;
  if (u->nwoken < u->nq) wake_reader(u);
  recv_policy(u);
}

static int recv_cancel(tidal_task *t) {
  io_udp *u = (io_udp *)t->wobj;
  tidal__wq_remove(&u->readers, t);
  unref(u);
  recv_policy(u);
  return 1;
}

static const tidal_waitop recvfrom_op = {"UdpSocket:recv_from", recv_cancel, NULL};
static const tidal_waitop recv_op = {"UdpSocket:recv", recv_cancel, NULL};

static int recv_k(lua_State *L, int status, lua_KContext k);

/* stack: 1 = self, 2 = max, 3 = with address (boolean) */
static int recv_body(lua_State *L, io_udp *u, tidal_task *t, int front) {
  const char *fname =
      lua_toboolean(L, 3) ? "UdpSocket:recv_from" : "UdpSocket:recv";
  if (u->head != NULL && (front || u->readers.head == NULL)) {
    dgram *d = u->head;
    size_t max = (size_t)lua_tointeger(L, 2);
    u->head = d->next;
    if (u->head == NULL) u->tail = NULL;
    u->nq--;
    if (u->head && u->nwoken < u->nq) wake_reader(u);
    recv_policy(u);
    if (d->err) {
      int err = d->err;
      free(d);
      return io__fail(L, err, fname, NULL);
    }
    lua_pushlstring(L, d->data, d->len < max ? d->len : max);
    if (!lua_toboolean(L, 3)) {
      free(d);
      return 1;
    }
    io__addr_push(L, (struct sockaddr *)&d->from, sizeof d->from);
    free(d);
    return 3;
  }
  if (front)
    tidal__wq_push_front(&u->readers, t);
  else
    tidal__wq_push(&u->readers, t);
  ref(u);
  recv_policy(u);
  return tidal__park(L, t, lua_toboolean(L, 3) ? &recvfrom_op : &recv_op, u,
                     recv_k);
}

static int recv_k(lua_State *L, int status, lua_KContext k) {
  tidal_task *t = (tidal_task *)k;
  io_udp *u = (io_udp *)((io_ud *)lua_touserdata(L, 1))->core;
  (void)status;
  if (u != NULL && io__woken(t)) {
    u->nwoken--;
    if (tidal__wake_lost(t) && u->head) wake_reader(u);
    recv_policy(u);
  }
  tidal__resumed(L, t);
  if (u == NULL)
    return io__fail_kind(L, "closed", "%s: the UDP socket was closed",
                         lua_toboolean(L, 3) ? "UdpSocket:recv_from"
                                             : "UdpSocket:recv");
  return recv_body(L, u, t, 1);
}

static int recv_again(lua_State *L) {
  tidal_task *t = tidal__task_check(L, "UdpSocket:recv");
  io_udp *u = (io_udp *)((io_ud *)lua_touserdata(L, 1))->core;
  if (u == NULL)
    return io__fail_kind(L, "closed", "UdpSocket:recv: the UDP socket was "
                                      "closed");
  return recv_body(L, u, t, 0);
}
static const tidal_restart recv_restart = {recv_again};

static int do_recv(lua_State *L, int from) {
  const char *fname = from ? "UdpSocket:recv_from" : "UdpSocket:recv";
  io_udp *u = (io_udp *)io__check(L, TT_UDP, fname);
  tidal_task *t = tidal__wait_begin(L, fname);
  lua_Integer max = 65536;
  if (!lua_isnoneornil(L, 2)) {
    int isnum;
    max = lua_tointegerx(L, 2, &isnum);
    if (!isnum || max < 0)
      luaL_error(L, "%s: max must be a byte count (an integer >= 0)", fname);
  }
  if (!from && !u->connected)
    luaL_error(L, "%s: the socket is not connected (use recv_from, or "
                  "connect it first)",
               fname);
  lua_settop(L, 1);
  lua_pushinteger(L, max);
  lua_pushboolean(L, from);
  TIDAL_SPEND(L, t, &recv_restart);
  return recv_body(L, u, t, 0);
}

static int l_recv_from(lua_State *L) {
  return do_recv(L, 1);
}
static int l_recv(lua_State *L) {
  return do_recv(L, 0);
}

/* ---------------------------------------------------------------- send */

static void send_cb(uv_udp_send_t *req, int status) {
  send_req *r = (send_req *)req->data;
  r->u->nsend--;
  if (r->task != NULL) {
    tidal_task *t = r->task;
    r->status = status;
    r->task = NULL;
    unref(r->u);
    tidal__wake(t, 0);
  } else {
    free(r);
  }
}

static int send_cancel(tidal_task *t) {
  send_req *r = (send_req *)t->wobj;
  r->task = NULL; /* sent in the background; send_cb frees it */
  unref(r->u);
  return 1;
}

static const tidal_waitop send_op = {"UdpSocket:send_to", send_cancel, NULL};

static int send_k(lua_State *L, int status, lua_KContext k) {
  tidal_task *t = (tidal_task *)k;
  send_req *r = (send_req *)lua_touserdata(L, -1);
  int st;
  (void)status;
  if (!io__woken(t)) tidal__resumed(L, t); /* r is send_cb's */
  st = r->status;
  free(r);
  tidal__resumed(L, t);
  if (st == UV_ECANCELED)
    return io__fail_kind(L, "closed", "UdpSocket:send_to: the UDP socket "
                                      "was closed");
  if (st < 0) return io__fail(L, st, "UdpSocket:send_to", NULL);
  lua_pushboolean(L, 1);
  return 1;
}

/* The datagram at index 2 to addr (NULL: the connected peer). */
static int do_send(lua_State *L, io_udp *u, const struct sockaddr *addr,
                   const char *fname) {
  size_t len;
  const char *p = luaL_checklstring(L, 2, &len);
  tidal_task *t = tidal__wait_begin(L, fname);
  uv_buf_t b = uv_buf_init((char *)p, (unsigned int)len);
  send_req *r;
  int rc;
  if (len > UDP_MAX) return io__fail(L, UV_EMSGSIZE, fname, NULL);
  rc = uv_udp_try_send(&u->h, &b, 1, addr);
  if (rc >= 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  if (rc != UV_EAGAIN) return io__fail(L, rc, fname, NULL);
  r = (send_req *)malloc(sizeof *r + len);
  if (r == NULL) return io__fail(L, UV_ENOMEM, fname, NULL);
  memcpy(r->data, p, len);
  r->req.data = r;
  r->u = u;
  r->len = len;
  r->status = 0;
  b = uv_buf_init(r->data, (unsigned int)len);
  rc = uv_udp_send(&r->req, &u->h, &b, 1, addr, send_cb);
  if (rc != 0) {
    free(r);
    return io__fail(L, rc, fname, NULL);
  }
  u->nsend++;
  r->task = t;
  ref(u);
  lua_settop(L, 1);
  lua_pushlightuserdata(L, r);
  return tidal__park(L, t, &send_op, r, send_k);
}

/* u:send_to(data, host, port) -> true | nil, err (host: an IP address) */
static int l_send_to(lua_State *L) {
  io_udp *u = (io_udp *)io__check(L, TT_UDP, "UdpSocket:send_to");
  const char *host = luaL_checkstring(L, 3);
  int port = io__check_port(L, 4, 0, "UdpSocket:send_to");
  struct sockaddr_storage sa;
  if (u->connected)
    luaL_error(L, "UdpSocket:send_to: the socket is connected (use send)");
  if (io__addr_parse(host, port, 0, &sa) != 0)
    luaL_error(L, "UdpSocket:send_to: '%s' is not an IP address (resolve "
                  "names with tidal.net.resolve)",
               host);
  lua_settop(L, 2);
  return do_send(L, u, (struct sockaddr *)&sa, "UdpSocket:send_to");
}

/* u:send(data) -> true | nil, err (a connected socket) */
static int l_send(lua_State *L) {
  io_udp *u = (io_udp *)io__check(L, TT_UDP, "UdpSocket:send");
  if (!u->connected)
    luaL_error(L, "UdpSocket:send: the socket is not connected (use "
                  "send_to, or connect it first)");
  lua_settop(L, 2);
  return do_send(L, u, NULL, "UdpSocket:send");
}

/* u:connect(host, port) -> true | nil, err: send and recv then talk to
** that peer only */
static int l_connect(lua_State *L) {
  io_udp *u = (io_udp *)io__check(L, TT_UDP, "UdpSocket:connect");
  const char *host = luaL_checkstring(L, 2);
  int port = io__check_port(L, 3, 0, "UdpSocket:connect");
  struct sockaddr_storage sa;
  int rc;
  if (io__addr_parse(host, port, 0, &sa) != 0)
    luaL_error(L, "UdpSocket:connect: '%s' is not an IP address (resolve "
                  "names with tidal.net.resolve)",
               host);
  rc = uv_udp_connect(&u->h, (struct sockaddr *)&sa);
  if (rc != 0) {
    io__addr_push_label(L, host, port);
    return io__fail(L, rc, "UdpSocket:connect", "%s", lua_tostring(L, -1));
  }
  u->connected = 1;
  lua_pushboolean(L, 1);
  return 1;
}

/* ---------------------------------------------------------------- other */

static int sockname(io_udp *u, struct sockaddr_storage *sa) {
  int len = sizeof *sa;
  memset(sa, 0, sizeof *sa);
  return uv_udp_getsockname(&u->h, (struct sockaddr *)sa, &len);
}

static int l_port(lua_State *L) {
  io_udp *u = (io_udp *)io__check(L, TT_UDP, "UdpSocket:port");
  struct sockaddr_storage sa;
  if (sockname(u, &sa) != 0) {
    lua_pushnil(L);
    return 1;
  }
  io__addr_push(L, (struct sockaddr *)&sa, sizeof sa);
  return 1;
}

static int l_local_addr(lua_State *L) {
  io_udp *u = (io_udp *)io__check(L, TT_UDP, "UdpSocket:local_addr");
  struct sockaddr_storage sa;
  int rc = sockname(u, &sa);
  if (rc != 0) return io__fail(L, rc, "UdpSocket:local_addr", NULL);
  io__addr_push(L, (struct sockaddr *)&sa, sizeof sa);
  return 2;
}

static void close_core(void *core) { udp_close((io_udp *)core); }

static int l_close(lua_State *L) {
  return io__ud_close(L, TT_UDP, "UdpSocket:close", 0, close_core);
}

static int l_gc(lua_State *L) {
  return io__ud_close(L, TT_UDP, "UdpSocket:__gc", 1, close_core);
}

static int l_tostring(lua_State *L) {
  io_ud *ud = (io_ud *)tidal__checkud(L, 1, TT_UDP, "UdpSocket:__tostring");
  io_udp *u = (io_udp *)ud->core;
  struct sockaddr_storage sa;
  if (u == NULL) {
    lua_pushstring(L, ud->state == IO_UD_CLOSED    ? "tidal.UdpSocket (closed)"
                      : ud->state == IO_UD_PENDING ? "tidal.UdpSocket (moved here)"
                                                   : "tidal.UdpSocket (moved)");
    return 1;
  }
  if (sockname(u, &sa) == 0 && sa.ss_family != 0 &&
      ((struct sockaddr_in *)&sa)->sin_port != 0) {
    io__addr_push(L, (struct sockaddr *)&sa, sizeof sa);
    io__addr_push_label(L, lua_tostring(L, -2), (int)lua_tointeger(L, -1));
    lua_pushfstring(L, "tidal.UdpSocket (%s)", lua_tostring(L, -1));
  } else {
    lua_pushliteral(L, "tidal.UdpSocket (unbound)");
  }
  return 1;
}

/* ------------------------------------------------------------- creation */

static io_udp *udp_new(io_worker *iw) {
  io_udp *u = (io_udp *)calloc(1, sizeof *u);
  if (u == NULL) return NULL;
  u->h.data = u;
  u->obj.iw = iw;
  return u;
}

/* after a successful uv_udp_init*: unreferenced, live, held */
static void udp_started(io_worker *iw, io_udp *u) {
  uv_unref((uv_handle_t *)&u->h);
  io__hold(iw);
  u->obj.shutdown = udp_shutdown;
  io__live_add(iw, &u->obj);
}

/* core._net_udp(ip or nil, port, family, reuseaddr, broadcast) ->
** udpsocket | nil, err | false (ip is not an IP address) */
static int l_udp(lua_State *L) {
  const char *fname = "tidal.net.udp";
  const char *ip = luaL_optstring(L, 1, NULL);
  int port = ip ? io__check_port(L, 2, 1, fname) : 0;
  int family = (int)luaL_optinteger(L, 3, 0);
  int reuseaddr = lua_toboolean(L, 4), broadcast = lua_toboolean(L, 5);
  io_worker *iw = io__worker_check(L, fname);
  struct sockaddr_storage sa;
  io_udp *u;
  int rc, ud;
  if (ip != NULL && io__addr_parse(ip, port, 0, &sa) != 0) {
    lua_pushboolean(L, 0);
    return 1;
  }
  io__ud_new(L, TT_UDP, 0);
  ud = lua_gettop(L);
  if ((u = udp_new(iw)) == NULL) {
    rc = UV_ENOMEM;
    goto fail;
  }
  rc = uv_udp_init_ex(iw->w->loop, &u->h,
                      ip ? sa.ss_family
                      : family == 6 ? AF_INET6
                                    : AF_INET);
  if (rc != 0) {
    free(u);
    goto fail;
  }
  udp_started(iw, u);
  io__ud_attach((io_ud *)lua_touserdata(L, ud), &u->obj);
  if (ip != NULL)
    rc = uv_udp_bind(&u->h, (struct sockaddr *)&sa,
                     reuseaddr ? UV_UDP_REUSEADDR : 0);
  if (rc == 0 && broadcast) rc = uv_udp_set_broadcast(&u->h, 1);
  if (rc != 0) {
    udp_close(u);
    goto fail;
  }
  return 1;
fail:
  if (ip != NULL) {
    io__addr_push_label(L, ip, port);
    io__fail(L, rc, fname, "%s", lua_tostring(L, -1));
    io__error_field(L, "host", ip);
    lua_pushinteger(L, port);
    lua_setfield(L, -2, "port");
  } else {
    io__fail(L, rc, fname, NULL);
  }
  return 2;
}

/* ----------------------------------------------------------------- move */

const char *io__udp_busy(void *core) {
  io_udp *u = (io_udp *)core;
  if (u->nparked > 0 || u->nwoken > 0 || u->readers.head)
    return "a task waits on";
  if (u->nsend > 0) return "has datagrams queued in";
  return NULL;
}

int io__udp_detach(void *core, io_move *m) {
  io_udp *u = (io_udp *)core;
  uv_os_fd_t fd;
  int rc = uv_fileno((uv_handle_t *)&u->h, &fd);
  if (rc != 0) return rc;
  m->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (m->fd < 0) return uv_translate_sys_error(errno);
  m->f = u->connected;
  udp_close(u); /* (queued datagrams are dropped, as UDP may) */
  return 0;
}

int io__udp_rebuild(io_worker *iw, io_move *m, io_obj **out) {
  io_udp *u = udp_new(iw);
  int rc;
  if (u == NULL) return UV_ENOMEM;
  rc = uv_udp_init(iw->w->loop, &u->h);
  if (rc != 0) {
    free(u);
    return rc;
  }
  rc = uv_udp_open(&u->h, m->fd);
  if (rc != 0) {
    uv_close((uv_handle_t *)&u->h, close_cb);
    io__hold(iw); /* (close_cb releases) */
    return rc;
  }
  m->fd = -1;
  u->connected = (uint8_t)m->f;
  udp_started(iw, u);
  *out = &u->obj;
  return 0;
}

static const luaL_Reg methods[] = {{"send_to", l_send_to},
                                   {"recv_from", l_recv_from},
                                   {"connect", l_connect},
                                   {"send", l_send},
                                   {"recv", l_recv},
                                   {"port", l_port},
                                   {"local_addr", l_local_addr},
                                   {"close", l_close},
                                   {NULL, NULL}};

static const luaL_Reg meta[] = {{"__gc", l_gc},
                                {"__close", l_close},
                                {"__tostring", l_tostring},
                                {NULL, NULL}};

static const luaL_Reg funcs[] = {{"_net_udp", l_udp}, {NULL, NULL}};

/* stack: module, ctx */
void io__udp_open(lua_State *L) {
  tidal__newtype(L, TT_UDP, UDP_MT, "UdpSocket", meta, methods);
  tidal__register(L, funcs);
}
