/*
** addr.c: socket addresses <-> host strings and ports, and name
** resolution (tidal.net.resolve).
**
** An IP literal never goes through DNS: parsing it is a few hundred
** nanoseconds, a getaddrinfo on the thread pool tens of microseconds
** (more than a whole connect on loopback). Names are resolved by libuv's
** uv_getaddrinfo on the thread pool, so the loop never blocks; a task
** cancelled while resolving leaves the request to finish in the
** background (uv_cancel first), which frees it.
*/
#include "net.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

int io__check_port(lua_State *L, int idx, int zero_ok, const char *fname) {
  int isnum;
  lua_Integer p = lua_tointegerx(L, idx, &isnum);
  if (!isnum || p < (zero_ok ? 0 : 1) || p > 65535) {
    if (lua_isnumber(L, idx))
      luaL_error(L, "%s: the port must be an integer from %d to 65535, got %s",
                 fname, zero_ok ? 0 : 1, lua_tostring(L, idx));
    luaL_error(L, "%s: the port must be an integer from %d to 65535, got %s",
               fname, zero_ok ? 0 : 1, luaL_typename(L, idx));
  }
  return (int)p;
}

int io__addr_parse(const char *host, int port, int family,
                   struct sockaddr_storage *sa) {
  char buf[64];
  size_t len = strlen(host);
  (void)family;
  memset(sa, 0, sizeof *sa);
  if (len >= 2 && host[0] == '[' && host[len - 1] == ']') {
    if (len - 2 >= sizeof buf) return UV_EINVAL;
    memcpy(buf, host + 1, len - 2);
    buf[len - 2] = '\0';
    return uv_ip6_addr(buf, port, (struct sockaddr_in6 *)sa) == 0 ? 0
                                                                  : UV_EINVAL;
  }
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)sa) == 0) return 0;
  if (strchr(host, ':') != NULL &&
      uv_ip6_addr(host, port, (struct sockaddr_in6 *)sa) == 0)
    return 0;
  return UV_EINVAL;
}

/* "a.b.c.d" of 4 bytes into buf (16 bytes); returns its length. By hand:
** inet_ntop formats with snprintf, some 1,700 instructions for every
** accepted connection's peer. */
static size_t ip4_text(const unsigned char *p, char *buf) {
  size_t n = 0;
  for (int i = 0; i < 4; i++) {
    unsigned v = p[i];
    if (i > 0) buf[n++] = '.';
    if (v >= 100) buf[n++] = (char)('0' + v / 100);
    if (v >= 10) buf[n++] = (char)('0' + v / 10 % 10);
    buf[n++] = (char)('0' + v % 10);
  }
  buf[n] = '\0';
  return n;
}

void io__addr_push(lua_State *L, const struct sockaddr *sa, socklen_t len) {
  char buf[INET6_ADDRSTRLEN + 1];
  (void)len;
  switch (sa->sa_family) {
  case AF_INET: {
    const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
    size_t n = ip4_text((const unsigned char *)&a->sin_addr, buf);
    lua_pushlstring(L, buf, n);
    lua_pushinteger(L, ntohs(a->sin_port));
    return;
  }
  case AF_INET6: {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
    if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr))
      ip4_text(&a->sin6_addr.s6_addr[12], buf);
    else
      uv_ip6_name(a, buf, sizeof buf);
    lua_pushstring(L, buf);
    lua_pushinteger(L, ntohs(a->sin6_port));
    return;
  }
  case AF_UNIX: {
    const struct sockaddr_un *a = (const struct sockaddr_un *)sa;
    size_t n = strnlen(a->sun_path, sizeof a->sun_path);
    lua_pushlstring(L, a->sun_path, n);
    lua_pushnil(L);
    return;
  }
  default:
    lua_pushnil(L);
    lua_pushnil(L);
  }
}

void io__addr_push_label(lua_State *L, const char *host, int port) {
  if (strchr(host, ':') != NULL && host[0] != '[')
    lua_pushfstring(L, "[%s]:%d", host, port);
  else
    lua_pushfstring(L, "%s:%d", host, port);
}

/* -------------------------------------------------------------- resolve */

typedef struct resolve_req {
  uv_getaddrinfo_t req;
  tidal_task *task; /* NULL: nobody waits any more */
  io_worker *iw;
  int status;
  struct addrinfo *res;
} resolve_req;

static void resolve_free(resolve_req *r) {
  io_worker *iw = r->iw;
  if (r->res) uv_freeaddrinfo(r->res);
  free(r);
  io__release(iw);
}

static void resolve_cb(uv_getaddrinfo_t *req, int status,
                       struct addrinfo *res) {
  resolve_req *r = (resolve_req *)req->data;
  r->status = status;
  r->res = res;
  if (r->task == NULL) {
    resolve_free(r);
    return;
  }
  tidal__wake(r->task, 0);
  r->task = NULL;
}

static int resolve_cancel(tidal_task *t) {
  resolve_req *r = (resolve_req *)t->wobj;
  r->task = NULL; /* its callback frees it */
  uv_cancel((uv_req_t *)&r->req);
  return 1;
}

static const tidal_waitop resolve_op = {"tidal.net.resolve", resolve_cancel, NULL};

/* Pushes the list of unique address strings of r->res. */
static void push_list(lua_State *L, const struct addrinfo *res) {
  int n = 0;
  lua_newtable(L);
  for (const struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
    int dup = 0;
    if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) continue;
    io__addr_push(L, ai->ai_addr, ai->ai_addrlen);
    lua_pop(L, 1);
    for (int i = 1; i <= n && !dup; i++) {
      lua_rawgeti(L, -2, i);
      dup = lua_rawequal(L, -1, -2);
      lua_pop(L, 1);
    }
    if (dup)
      lua_pop(L, 1);
    else
      lua_rawseti(L, -2, ++n);
  }
}

/* stack: host, family, fname */
static int resolve_result(lua_State *L, resolve_req *r) {
  const char *host = lua_tostring(L, 1);
  const char *fname = lua_tostring(L, 3);
  int status = r->status;
  if (status == 0 && r->res == NULL) status = UV_EAI_NODATA;
  if (status != 0) {
    resolve_free(r);
    io__fail(L, status, fname, "%s", host);
    io__error_field(L, "host", host);
    return 2;
  }
  push_list(L, r->res);
  resolve_free(r);
  if (lua_rawlen(L, -1) == 0) {
    io__fail(L, UV_EAI_NODATA, fname, "%s", host);
    io__error_field(L, "host", host);
    return 2;
  }
  return 1;
}

static int resolve_k(lua_State *L, int status, lua_KContext k) {
  resolve_req *r = (resolve_req *)lua_touserdata(L, -1);
  (void)status;
  lua_pop(L, 1);
  /* woken by the callback, then cancelled: ours to free; cancelled while
  ** waiting: the callback's (then r must not be touched) */
  if (tidal__wake_lost((tidal_task *)k)) resolve_free(r);
  tidal__resumed(L, (tidal_task *)k);
  return resolve_result(L, r);
}

/* core._net_resolve(host, family (0, 4, 6), fname) -> {addr, ...} |
** nil, err. An IP literal comes back as it is (normalised). */
static int l_resolve(lua_State *L) {
  const char *fname = luaL_optstring(L, 3, "tidal.net.resolve");
  const char *host = luaL_checkstring(L, 1);
  int family = (int)luaL_optinteger(L, 2, 0);
  struct sockaddr_storage sa;
  struct addrinfo hints;
  tidal_task *t;
  io_worker *iw;
  resolve_req *r;
  int rc;
  lua_settop(L, 3);
  lua_pushstring(L, fname);
  lua_replace(L, 3);
  if (io__addr_parse(host, 0, family, &sa) == 0) {
    lua_createtable(L, 1, 0);
    io__addr_push(L, (struct sockaddr *)&sa, sizeof sa);
    lua_pop(L, 1);
    lua_rawseti(L, -2, 1);
    return 1;
  }
  t = tidal__wait_begin(L, fname);
  iw = io__worker_check(L, fname);
  r = (resolve_req *)calloc(1, sizeof *r);
  if (r == NULL) return io__fail(L, UV_ENOMEM, fname, "%s", host);
  memset(&hints, 0, sizeof hints);
  hints.ai_family = family == 4 ? AF_INET : family == 6 ? AF_INET6 : AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  r->req.data = r;
  r->iw = iw;
  rc = uv_getaddrinfo(iw->w->loop, &r->req, resolve_cb, host, NULL, &hints);
  if (rc != 0) {
    free(r);
    io__fail(L, rc, fname, "%s", host);
    io__error_field(L, "host", host);
    return 2;
  }
  io__hold(iw);
  r->task = t;
  lua_pushlightuserdata(L, r);
  return tidal__park(L, t, &resolve_op, r, resolve_k);
}

static const luaL_Reg funcs[] = {{"_net_resolve", l_resolve}, {NULL, NULL}};

/* stack: module, ctx */
void io__addr_open(lua_State *L) {
  tidal__register(L, funcs);
}
