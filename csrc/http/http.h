/*
** http/http.h: the http layer -- tidal.http's C core (its Lua facade is
** lua/tidal/http.lua).
**
** Files and their concepts:
**   glue.c     libcurl's multi interface on the worker's libuv loop:
**              per-worker state (a worker extension: share handle), one
**              multi handle per client and worker, sockets, timers,
**              completions (no Lua)
**   easy.c     one transfer: its easy handle, options, callbacks,
**              buffers, limits, and what failures mean (no Lua)
**   client.c   the Lua bindings: clients, requests, responses, streams
**   options.c  one table-driven parser for the options of clients and
**              requests, the checks of their values
**   json.c     resp:json()'s decoder (JSON integers stay integers)
**
** May use: kernel (tasks, park / wake, worker extensions), auxlib, xfer
** (the byte buffer only), libcurl. Knows nothing of sync, flow, parallel
** or lib.
**
** Nothing here calls Lua from a libuv or libcurl callback: callbacks record
** results in C and wake the waiting task (tidal__wake only queues it); the
** task's continuation builds the Lua values when it runs.
*/
#ifndef TIDAL_HTTP_H
#define TIDAL_HTTP_H

#include "kernel/kernel.h"
#include "xfer/xfer.h"

#include <curl/curl.h>

/* client.c */
void tidal__http_open(lua_State *L);


/* Defaults, documented in docs/http.md. */
#define HTTP_MAX_REDIRECTS 10
#define HTTP_MAX_BODY ((curl_off_t)64 * 1024 * 1024)
#define HTTP_CONNECT_TIMEOUT_MS 30000L
/* Connections a pool keeps open (CURLMOPT_MAXCONNECTS). libcurl's own
** default, 4 per transfer in the multi handle, shrinks whenever requests
** finish before the next ones start, and then closes good connections. */
#define HTTP_POOL_SIZE 256L
/* A streamed response buffers at most this much before pausing the
** transfer until the reader catches up. */
#define HTTP_STREAM_HWM (256 * 1024)
/* Socket events one poll of the loop hands to libcurl while woken tasks
** wait to run; the rest stay ready for the next poll. Completions then
** alternate with the requests the woken tasks send, instead of the server
** idling while a whole batch of responses is parsed. */
#ifndef HTTP_EVENTS_PER_POLL
#define HTTP_EVENTS_PER_POLL 32
#endif
/* Idle easy handles (with their buffers) kept per multi for reuse. */
#define HTTP_IDLE_MAX 256
/* The final response's header block may be at most this large (libcurl
** 8 has the same total limit; it also limits one header line to 100 KiB,
** which libcurl 7.88 reports as "Out of memory"). */
#define HTTP_MAX_HEADERS (300 * 1024)

/* Parsed URLs kept per multi: libcurl 7.88 parses CURLOPT_URL again for
** every transfer, which costs more than a copy of a parsed handle. */
#define HTTP_URL_CACHE 8

typedef struct http_url {
  char *s; /* the URL as given, NULL: free slot */
  size_t n;
  CURLU *u;
  int refs;     /* transfers using it */
  uint64_t gen; /* when it was filled (never 0) */
} http_url;

typedef struct http_worker http_worker;
typedef struct http_multi http_multi;
typedef struct http_xfer http_xfer;
typedef struct http_sock http_sock;
typedef struct http_config http_config;

/* Per worker (the extension slot TIDAL_EXT_HTTP): the share handle (DNS and
** TLS session caches) and every multi handle bound to this worker. */
struct http_worker {
  tidal_worker *w;
  CURLSH *share;
  http_multi *multis;
  http_xfer *orphans; /* detached transfers still owned by a request */
  uint64_t poll_gen;  /* the worker's poll count when `handled` was reset */
  int handled;        /* socket events handled in that poll */
};

/* What a client fixes for all of its transfers (set when it is created). */
struct http_config {
  char *ca_file;             /* NULL: the system's CA store */
  char *user_agent;          /* NULL: none */
  char *proxy;               /* NULL: from the environment; "": none */
  long max_host_connections; /* 0: no limit */
  long max_connections;      /* 0: no limit */
  long pool_size;            /* connections kept open */
  int http2;                 /* offer h2 over TLS (ALPN) */
  int decompress;            /* Accept-Encoding + decoding */
};

/* A client's connection pool on one worker: one multi handle, one uv
** timer, one uv_idle, one uv_poll per socket. The struct is freed when
** the close callbacks of its timer and idle handle have both run, after
** curl_multi_cleanup. */
struct http_multi {
  uv_timer_t timer;   /* curl's single timeout */
  uv_idle_t soon;     /* curl's "now": run before the loop's next poll */
  CURLM *cm;
  http_worker *hw;
  http_multi *next, *prev; /* in hw->multis */
  http_multi *cnext;       /* in the client's list of pools */
  http_multi **owner;      /* that list's head; NULL once detached */
  const http_config *cfg;  /* the client's; valid while owner is set */
  http_sock **socks;       /* by file descriptor */
  size_t nsocks;
  http_xfer *idle; /* reusable transfers (singly linked) */
  int nidle;
  http_xfer *live; /* every other transfer of this multi (doubly linked) */
  int nactive;     /* transfers added to the multi handle */
  http_url urls[HTTP_URL_CACHE];
  int url_next;     /* the next slot to evict */
  uint64_t url_gen; /* the last generation given to a slot */
  int close_idle;   /* the client was closed: close when live is empty */
  int closing;
  int kicking;      /* in on_idle's call into curl */
  int nopen;        /* uv handles (timer, idle) not closed yet */
};

/* A socket libcurl asked us to watch. Sockets of connections (opened by
** our CURLOPT_OPENSOCKETFUNCTION) keep their poll handle while idle in the
** pool, so reusing a connection costs no epoll_ctl; the handle goes when
** curl closes the socket (CURLOPT_CLOSESOCKETFUNCTION). libcurl 7.88 closes
** a socket that never connected (an attempt cancelled, or beaten by another
** address) without that callback, right after or right before it says
** CURL_POLL_REMOVE: until curl first waits to read from a socket (it has
** connected then), its handle goes at CURL_POLL_REMOVE. */
struct http_sock {
  uv_poll_t poll;
  http_multi *m;
  curl_socket_t fd;
  int want;  /* UV_READABLE / UV_WRITABLE curl wants; 0 after REMOVE */
  int reg;   /* events the poll handle is started with; 0 when stopped */
  int owned; /* a connection socket: closed through closesocket_cb */
  int connected; /* curl waited to read from it: closed by callback */
};

/* transfer states */
enum { XS_IDLE, XS_RUNNING, XS_DONE, XS_ABORTED, XS_DEAD };
/* what a parked task waits for */
enum { XW_NONE, XW_DONE, XW_HEADERS, XW_DATA };
/* transfer flags */
#define XF_STREAM 0x01      /* streamed: body read piecewise */
#define XF_USERDATA 0x02    /* owned by a stream userdata, not the pool */
#define XF_HEADERS 0x04     /* the final response's headers are complete */
#define XF_PAUSED 0x08      /* the write callback paused the transfer */
#define XF_TOO_LARGE 0x10   /* max_body exceeded */
#define XF_LOCATION 0x20    /* the current header block has a Location */
#define XF_NOMEM 0x40       /* a buffer could not grow */
#define XF_FOLLOW 0x80      /* redirects are followed */
#define XF_GOTHEADERS 0x100 /* the final headers arrived (not just the end) */
#define XF_REQUEST 0x200    /* owned by a request in progress (l_send) */
#define XF_ORPHAN 0x400     /* detached, in hw->orphans */
#define XF_HDR_LARGE 0x800  /* the header block exceeded HTTP_MAX_HEADERS */

/* Per-request settings (from the client's defaults and the call's opts). */
typedef struct http_req {
  const char *method; /* upper-case token */
  const char *url;
  size_t url_len;
  const char *body; /* NULL: none */
  size_t body_len;
  struct curl_slist *headers; /* what to send (may be the client's) */
  struct curl_slist *own;     /* to free with the transfer, or NULL */
  long timeout_ms;            /* 0: none */
  long connect_timeout_ms;    /* 0: curl's default */
  long max_redirects;
  int follow;
  int stream;
  curl_off_t max_body; /* -1: no limit */
} http_req;

/* What was last set on a reused easy handle, to skip unchanged options. */
typedef struct http_applied {
  struct curl_slist *headers;
  uint64_t url_gen; /* CURLOPT_URL holds this cached URL (0: unknown) */
  long timeout_ms, connect_timeout_ms, max_redirects;
  curl_off_t max_body;
  long follow, pipewait;
  int method;      /* AM_*: how the method was set */
  char custom[16]; /* the custom method, if short enough to remember */
} http_applied;

/*
** Who owns a transfer (frees it or gives it back to the idle list): the
** request that took it (XF_REQUEST: l_send's frame, which also keeps the
** client referenced on its stack) until the response is built, then
** either nobody (released) or a stream's Body userdata (XF_USERDATA, whose
** uservalue keeps the client referenced). So a client with a request in
** flight cannot be collected; it can only be closed (graceful: no new
** requests) or finalized by lua_close. When a multi closes under a
** transfer (its client finalized, its worker closing), the transfer is
** detached: its easy handle goes, its struct stays with its owner (a
** request's waits in hw->orphans, freed by the request or with the worker),
** and a task parked on it is woken to find it dead. Nothing else frees a
** transfer that someone owns.
*/
struct http_xfer {
  CURL *easy;
  http_multi *m;              /* NULL once the multi is gone */
  http_worker *hw;            /* for the orphan list (valid while XF_ORPHAN) */
  http_xfer *next, *prev;     /* in m->idle or m->live */
  tidal_task *task;           /* the task parked on it, or NULL */
  struct curl_slist *headers; /* owned: freed when it is reused */
  curl_off_t max_body;
  curl_off_t received;
  tidal_buf hdr;  /* the final header block: "Name: value\r\n" lines */
  tidal_buf body; /* the body, or the part a stream has not read yet */
  http_applied set;
  CURLU *url;   /* the parsed URL given to curl */
  int url_slot; /* its slot in m->urls, or -1 when the transfer owns it */
  CURLcode rc;
  uint16_t flags;
  uint8_t state, wait;
  char errbuf[CURL_ERROR_SIZE];
};

/* glue.c */
http_worker *http__worker(tidal_worker *w); /* created on first use */
http_multi *http__multi_new(http_worker *hw, const http_config *cfg,
                            http_multi **owner);
void http__multi_close(http_multi *m);
void http__multi_kick(http_multi *m); /* run due work now (not from a
                                         curl callback) */
int http__multi_add(http_multi *m, http_xfer *x); /* CURLMcode */
void http__multi_remove(http_multi *m, http_xfer *x);
void http__sockopts(http_multi *m, CURL *easy); /* open/close callbacks */
void http__orphan_remove(http_xfer *x);

/* easy.c */
void http__url_cache_free(http_multi *m);
http_xfer *http__xfer_get(http_multi *m); /* NULL: ENOMEM */
/* Options for request r: 0, or -1 with *uerr set (a malformed URL). */
int http__xfer_setup(http_xfer *x, const http_req *r, CURLUcode *uerr);
int http__xfer_start(http_xfer *x);                  /* 0 or a CURLMcode */
void http__xfer_finished(http_xfer *x, CURLcode rc); /* from the glue */
void http__xfer_abort(http_xfer *x);   /* remove from the multi at once */
void http__xfer_release(http_xfer *x); /* back to the pool, or freed */
void http__xfer_free(http_xfer *x);    /* cleanup easy + buffers + struct */
void http__xfer_detach(http_xfer *x);  /* multi closing: drop the easy */
int http__xfer_resume(http_xfer *x);   /* unpause a stream that drained */
const char *http__error_kind(const http_xfer *x);
/* Whether the failure is a header block over the limits (too_large). */
int http__headers_too_large(const http_xfer *x);

/* options.c: one table-driven parser for the options of a client and of a
** request. Every key of the table must be in opts (else "<fname>: unknown
** option '<key>' (known: <the names, in table order>)"); a value is checked
** and stored at its offset in target by its kind. */
typedef enum {
  HO_MS,         /* long: seconds -> ms (0: none) */
  HO_COUNT,      /* long: a non-negative integer */
  HO_BOOL,       /* int */
  HO_BODY_LIMIT, /* curl_off_t: bytes, or false / math.huge: -1 */
  HO_STRING,     /* char *: a copy (the old one freed first) */
  HO_CUSTOM,     /* custom(L, value index, target, fname) */
  HO_LUA         /* accepted, left to the Lua side */
} http_optkind;
typedef struct http_opt {
  const char *name;
  uint8_t kind;
  size_t off; /* offsetof into the target */
  void (*custom)(lua_State *L, int v, void *target, const char *fname);
} http_opt;
void http__opts_parse(lua_State *L, int idx, const http_opt *opts,
                      void *target, const char *fname);
/* Raises "where: message", where being the user's code (not http.lua). */
int http__err(lua_State *L, const char *fmt, ...);
long http__opt_ms(lua_State *L, int idx, const char *fname, const char *opt);
long http__opt_count(lua_State *L, int idx, const char *fname,
                     const char *opt);
int http__opt_bool(lua_State *L, int idx, const char *fname, const char *opt);
curl_off_t http__opt_body(lua_State *L, int idx, const char *fname);
char *http__opt_string(lua_State *L, int idx, const char *fname,
                       const char *opt);

/* json.c: core._http_json(s) -> value | nil, message */
int http__json_decode(lua_State *L);

#endif
