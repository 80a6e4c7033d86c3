/*
** stream.c: the Stream object over a libuv stream (TCP, unix sockets,
** child pipes): one type, one read buffer, FIFO readers and writers.
**
** Reading starts with the first read that waits and then stays on, into
** the stream's own buffer, until that holds read_buffer unread bytes (64
** KiB by default): then reading pauses, and resumes once a reader took it
** below half. So a round trip costs no epoll_ctl, a stream nobody reads
** costs no epoll registration, and a peer that floods us is bounded.
** libuv reads into the worker's scratch buffer and read_cb copies what
** came into the stream's; an idle stream holds only what it received.
**
** Wake, then take: read_cb only appends and wakes the head reader when it
** can complete (enough bytes, a line end, EOF, an error); the reader takes
** its bytes when it runs. A read cancelled in between consumed nothing:
** every byte stays for the next read.
**
** Writing: uv_try_write first (one writev of all the arguments); whatever
** the kernel does not take is copied into a write request and queued, and
** the writer waits for its callback, so write returns once all its bytes
** are in the kernel. A write starts only while the queue is at or below
** IO_WRITE_HWM (else it waits, not started), so the memory queued per
** stream is at most the HWM plus one write. A writer cancelled before it
** started sent nothing; one cancelled after it started completes in the
** background, in order (unless the stream is closed first).
**
** An accepted (or moved) TCP socket starts bare: the stream holds the fd,
** writes that the kernel takes at once go through send, options through
** setsockopt, and the libuv handle is made (uv_tcp_init + uv_tcp_open)
** only when the stream first needs the loop: a read that waits, a write
** that would block, shutdown, keepalive. A stream that never needs it
** costs neither uv_tcp_open's ioctl(FIONBIO) (accept4 made it
** non-blocking) nor uv_close's epoll_ctl(DEL) of an fd never added: its
** close is a plain close(2).
**
** A stream's handle is referenced only while a task is parked on it, so
** an idle open stream neither keeps the loop alive nor hides a deadlock.
** close() never waits: it wakes the parked tasks (nil, err "closed") and
** uv_closes; memory is freed in the close callback.
*/
#include "net.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STREAM_MT "tidal.Stream"
#define FREE_STREAMS_MAX 256
#define FREE_WREQ_MAX 256
#define RB_KEEP (64 * 1024) /* buffer capacity kept when it empties */

/* ------------------------------------------------------------ lifecycle */

io_stream *io__stream_new(io_worker *iw, int kind, int dirs) {
  io_stream *s = iw->free_streams;
  if (s != NULL) {
    iw->free_streams = s->next_free;
    iw->nfree_streams--;
  } else if ((s = (io_stream *)malloc(sizeof *s)) == NULL) {
    return NULL;
  }
  memset(s, 0, sizeof *s);
  s->obj.iw = iw;
  s->u.h.data = s;
  s->kind = (uint8_t)kind;
  s->dirs = (uint8_t)dirs;
  s->rmax = IO_READ_MAX;
  s->fd = -1;
  io__hold(iw);
  return s;
}

uv_stream_t *io__stream_uv(io_stream *s) {
  return &s->u.s;
}

static void core_free(io_stream *s) {
  io_worker *iw = s->obj.iw;
  tidal__buf_free(&s->rb);
  if (!iw->closed && iw->nfree_streams < FREE_STREAMS_MAX) {
    s->next_free = iw->free_streams;
    iw->free_streams = s;
    iw->nfree_streams++;
  } else {
    free(s);
  }
  io__release(iw);
}

void io__stream_discard(io_stream *s) {
  core_free(s);
}

void io__stream_free_lists(io_worker *iw) {
  while (iw->free_streams) {
    io_stream *s = iw->free_streams;
    iw->free_streams = s->next_free;
    free(s);
  }
  iw->nfree_streams = 0;
  while (iw->free_wreq) {
    io_wreq *r = iw->free_wreq;
    iw->free_wreq = (io_wreq *)r->task;
    free(r);
  }
  iw->nfree_wreq = 0;
}

static void close_cb(uv_handle_t *h) {
  core_free((io_stream *)h->data);
}

/* Gives a bare stream its libuv handle (0 or a UV error). */
static int need_handle(io_stream *s) {
  int rc;
  if (!(s->f & SF_BARE)) return 0;
  if (!(s->f & SF_HINIT)) {
    rc = uv_tcp_init(s->obj.iw->w->loop, &s->u.tcp);
    if (rc != 0) return rc;
    s->f |= SF_HINIT;
    uv_unref(&s->u.h);
  }
  rc = uv_tcp_open(&s->u.tcp, s->fd);
  if (rc != 0) return rc;
  s->f &= (uint16_t)~(SF_BARE | SF_HINIT);
  return 0;
}

/* Closes the handle (memory freed in close_cb) or, for a bare stream, the
** fd (and the handle if need_handle initialised it but failed to open). */
static void close_core(io_stream *s) {
  if (s->f & SF_BARE) {
    close(s->fd);
    s->fd = -1;
    if (!(s->f & SF_HINIT)) {
      core_free(s);
      return;
    }
  }
  uv_close(&s->u.h, close_cb);
}

void io__stream_ref(io_stream *s) {
  if (s->nparked++ == 0) uv_ref(&s->u.h);
}

void io__stream_unref(io_stream *s) {
  if (--s->nparked == 0) uv_unref(&s->u.h);
}

static void wake_all(io_stream *s, tidal_wq *q) {
  tidal_task *t;
  while ((t = tidal__wq_pop(q)) != NULL) {
    io__stream_unref(s);
    tidal__wake(t, 0);
  }
}

/* The worker is closing: nobody is parked, no Lua runs. */
static void stream_shutdown(io_obj *o) {
  io_stream *s = (io_stream *)o;
  s->f |= SF_CLOSING;
  close_core(s);
}

void io__stream_close(io_stream *s) {
  if (s->f & SF_CLOSING) return;
  io__ud_detach(&s->obj, IO_UD_CLOSED);
  s->f |= SF_CLOSING;
  /* their continuations find the userdata closed: nil, err "closed";
  ** writers waiting for a request wake from its callback (ECANCELED) */
  wake_all(s, &s->readers);
  wake_all(s, &s->writers);
  wake_all(s, &s->shutters);
  if (s->f & SF_LIVE) io__live_remove(s->obj.iw, &s->obj);
  close_core(s);
}

/* ----------------------------------------------------------------- read */

static size_t unread(const io_stream *s) {
  return s->rb.len - s->rpos;
}

/* Can the head reader complete (or must it see EOF / an error)? */
static int can_complete(io_stream *s) {
  size_t un = unread(s);
  if ((s->f & SF_EOF) || s->rerr || un >= s->want) return 1;
  if (s->line && un > s->scan) {
    if (memchr(s->rb.data + s->rpos + s->scan, '\n', un - s->scan) != NULL)
      return 1;
    s->scan = un;
  }
  return 0;
}

static void wake_reader(io_stream *s) {
  tidal_task *t = tidal__wq_pop(&s->readers);
  if (t != NULL) {
    io__stream_unref(s);
    tidal__wake(t, 0);
  }
}

static void pause_reading(io_stream *s) {
  if (s->f & SF_READING) {
    uv_read_stop(&s->u.s);
    s->f = (uint16_t)((s->f & ~SF_READING) | SF_PAUSED);
  }
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  io_stream *s = (io_stream *)h->data;
  (void)suggested;
  buf->base = s->obj.iw->scratch;
  buf->len = IO_SCRATCH;
}

static int append(io_stream *s, const char *p, size_t n) {
  if (s->rpos > 0 && s->rb.cap - s->rb.len < n) { /* compact first */
    size_t un = unread(s);
    memmove(s->rb.data, s->rb.data + s->rpos, un);
    s->rb.len = un;
    s->rpos = 0;
  }
  return tidal__buf_add(&s->rb, p, n);
}

static void read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
  io_stream *s = (io_stream *)st->data;
  if (nread > 0) {
    size_t limit;
    if (append(s, buf->base, (size_t)nread) != 0) {
      s->rerr = UV_ENOBUFS;
      pause_reading(s);
      s->f &= (uint16_t)~SF_PAUSED; /* (for good) */
      while (s->readers.head) wake_reader(s);
      return;
    }
    limit = s->rmax;
    if (s->readers.head && s->want > limit) limit = s->want;
    if (unread(s) >= limit) pause_reading(s);
    if (s->readers.head && can_complete(s)) wake_reader(s);
  } else if (nread < 0) {
    if (nread == UV_EOF)
      s->f |= SF_EOF;
    else
      s->rerr = (int)nread;
    if (s->f & SF_READING) uv_read_stop(&s->u.s);
    s->f &= (uint16_t)~(SF_READING | SF_PAUSED);
    while (s->readers.head) wake_reader(s);
  }
}

static int start_reading(io_stream *s) {
  int rc = uv_read_start(&s->u.s, alloc_cb, read_cb);
  if (rc == 0)
    s->f = (uint16_t)((s->f | SF_READING) & ~SF_PAUSED);
  return rc;
}

int io__stream_read_now(io_stream *s) {
  if (s->f & (SF_READING | SF_EOF)) return 0;
  return start_reading(s);
}

static void go_live(io_stream *s, size_t read_buffer) {
  s->rmax = read_buffer ? read_buffer : IO_READ_MAX;
  io__live_add(s->obj.iw, &s->obj);
  s->obj.shutdown = stream_shutdown;
  s->f |= SF_LIVE;
}

int io__stream_start(io_stream *s, size_t read_buffer) {
  int rc = 0;
  uv_os_fd_t fd;
  s->fd = uv_fileno(&s->u.h, &fd) == 0 ? fd : -1;
  uv_unref(&s->u.h);
  go_live(s, read_buffer);
  /* A child's output pipe reads at once (up to read_buffer): a child that
  ** writes more than the socket holds and exits before anyone reads must
  ** not block on a full pipe while we wait for it. Sockets start reading
  ** with their first wait. */
  if (s->kind == IO_PIPE && (s->dirs & IO_R)) rc = start_reading(s);
  return rc;
}

/* Takes n unread bytes (pushed as a string). */
static void take(lua_State *L, io_stream *s, size_t n, size_t skip) {
  lua_pushlstring(L, s->rb.data + s->rpos, n);
  s->rpos += n + skip;
  s->scan = 0;
  if (s->rpos == s->rb.len) {
    s->rpos = s->rb.len = 0;
    if (s->rb.cap > RB_KEEP) tidal__buf_free(&s->rb);
  }
  if ((s->f & SF_PAUSED) && unread(s) < s->rmax / 2 && !s->rerr &&
      !(s->f & SF_EOF))
    start_reading(s);
}

/* ------------------------------------------------------------- readers */

/* RD_LINES is read_line for s:lines()'s iterator: it raises errors */
enum { RD_SOME, RD_EXACTLY, RD_LINE, RD_ALL, RD_LINES, RD_N };

/* A read's arguments, normalised on the stack by check_args:
** 1 = self, 2 = n / max (integer or nil), 3 = keep. */
typedef struct rdargs {
  int mode;
  size_t n; /* RD_SOME: at most; RD_EXACTLY: exactly; else: max */
  int keep; /* lines: keep the line end */
} rdargs;

static const char *const rd_names[RD_N] = {
    "Stream:read", "Stream:read_exactly", "Stream:read_line",
    "Stream:read_all", "Stream:lines"};

static int fail_closed(lua_State *L, const char *fname) {
  return io__fail_kind(L, "closed", "%s: the stream was closed", fname);
}

/* Completes the read if it can (pushes its results, returns their count),
** else returns -1 with s->want / s->line set for the wait. */
static int try_read(lua_State *L, io_stream *s, const rdargs *a) {
  size_t un = unread(s);
  const char *fname = rd_names[a->mode];
  switch (a->mode) {
  case RD_SOME:
    if (un > 0) {
      if (a->n == 0)
        lua_pushliteral(L, "");
      else
        take(L, s, un < a->n ? un : a->n, 0);
      return 1;
    }
    break;
  case RD_EXACTLY:
    if (un >= a->n) {
      take(L, s, a->n, 0);
      return 1;
    }
    if (s->rerr == 0 && (s->f & SF_EOF))
      return io__fail_kind(L, "unexpected_eof",
                           "%s: the stream ended after %I of %I bytes", fname,
                           (lua_Integer)un, (lua_Integer)a->n);
    break;
  case RD_LINE:
  case RD_LINES: {
    size_t lim = a->n < un ? a->n + 1 : un; /* where a line end may be */
    const char *p = s->rb.data + s->rpos;
    const char *nl =
        s->scan < lim ? (const char *)memchr(p + s->scan, '\n', lim - s->scan)
                      : NULL;
    if (nl != NULL) {
      size_t len = (size_t)(nl - p), skip = 1;
      if (a->keep) {
        len++;
        skip = 0;
      } else if (len > 0 && p[len - 1] == '\r') {
        len--;
        skip = 2;
      }
      take(L, s, len, skip);
      return 1;
    }
    if (lim > s->scan) s->scan = lim;
    if (un > a->n)
      return io__fail_kind(L, "too_long", "%s: no line end within %I bytes",
                           fname, (lua_Integer)a->n);
    if (s->rerr == 0 && (s->f & SF_EOF) && un > 0) { /* the last line */
      take(L, s, un, 0);
      return 1;
    }
    break;
  }
  case RD_ALL:
    if (un > a->n)
      return io__fail_kind(L, "too_large",
                           "%s: more than %I bytes before the end", fname,
                           (lua_Integer)a->n);
    if (s->rerr == 0 && (s->f & SF_EOF)) {
      take(L, s, un, 0);
      return 1;
    }
    break;
  }
  if (un == 0 && (s->f & SF_EOF) && s->rerr == 0) {
    lua_pushnil(L);
    return 1;
  }
  if (s->rerr) return io__fail(L, s->rerr, fname, NULL);
  s->line = a->mode == RD_LINE || a->mode == RD_LINES;
  if (a->mode == RD_SOME)
    s->want = 1;
  else if (a->mode == RD_EXACTLY)
    s->want = a->n;
  else
    s->want = a->n == SIZE_MAX ? SIZE_MAX : a->n + 1;
  return -1;
}

static void get_args(lua_State *L, int mode, rdargs *a) {
  a->mode = mode;
  a->n = lua_isnil(L, 2) ? SIZE_MAX : (size_t)lua_tointeger(L, 2);
  a->keep = lua_toboolean(L, 3);
}

static int read_cancel(tidal_task *t) {
  io_stream *s = (io_stream *)t->wobj;
  tidal__wq_remove(&s->readers, t);
  io__stream_unref(s);
  return 1;
}

static const tidal_waitop read_ops[RD_N] = {
    {"Stream:read", read_cancel, NULL},     {"Stream:read_exactly", read_cancel, NULL},
    {"Stream:read_line", read_cancel, NULL}, {"Stream:read_all", read_cancel, NULL},
    {"Stream:lines", read_cancel, NULL}};

static const lua_KFunction read_ks[RD_N];

static int lines_result(lua_State *L, int n);

/* Parks t among the readers (at the front: it was the head already). */
static int park_reader(lua_State *L, io_stream *s, tidal_task *t, int mode,
                       int front) {
  int rc = need_handle(s);
  if (rc != 0) {
    rc = io__fail(L, rc, rd_names[mode], NULL);
    return mode == RD_LINES ? lines_result(L, rc) : rc;
  }
  if (front)
    tidal__wq_push_front(&s->readers, t);
  else
    tidal__wq_push(&s->readers, t);
  io__stream_ref(s);
  /* the first wait starts reading (a stream never read costs no epoll
  ** registration); a paused stream resumes: it needs more than is here */
  if (!(s->f & (SF_READING | SF_EOF)) && s->rerr == 0) start_reading(s);
  return tidal__park(L, t, &read_ops[mode], s, read_ks[mode]);
}

/* After a read completed: the next reader may be able to go on. */
static void pass_on(io_stream *s) {
  if (s->readers.head && (unread(s) > 0 || (s->f & SF_EOF) || s->rerr))
    wake_reader(s);
}

/* s:lines()'s iterator raises what read_line returns as nil, err */
static int lines_result(lua_State *L, int n) {
  if (n == 2) return lua_error(L);
  return n;
}

static int read_body(lua_State *L, io_stream *s, tidal_task *t, int mode,
                     int front) {
  rdargs a;
  int n;
  get_args(L, mode, &a);
  if (s == NULL) {
    n = fail_closed(L, rd_names[mode]);
    return mode == RD_LINES ? lines_result(L, n) : n;
  }
  if (front || s->readers.head == NULL) {
    n = try_read(L, s, &a);
    if (n >= 0) {
      pass_on(s);
      return mode == RD_LINES ? lines_result(L, n) : n;
    }
  }
  return park_reader(L, s, t, mode, front);
}

static int read_k(lua_State *L, lua_KContext k, int mode) {
  tidal_task *t = (tidal_task *)k;
  io_stream *s = (io_stream *)((io_ud *)lua_touserdata(L, 1))->core;
  if (s != NULL && tidal__wake_lost(t)) pass_on(s);
  tidal__resumed(L, t);
  return read_body(L, s, t, mode, 1);
}

/* after a budget yield (the arguments were checked) */
static int read_again(lua_State *L, int mode) {
  tidal_task *t = tidal__task_check(L, rd_names[mode]);
  io_stream *s = (io_stream *)((io_ud *)lua_touserdata(L, 1))->core;
  return read_body(L, s, t, mode, 0);
}

#define READ_MODE(name, MODE)                                                  \
  static int name##_k(lua_State *L, int st, lua_KContext k) {                  \
    (void)st;                                                                  \
    return read_k(L, k, MODE);                                                 \
  }                                                                            \
  static int name##_again(lua_State *L) {                                      \
    return read_again(L, MODE);                                                \
  }                                                                            \
  static const tidal_restart name##_restart = {name##_again};
READ_MODE(rsome, RD_SOME)
READ_MODE(rexactly, RD_EXACTLY)
READ_MODE(rline, RD_LINE)
READ_MODE(rall, RD_ALL)
READ_MODE(rlines, RD_LINES)

static const lua_KFunction read_ks[RD_N] = {rsome_k, rexactly_k, rline_k,
                                            rall_k, rlines_k};
static const tidal_restart *const read_restarts[RD_N] = {
    &rsome_restart, &rexactly_restart, &rline_restart, &rall_restart,
    &rlines_restart};

/* read_line's options {max =, keep =} at idx: max, keep pushed */
static void line_opts(lua_State *L, int idx, const char *fname) {
  lua_Integer max = IO_LINE_MAX;
  int keep = 0;
  if (!lua_isnoneornil(L, idx)) {
    if (!lua_istable(L, idx))
      luaL_error(L, "%s: expected an options table, got %s", fname,
                 luaL_typename(L, idx));
    lua_pushnil(L);
    while (lua_next(L, idx)) {
      const char *key =
          lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
      if (strcmp(key, "max") == 0) {
        if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1)
          luaL_error(L, "%s: opts.max must be a positive integer", fname);
        max = lua_tointeger(L, -1);
      } else if (strcmp(key, "keep") == 0) {
        keep = lua_toboolean(L, -1);
      } else {
        luaL_error(L, "%s: unknown option '%s' (known: keep, max)", fname,
                   key);
      }
      lua_pop(L, 1);
    }
  }
  lua_pushinteger(L, max);
  lua_pushboolean(L, keep);
}

/* Normalises the arguments on the stack (see rdargs). */
static void check_args(lua_State *L, int mode, const char *fname) {
  switch (mode) {
  case RD_SOME:
  case RD_ALL:
  case RD_EXACTLY:
    if (lua_isinteger(L, 2)) {
      if (lua_tointeger(L, 2) < 0)
        luaL_error(L, "%s: the byte count must not be negative, got %I",
                   fname, lua_tointeger(L, 2));
    } else if (mode == RD_EXACTLY || !lua_isnoneornil(L, 2)) {
      int isnum;
      lua_Integer n = lua_tointegerx(L, 2, &isnum);
      if (!isnum)
        luaL_error(L, "%s: expected a byte count (an integer), got %s", fname,
                   luaL_typename(L, 2));
      if (n < 0)
        luaL_error(L, "%s: the byte count must not be negative, got %I",
                   fname, n);
      lua_pushinteger(L, n);
      lua_replace(L, 2);
    }
    lua_settop(L, 2); /* (3: none, keep = false) */
    break;
  case RD_LINE:
    line_opts(L, 2, fname);
    lua_rotate(L, 2, 2);
    lua_settop(L, 3);
    break;
  case RD_LINES: /* (self, control): the options are upvalues 2, 3 */
    lua_settop(L, 1);
    lua_pushvalue(L, lua_upvalueindex(2));
    lua_pushvalue(L, lua_upvalueindex(3));
    break;
  }
}

static int do_read(lua_State *L, int mode) {
  const char *fname = rd_names[mode];
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  io_stream *s = (io_stream *)io__self(L, ctx, TT_STREAM, fname);
  tidal_task *t;
  if (!(s->dirs & IO_R))
    luaL_error(L, "%s: this stream is write-only", fname);
  t = tidal__wait_ok(L, ctx->cur, fname);
  check_args(L, mode, fname);
  TIDAL_SPEND(L, t, read_restarts[mode]);
  return read_body(L, s, t, mode, 0);
}

static int l_read(lua_State *L) {
  return do_read(L, RD_SOME);
}
static int l_read_exactly(lua_State *L) {
  return do_read(L, RD_EXACTLY);
}
static int l_read_line(lua_State *L) {
  return do_read(L, RD_LINE);
}
static int l_read_all(lua_State *L) {
  return do_read(L, RD_ALL);
}
static int l_lines_iter(lua_State *L) {
  return do_read(L, RD_LINES);
}

/* s:lines([opts]) -> iterator, s: for line in s:lines() do ... end */
static int l_lines(lua_State *L) {
  io_stream *s = (io_stream *)io__check(L, TT_STREAM, "Stream:lines");
  if (!(s->dirs & IO_R))
    luaL_error(L, "Stream:lines: this stream is write-only");
  lua_settop(L, 2);
  line_opts(L, 2, "Stream:lines"); /* 3 = max, 4 = keep */
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_rotate(L, 3, 1);
  lua_pushcclosure(L, l_lines_iter, 3);
  lua_pushvalue(L, 1);
  return 2;
}

/* ---------------------------------------------------------------- write */

static const char *const write_name = "Stream:write";

static io_wreq *wreq_new(io_worker *iw, size_t len) {
  io_wreq *r;
  if (len <= IO_SMALL_WREQ && iw->free_wreq != NULL) {
    r = iw->free_wreq;
    iw->free_wreq = (io_wreq *)r->task;
    iw->nfree_wreq--;
  } else {
    size_t inl = len <= IO_SMALL_WREQ ? IO_SMALL_WREQ : 0;
    r = (io_wreq *)malloc(sizeof *r + inl);
    if (r == NULL) return NULL;
    r->cap = inl;
    if (inl == 0 && (r->data = (char *)malloc(len)) == NULL) {
      free(r);
      return NULL;
    }
  }
  if (r->cap) r->data = r->inl;
  r->iw = iw;
  r->len = len;
  r->task = NULL;
  r->status = 0;
  return r;
}

static void wreq_free(io_worker *iw, io_wreq *r) {
  if (r->cap == 0) {
    free(r->data);
    free(r);
  } else if (!iw->closed && iw->nfree_wreq < FREE_WREQ_MAX) {
    r->task = (tidal_task *)iw->free_wreq;
    iw->free_wreq = r;
    iw->nfree_wreq++;
  } else {
    free(r);
  }
}

/* Wakes the next writer waiting for the queue to drain, if it may go. */
static void wake_writer(io_stream *s) {
  if (s->writers.head && s->nwoken == 0 &&
      s->u.s.write_queue_size <= IO_WRITE_HWM) {
    tidal_task *t = tidal__wq_pop(&s->writers);
    io__stream_unref(s);
    s->nwoken++;
    tidal__wake(t, 0);
  }
}

static void write_cb(uv_write_t *req, int status) {
  io_wreq *r = tidal__container_of(req, io_wreq, req);
  io_stream *s = r->s;
  io_worker *iw = s->obj.iw;
  s->nwreq--;
  if (status < 0 && status != UV_ECANCELED && s->werr == 0) s->werr = status;
  if (r->task != NULL) {
    tidal_task *t = r->task;
    r->status = status;
    r->task = NULL;
    io__stream_unref(s);
    tidal__wake(t, 0);
  } else {
    wreq_free(iw, r);
  }
  if (!(s->f & SF_CLOSING)) wake_writer(s);
}

static int wreq_cancel(tidal_task *t) {
  io_wreq *r = (io_wreq *)t->wobj;
  r->task = NULL; /* it completes in the background */
  io__stream_unref(r->s);
  return 1;
}

static const tidal_waitop wreq_op = {"Stream:write", wreq_cancel, NULL};

static int hwm_cancel(tidal_task *t) {
  io_stream *s = (io_stream *)t->wobj;
  tidal__wq_remove(&s->writers, t);
  io__stream_unref(s);
  return 1;
}

static const tidal_waitop hwm_op = {"Stream:write", hwm_cancel, NULL};

static int wreq_k(lua_State *L, int status, lua_KContext k) {
  tidal_task *t = (tidal_task *)k;
  io_wreq *r = (io_wreq *)lua_touserdata(L, -1);
  io_stream *s = (io_stream *)((io_ud *)lua_touserdata(L, 1))->core;
  int st;
  (void)status;
  /* withdrawn by a cancellation: r went on in the background (its
  ** callback frees it), so it must not be touched */
  if (!io__woken(t)) tidal__resumed(L, t);
  st = r->status;
  wreq_free(r->iw, r); /* (its callback ran: we were woken) */
  tidal__resumed(L, t);
  if (s == NULL || st == UV_ECANCELED) return fail_closed(L, write_name);
  if (st < 0) return io__fail(L, st, write_name, NULL);
  lua_pushboolean(L, 1);
  return 1;
}

#define MAX_BUFS 16

/* The data arguments (2..top) as buffers; more than MAX_BUFS are joined
** into one string first. Numbers are written as io.write writes them. */
static int gather(lua_State *L, uv_buf_t *bufs, size_t *total) {
  int top = lua_gettop(L), n = 0;
  *total = 0;
  for (int i = 2; i <= top; i++) {
    size_t len;
    const char *p;
    if (lua_type(L, i) == LUA_TNUMBER) {
      char tmp[64];
      int m = lua_isinteger(L, i)
                  ? snprintf(tmp, sizeof tmp, LUA_INTEGER_FMT,
                             (LUAI_UACINT)lua_tointeger(L, i))
                  : snprintf(tmp, sizeof tmp, LUA_NUMBER_FMT,
                             (LUAI_UACNUMBER)lua_tonumber(L, i));
      lua_pushlstring(L, tmp, (size_t)m);
      lua_replace(L, i);
    } else if (lua_type(L, i) != LUA_TSTRING) {
      luaL_error(L, "%s: argument #%d must be a string or a number, got %s",
                 write_name, i - 1, luaL_typename(L, i));
    }
    p = lua_tolstring(L, i, &len);
    if (n == MAX_BUFS) { /* join the rest */
      luaL_Buffer b;
      luaL_buffinit(L, &b);
      for (int j = 2; j <= top; j++) {
        lua_pushvalue(L, j);
        luaL_addvalue(&b);
      }
      luaL_pushresult(&b);
      lua_replace(L, 2);
      lua_settop(L, 2);
      p = lua_tolstring(L, 2, &len);
      bufs[0] = uv_buf_init((char *)p, (unsigned int)len);
      *total = len;
      return 1;
    }
    bufs[n++] = uv_buf_init((char *)p, (unsigned int)len);
    *total += len;
  }
  return n;
}

static int hwm_k(lua_State *L, int status, lua_KContext k);

/* What the kernel takes of bufs now: bytes, UV_EAGAIN or an error. On a
** socket it is one send / sendmsg with MSG_NOSIGNAL (cheaper than
** uv_try_write's write / writev, and no SIGPIPE whatever the process's
** disposition); a pipe goes through libuv. Only while nothing is queued,
** as uv_try_write. */
static int try_send(io_stream *s, const uv_buf_t *bufs, int n) {
  ssize_t r;
  if (s->kind == IO_PIPE || s->fd < 0)
    return uv_try_write(&s->u.s, bufs, (unsigned int)n);
  do {
    if (n == 1) {
      r = send(s->fd, bufs[0].base, bufs[0].len, MSG_DONTWAIT | MSG_NOSIGNAL);
    } else {
      struct msghdr mh;
      memset(&mh, 0, sizeof mh);
      mh.msg_iov = (struct iovec *)bufs; /* (uv_buf_t is an iovec on unix) */
      mh.msg_iovlen = (size_t)n;
      r = sendmsg(s->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
    }
  } while (r < 0 && errno == EINTR);
  if (r >= 0) return (int)(r > INT_MAX ? INT_MAX : r);
  if (errno == EAGAIN || errno == EWOULDBLOCK) return UV_EAGAIN;
  return uv_translate_sys_error(errno);
}

/* The write from the top: not started yet. */
static void nodelay_now(io_stream *s);

static int write_body(lua_State *L, io_stream *s, tidal_task *t) {
  uv_buf_t bufs[MAX_BUFS];
  size_t total, done = 0;
  int n, rc;
  io_wreq *r;
  if (s->werr) return io__fail(L, s->werr, write_name, NULL);
  if (s->u.s.write_queue_size > IO_WRITE_HWM || s->writers.head ||
      s->nwoken > 0) {
    tidal__wq_push(&s->writers, t);
    io__stream_ref(s);
    return tidal__park(L, t, &hwm_op, s, hwm_k);
  }
  n = gather(L, bufs, &total);
  if (total == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  if (s->f & SF_NODELAY) nodelay_now(s);
  if (s->u.s.write_queue_size == 0) {
    rc = try_send(s, bufs, n);
    if (rc >= 0) {
      if ((size_t)rc == total) {
        lua_pushboolean(L, 1);
        return 1;
      }
      done = (size_t)rc;
    } else if (rc != UV_EAGAIN) {
      s->werr = rc;
      return io__fail(L, rc, write_name, NULL);
    }
  }
  /* queue the rest, copied */
  r = wreq_new(s->obj.iw, total - done);
  if (r == NULL) return io__fail(L, UV_ENOMEM, write_name, NULL);
  {
    size_t off = 0;
    for (int i = 0; i < n; i++) {
      size_t len = bufs[i].len;
      if (done >= len) {
        done -= len;
        continue;
      }
      memcpy(r->data + off, bufs[i].base + done, len - done);
      off += len - done;
      done = 0;
    }
  }
  r->s = s;
  if ((rc = need_handle(s)) != 0) {
    wreq_free(s->obj.iw, r);
    return io__fail(L, rc, write_name, NULL);
  }
  {
    uv_buf_t b = uv_buf_init(r->data, (unsigned int)r->len);
    rc = uv_write(&r->req, &s->u.s, &b, 1, write_cb);
  }
  if (rc != 0) {
    wreq_free(s->obj.iw, r);
    if (s->werr == 0) s->werr = rc;
    return io__fail(L, rc, write_name, NULL);
  }
  s->nwreq++;
  r->task = t;
  io__stream_ref(s);
  lua_settop(L, 1);
  lua_pushlightuserdata(L, r);
  return tidal__park(L, t, &wreq_op, r, wreq_k);
}

static int hwm_k(lua_State *L, int status, lua_KContext k) {
  tidal_task *t = (tidal_task *)k;
  io_stream *s = (io_stream *)((io_ud *)lua_touserdata(L, 1))->core;
  (void)status;
  if (s != NULL && io__woken(t)) {
    s->nwoken--;
    if (tidal__wake_lost(t)) wake_writer(s);
  }
  tidal__resumed(L, t);
  if (s == NULL) return fail_closed(L, write_name);
  return write_body(L, s, t);
}

static int write_again(lua_State *L) {
  tidal_task *t = tidal__task_check(L, write_name);
  io_stream *s = (io_stream *)((io_ud *)lua_touserdata(L, 1))->core;
  if (s == NULL) return fail_closed(L, write_name);
  return write_body(L, s, t);
}
static const tidal_restart write_restart = {write_again};

/* s:write(data, ...) -> true | nil, err */
static int l_write(lua_State *L) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  io_stream *s = (io_stream *)io__self(L, ctx, TT_STREAM, write_name);
  tidal_task *t;
  if (!(s->dirs & IO_W))
    luaL_error(L, "%s: this stream is read-only", write_name);
  if (s->f & SF_WSHUT)
    luaL_error(L, "%s: the stream was shut down for writing", write_name);
  t = tidal__wait_ok(L, ctx->cur, write_name);
  TIDAL_SPEND(L, t, &write_restart);
  return write_body(L, s, t);
}

/* ------------------------------------------------------------- shutdown */

static void shutdown_cb(uv_shutdown_t *req, int status) {
  io_stream *s = (io_stream *)req->handle->data;
  s->shut_status = status;
  s->f |= SF_SHUTDONE;
  wake_all(s, &s->shutters);
}

static int shut_cancel(tidal_task *t) {
  io_stream *s = (io_stream *)t->wobj;
  tidal__wq_remove(&s->shutters, t);
  io__stream_unref(s);
  return 1;
}

static const tidal_waitop shut_op = {"Stream:shutdown", shut_cancel, NULL};

static int shut_result(lua_State *L, io_stream *s) {
  if (s == NULL || s->shut_status == UV_ECANCELED)
    return fail_closed(L, "Stream:shutdown");
  if (s->shut_status < 0)
    return io__fail(L, s->shut_status, "Stream:shutdown", NULL);
  lua_pushboolean(L, 1);
  return 1;
}

static int shut_k(lua_State *L, int status, lua_KContext k) {
  (void)status;
  tidal__resumed(L, (tidal_task *)k);
  return shut_result(L, (io_stream *)((io_ud *)lua_touserdata(L, 1))->core);
}

/* s:shutdown() -> true | nil, err: after every queued write, EOF to the
** peer; reading goes on */
static int l_shutdown(lua_State *L) {
  io_stream *s = (io_stream *)io__check(L, TT_STREAM, "Stream:shutdown");
  tidal_task *t;
  if (!(s->dirs & IO_W))
    luaL_error(L, "Stream:shutdown: this stream is read-only");
  t = tidal__wait_begin(L, "Stream:shutdown");
  lua_settop(L, 1);
  if (s->f & SF_SHUTDONE) return shut_result(L, s);
  if (!(s->f & SF_WSHUT)) {
    int rc = need_handle(s);
    if (rc == 0) rc = uv_shutdown(&s->sreq, &s->u.s, shutdown_cb);
    if (rc != 0) return io__fail(L, rc, "Stream:shutdown", NULL);
    s->f |= SF_WSHUT;
  }
  tidal__wq_push(&s->shutters, t);
  io__stream_ref(s);
  return tidal__park(L, t, &shut_op, s, shut_k);
}

/* ---------------------------------------------------------------- other */

static void ud_close_core(void *core) { io__stream_close((io_stream *)core); }

static int l_close(lua_State *L) {
  return io__ud_close(L, TT_STREAM, "Stream:close", 0, ud_close_core);
}

static int l_gc(lua_State *L) {
  return io__ud_close(L, TT_STREAM, "Stream:__gc", 1, ud_close_core);
}

static int l_buffered(lua_State *L) {
  io_stream *s = (io_stream *)io__check(L, TT_STREAM, "Stream:buffered");
  lua_pushinteger(L, (lua_Integer)unread(s));
  return 1;
}

static int sock_fd(io_stream *s) {
  uv_os_fd_t fd = -1;
  if (s->f & SF_BARE) return s->fd;
  return uv_fileno(&s->u.h, &fd) == 0 ? fd : -1;
}

/* Pushes a unix socket's own (local) or peer path: "" when unnamed. */
static void push_unix_name(lua_State *L, io_stream *s, int local) {
  char buf[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
  size_t len = sizeof buf;
  int rc = local ? uv_pipe_getsockname(&s->u.pipe, buf, &len)
                 : uv_pipe_getpeername(&s->u.pipe, buf, &len);
  lua_pushlstring(L, buf, rc == 0 ? len : 0);
  lua_pushnil(L);
}

/* s:peer() -> host, port (unix: path or "", nil; a pipe: nil) */
static int l_peer(lua_State *L) {
  io_stream *s = (io_stream *)io__check(L, TT_STREAM, "Stream:peer");
  if (s->kind == IO_UNIX && s->peer.ss_family == 0)
    push_unix_name(L, s, 0);
  else
    io__addr_push(L, (struct sockaddr *)&s->peer, sizeof s->peer);
  return 2;
}

/* s:local_addr() -> host, port (unix: path or "", nil; a pipe: nil) */
static int l_local_addr(lua_State *L) {
  io_stream *s = (io_stream *)io__check(L, TT_STREAM, "Stream:local_addr");
  struct sockaddr_storage sa;
  int len = sizeof sa;
  int rc;
  if (s->kind == IO_UNIX) {
    push_unix_name(L, s, 1);
    return 2;
  }
  memset(&sa, 0, sizeof sa);
  if (s->kind == IO_TCP && (s->f & SF_BARE)) {
    socklen_t slen = sizeof sa;
    if (getsockname(s->fd, (struct sockaddr *)&sa, &slen) != 0)
      return io__fail(L, uv_translate_sys_error(errno), "Stream:local_addr",
                      NULL);
    len = (int)slen;
  } else if (s->kind == IO_TCP &&
             (rc = uv_tcp_getsockname(&s->u.tcp, (struct sockaddr *)&sa,
                                      &len)) != 0) {
    return io__fail(L, rc, "Stream:local_addr", NULL);
  }
  io__addr_push(L, (struct sockaddr *)&sa, (socklen_t)len);
  return 2;
}

static int tcp_only(lua_State *L, io_stream *s, const char *fname) {
  if (s->kind != IO_TCP)
    luaL_error(L, "%s: not a TCP stream", fname);
  return 0;
}

static int opt_result(lua_State *L, int rc, const char *fname) {
  if (rc != 0) return io__fail(L, rc, fname, NULL);
  lua_pushboolean(L, 1);
  return 1;
}

/* false | seconds (>= 1, whole) */
static int keepalive_arg(lua_State *L, int idx, const char *fname) {
  if (lua_isboolean(L, idx) && !lua_toboolean(L, idx)) return 0;
  if (!lua_isnumber(L, idx) || lua_tonumber(L, idx) < 1)
    luaL_error(L, "%s: expected false or a delay in seconds (>= 1), got %s",
               fname, luaL_typename(L, idx));
  return (int)lua_tonumber(L, idx);
}

/* nodelay: TCP_NODELAY matters only for what we send, so it is set just
** before the first write (set_nodelay, a move: at once); a stream that
** never writes costs no system call for it. */
int io__stream_tcp_opts(io_stream *s, int nodelay, int keepalive) {
  int rc = 0;
  if (nodelay) s->f |= SF_NODELAY;
  if (keepalive > 0 && (rc = need_handle(s)) == 0)
    rc = uv_tcp_keepalive(&s->u.tcp, 1, keepalive);
  return rc;
}

/* TCP_NODELAY on or off (a bare stream: on its fd). */
static int set_nodelay(io_stream *s, int on) {
  if (s->f & SF_BARE)
    return setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on) == 0
               ? 0
               : uv_translate_sys_error(errno);
  return uv_tcp_nodelay(&s->u.tcp, on);
}

/* The TCP_NODELAY that io__stream_tcp_opts left for the first write. */
static void nodelay_now(io_stream *s) {
  s->f &= (uint16_t)~SF_NODELAY;
  set_nodelay(s, 1); /* (a failure shows at the write) */
}

static int l_set_nodelay(lua_State *L) {
  io_stream *s = (io_stream *)io__check(L, TT_STREAM, "Stream:set_nodelay");
  tcp_only(L, s, "Stream:set_nodelay");
  luaL_checktype(L, 2, LUA_TBOOLEAN);
  s->f &= (uint16_t)~SF_NODELAY;
  return opt_result(L, set_nodelay(s, lua_toboolean(L, 2)),
                    "Stream:set_nodelay");
}

static int l_set_keepalive(lua_State *L) {
  io_stream *s = (io_stream *)io__check(L, TT_STREAM, "Stream:set_keepalive");
  int delay, rc;
  tcp_only(L, s, "Stream:set_keepalive");
  delay = keepalive_arg(L, 2, "Stream:set_keepalive");
  if ((rc = need_handle(s)) != 0)
    return opt_result(L, rc, "Stream:set_keepalive");
  return opt_result(L, uv_tcp_keepalive(&s->u.tcp, delay > 0, (unsigned)delay),
                    "Stream:set_keepalive");
}

/* s:set_linger(false | seconds): set_linger(0) then close() resets the
** connection (RST) instead of closing it */
static int l_set_linger(lua_State *L) {
  io_stream *s = (io_stream *)io__check(L, TT_STREAM, "Stream:set_linger");
  struct linger lg = {0, 0};
  if (s->kind == IO_PIPE)
    luaL_error(L, "Stream:set_linger: not a socket");
  if (!(lua_isboolean(L, 2) && !lua_toboolean(L, 2))) {
    if (!lua_isnumber(L, 2) || lua_tonumber(L, 2) < 0)
      luaL_error(L, "Stream:set_linger: expected false or seconds (>= 0), "
                    "got %s",
                 luaL_typename(L, 2));
    lg.l_onoff = 1;
    lg.l_linger = (int)lua_tonumber(L, 2);
  }
  if (setsockopt(sock_fd(s), SOL_SOCKET, SO_LINGER, &lg,
                 sizeof lg) != 0)
    return io__fail(L, uv_translate_sys_error(errno), "Stream:set_linger",
                    NULL);
  lua_pushboolean(L, 1);
  return 1;
}

static const char *const kind_names[] = {"?", "tcp", "unix", "pipe"};

static int l_tostring(lua_State *L) {
  io_ud *u = (io_ud *)tidal__checkud(L, 1, TT_STREAM, "Stream:__tostring");
  io_stream *s = (io_stream *)u->core;
  if (s == NULL) {
    lua_pushstring(L, u->state == IO_UD_CLOSED    ? "tidal.Stream (closed)"
                      : u->state == IO_UD_PENDING ? "tidal.Stream (moved here)"
                                                  : "tidal.Stream (moved)");
    return 1;
  }
  if (s->peer.ss_family == AF_INET || s->peer.ss_family == AF_INET6) {
    io__addr_push(L, (struct sockaddr *)&s->peer, sizeof s->peer);
    io__addr_push_label(L, lua_tostring(L, -2), (int)lua_tointeger(L, -1));
    lua_pushfstring(L, "tidal.Stream (%s, peer %s)", kind_names[s->kind],
                    lua_tostring(L, -1));
  } else {
    lua_pushfstring(L, "tidal.Stream (%s)", kind_names[s->kind]);
  }
  return 1;
}

int io__stream_newud(lua_State *L) {
  io__ud_new(L, TT_STREAM, 0);
  return lua_gettop(L);
}

void io__stream_attach(lua_State *L, int ud, io_stream *s) {
  io__ud_attach((io_ud *)lua_touserdata(L, ud), &s->obj);
}

int io__stream_from_fd(io_worker *iw, int kind, int dirs, int fd,
                       size_t rbuf, io_stream **out) {
  io_stream *s = io__stream_new(iw, kind, dirs);
  int rc;
  *out = NULL;
  if (s == NULL) {
    close(fd);
    return UV_ENOMEM;
  }
  if (kind == IO_TCP) { /* bare until it needs the loop */
    s->fd = fd;
    s->f |= SF_BARE;
    go_live(s, rbuf);
    *out = s;
    return 0;
  }
  rc = kind == IO_TCP ? uv_tcp_init(iw->w->loop, &s->u.tcp)
                      : uv_pipe_init(iw->w->loop, &s->u.pipe, 0);
  if (rc != 0) {
    close(fd);
    io__stream_discard(s);
    return rc;
  }
  rc = kind == IO_TCP ? uv_tcp_open(&s->u.tcp, fd)
                      : uv_pipe_open(&s->u.pipe, fd);
  if (rc != 0) {
    close(fd);
    s->f |= SF_CLOSING;
    uv_close(&s->u.h, close_cb);
    return rc;
  }
  rc = io__stream_start(s, rbuf);
  if (rc != 0) {
    io__stream_close(s);
    return rc;
  }
  *out = s;
  return 0;
}

/* ----------------------------------------------------------------- move */

const char *io__stream_busy(io_stream *s) {
  if (s->nparked > 0 || s->nwoken > 0 || s->readers.head ||
      s->writers.head || s->shutters.head)
    return "a task waits on";
  if (s->nwreq > 0 || s->u.s.write_queue_size > 0)
    return "has writes queued in";
  if ((s->f & SF_WSHUT) && !(s->f & SF_SHUTDONE))
    return "is shutting down";
  return NULL;
}

int io__stream_detach(io_stream *s, io_move *m) {
  int fd = sock_fd(s);
  size_t un = unread(s);
  if (fd < 0) return UV_EBADF;
  if (s->f & SF_NODELAY) nodelay_now(s); /* (the socket keeps it) */
  m->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (m->fd < 0) return uv_translate_sys_error(errno);
  if (s->f & SF_READING) uv_read_stop(&s->u.s);
  s->f &= (uint16_t)~(SF_READING | SF_PAUSED);
  m->kind = s->kind;
  m->dirs = s->dirs;
  m->f = s->f & (SF_EOF | SF_WSHUT | SF_SHUTDONE);
  m->rerr = s->rerr;
  m->werr = s->werr;
  m->rmax = s->rmax;
  memcpy(&m->peer, &s->peer, sizeof s->peer);
  if (un > 0) { /* the unread bytes move with it, not copied */
    if (s->rpos > 0) memmove(s->rb.data, s->rb.data + s->rpos, un);
    m->pending = s->rb;
    m->pending.len = un;
    memset(&s->rb, 0, sizeof s->rb);
    s->rpos = 0;
  }
  io__stream_close(s);
  return 0;
}

int io__stream_rebuild(io_worker *iw, io_move *m, io_stream **out) {
  io_stream *s;
  int fd = m->fd, rc;
  m->fd = -1;
  rc = io__stream_from_fd(iw, m->kind, m->dirs, fd, m->rmax, &s);
  if (rc != 0) return rc;
  s->rb = m->pending;
  memset(&m->pending, 0, sizeof m->pending);
  s->f |= m->f;
  s->rerr = m->rerr;
  s->werr = m->werr;
  memcpy(&s->peer, &m->peer, sizeof s->peer);
  *out = s; /* (reading starts with its first wait there) */
  return 0;
}

static const luaL_Reg methods[] = {{"read", l_read},
                                   {"read_exactly", l_read_exactly},
                                   {"read_line", l_read_line},
                                   {"read_all", l_read_all},
                                   {"lines", l_lines},
                                   {"write", l_write},
                                   {"shutdown", l_shutdown},
                                   {"close", l_close},
                                   {"peer", l_peer},
                                   {"local_addr", l_local_addr},
                                   {"buffered", l_buffered},
                                   {"set_nodelay", l_set_nodelay},
                                   {"set_keepalive", l_set_keepalive},
                                   {"set_linger", l_set_linger},
                                   {NULL, NULL}};

static const luaL_Reg meta[] = {{"__gc", l_gc},
                                {"__close", l_close},
                                {"__tostring", l_tostring},
                                {NULL, NULL}};

/* stack: module, ctx */
void io__stream_open(lua_State *L) {
  tidal__newtype(L, TT_STREAM, STREAM_MT, "Stream", meta, methods);
}
