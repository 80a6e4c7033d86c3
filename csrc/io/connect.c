/*
** connect.c: connecting a stream: TCP to one IP address (the Lua facade
** resolves names and tries each address in turn) and unix sockets.
**
** One request per attempt: the stream core with its handle and a
** uv_connect_t. A task cancelled while connecting closes the attempt;
** libuv then calls the connect callback with ECANCELED, which frees the
** request (nobody waits for it any more), and the stream is freed in its
** close callback. A task woken by a finished connect but cancelled before
** it ran closes the new stream itself.
*/
#include "net.h"

#include <stdlib.h>
#include <string.h>

typedef struct conn_req {
  uv_connect_t req;
  io_stream *s;     /* the attempt */
  tidal_task *task; /* the waiting task; NULL: nobody waits */
  int status;
  size_t rbuf;
  int nodelay, keepalive;
  struct sockaddr_storage sa;
} conn_req;

static void connect_cb(uv_connect_t *req, int status) {
  conn_req *c = (conn_req *)req->data;
  if (c->task != NULL) {
    tidal_task *t = c->task;
    c->status = status;
    c->task = NULL;
    tidal__wake(t, 0);
    return;
  }
  io__stream_close(c->s); /* (no-op if the cancel closed it already) */
  free(c);
}

static int connect_cancel(tidal_task *t) {
  conn_req *c = (conn_req *)t->wobj;
  c->task = NULL;
  io__stream_close(c->s); /* connect_cb (ECANCELED) frees c */
  return 1;
}

static const tidal_waitop tcp_op = {"tidal.net.connect", connect_cancel, NULL};
static const tidal_waitop unix_op = {"tidal.net.connect_unix",
                                     connect_cancel, NULL};

/* stack: 1 = ip or path, 2 = port or nil, ..., name at 6 (TCP); the
** Stream userdata below the request's lightuserdata on top */
static int connect_k(lua_State *L, int status, lua_KContext k) {
  tidal_task *t = (tidal_task *)k;
  conn_req *c = (conn_req *)lua_touserdata(L, -1);
  int ud = lua_gettop(L) - 1, unix, rc;
  const char *fname;
  io_stream *s;
  (void)status;
  if (tidal__wake_lost(t)) { /* connected (or not), but we are cancelled */
    io__stream_close(c->s);
    free(c);
  }
  /* cancelled while waiting: c is connect_cb's, not to be touched */
  tidal__resumed(L, t);
  s = c->s;
  unix = s->kind == IO_UNIX;
  fname = unix ? "tidal.net.connect_unix" : "tidal.net.connect";
  rc = c->status;
  if (rc == 0 && !unix) {
    memcpy(&s->peer, &c->sa, sizeof c->sa);
    rc = io__stream_tcp_opts(s, c->nodelay, c->keepalive);
  }
  if (rc == 0) rc = io__stream_start(s, c->rbuf);
  free(c);
  if (rc != 0) {
    io__stream_close(s);
    if (unix) {
      io__fail(L, rc, fname, "%s", lua_tostring(L, 1));
      io__error_field(L, "path", lua_tostring(L, 1));
    } else {
      const char *name = lua_tostring(L, 6);
      int port = (int)lua_tointeger(L, 2);
      io__addr_push_label(L, name, port);
      io__fail(L, rc, fname, "%s", lua_tostring(L, -1));
      io__error_field(L, "host", name);
      lua_pushinteger(L, port);
      lua_setfield(L, -2, "port");
    }
    return 2;
  }
  io__stream_attach(L, ud, s);
  lua_pushvalue(L, ud);
  return 1;
}

/* core._net_connect(ip, port, nodelay, keepalive, read_buffer [, name])
** -> stream | nil, err | false (ip is not an IP address: resolve it) */
static int l_connect(lua_State *L) {
  const char *fname = "tidal.net.connect";
  const char *ip = lua_type(L, 1) == LUA_TSTRING ? lua_tostring(L, 1) : "";
  int port = io__check_port(L, 2, 0, fname);
  tidal_task *t;
  io_worker *iw;
  io_stream *s;
  conn_req *c;
  int rc;
  struct sockaddr_storage sa;
  if (io__addr_parse(ip, port, 0, &sa) != 0) {
    lua_pushboolean(L, 0);
    return 1;
  }
  t = tidal__wait_begin(L, fname);
  iw = io__worker_check(L, fname);
  lua_settop(L, 6);
  if (lua_isnil(L, 6)) {
    lua_pushvalue(L, 1);
    lua_replace(L, 6);
  }
  io__stream_newud(L);
  c = (conn_req *)malloc(sizeof *c);
  s = c ? io__stream_new(iw, IO_TCP, IO_R | IO_W) : NULL;
  if (s == NULL) {
    free(c);
    rc = UV_ENOMEM;
    goto fail;
  }
  c->req.data = c;
  c->s = s;
  c->status = 0;
  c->nodelay = lua_isnil(L, 3) || lua_toboolean(L, 3);
  c->keepalive = (int)lua_tointeger(L, 4);
  c->rbuf = (size_t)lua_tointeger(L, 5);
  memcpy(&c->sa, &sa, sizeof sa);
  rc = uv_tcp_init_ex(iw->w->loop, &s->u.tcp, sa.ss_family);
  if (rc != 0) {
    io__stream_discard(s);
    free(c);
    goto fail;
  }
  rc = uv_tcp_connect(&c->req, &s->u.tcp, (struct sockaddr *)&sa, connect_cb);
  if (rc != 0) {
    io__stream_close(s);
    free(c);
    goto fail;
  }
  /* reading on from now (libuv allows it on a connecting socket): epoll
  ** gets the socket once for both directions, instead of once for the
  ** connect and again (EEXIST, then MOD) for the first read */
  io__stream_read_now(s);
  c->task = t;
  lua_pushlightuserdata(L, c);
  return tidal__park(L, t, &tcp_op, c, connect_k);
fail:
  io__addr_push_label(L, lua_tostring(L, 6), port);
  io__fail(L, rc, fname, "%s", lua_tostring(L, -1));
  io__error_field(L, "host", lua_tostring(L, 6));
  lua_pushinteger(L, port);
  lua_setfield(L, -2, "port");
  return 2;
}

/* core._net_connect_unix(path, read_buffer) -> stream | nil, err */
static int l_connect_unix(lua_State *L) {
  const char *fname = "tidal.net.connect_unix";
  size_t plen;
  const char *path = luaL_checklstring(L, 1, &plen);
  tidal_task *t = tidal__wait_begin(L, fname);
  io_worker *iw = io__worker_check(L, fname);
  io_stream *s;
  conn_req *c;
  int rc;
  lua_settop(L, 2);
  io__stream_newud(L);
  /* libuv 1.44's uv_pipe_connect silently truncates a long path */
  if (plen >= sizeof(((struct sockaddr_un *)0)->sun_path) || plen == 0 ||
      strlen(path) != plen) {
    rc = plen == 0 || strlen(path) != plen ? UV_EINVAL : UV_ENAMETOOLONG;
    goto fail;
  }
  c = (conn_req *)malloc(sizeof *c);
  s = c ? io__stream_new(iw, IO_UNIX, IO_R | IO_W) : NULL;
  if (s == NULL) {
    free(c);
    rc = UV_ENOMEM;
    goto fail;
  }
  c->req.data = c;
  c->s = s;
  c->status = 0;
  c->nodelay = c->keepalive = 0;
  c->rbuf = (size_t)lua_tointeger(L, 2);
  rc = uv_pipe_init(iw->w->loop, &s->u.pipe, 0);
  if (rc != 0) {
    io__stream_discard(s);
    free(c);
    goto fail;
  }
  uv_pipe_connect(&c->req, &s->u.pipe, path, connect_cb);
  c->task = t;
  lua_pushlightuserdata(L, c);
  return tidal__park(L, t, &unix_op, c, connect_k);
fail:
  io__fail(L, rc, fname, "%s", path);
  io__error_field(L, "path", path);
  return 2;
}

static const luaL_Reg funcs[] = {{"_net_connect", l_connect},
                                 {"_net_connect_unix", l_connect_unix},
                                 {NULL, NULL}};

/* stack: module, ctx */
void io__connect_open(lua_State *L) {
  tidal__register(L, funcs);
}
