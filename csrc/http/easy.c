/*
** easy.c: one HTTP transfer. Its easy handle (reused from the pool of
** its multi handle, with its buffers), the options of a request, the
** header and body callbacks with the limits they enforce, completion, and
** what a failure means (the error kinds of DESIGN.md).
**
** The callbacks run inside libcurl, inside a libuv callback: they only
** append to buffers, set flags and wake the parked task.
*/
#include "http.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---------------------------------------------------------------- buffers */

/* tidal__buf_add, with the common case (room left) inline. */
static int buf_put(tidal_buf *b, const char *p, size_t n) {
  if (b->data == NULL || b->cap - b->len < n) return tidal__buf_add(b, p, n);
  memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

/* Buffers grown by one large body are not kept for the next request. */
static void buf_trim(tidal_buf *b, size_t keep) {
  b->len = 0;
  if (b->cap > keep) tidal__buf_free(b);
}

/* ------------------------------------------------------------------ wake */

static void wake(http_xfer *x) {
  tidal_task *t = x->task;
  if (t == NULL) return;
  x->task = NULL;
  x->wait = XW_NONE;
  tidal__wake(t, 0);
}

/* ------------------------------------------------------------- callbacks */

static size_t header_cb(char *p, size_t size, size_t n, void *ud) {
  http_xfer *x = (http_xfer *)ud;
  size_t len = size * n;
  if (x->flags & XF_HEADERS) return len; /* trailers */
  if (len >= 5 && p[0] == 'H' && memcmp(p, "HTTP/", 5) == 0) {
    /* a status line: a new header block (1xx, a redirect, the final one);
    ** it stays first in the block (resp.http_version, resp.reason) */
    x->hdr.len = 0;
    x->flags &= (uint16_t)~XF_LOCATION;
  } else if (len <= 2 && (len == 0 || p[0] == '\r' || p[0] == '\n')) {
    /* the end of a header block: is it the final response's? */
    long code = 0;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
    if (code >= 100 && code < 200) return len;
    if ((x->flags & (XF_FOLLOW | XF_LOCATION)) == (XF_FOLLOW | XF_LOCATION) &&
        code >= 300 && code < 400 && code != 304)
      return len; /* curl follows it */
    x->flags |= XF_HEADERS | XF_GOTHEADERS;
    if (x->wait == XW_HEADERS) wake(x);
    return len;
  }
  if (len > 9 && (p[0] == 'L' || p[0] == 'l') &&
      strncasecmp(p, "location:", 9) == 0)
    x->flags |= XF_LOCATION;
  if (x->hdr.len + len > HTTP_MAX_HEADERS) {
    x->flags |= XF_HDR_LARGE; /* a server that never ends its headers */
    return 0;
  }
  if (buf_put(&x->hdr, p, len)) {
    x->flags |= XF_NOMEM;
    return 0;
  }
  return len;
}

static size_t write_cb(char *p, size_t size, size_t n, void *ud) {
  http_xfer *x = (http_xfer *)ud;
  size_t len = size * n;
  if (x->max_body >= 0 && x->received + (curl_off_t)len > x->max_body) {
    x->flags |= XF_TOO_LARGE;
    return 0; /* CURLE_WRITE_ERROR */
  }
  if ((x->flags & XF_STREAM) && x->body.len >= HTTP_STREAM_HWM) {
    x->flags |= XF_PAUSED; /* curl keeps the data and offers it again */
    return CURL_WRITEFUNC_PAUSE;
  }
  if (buf_put(&x->body, p, len)) {
    x->flags |= XF_NOMEM;
    return 0;
  }
  x->received += (curl_off_t)len;
  if (!(x->flags & XF_HEADERS)) {
    x->flags |= XF_HEADERS | XF_GOTHEADERS;
    if (x->wait == XW_HEADERS) wake(x);
  }
  if (x->wait == XW_DATA) wake(x);
  return len;
}

/* --------------------------------------------------------------- lifecycle */

static void live_push(http_multi *m, http_xfer *x) {
  x->prev = NULL;
  x->next = m->live;
  if (m->live) m->live->prev = x;
  m->live = x;
}

static void live_remove(http_multi *m, http_xfer *x) {
  if (x->prev)
    x->prev->next = x->next;
  else
    m->live = x->next;
  if (x->next) x->next->prev = x->prev;
  x->next = x->prev = NULL;
}

/* Options that never change for a transfer of this multi. */
static int easy_init(http_xfer *x, http_multi *m) {
  const http_config *c = m->cfg;
  CURL *e = curl_easy_init();
  if (e == NULL) return -1;
  x->easy = e;
  curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)x);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  /* a transfer removed while the threaded resolver still runs getaddrinfo
  ** must not wait for it (curl joins the thread otherwise, blocking the
  ** loop for as long as the lookup takes): QUICK_EXIT detaches it */
  curl_easy_setopt(e, CURLOPT_QUICK_EXIT, 1L);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
  /* only http and https, on the request and on every redirect */
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
  if (c->ca_file) curl_easy_setopt(e, CURLOPT_CAINFO, c->ca_file);
  if (c->user_agent) curl_easy_setopt(e, CURLOPT_USERAGENT, c->user_agent);
  if (c->decompress) curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
  if (c->proxy) {
    curl_easy_setopt(e, CURLOPT_PROXY, c->proxy);
    if (c->proxy[0] == '\0') curl_easy_setopt(e, CURLOPT_NOPROXY, "");
  }
  curl_easy_setopt(e, CURLOPT_HTTP_VERSION,
                   c->http2 ? (long)CURL_HTTP_VERSION_2TLS
                            : (long)CURL_HTTP_VERSION_1_1);
  http__sockopts(m, e);
  return 0;
}

http_xfer *http__xfer_get(http_multi *m) {
  http_xfer *x = m->idle;
  if (x) {
    m->idle = x->next;
    m->nidle--;
  } else {
    x = (http_xfer *)calloc(1, sizeof *x);
    if (x == NULL) return NULL;
    if (easy_init(x, m)) {
      free(x);
      return NULL;
    }
    x->m = m;
    x->hw = m->hw;
    x->set.timeout_ms = -1; /* nothing applied yet: all differ */
    x->set.connect_timeout_ms = -1;
    x->set.max_redirects = -2;
    x->set.max_body = -1;
    x->set.follow = -1;
    x->set.pipewait = -1;
    x->set.headers = (struct curl_slist *)&x->set; /* never a real list */
  }
  x->state = XS_IDLE;
  x->wait = XW_NONE;
  x->flags = 0;
  x->task = NULL;
  x->rc = CURLE_OK;
  x->received = 0;
  x->hdr.len = x->body.len = 0;
  x->errbuf[0] = '\0';
  x->url = NULL;
  x->url_slot = -1;
  live_push(m, x);
  return x;
}

static int is_method(const char *method, const char *name) {
  return strcmp(method, name) == 0;
}

/* ------------------------------------------------------------------ URLs */

static void url_unref(http_xfer *x) {
  http_multi *m = x->m;
  if (x->url == NULL) return;
  if (x->url_slot >= 0 && m)
    m->urls[x->url_slot].refs--;
  else if (x->url_slot < 0)
    curl_url_cleanup(x->url);
  x->url = NULL;
  x->url_slot = -1;
}

/* The parsed form of r->url, from the multi's cache when possible. */
static int url_ref(http_xfer *x, const http_req *r, CURLUcode *uerr) {
  http_multi *m = x->m;
  CURLU *u;
  int slot = -1;
  for (int i = 0; i < HTTP_URL_CACHE; i++) {
    http_url *e = &m->urls[i];
    if (e->s && e->n == r->url_len && memcmp(e->s, r->url, e->n) == 0) {
      e->refs++;
      x->url = e->u;
      x->url_slot = i;
      return 0;
    }
  }
  u = curl_url();
  if (u == NULL) {
    *uerr = CURLUE_OUT_OF_MEMORY;
    return -1;
  }
  *uerr = curl_url_set(u, CURLUPART_URL, r->url, 0);
  if (*uerr != CURLUE_OK) {
    curl_url_cleanup(u);
    return -1;
  }
  /* cache it in the next slot no transfer uses */
  for (int i = 0; i < HTTP_URL_CACHE; i++) {
    int j = (m->url_next + i) % HTTP_URL_CACHE;
    if (m->urls[j].refs == 0) {
      slot = j;
      break;
    }
  }
  if (slot >= 0) {
    http_url *e = &m->urls[slot];
    char *s = (char *)malloc(r->url_len + 1);
    if (s) {
      memcpy(s, r->url, r->url_len + 1);
      free(e->s);
      curl_url_cleanup(e->u);
      e->s = s;
      e->n = r->url_len;
      e->u = u;
      e->refs = 1;
      e->gen = ++m->url_gen;
      m->url_next = (slot + 1) % HTTP_URL_CACHE;
    } else {
      slot = -1;
    }
  }
  x->url = u;
  x->url_slot = slot;
  return 0;
}

void http__url_cache_free(http_multi *m) {
  for (int i = 0; i < HTTP_URL_CACHE; i++) {
    free(m->urls[i].s);
    curl_url_cleanup(m->urls[i].u);
    m->urls[i].s = NULL;
    m->urls[i].u = NULL;
  }
}

/* --------------------------------------------------------------- options */

/* how the method was set on the handle */
enum { AM_NONE, AM_GET, AM_HEAD, AM_POST, AM_CUSTOM_BODY, AM_CUSTOM };

#define SET_IF(field, value, opt)                                              \
  do {                                                                         \
    if (x->set.field != (value)) {                                             \
      x->set.field = (value);                                                  \
      curl_easy_setopt(e, opt, x->set.field);                                  \
    }                                                                          \
  } while (0)

int http__xfer_setup(http_xfer *x, const http_req *r, CURLUcode *uerr) {
  CURL *e = x->easy;
  int https, am;
  x->headers = r->own;
  x->max_body = r->max_body;
  if (r->stream) x->flags |= XF_STREAM;
  if (r->follow) x->flags |= XF_FOLLOW;
  if (url_ref(x, r, uerr)) return -1;
  /* the parsed URL spares curl a parse; the string too, as curl 7.88
  ** reports a reused handle's previous URL as CURLINFO_EFFECTIVE_URL
  ** when given only CURLOPT_CURLU */
  curl_easy_setopt(e, CURLOPT_CURLU, x->url);
  if (x->url_slot < 0 || x->set.url_gen != x->m->urls[x->url_slot].gen) {
    /* (the same cached URL as last time: the string curl has is right) */
    curl_easy_setopt(e, CURLOPT_URL, r->url);
    x->set.url_gen = x->url_slot < 0 ? 0 : x->m->urls[x->url_slot].gen;
  }
  /* the method: a reused handle may have had another one */
  if (is_method(r->method, "GET") && r->body == NULL)
    am = AM_GET;
  else if (is_method(r->method, "HEAD") && r->body == NULL)
    am = AM_HEAD;
  else if (is_method(r->method, "POST"))
    am = AM_POST;
  else if (r->body != NULL || is_method(r->method, "PUT") ||
           is_method(r->method, "PATCH"))
    am = AM_CUSTOM_BODY;
  else
    am = AM_CUSTOM;
  if (am == AM_POST || am == AM_CUSTOM_BODY) {
    /* POSTFIELDS points into the Lua string, alive while the call runs */
    curl_easy_setopt(e, CURLOPT_NOBODY, 0L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body ? r->body : "");
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST,
                     am == AM_POST ? NULL : r->method);
    x->set.method = AM_NONE; /* the next request sets its method again */
  } else if (x->set.method != am ||
             (am == AM_CUSTOM && strcmp(x->set.custom, r->method) != 0)) {
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L); /* also clears NOBODY */
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST,
                     am == AM_CUSTOM ? r->method : NULL);
    if (am == AM_HEAD) curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    x->set.method = am;
    x->set.custom[0] = '\0';
    if (am == AM_CUSTOM) {
      if (strlen(r->method) < sizeof x->set.custom)
        strcpy(x->set.custom, r->method);
      else
        x->set.method = AM_NONE; /* too long to remember: set every time */
    }
  }
  SET_IF(headers, r->headers, CURLOPT_HTTPHEADER);
  SET_IF(timeout_ms, r->timeout_ms, CURLOPT_TIMEOUT_MS);
  SET_IF(connect_timeout_ms, r->connect_timeout_ms, CURLOPT_CONNECTTIMEOUT_MS);
  SET_IF(follow, r->follow, CURLOPT_FOLLOWLOCATION);
  SET_IF(max_redirects, r->max_redirects, CURLOPT_MAXREDIRS);
  SET_IF(max_body, r->max_body >= 0 ? r->max_body : (curl_off_t)0,
         CURLOPT_MAXFILESIZE_LARGE);
  /* wait for a multiplexed connection rather than open a second one; only
  ** where h2 is possible (TLS), not to delay plain HTTP/1.1 bursts */
  https = r->url_len > 6 && strncasecmp(r->url, "https:", 6) == 0;
  SET_IF(pipewait, (https && x->m->cfg->http2) ? 1 : 0, CURLOPT_PIPEWAIT);
  return 0;
}

int http__xfer_start(http_xfer *x) {
  int rc = http__multi_add(x->m, x);
  if (rc) return rc;
  x->state = XS_RUNNING;
  return 0;
}

void http__xfer_finished(http_xfer *x, CURLcode rc) {
  x->rc = rc;
  x->state = XS_DONE;
  x->flags |= XF_HEADERS;
  wake(x);
}

void http__xfer_abort(http_xfer *x) {
  x->task = NULL;
  x->wait = XW_NONE;
  if (x->state == XS_RUNNING && x->m) {
    http__multi_remove(x->m, x);
    x->state = XS_ABORTED;
  }
}

void http__xfer_free(http_xfer *x) {
  url_unref(x);
  if (x->easy) curl_easy_cleanup(x->easy);
  curl_slist_free_all(x->headers);
  tidal__buf_free(&x->hdr);
  tidal__buf_free(&x->body);
  free(x);
}

/* Done with it: back to the pool for the next request, or freed. */
void http__xfer_release(http_xfer *x) {
  http_multi *m = x->m;
  http__xfer_abort(x);
  url_unref(x);
  curl_slist_free_all(x->headers);
  x->headers = NULL;
  if (m == NULL) { /* its multi is gone */
    if (x->flags & XF_ORPHAN) http__orphan_remove(x);
    http__xfer_free(x);
    return;
  }
  live_remove(m, x);
  if (m->close_idle && m->live == NULL) { /* its client was closed */
    x->m = NULL;
    http__xfer_free(x);
    http__multi_close(m);
    return;
  }
  if (m->nidle >= HTTP_IDLE_MAX) {
    http__xfer_free(x);
    return;
  }
  /* the easy handle may keep pointers to the old request's headers and
  ** body: curl reads them only during a transfer, and the next request
  ** sets its own (a list at the same address is set again, harmlessly) */
  buf_trim(&x->hdr, 16 * 1024);
  buf_trim(&x->body, 256 * 1024);
  x->state = XS_IDLE;
  x->flags = 0;
  x->next = m->idle;
  m->idle = x;
  m->nidle++;
}

/* The multi is closing: the transfer dies (see the ownership note in
** http.h). Its owner keeps the struct: a stream's userdata, or a
** request (its frame may still run: the struct waits in the worker's
** orphan list); a transfer nobody owns is freed now. A task parked on it
** is woken and finds it dead. */
void http__xfer_detach(http_xfer *x) {
  http_multi *m = x->m;
  tidal_task *t = x->task;
  http__xfer_abort(x);
  url_unref(x);
  live_remove(m, x);
  x->m = NULL;
  curl_easy_cleanup(x->easy);
  x->easy = NULL;
  /* a request's response cannot be built without the easy handle */
  if (x->state != XS_DONE || (x->flags & XF_REQUEST)) x->state = XS_DEAD;
  if (x->flags & XF_REQUEST) {
    http_worker *hw = x->hw;
    x->flags |= XF_ORPHAN;
    x->prev = NULL;
    x->next = hw->orphans;
    if (hw->orphans) hw->orphans->prev = x;
    hw->orphans = x;
  } else if (!(x->flags & XF_USERDATA)) {
    http__xfer_free(x);
  }
  if (t) tidal__wake(t, 0);
}

void http__orphan_remove(http_xfer *x) {
  http_worker *hw = x->hw;
  if (x->prev)
    x->prev->next = x->next;
  else
    hw->orphans = x->next;
  if (x->next) x->next->prev = x->prev;
  x->next = x->prev = NULL;
  x->flags &= (uint16_t)~XF_ORPHAN;
}

int http__xfer_resume(http_xfer *x) {
  if (!(x->flags & XF_PAUSED) || x->state != XS_RUNNING) return 0;
  x->flags &= (uint16_t)~XF_PAUSED;
  /* may call write_cb at once with what curl held back */
  if (curl_easy_pause(x->easy, CURLPAUSE_CONT) != CURLE_OK) return -1;
  http__multi_kick(x->m);
  return 0;
}

/* ---------------------------------------------------------------- errors */

int http__headers_too_large(const http_xfer *x) {
  if (x->flags & XF_HDR_LARGE) return 1;
  /* libcurl 7.88's own limits: a header line over 100 KiB fails its
  ** buffer with CURLE_OUT_OF_MEMORY; all headers over 300 KiB say so */
  if (x->rc == CURLE_OUT_OF_MEMORY && !(x->flags & XF_GOTHEADERS)) return 1;
  return strncmp(x->errbuf, "Too large response headers", 26) == 0;
}

const char *http__error_kind(const http_xfer *x) {
  if (x->flags & XF_TOO_LARGE) return "too_large";
  if (x->rc != CURLE_OK && http__headers_too_large(x)) return "too_large";
  switch (x->rc) {
  case CURLE_OPERATION_TIMEDOUT:
    return "timeout";
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY:
    return "dns";
  case CURLE_COULDNT_CONNECT:
    return "connect";
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CIPHER:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_ISSUER_ERROR:
  case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
  case CURLE_SSL_INVALIDCERTSTATUS:
  case CURLE_SSL_CRL_BADFILE:
  case CURLE_SSL_SHUTDOWN_FAILED:
  case CURLE_SSL_ENGINE_NOTFOUND:
  case CURLE_SSL_ENGINE_SETFAILED:
  case CURLE_SSL_ENGINE_INITFAILED:
  case CURLE_USE_SSL_FAILED:
    return "tls";
  case CURLE_TOO_MANY_REDIRECTS:
    return "too_many_redirects";
  case CURLE_FILESIZE_EXCEEDED:
    return "too_large";
  default:
    return "protocol";
  }
}
