/*
** client.c: the Lua side of tidal.http's C core (the public module is
** lua/tidal/http.lua). A client userdata ("tidal.http.Client") holds the
** settings of its pool and its request defaults; its pool is one multi
** handle per worker (glue.c), made on first use. A request parks the
** task until its transfer is done (or, streamed, until the final headers
** arrived) and its continuation builds the response table; a streamed body
** is a "tidal.http.Body" userdata read chunk by chunk.
**
** Cancelling a waiting task (abort, timeout, select) removes the transfer
** from the multi handle at once and recycles it: nothing touches the task
** afterwards.
*/
#include "http.h"

#include <limits.h>
#include <stdarg.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CLIENT_MT "tidal.http.Client"
#define BODY_MT "tidal.http.Body"
#define RESPONSE_MT "tidal.http.Response"

#define MAX_BODY_DEFAULT (-2) /* resolved per request (see body_limit) */

typedef struct http_client {
  http_config cfg;
  http_multi *pools;          /* one per worker it was used on */
  struct curl_slist *headers; /* default headers */
  long timeout_ms, connect_timeout_ms, max_redirects;
  curl_off_t max_body; /* -1: none; MAX_BODY_DEFAULT */
  int follow;
  int closed;
} http_client;

typedef struct http_body {
  http_xfer *x; /* NULL once closed */
} http_body;

/* ---------------------------------------------------------------- misuse */

static int wait_probe(lua_State *L) {
  tidal__wait_begin(L, lua_tostring(L, 1)); /* raises */
  return 0;
}

/* tidal__wait_begin, whose misuse errors ("not inside a tidal task", ...)
** point at the user's code as herr's do, not at tidal/http.lua. */
static tidal_task *wait_begin(lua_State *L, const char *fname) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  tidal_task *t = ctx->cur;
  if (t != NULL && t->co == L && lua_isyieldable(L)) return t;
  /* the message, raised from here: the call below cannot yield either */
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushcclosure(L, wait_probe, 1);
  lua_pushstring(L, fname);
  if (lua_pcall(L, 1, 0, 0) == LUA_OK) /* (cannot happen) */
    return tidal__wait_begin(L, fname);
  http__err(L, "%s", lua_tostring(L, -1));
  return NULL;
}

/* ------------------------------------------------------------- options */

static int is_tchar(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static void check_token(lua_State *L, const char *s, size_t n,
                        const char *fname, const char *what) {
  if (n == 0) http__err(L, "%s: %s is empty", fname, what);
  for (size_t i = 0; i < n; i++)
    if (!is_tchar((unsigned char)s[i]))
      http__err(L,
           "%s: %s '%s' has a character not allowed in an HTTP token "
           "(byte %d)%s",
           fname, what, s, (int)(unsigned char)s[i],
           (s[i] == '\r' || s[i] == '\n')
               ? "; CR/LF would inject headers, remove it"
               : "");
}

/* Appends the line "name: value" ("name:" drops a header curl would send,
** "name;" sends it empty); on failure frees the list and raises. */
static void slist_add(lua_State *L, struct curl_slist **list, const char *name,
                      const char *v, size_t vn, int drop, const char *fname) {
  char small[256], *line = small;
  size_t nn = strlen(name), len = nn + 2 + vn + 1;
  struct curl_slist *nl = NULL;
  if (len > sizeof small) line = (char *)malloc(len);
  if (line != NULL) {
    memcpy(line, name, nn);
    if (drop) {
      memcpy(line + nn, ":", 2);
    } else if (vn == 0) {
      memcpy(line + nn, ";", 2);
    } else {
      memcpy(line + nn, ": ", 2);
      memcpy(line + nn + 2, v, vn);
      line[nn + 2 + vn] = '\0';
    }
    nl = curl_slist_append(*list, line);
    if (line != small) free(line);
  }
  if (nl == NULL) {
    curl_slist_free_all(*list);
    *list = NULL;
    http__err(L, "%s: not enough memory", fname);
  }
  *list = nl;
}

/* One header value at vidx (string, number, or false to drop the header):
** checked (build == 0) or appended to *list. */
static void header_value(lua_State *L, struct curl_slist **list,
                         const char *name, int vidx, int build,
                         const char *fname) {
  size_t vn = 0;
  const char *v = NULL;
  int drop = lua_type(L, vidx) == LUA_TBOOLEAN && !lua_toboolean(L, vidx);
  if (!drop) {
    if (lua_type(L, vidx) == LUA_TSTRING) {
      v = lua_tolstring(L, vidx, &vn);
    } else if (lua_type(L, vidx) == LUA_TNUMBER) {
      v = lua_tolstring(L, vidx, &vn); /* a value slot, not a key */
    } else if (!build) {
      http__err(L,
           "%s: header '%s' must be a string, a number, a list of "
           "them, or false, got %s",
           fname, name, luaL_typename(L, vidx));
    }
    if (!build)
      for (size_t i = 0; i < vn; i++)
        if (v[i] == '\r' || v[i] == '\n' || v[i] == '\0')
          http__err(L,
               "%s: header '%s' has a %s in its value; CR/LF would "
               "inject headers (remove it, or encode the value)",
               fname, name, v[i] == '\0' ? "NUL byte" : "CR or LF");
  }
  if (build) slist_add(L, list, name, v, vn, drop, fname);
}

/* The header table at idx, {name = value | {values...} | false}: checked
** (build == 0, may raise) or appended to *list (build == 1, raises only
** when out of memory, after freeing *list). */
static void header_table(lua_State *L, int idx, struct curl_slist **list,
                         int build, const char *fname) {
  idx = lua_absindex(L, idx);
  if (lua_type(L, idx) != LUA_TTABLE)
    http__err(L, "%s: option 'headers' must be a table of name = value, got %s",
         fname, luaL_typename(L, idx));
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    size_t nn;
    if (lua_type(L, -2) != LUA_TSTRING)
      http__err(L, "%s: header names must be strings, got %s", fname,
           luaL_typename(L, -2));
    const char *name = lua_tolstring(L, -2, &nn);
    if (!build) check_token(L, name, nn, fname, "header name");
    if (lua_type(L, -1) == LUA_TTABLE) {
      lua_Unsigned n = lua_rawlen(L, -1);
      for (lua_Unsigned i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, (lua_Integer)i);
        header_value(L, list, name, lua_gettop(L), build, fname);
        lua_pop(L, 1);
      }
    } else {
      header_value(L, list, name, lua_gettop(L), build, fname);
    }
    lua_pop(L, 1);
  }
}

/* Whether list has a header called name (n bytes). */
static int has_header(const struct curl_slist *l, const char *name, size_t n) {
  for (; l; l = l->next)
    if (strncasecmp(l->data, name, n) == 0 &&
        (l->data[n] == ':' || l->data[n] == ';'))
      return 1;
  return 0;
}

/* The client's default headers not overridden by the request's. */
static void merge_defaults(lua_State *L, struct curl_slist **list,
                           const struct curl_slist *defaults,
                           const char *fname) {
  struct curl_slist *req = *list;
  for (const struct curl_slist *d = defaults; d; d = d->next) {
    size_t n = strcspn(d->data, ":;");
    if (has_header(req, d->data, n)) continue;
    struct curl_slist *nl = curl_slist_append(*list, d->data);
    if (nl == NULL) {
      curl_slist_free_all(*list);
      *list = NULL;
      http__err(L, "%s: not enough memory", fname);
    }
    *list = nl;
  }
}

/* ---------------------------------------------------------------- client */

static http_client *check_client(lua_State *L, int idx, const char *fname) {
  http_client *c = (http_client *)luaL_testudata(L, idx, CLIENT_MT);
  if (c == NULL)
    http__err(L, "%s: expected an HTTP client (from tidal.http.client), got %s",
         fname, luaL_typename(L, idx));
  return c;
}

static void client_release(http_client *c) {
  while (c->pools)
    http__multi_close(c->pools);
  curl_slist_free_all(c->headers);
  c->headers = NULL;
  free(c->cfg.ca_file);
  free(c->cfg.user_agent);
  free(c->cfg.proxy);
  c->cfg.ca_file = c->cfg.user_agent = c->cfg.proxy = NULL;
}

static int l_client_gc(lua_State *L) {
  http_client *c = (http_client *)luaL_checkudata(L, 1, CLIENT_MT);
  client_release(c);
  c->closed = 1;
  return 0;
}

/* client:close(): no new requests; pools close when their transfers end */
static int l_client_close(lua_State *L) {
  http_client *c = check_client(L, 1, "client:close");
  c->closed = 1;
  for (http_multi *m = c->pools, *next; m; m = next) {
    next = m->cnext;
    if (m->live == NULL)
      http__multi_close(m);
    else
      m->close_idle = 1;
  }
  return 0;
}

static int l_client_tostring(lua_State *L) {
  http_client *c = check_client(L, 1, "client:__tostring");
  lua_pushfstring(L, "tidal.http.Client (%p)%s", (void *)c,
                  c->closed ? " (closed)" : "");
  return 1;
}

/* No proxy option: libcurl reads the proxy variables of the environment
** (http_proxy, https_proxy, all_proxy, no_proxy, ...) for every request.
** When none is set, say so once here and spare each request the lookups. */
static void proxy_from_env(lua_State *L, http_client *c, const char *fname) {
  static const char *const vars[] = {"http_proxy", "https_proxy", "HTTPS_PROXY",
                                     "all_proxy",  "ALL_PROXY",   "no_proxy",
                                     "NO_PROXY",   NULL};
  for (int i = 0; vars[i]; i++)
    if (getenv(vars[i])) return;
  c->cfg.proxy = http__opt_string(L, lua_upvalueindex(2), fname, "proxy");
}

static void client_headers(lua_State *L, int v, void *target,
                           const char *fname) {
  http_client *c = (http_client *)target;
  header_table(L, v, NULL, 0, fname);
  header_table(L, v, &c->headers, 1, fname); /* c's __gc frees it */
}

/* false: no proxy, not even from the environment */
static void client_proxy(lua_State *L, int v, void *target,
                         const char *fname) {
  http_client *c = (http_client *)target;
  free(c->cfg.proxy);
  c->cfg.proxy = NULL;
  if (lua_type(L, v) == LUA_TBOOLEAN && !lua_toboolean(L, v))
    c->cfg.proxy = http__opt_string(L, lua_upvalueindex(2), fname, "proxy");
  else
    c->cfg.proxy = http__opt_string(L, v, fname, "proxy");
}

#define CO(f) offsetof(http_client, f)
static const http_opt client_opts[] = {
    {"headers", HO_CUSTOM, 0, client_headers},
    {"timeout", HO_MS, CO(timeout_ms), NULL},
    {"connect_timeout", HO_MS, CO(connect_timeout_ms), NULL},
    {"follow_redirects", HO_BOOL, CO(follow), NULL},
    {"max_redirects", HO_COUNT, CO(max_redirects), NULL},
    {"max_body", HO_BODY_LIMIT, CO(max_body), NULL},
    {"ca_file", HO_STRING, CO(cfg.ca_file), NULL},
    {"user_agent", HO_STRING, CO(cfg.user_agent), NULL},
    {"max_connections", HO_COUNT, CO(cfg.max_connections), NULL},
    {"max_host_connections", HO_COUNT, CO(cfg.max_host_connections), NULL},
    {"pool_size", HO_COUNT, CO(cfg.pool_size), NULL},
    {"http2", HO_BOOL, CO(cfg.http2), NULL},
    {"decompress", HO_BOOL, CO(cfg.decompress), NULL},
    {"proxy", HO_CUSTOM, 0, client_proxy},
    {NULL, 0, 0, NULL}};
#undef CO

/* core._http_client([opts]) */
static int l_client_new(lua_State *L) {
  const char *fname = "tidal.http.client";
  int has = !lua_isnoneornil(L, 1);
  http_client *c;
  if (has && !lua_istable(L, 1))
    http__err(L, "%s: expected an options table or nothing, got %s", fname,
         luaL_typename(L, 1));
  lua_settop(L, 1);
  c = (http_client *)lua_newuserdatauv(L, sizeof *c, 0);
  memset(c, 0, sizeof *c); /* harmless before anything is acquired */
  luaL_setmetatable(L, CLIENT_MT);
  c->connect_timeout_ms = HTTP_CONNECT_TIMEOUT_MS;
  c->max_redirects = HTTP_MAX_REDIRECTS;
  c->max_body = MAX_BODY_DEFAULT;
  c->follow = 1;
  c->cfg.http2 = 1;
  if (!has) {
    proxy_from_env(L, c, fname);
    return 1;
  }
  http__opts_parse(L, 1, client_opts, c, fname);
  if (c->cfg.proxy == NULL) proxy_from_env(L, c, fname);
  return 1;
}

/* The client's pool on worker w, made on first use. */
static http_multi *client_pool(lua_State *L, http_client *c, tidal_worker *w,
                               const char *fname) {
  http_multi *m = c->pools;
  if (m && m->hw->w == w) return m;
  for (; m; m = m->cnext)
    if (m->hw->w == w) return m;
  http_worker *hw = http__worker(w);
  if (hw == NULL) http__err(L, "%s: cannot initialise libcurl", fname);
  m = http__multi_new(hw, &c->cfg, &c->pools);
  if (m == NULL) http__err(L, "%s: cannot create a curl multi handle", fname);
  return m;
}

/* ----------------------------------------------------------------- URLs */

/* Whether url has userinfo (user:password@) in its authority. */
static int has_userinfo(const char *url) {
  const char *p = strstr(url, "://");
  if (p == NULL) return 0;
  p += 3;
  return memchr(p, '@', strcspn(p, "/?#")) != NULL;
}

/* Pushes url without its userinfo and returns it: a password in a URL
** must not reach error messages, err.url or resp.url (they end up in
** logs). libcurl still sends it (basic authentication). */
static const char *push_url(lua_State *L, const char *url) {
  char *out = NULL;
  if (!has_userinfo(url)) return lua_pushstring(L, url);
  CURLU *u = curl_url();
  if (u &&
      curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) ==
          CURLUE_OK &&
      curl_url_set(u, CURLUPART_USER, NULL, 0) == CURLUE_OK &&
      curl_url_set(u, CURLUPART_PASSWORD, NULL, 0) == CURLUE_OK &&
      curl_url_set(u, CURLUPART_OPTIONS, NULL, 0) == CURLUE_OK &&
      curl_url_get(u, CURLUPART_URL, &out, 0) != CURLUE_OK)
    out = NULL;
  curl_url_cleanup(u);
  if (out != NULL && !has_userinfo(out)) {
    lua_pushstring(L, out); /* (a memory error here leaks out) */
    curl_free(out);
    return lua_tostring(L, -1);
  }
  curl_free(out);
  /* not a URL libcurl can parse (a misuse message): cut the userinfo out
  ** by hand, up to the authority's last '@' */
  const char *p = strstr(url, "://") + 3, *at = p;
  size_t n = strcspn(p, "/?#");
  for (size_t i = 0; i < n; i++)
    if (p[i] == '@') at = p + i + 1;
  lua_pushlstring(L, url, (size_t)(p - url));
  lua_pushstring(L, at);
  lua_concat(L, 2);
  return lua_tostring(L, -1);
}

/* ------------------------------------------------------------ responses */

/* Stack of l_send: 1 client, 2 fname, 3 method, 4 url, 5 opts, 6 body,
** 7 mode, 8 content type, 9 the transfer (light userdata). */
#define S_FNAME 2
#define S_METHOD 3
#define S_URL 4
#define S_BODY 6
#define S_XFER 9

/* l_send's upvalues: the context, the response metatable, the names of
** the response's fields (set with lua_rawset: no lookup of the name) */
#define UV_RESPONSE_MT 2
#define UV_STATUS 3
#define UV_BODY 4
#define UV_HEADERS 5
#define UV_URL 6
#define SEND_NUPVALUES 6

static void push_response(lua_State *L, http_xfer *x, int with_body) {
  long code = 0;
  char *url = NULL;
  lua_createtable(L, 0, 6);
  curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
  lua_pushvalue(L, lua_upvalueindex(UV_STATUS));
  lua_pushinteger(L, code);
  lua_rawset(L, -3);
  if (with_body) {
    lua_pushvalue(L, lua_upvalueindex(UV_BODY));
    lua_pushlstring(L, x->body.data, x->body.len);
    lua_rawset(L, -3);
  }
  lua_pushvalue(L, lua_upvalueindex(UV_HEADERS));
  lua_pushlstring(L, x->hdr.data, x->hdr.len);
  lua_rawset(L, -3);
  curl_easy_getinfo(x->easy, CURLINFO_EFFECTIVE_URL, &url);
  if (url) {
    const char *given = lua_tostring(L, S_URL);
    lua_pushvalue(L, lua_upvalueindex(UV_URL));
    if (strcmp(url, given) == 0 && !has_userinfo(given))
      lua_pushvalue(L, S_URL); /* not redirected: the caller's string */
    else
      push_url(L, url);
    lua_rawset(L, -3);
  }
  /* http_version and reason come from _h's status line, on demand */
  lua_pushvalue(L, lua_upvalueindex(UV_RESPONSE_MT));
  lua_setmetatable(L, -2);
}

/* Pushes the error object for failed transfer x of method url. */
static void push_error(lua_State *L, http_xfer *x, const char *method,
                       const char *url) {
  const char *kind = http__error_kind(x);
  const char *detail = x->errbuf[0] ? x->errbuf : curl_easy_strerror(x->rc);
  if (x->flags & XF_TOO_LARGE)
    tidal__error_push(L, kind,
                      "tidal.http: %s %s failed (too_large): the response "
                      "body is larger than max_body (%I bytes)",
                      method, url, (lua_Integer)x->max_body);
  else if (x->rc != CURLE_OK && http__headers_too_large(x))
    tidal__error_push(L, kind,
                      "tidal.http: %s %s failed (too_large): the response "
                      "headers are too large (at most %d KiB in all, and "
                      "100 KiB for one line)",
                      method, url, HTTP_MAX_HEADERS / 1024);
  else if (x->rc == CURLE_UNSUPPORTED_PROTOCOL &&
           strncmp(detail, "Protocol ", 9) == 0)
    tidal__error_push(L, kind,
                      "tidal.http: %s %s failed (protocol): %s (only http "
                      "and https URLs are allowed, also on redirects)",
                      method, url, detail);
  else
    tidal__error_push(L, kind, "tidal.http: %s %s failed (%s): %s", method, url,
                      kind, detail);
  lua_pushstring(L, url);
  lua_setfield(L, -2, "url");
}

static int is_misuse(http_xfer *x) {
  long redirects = 0;
  if (x->rc != CURLE_URL_MALFORMAT) return 0;
  curl_easy_getinfo(x->easy, CURLINFO_REDIRECT_COUNT, &redirects);
  return redirects == 0; /* the caller's URL, not a server's Location */
}

/* ------------------------------------------------------------- requests */

enum { MODE_BUFFER, MODE_STREAM, MODE_PROGRESS };

static int send_cancel(tidal_task *t) {
  http_xfer *x = (http_xfer *)t->wobj;
  http__xfer_release(x); /* removed from the multi at once */
  return 1;
}

static const tidal_waitop send_op = {"tidal.http.request", send_cancel, NULL};

static int push_body(lua_State *L, http_xfer *x);

/* The request is over (or, streamed, its headers are in): results. */
static int send_finish(lua_State *L, http_xfer *x, int stream) {
  const char *fname, *method;
  if (x->state == XS_DONE && x->rc == CURLE_OK &&
      !(x->flags & (XF_NOMEM | XF_TOO_LARGE))) { /* the common case */
    push_response(L, x, !stream);
    if (!stream) {
      http__xfer_release(x);
      return 1;
    }
    push_body(L, x);
    lua_setfield(L, -2, "_b");
    return 1;
  }
  fname = lua_tostring(L, S_FNAME);
  method = lua_tostring(L, S_METHOD);
  if (x->flags & XF_NOMEM) {
    http__xfer_release(x);
    return http__err(L, "%s: not enough memory for the response of %s %s", fname,
                method, push_url(L, lua_tostring(L, S_URL)));
  }
  /* a stream whose headers arrived reports a later failure when read */
  if (x->state == XS_DONE && (x->rc != CURLE_OK || (x->flags & XF_TOO_LARGE)) &&
      !(stream && (x->flags & XF_GOTHEADERS))) {
    const char *url = push_url(L, lua_tostring(L, S_URL));
    if (is_misuse(x)) {
      lua_pushfstring(L, "%s: malformed URL '%s' (%s)", fname, url,
                      x->errbuf[0] ? x->errbuf : curl_easy_strerror(x->rc));
      http__xfer_release(x);
      return lua_error(L);
    }
    lua_pushnil(L);
    push_error(L, x, method, url);
    http__xfer_release(x);
    return 2;
  }
  if (x->state != XS_DONE && x->state != XS_RUNNING) {
    /* its pool was closed under it: the client was finalized (lua_close)
    ** or its runtime closed */
    const char *url = push_url(L, lua_tostring(L, S_URL));
    http__xfer_release(x);
    lua_pushnil(L);
    tidal__error_push(L, "cancelled",
                      "tidal.http: %s %s failed (cancelled): the client was "
                      "closed",
                      method, url);
    lua_pushvalue(L, -3);
    lua_setfield(L, -2, "url");
    return 2;
  }
  if (!stream) {
    push_response(L, x, 1);
    http__xfer_release(x);
    return 1;
  }
  push_response(L, x, 0);
  push_body(L, x);
  lua_setfield(L, -2, "_b");
  return 1;
}

static int send_k(lua_State *L, int status, lua_KContext k) {
  tidal_task *t = (tidal_task *)k;
  http_xfer *x = (http_xfer *)lua_touserdata(L, S_XFER);
  (void)status;
  /* woken with the response, but cancelled before it ran: nothing was
  ** taken, the response is dropped (its connection is back in the pool) */
  if (tidal__wake_lost(t)) http__xfer_release(x);
  tidal__resumed(L, t); /* cancelled while waiting: send_cancel released x */
  return send_finish(L, x, (int)lua_tointeger(L, 7) != MODE_BUFFER);
}

static int l_send(lua_State *L);
static const tidal_restart send_again = {l_send};


/* A request's options (the ones the Lua side handles are only accepted;
** headers are checked later, once the URL is). */
#define RO(f) offsetof(http_req, f)
static const http_opt request_opts[] = {
    {"method", HO_LUA, 0, NULL},
    {"url", HO_LUA, 0, NULL},
    {"headers", HO_LUA, 0, NULL},
    {"body", HO_LUA, 0, NULL},
    {"json", HO_LUA, 0, NULL},
    {"query", HO_LUA, 0, NULL},
    {"timeout", HO_MS, RO(timeout_ms), NULL},
    {"connect_timeout", HO_MS, RO(connect_timeout_ms), NULL},
    {"follow_redirects", HO_BOOL, RO(follow), NULL},
    {"max_redirects", HO_COUNT, RO(max_redirects), NULL},
    {"max_body", HO_BODY_LIMIT, RO(max_body), NULL},
    {"on_progress", HO_LUA, 0, NULL},
    {"stream", HO_LUA, 0, NULL},
    {NULL, 0, 0, NULL}};
#undef RO

/* core._http_send(client, fname, method, url, opts, body, mode, ctype)
** -> response | nil, err */
static int l_send(lua_State *L) {
  const char *fname = luaL_optstring(L, S_FNAME, "tidal.http.request");
  http_client *c = check_client(L, 1, fname);
  tidal_task *t = wait_begin(L, fname);
  http_req r;
  http_xfer *x;
  int mode;
  struct curl_slist *own = NULL;
  TIDAL_SPEND(L, t, &send_again);
  lua_settop(L, 8);
  if (c->closed) http__err(L, "%s: the client is closed", fname);
  size_t mlen;
  const char *method = luaL_checklstring(L, S_METHOD, &mlen);
  check_token(L, method, mlen, fname, "method");
  if (lua_type(L, S_URL) != LUA_TSTRING)
    http__err(L, "%s: url must be a string, got %s", fname, luaL_typename(L, S_URL));
  size_t ulen;
  const char *url = lua_tolstring(L, S_URL, &ulen);
  if (strlen(url) != ulen || strpbrk(url, "\r\n \t"))
    http__err(L,
         "%s: malformed URL '%s' (it has a space, CR, LF or NUL; "
         "percent-encode it)",
         fname, push_url(L, url));
  if (strstr(url, "://") == NULL)
    http__err(L,
         "%s: malformed URL '%s' (expected an absolute URL such as "
         "http://host/path or https://host/path)",
         fname, url);
  mode = (int)luaL_optinteger(L, 7, MODE_BUFFER);

  memset(&r, 0, sizeof r);
  r.method = method;
  r.url = url;
  r.url_len = ulen;
  r.headers = c->headers;
  r.timeout_ms = c->timeout_ms;
  r.connect_timeout_ms = c->connect_timeout_ms;
  r.max_redirects = c->max_redirects;
  r.follow = c->follow;
  r.max_body = c->max_body;
  r.stream = mode != MODE_BUFFER;
  if (!lua_isnil(L, S_BODY)) {
    if (lua_type(L, S_BODY) != LUA_TSTRING)
      http__err(L,
           "%s: body must be a string, got %s (use json = ... for "
           "a table)",
           fname, luaL_typename(L, S_BODY));
    r.body = lua_tolstring(L, S_BODY, &r.body_len);
  }
  if (lua_istable(L, 5)) {
    http__opts_parse(L, 5, request_opts, &r, fname);
    lua_pushliteral(L, "headers");
    int have_headers = lua_rawget(L, 5) != LUA_TNIL;
    lua_pop(L, 1);
    if (have_headers) {
      lua_getfield(L, 5, "headers");
      header_table(L, -1, NULL, 0, fname); /* may raise: nothing built yet */
      lua_replace(L, 5);                   /* the headers table, from now */
    } else {
      lua_pushnil(L);
      lua_replace(L, 5);
    }
  } else if (!lua_isnil(L, 5)) {
    http__err(L, "%s: options must be a table, got %s", fname, luaL_typename(L, 5));
  }
  if (!lua_isnil(L, 8) && lua_type(L, 8) != LUA_TSTRING)
    http__err(L, "%s: content type must be a string", fname);
  if (r.max_body == MAX_BODY_DEFAULT)
    r.max_body = mode == MODE_STREAM ? -1 : HTTP_MAX_BODY;
  http_multi *m = client_pool(L, c, t->w, fname);

  /* from here on only running out of memory raises, and frees own */
  if (!lua_isnil(L, 5)) header_table(L, 5, &own, 1, fname);
  if (!lua_isnil(L, 8) && !has_header(own, "content-type", 12) &&
      !has_header(c->headers, "content-type", 12)) {
    size_t n;
    const char *ct = lua_tolstring(L, 8, &n);
    slist_add(L, &own, "Content-Type", ct, n, 0, fname);
  }
  if (own) {
    merge_defaults(L, &own, c->headers, fname);
    r.headers = r.own = own;
  }
  x = http__xfer_get(m);
  if (x == NULL) {
    curl_slist_free_all(own);
    return http__err(L, "%s: not enough memory", fname);
  }
  x->flags |= XF_REQUEST; /* this frame owns it until the response */
  CURLUcode uerr = CURLUE_OK;
  if (http__xfer_setup(x, &r, &uerr) != 0) {
    http__xfer_release(x); /* frees own */
    if (uerr == CURLUE_UNSUPPORTED_SCHEME) {
      const char *safe = push_url(L, url);
      lua_pushnil(L);
      tidal__error_push(L, "protocol",
                        "tidal.http: %s %s failed (protocol): unsupported "
                        "scheme (only http and https URLs are allowed)",
                        method, safe);
      lua_pushvalue(L, -3);
      lua_setfield(L, -2, "url");
      return 2;
    }
    if (uerr == CURLUE_OUT_OF_MEMORY)
      return http__err(L, "%s: not enough memory", fname);
    return http__err(L, "%s: malformed URL '%s' (%s)", fname, push_url(L, url),
                curl_url_strerror(uerr));
  }
  if (http__xfer_start(x) != 0) {
    http__xfer_release(x);
    return http__err(L, "%s: libcurl refused the request for %s", fname,
                push_url(L, url));
  }
  /* curl runs it before the worker's next poll (glue.c: on_idle), with
  ** the requests of the other tasks that run until then */
  lua_settop(L, 8);
  lua_pushlightuserdata(L, x); /* S_XFER */
  x->task = t;
  x->wait = mode == MODE_BUFFER ? XW_DONE : XW_HEADERS;
  return tidal__park(L, t, &send_op, x, send_k);
}

/* --------------------------------------------------------- stream bodies */

/* Pushes a Body userdata owning x, for the response table below the top
** (uservalues: the client, which must outlive the transfer; the request
** body, which curl may still read; the response's URL, for messages). */
static int push_body(lua_State *L, http_xfer *x) {
  http_body *b = (http_body *)lua_newuserdatauv(L, sizeof *b, 3);
  b->x = NULL;
  luaL_setmetatable(L, BODY_MT);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  lua_pushvalue(L, S_BODY);
  lua_setiuservalue(L, -2, 2);
  lua_pushliteral(L, "url");
  lua_rawget(L, -3);
  lua_setiuservalue(L, -2, 3);
  b->x = x;
  x->flags = (uint16_t)((x->flags & ~XF_REQUEST) | XF_USERDATA);
  return 1;
}

static http_body *check_body(lua_State *L, const char *fname) {
  http_body *b = (http_body *)luaL_testudata(L, 1, BODY_MT);
  if (b == NULL)
    http__err(L,
         "%s: expected a streamed response body, got %s (call it "
         "with ':')",
         fname, luaL_typename(L, 1));
  return b;
}

static int read_cancel(tidal_task *t) {
  http_xfer *x = (http_xfer *)t->wobj;
  /* the stream is over for good: the task unwinds */
  http__xfer_abort(x);
  return 1;
}

static const tidal_waitop read_op = {"tidal.http body:read", read_cancel, NULL};

static int read_now(lua_State *L, http_body *b, tidal_task *t);

static int read_k(lua_State *L, int status, lua_KContext k) {
  tidal_task *t = (tidal_task *)k;
  http_body *b = (http_body *)lua_touserdata(L, 1);
  (void)status;
  /* cancelled after the data arrived: the stream ends as if cancelled
  ** while waiting (read_cancel); a reader that parked meanwhile in
  ** another task must learn it */
  if (tidal__wake_lost(t) && b->x) {
    tidal_task *other = b->x->task;
    http__xfer_abort(b->x);
    if (other) tidal__wake(other, 0);
  }
  tidal__resumed(L, t);
  return read_now(L, b, t);
}

/* Pushes nil and an error of kind "cancelled" for body b (at index 1). */
static int read_ended(lua_State *L, const char *why) {
  lua_getiuservalue(L, 1, 3);
  const char *url = lua_isstring(L, -1) ? lua_tostring(L, -1) : "?";
  lua_pushnil(L);
  tidal__error_push(L, "cancelled", "tidal.http: reading the body of %s: %s",
                    url, why);
  lua_pushvalue(L, -3);
  lua_setfield(L, -2, "url");
  return 2;
}

/* stack: body, fname */
static int read_now(lua_State *L, http_body *b, tidal_task *t) {
  http_xfer *x = b->x;
  if (x == NULL) return read_ended(L, "the response body was closed");
  if (x->flags & XF_NOMEM)
    return http__err(L, "%s: not enough memory", lua_tostring(L, 2));
  if (x->body.len > 0) {
    lua_pushlstring(L, x->body.data, x->body.len);
    x->body.len = 0;
    if (http__xfer_resume(x))
      return http__err(L, "%s: cannot resume the transfer", lua_tostring(L, 2));
    return 1;
  }
  switch (x->state) {
  case XS_DONE:
    if (x->rc == CURLE_OK && !(x->flags & XF_TOO_LARGE)) {
      lua_pushnil(L); /* the end */
      return 1;
    }
    lua_getiuservalue(L, 1, 3);
    lua_pushnil(L);
    push_error(L, x, "reading the body of",
               lua_isstring(L, -2) ? lua_tostring(L, -2) : "?");
    return 2;
  case XS_RUNNING:
    /* one reader at a time: a second registration would replace the
    ** first, which then never wakes */
    if (x->task != NULL)
      return http__err(L,
                  "%s: another task is already reading this body (read a "
                  "streamed body from one task at a time)",
                  lua_tostring(L, 2));
    x->task = t;
    x->wait = XW_DATA;
    return tidal__park(L, t, &read_op, x, read_k);
  case XS_DEAD:
    return read_ended(L, "the client or its runtime was closed while the "
                         "body was read");
  default:
    return read_ended(L, "a read was cancelled, which ends the stream");
  }
}

static int l_body_read(lua_State *L);
static const tidal_restart read_again = {l_body_read};

/* body:read([fname]) -> chunk | nil (end) | nil, err; fname names the
** caller in messages (the facade passes "resp:read", "resp:chunks") */
static int l_body_read(lua_State *L) {
  http_body *b = check_body(L, "body:read");
  if (lua_type(L, 2) != LUA_TSTRING) {
    lua_settop(L, 1);
    lua_pushliteral(L, "body:read");
  }
  tidal_task *t = wait_begin(L, lua_tostring(L, 2));
  TIDAL_SPEND(L, t, &read_again);
  lua_settop(L, 2);
  return read_now(L, b, t);
}

static int l_body_close(lua_State *L) {
  http_body *b = (http_body *)luaL_checkudata(L, 1, BODY_MT);
  http_xfer *x = b->x;
  if (x) {
    tidal_task *t = x->task;
    b->x = NULL;
    http__xfer_release(x);
    if (t)
      tidal__wake(t, 0); /* a reader parked in another task: it finds
                            the body closed */
  }
  return 0;
}

static int l_body_tostring(lua_State *L) {
  http_body *b = check_body(L, "body:__tostring");
  lua_pushfstring(L, "tidal.http.Body (%s)",
                  b->x == NULL                ? "closed"
                  : b->x->state == XS_RUNNING ? "receiving"
                                              : "received");
  return 1;
}

/* -------------------------------------------------------------- headers */

/* core._http_headers(raw) -> {lower-case name = value}; repeated headers
** are joined with ", " (set-cookie with "\n", as it may contain commas). */
static int l_headers(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n), *end = s + n;
  luaL_Buffer name;
  lua_newtable(L);
  while (s < end) {
    const char *eol = memchr(s, '\n', (size_t)(end - s));
    const char *le = eol ? eol : end;
    const char *next = eol ? eol + 1 : end;
    if (le > s && le[-1] == '\r') le--;
    const char *colon = memchr(s, ':', (size_t)(le - s));
    if ((*s == ' ' || *s == '\t') || colon == NULL || colon == s) {
      s = next; /* obsolete folding or junk: skipped */
      continue;
    }
    luaL_buffinit(L, &name);
    for (const char *p = s; p < colon; p++)
      luaL_addchar(&name, (char)((*p >= 'A' && *p <= 'Z') ? *p + 32 : *p));
    luaL_pushresult(&name);
    const char *v = colon + 1, *ve = le;
    while (v < ve && (*v == ' ' || *v == '\t'))
      v++;
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
      ve--;
    lua_pushvalue(L, -1);
    if (lua_rawget(L, -3) == LUA_TSTRING) {
      const char *sep =
          strcmp(lua_tostring(L, -2), "set-cookie") == 0 ? "\n" : ", ";
      lua_pushstring(L, sep);
      lua_pushlstring(L, v, (size_t)(ve - v));
      lua_concat(L, 3);
    } else {
      lua_pop(L, 1);
      lua_pushlstring(L, v, (size_t)(ve - v));
    }
    lua_rawset(L, -3);
    s = next;
  }
  return 1;
}

/* core._http_metatables() -> client, response, body metatables (the Lua
** side adds its methods) */
static int l_metatables(lua_State *L) {
  luaL_getmetatable(L, CLIENT_MT);
  luaL_getmetatable(L, RESPONSE_MT);
  luaL_getmetatable(L, BODY_MT);
  return 3;
}

/* core._http_curl_version() -> libcurl's version and features */
static int l_curl_version(lua_State *L) {
  curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
  lua_pushstring(L, v->version);
  lua_createtable(L, 0, 4);
  lua_pushboolean(L, (v->features & CURL_VERSION_ASYNCHDNS) != 0);
  lua_setfield(L, -2, "async_dns");
  lua_pushboolean(L, (v->features & CURL_VERSION_HTTP2) != 0);
  lua_setfield(L, -2, "http2");
  lua_pushboolean(L, (v->features & CURL_VERSION_SSL) != 0);
  lua_setfield(L, -2, "tls");
  lua_pushstring(L, v->ssl_version ? v->ssl_version : "");
  lua_setfield(L, -2, "tls_version");
  return 2;
}

static const luaL_Reg funcs[] = {{"_http_headers", l_headers},
                                 {"_http_json", http__json_decode},
                                 {"_http_metatables", l_metatables},
                                 {"_http_curl_version", l_curl_version},
                                 {NULL, NULL}};

/* __close is close(): graceful, as documented; __gc runs only when no
** request and no streamed body keeps the client (they reference it), or
** when lua_close finalizes everything: then it tears the pools down */
static const luaL_Reg client_meta[] = {{"__gc", l_client_gc},
                                       {"__close", l_client_close},
                                       {"__tostring", l_client_tostring},
                                       {"close", l_client_close},
                                       {NULL, NULL}};

static const luaL_Reg body_meta[] = {{"__gc", l_body_close},
                                     {"__close", l_body_close},
                                     {"__tostring", l_body_tostring},
                                     {NULL, NULL}};

static const luaL_Reg body_methods[] = {
    {"read", l_body_read}, {"close", l_body_close}, {NULL, NULL}};

/* stack: module, ctx */
void tidal__http_open(lua_State *L) {
  tidal__register(L, funcs);
  /* http_client gets an empty string as a second upvalue */
  lua_pushvalue(L, -1);
  lua_pushliteral(L, "");
  lua_pushcclosure(L, l_client_new, 2);
  lua_setfield(L, -3, "_http_client");
  if (luaL_newmetatable(L, CLIENT_MT)) {
    lua_pushvalue(L, -2);
    luaL_setfuncs(L, client_meta, 1);
    lua_pushliteral(L, CLIENT_MT);
    lua_setfield(L, -2, "__name");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, BODY_MT)) {
    lua_pushvalue(L, -2);
    luaL_setfuncs(L, body_meta, 1);
    lua_newtable(L);
    lua_pushvalue(L, -3);
    luaL_setfuncs(L, body_methods, 1);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  /* _http_send's upvalues: see UV_RESPONSE_MT */
  lua_pushvalue(L, -1);
  luaL_newmetatable(L, RESPONSE_MT);
  lua_pushliteral(L, "status");
  lua_pushliteral(L, "body");
  lua_pushliteral(L, "_h");
  lua_pushliteral(L, "url");
  lua_pushcclosure(L, l_send, SEND_NUPVALUES);
  lua_setfield(L, -3, "_http_send");
}
