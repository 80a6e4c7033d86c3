/*
** glue.c: libcurl's multi interface driven by the worker's libuv loop.
**
** The shape is curl's docs/examples/multi-uv.c: curl's socket callback
** starts and stops one uv_poll per socket, its timer callback arms one
** uv_timer per multi handle, and both libuv callbacks call
** curl_multi_socket_action and then read the finished transfers. We never
** call curl_multi_socket_action from inside one of curl's own callbacks.
**
** Three things differ from the example, all for speed:
**  - A 0 ms timeout ("call me now": a request was just added) starts a
**    uv_idle, which runs it in the loop's next idle phase, right before
**    the poll for I/O (not after a 1 ms timer); while it is active, the
**    loop does not wait (nor does a host that asks tidal how long it may
**    wait: Runtime:next_timeout says 0). The requests that
**    the tasks of one batch start are so written in one go, just before
**    the worker polls for their answers, by one call into curl, rather
**    than each from its task between Lua code: curl's code stays in the
**    CPU's caches, and the server gets the whole batch at once. (If curl
**    asks for 0 ms again from inside that call, the 1 ms timer is used, so
**    a poll never blocks on a transfer curl wants to run now.)
**  - A connection's socket keeps its uv_poll while the connection waits in
**    curl's pool (curl says CURL_POLL_REMOVE between transfers): the handle
**    is unreferenced and, if the idle socket becomes readable (the server
**    closed it), stopped. A reused connection then costs no epoll_ctl at
**    all. We learn that curl closed a socket through
**    CURLOPT_CLOSESOCKETFUNCTION, so a recycled descriptor number never
**    meets a stale handle. libcurl 7.88 closes a socket that never
**    connected (an attempt cancelled, or beaten by another address)
**    without that callback, so a socket curl has not yet waited to read
**    from is dropped at CURL_POLL_REMOVE, like the sockets that are not
**    connections (the resolver's), as in the example. (A stale handle
**    would get the events of the next socket given that number, and
**    closing it would take that socket out of epoll.)
**  - Idle handles are unreferenced, so an idle pool never keeps the loop
**    alive (nor hides a deadlock); the timer is referenced only while the
**    multi has transfers, and the idle handle is active only until the
**    next poll.
**
** DNS never blocks the loop: libcurl's threaded resolver (AsynchDNS) runs
** getaddrinfo on its own thread and reports through a socket we poll.
*/
#include "http.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* ----------------------------------------------------------- global init */

static uv_once_t global_once = UV_ONCE_INIT;
static CURLcode global_rc = CURLE_FAILED_INIT;

static void global_init(void) {
  global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ------------------------------------------------------------- worker */

static void worker_close(tidal_worker *w, void *data) {
  http_worker *hw = (http_worker *)data;
  (void)w;
  while (hw->multis)
    http__multi_close(hw->multis);
  while (hw->orphans) { /* their requests will never run again */
    http_xfer *x = hw->orphans;
    http__orphan_remove(x);
    http__xfer_free(x);
  }
  if (hw->share) curl_share_cleanup(hw->share);
  free(hw);
}

static const tidal_ext_class http_ext = {"http", worker_close, NULL};

http_worker *http__worker(tidal_worker *w) {
  http_worker *hw = (http_worker *)tidal__ext_get(w, &http_ext);
  if (hw) return hw;
  uv_once(&global_once, global_init);
  if (global_rc != CURLE_OK) return NULL;
  hw = (http_worker *)calloc(1, sizeof *hw);
  if (hw == NULL) return NULL;
  hw->w = w;
  hw->share = curl_share_init();
  if (hw->share) {
    /* one thread uses it (the worker's), so no lock callbacks */
    curl_share_setopt(hw->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_share_setopt(hw->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
  }
  if (tidal__ext_set(w, &http_ext, hw)) {
    if (hw->share) curl_share_cleanup(hw->share);
    free(hw);
    return NULL;
  }
  return hw;
}

/* -------------------------------------------------------- close-on-exec */

/*
** A child process must inherit no descriptor of ours. libuv creates its
** own with CLOEXEC, and so does opensocket_cb for connections, but
** libcurl 7.88 makes two socketpairs without SOCK_CLOEXEC and has no hook
** for either: one per multi handle in curl_multi_init (for
** curl_multi_wakeup; never reported to us), and one per DNS lookup of the
** threaded resolver (one end reported through socket_cb, the other held
** by the resolver's thread). We recognise them as what they are: AF_UNIX
** sockets without FD_CLOEXEC that appeared just then, in pairs whose inode
** numbers follow each other (socketpair makes both sockets in a row). That
** leaves the host's descriptors alone, even one made meanwhile by another
** thread, unless it is itself a socketpair without close-on-exec made in
** those few microseconds (it would get FD_CLOEXEC too). The probe reads
** descriptors other threads may be making: ThreadSanitizer reports that
** (spec/tsan/suppressions).
*/
#define FD_WINDOW 32

/* Whether fd is an AF_UNIX socket without FD_CLOEXEC; its inode number. */
static int unix_inheritable(int fd, ino_t *ino) {
  struct stat st;
  struct sockaddr_storage sa;
  socklen_t len = sizeof sa;
  int fl = fcntl(fd, F_GETFD);
  if (fl < 0 || (fl & FD_CLOEXEC)) return 0;
  if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) return 0;
  if (getsockname(fd, (struct sockaddr *)&sa, &len) != 0 ||
      sa.ss_family != AF_UNIX)
    return 0;
  *ino = st.st_ino;
  return 1;
}

static void set_cloexec(int fd) {
  int fl = fcntl(fd, F_GETFD);
  if (fl >= 0 && !(fl & FD_CLOEXEC)) fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
}

/* curl_multi_init, then CLOEXEC on its wake-up socketpair. */
static CURLM *multi_init(void) {
  ino_t ino[FD_WINDOW];
  int fds[FD_WINDOW], n = 0;
  char was_open[FD_WINDOW];
  /* the lowest free descriptor: where a socketpair made now lands */
  int lo = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (lo < 0) return curl_multi_init();
  close(lo);
  for (int i = 0; i < FD_WINDOW; i++)
    was_open[i] = fcntl(lo + i, F_GETFD) >= 0;
  CURLM *cm = curl_multi_init();
  for (int i = 0; i < FD_WINDOW; i++)
    if (!was_open[i] && unix_inheritable(lo + i, &ino[n])) fds[n++] = lo + i;
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++)
      if (ino[j] == ino[i] + 1 || n == 2) {
        /* (inode numbers come in per-CPU batches: a pair made across a
        ** migration is not consecutive, but then it is alone) */
        set_cloexec(fds[i]);
        set_cloexec(fds[j]);
      }
  return cm;
}

/* fd: the resolver's end of its socketpair, as socket_cb reports it. The
** resolver thread's end is a higher descriptor with the next inode (if
** the thread has not closed it yet: it closes it when the lookup ends,
** which takes far longer than these few system calls). */
static void resolver_cloexec(curl_socket_t fd) {
  ino_t ino, other;
  if (!unix_inheritable(fd, &ino)) return;
  set_cloexec(fd);
  for (int i = 1; i < FD_WINDOW; i++)
    if (unix_inheritable(fd + i, &other) && other == ino + 1) {
      set_cloexec(fd + i);
      break;
    }
}

/* -------------------------------------------------------------- sockets */

static void sock_free_cb(uv_handle_t *h) {
  free(h->data);
}

static http_sock *sock_get(http_multi *m, curl_socket_t fd) {
  return (fd >= 0 && (size_t)fd < m->nsocks) ? m->socks[fd] : NULL;
}

/* A new socket record with its poll handle (not started). */
static http_sock *sock_new(http_multi *m, curl_socket_t fd, int owned) {
  http_sock *s;
  if (fd < 0) return NULL;
  if ((size_t)fd >= m->nsocks) {
    size_t n = m->nsocks ? m->nsocks : 64;
    while (n <= (size_t)fd)
      n *= 2;
    http_sock **v = (http_sock **)realloc(m->socks, n * sizeof *v);
    if (v == NULL) return NULL;
    memset(v + m->nsocks, 0, (n - m->nsocks) * sizeof *v);
    m->socks = v;
    m->nsocks = n;
  }
  s = (http_sock *)calloc(1, sizeof *s);
  if (s == NULL) return NULL;
  if (uv_poll_init_socket(m->hw->w->loop, &s->poll, fd) != 0) {
    free(s);
    return NULL;
  }
  s->poll.data = s;
  s->m = m;
  s->fd = fd;
  s->owned = owned;
  uv_unref((uv_handle_t *)&s->poll);
  m->socks[fd] = s;
  return s;
}

/* Forget the socket (it is being closed, or curl is done with it). */
static void sock_close(http_sock *s) {
  http_multi *m = s->m;
  if (m->socks[s->fd] == s) m->socks[s->fd] = NULL;
  uv_close((uv_handle_t *)&s->poll, sock_free_cb);
}

static void multi_drain(http_multi *m) {
  CURLMsg *msg;
  int left;
  while ((msg = curl_multi_info_read(m->cm, &left)) != NULL) {
    if (msg->msg != CURLMSG_DONE) continue;
    http_xfer *x = NULL;
    CURLcode rc = msg->data.result;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
    /* msg is invalid after this */
    http__multi_remove(m, x);
    http__xfer_finished(x, rc);
  }
}

static void on_poll(uv_poll_t *p, int status, int events) {
  http_sock *s = (http_sock *)p->data;
  http_multi *m = s->m;
  http_worker *hw = m->hw;
  int flags = 0, running;
  if (hw->poll_gen != hw->w->st.polls) {
    hw->poll_gen = hw->w->st.polls;
    hw->handled = 0;
  }
  if (s->want && hw->handled >= HTTP_EVENTS_PER_POLL && hw->w->rq_len > 0)
    return; /* level-triggered: reported again by the next poll, which
               comes once the woken tasks have run */
  hw->handled++;
  if (s->want == 0) {
    /* an idle pooled connection became readable: the server closed it or
    ** sent junk; curl finds out when it next looks at the connection */
    uv_poll_stop(p);
    s->reg = 0;
    return;
  }
  if (status < 0) {
    flags = CURL_CSELECT_ERR;
  } else {
    if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  }
  /* s may be freed inside (curl closes the socket): do not touch it after */
  curl_multi_socket_action(m->cm, s->fd, flags, &running);
  multi_drain(m);
}

static int socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp,
                     void *sockp) {
  http_multi *m = (http_multi *)userp;
  http_sock *s = sock_get(m, fd);
  int events = 0;
  (void)easy;
  (void)sockp;
  if (what == CURL_POLL_REMOVE) {
    if (s == NULL) return 0;
    s->want = 0;
    if (s->owned && s->connected)
      uv_unref((uv_handle_t *)&s->poll); /* kept until closesocket_cb */
    else /* (curl may close a connection attempt without closesocket_cb) */
      sock_close(s);
    return 0;
  }
  if (s == NULL) {
    if ((s = sock_new(m, fd, 0)) == NULL) return -1;
    resolver_cloexec(fd); /* not a connection: the resolver's */
  }
  if (what & CURL_POLL_IN) { /* (it waits to write while connecting) */
    events |= UV_READABLE;
    s->connected = 1;
  }
  if (what & CURL_POLL_OUT) events |= UV_WRITABLE;
  s->want = events;
  uv_ref((uv_handle_t *)&s->poll);
  if (s->reg != events) {
    if (uv_poll_start(&s->poll, events, on_poll) != 0) return -1;
    s->reg = events;
  }
  return 0;
}

static curl_socket_t opensocket_cb(void *clientp, curlsocktype purpose,
                                   struct curl_sockaddr *a) {
  http_multi *m = (http_multi *)clientp;
  curl_socket_t fd;
  int type = a->socktype;
  (void)purpose;
#ifdef SOCK_CLOEXEC
  type |= SOCK_CLOEXEC; /* child processes must not inherit connections */
#endif
  fd = socket(a->family, type, a->protocol);
  if (fd < 0) return CURL_SOCKET_BAD;
  http_sock *old = sock_get(m, fd);
  if (old) sock_close(old); /* a descriptor closed behind our back */
  if (sock_new(m, fd, 1) == NULL) {
    close(fd);
    return CURL_SOCKET_BAD;
  }
  return fd;
}

static int closesocket_cb(void *clientp, curl_socket_t fd) {
  http_multi *m = (http_multi *)clientp;
  http_sock *s = sock_get(m, fd);
  /* uv_close stops the poll (epoll_ctl DEL) before the descriptor goes */
  if (s) sock_close(s);
  return close(fd);
}

void http__sockopts(http_multi *m, CURL *easy) {
  curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, opensocket_cb);
  curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, m);
  curl_easy_setopt(easy, CURLOPT_CLOSESOCKETFUNCTION, closesocket_cb);
  curl_easy_setopt(easy, CURLOPT_CLOSESOCKETDATA, m);
  if (m->hw->share) curl_easy_setopt(easy, CURLOPT_SHARE, m->hw->share);
}

/* --------------------------------------------------------------- timer */

static void on_timer(uv_timer_t *t) {
  http_multi *m = (http_multi *)t->data;
  int running;
  curl_multi_socket_action(m->cm, CURL_SOCKET_TIMEOUT, 0, &running);
  multi_drain(m);
}

/* The loop is about to poll: run what curl wanted to run now. */
static void on_idle(uv_idle_t *i) {
  http_multi *m = (http_multi *)i->data;
  int running;
  uv_idle_stop(i);
  m->kicking = 1; /* (the idle phase is under way: see timer_cb) */
  curl_multi_socket_action(m->cm, CURL_SOCKET_TIMEOUT, 0, &running);
  multi_drain(m);
  m->kicking = 0;
}

static int timer_cb(CURLM *cm, long ms, void *userp) {
  http_multi *m = (http_multi *)userp;
  (void)cm;
  if (ms < 0) {
    uv_timer_stop(&m->timer);
  } else if (ms == 0 && !m->kicking) {
    /* never run curl from inside its own callback: before the next poll */
    if (uv_idle_start(&m->soon, on_idle) != 0)
      uv_timer_start(&m->timer, on_timer, 1, 0);
  } else { /* (0 ms from inside on_idle: 1 ms, as the example does) */
    uv_timer_start(&m->timer, on_timer, ms > 0 ? (uint64_t)ms : 1, 0);
  }
  return 0;
}

void http__multi_kick(http_multi *m) {
  int running;
  curl_multi_socket_action(m->cm, CURL_SOCKET_TIMEOUT, 0, &running);
  multi_drain(m);
}

/* ---------------------------------------------------------- multi handle */

http_multi *http__multi_new(http_worker *hw, const http_config *cfg,
                            http_multi **owner) {
  http_multi *m = (http_multi *)calloc(1, sizeof *m);
  if (m == NULL) return NULL;
  m->cm = multi_init();
  if (m->cm == NULL) {
    free(m);
    return NULL;
  }
  m->hw = hw;
  m->cfg = cfg;
  m->owner = owner;
  m->cnext = *owner;
  *owner = m;
  uv_timer_init(hw->w->loop, &m->timer);
  m->timer.data = m;
  uv_unref((uv_handle_t *)&m->timer);
  uv_idle_init(hw->w->loop, &m->soon);
  m->soon.data = m;
  m->nopen = 2;
  curl_multi_setopt(m->cm, CURLMOPT_SOCKETFUNCTION, socket_cb);
  curl_multi_setopt(m->cm, CURLMOPT_SOCKETDATA, m);
  curl_multi_setopt(m->cm, CURLMOPT_TIMERFUNCTION, timer_cb);
  curl_multi_setopt(m->cm, CURLMOPT_TIMERDATA, m);
  curl_multi_setopt(m->cm, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
  if (cfg->max_host_connections > 0)
    curl_multi_setopt(m->cm, CURLMOPT_MAX_HOST_CONNECTIONS,
                      cfg->max_host_connections);
  if (cfg->max_connections > 0)
    curl_multi_setopt(m->cm, CURLMOPT_MAX_TOTAL_CONNECTIONS,
                      cfg->max_connections);
  curl_multi_setopt(m->cm, CURLMOPT_MAXCONNECTS,
                    cfg->pool_size > 0 ? cfg->pool_size : HTTP_POOL_SIZE);
  m->next = hw->multis;
  if (hw->multis) hw->multis->prev = m;
  hw->multis = m;
  return m;
}

static void multi_free_cb(uv_handle_t *h) {
  http_multi *m = (http_multi *)h->data;
  if (--m->nopen == 0) free(m);
}

/* Closes the pool: every transfer is dropped (a stream's userdata keeps
** its struct, now dead), connections are closed, handles are closed and
** the struct is freed once libuv is done with them. */
void http__multi_close(http_multi *m) {
  http_worker *hw = m->hw;
  if (m->closing) return;
  m->closing = 1;
  if (m->owner) { /* leave the client's list */
    http_multi **p = m->owner;
    while (*p && *p != m)
      p = &(*p)->cnext;
    if (*p) *p = m->cnext;
  }
  m->owner = NULL;
  if (m->prev)
    m->prev->next = m->next;
  else
    hw->multis = m->next;
  if (m->next) m->next->prev = m->prev;
  while (m->live)
    http__xfer_detach(m->live);
  while (m->idle) {
    http_xfer *x = m->idle;
    m->idle = x->next;
    x->m = NULL;
    http__xfer_free(x);
  }
  http__url_cache_free(m);
  curl_multi_cleanup(m->cm); /* closes the connections: closesocket_cb */
  m->cm = NULL;
  for (size_t i = 0; i < m->nsocks; i++)
    if (m->socks[i]) sock_close(m->socks[i]);
  free(m->socks);
  m->socks = NULL;
  m->nsocks = 0;
  uv_close((uv_handle_t *)&m->timer, multi_free_cb);
  uv_close((uv_handle_t *)&m->soon, multi_free_cb);
}

int http__multi_add(http_multi *m, http_xfer *x) {
  CURLMcode rc = curl_multi_add_handle(m->cm, x->easy);
  if (rc != CURLM_OK) return (int)rc;
  if (m->nactive++ == 0) uv_ref((uv_handle_t *)&m->timer);
  /* curl asked for 0 ms (timer_cb) unless its timer already said so */
  if (!m->kicking) uv_idle_start(&m->soon, on_idle);
  return 0;
}

void http__multi_remove(http_multi *m, http_xfer *x) {
  curl_multi_remove_handle(m->cm, x->easy);
  if (--m->nactive == 0) uv_unref((uv_handle_t *)&m->timer);
}
