/*
** file.c: tidal.fs.open and the File object, whose methods take the same
** arguments and give the same results as Lua's io files (liolib.c), with
** every read and write done on libuv's thread pool.
**
** Positions. A File keeps its logical position itself and reads with
** pread, writes with pwrite at it, so a seek is arithmetic and mixing
** reads and writes needs no flush dance (this is also what glibc's stdio
** does: reads and writes go to the logical position). Append mode writes
** with write(2) (O_APPEND) and then stands at the end. A descriptor that
** cannot seek (a pipe, a terminal) is read and written in order.
**
** Buffers. rb holds bytes read ahead, starting at the logical position
** (unread = rb[rpos..len)); wb holds bytes written and not yet flushed,
** ending at the logical position. At most one of them is non-empty.
**
** Jobs. One job at a time per file (busy), on the pool: FLUSH, FILL (read
** ahead until a format can complete), STAT, CLOSE, in any combination, so
** a method costs at most one pool round trip. Tasks that find the file
** busy wait in FIFO order. The task that started a job owns it until its
** continuation runs (fsreq.c's protocol); a cancelled job finishes as an
** orphan.
**
** Cancellation. A read parses rb without consuming anything until every
** format of the call has completed, so a cancelled read loses nothing:
** what a fill brought stays in rb for the next read. A write first appends
** to wb; a flush cancelled before it started leaves the bytes in wb (they
** go out with the next flush or close), one cancelled while running
** completes in the background, and a failure is reported by the next
** operation (f->err). A read from a pipe or terminal polls, so cancelling
** it (or the runtime ending) stops it within POLL_MS.
*/
#include "fsreq.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <locale.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ERR (-errno)
#define L_MAXLENNUM 200 /* liolib's limit on a numeral's length */
#define FILL_CHUNK (64 * 1024)
#define POLL_MS 50
#define RB_KEEP (1024 * 1024) /* a read buffer larger than this is freed
                                 when it empties */

/* job parts */
enum { J_FLUSH = 1, J_FILL = 2, J_STAT = 4, J_CLOSE = 8, J_OPEN = 16 };
/* buffering modes */
enum { VB_NO, VB_FULL, VB_LINE };

typedef struct io_file {
  io_obj obj; /* first */
  io_fsreq req; /* the job (busy) */
  int fd;       /* -1 once closed */
  char *path;
  uint8_t rd, wr, append, seekable, vbuf;
  uint8_t busy;  /* req is in use: running, or not yet taken */
  uint8_t eof;   /* the last fill saw the end of the file; the read call
                    it was for consumes it (as liolib's clearerr, each
                    call looks again) */
  uint8_t dead;  /* the runtime ended: close synchronously when idle */
  atomic_int abort; /* 1: stop reading (cancel), 2: stop writing (exit) */
  size_t vsize;
  int64_t pos;  /* the logical position */
  int64_t wstart; /* where wb goes */
  tidal_buf rb;
  size_t rpos;
  tidal_buf wb;
  size_t fill_want; /* FILL: unread bytes wanted (SIZE_MAX: to EOF) */
  uint8_t fill_line; /* FILL: stop at a newline */
  int err;      /* a failure of a background flush, reported next */
  tidal_wq waiters;
} io_file;

/* ------------------------------------------------------ syscalls (pool) */

static void file_free(io_file *f) {
  tidal__buf_free(&f->rb);
  tidal__buf_free(&f->wb);
  free(f->req.path);
  free(f->path);
  free(f);
}

/* Waits until fd is ready for events (a pipe, a terminal), or the file is
** aborted (at least level) and it is not ready now: 0, UV_ECANCELED or an
** error. */
static int wait_ready(io_file *f, short events, int level) {
  struct pollfd p;
  p.fd = f->fd;
  p.events = events;
  for (;;) {
    int aborted = atomic_load(&f->abort) >= level, n;
    p.revents = 0;
    n = poll(&p, 1, aborted ? 0 : POLL_MS);
    if (n > 0) return 0; /* (an error or hangup: the syscall reports it) */
    if (n < 0 && errno != EINTR) return ERR;
    if (aborted) return UV_ECANCELED;
  }
}

/* Writes wb out; the bytes are gone either way (a failure is sticky in
** f->err, as a stdio stream's error flag). */
static int flush_wb(io_file *f) {
  const char *p = f->wb.data;
  size_t n = f->wb.len;
  int64_t at = f->wstart;
  int rc = 0;
  while (n > 0) {
    ssize_t k;
    if (!f->seekable && (rc = wait_ready(f, POLLOUT, 2)) != 0) break;
    if (f->seekable && !f->append)
      k = pwrite(f->fd, p, n, (off_t)at);
    else
      k = write(f->fd, p, n);
    if (k < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      rc = ERR;
      break;
    }
    p += k;
    n -= (size_t)k;
    at += k;
  }
  f->wb.len = 0;
  if (rc == 0 && f->append && f->seekable) {
    off_t end = lseek(f->fd, 0, SEEK_CUR); /* O_APPEND left it at the end */
    if (end >= 0) f->pos = end;
  }
  if (rc != 0 && f->err == 0) f->err = rc;
  if (f->wb.cap > RB_KEEP) tidal__buf_free(&f->wb);
  return rc;
}

static int has_newline(const char *p, size_t n) {
  return memchr(p, '\n', n) != NULL;
}

/* Reads ahead: until fill_want bytes are unread, a newline came
** (fill_line), or the end of the file (f->eof). */
static int fill_rb(io_file *f) {
  struct stat st;
  size_t hint = FILL_CHUNK;
  if (f->fill_want == SIZE_MAX && !f->fill_line && f->seekable &&
      fstat(f->fd, &st) == 0 && S_ISREG(st.st_mode)) {
    int64_t left = (int64_t)st.st_size - (f->pos + (int64_t)(f->rb.len -
                                                             f->rpos));
    if (left > 0 && (uint64_t)left < SIZE_MAX / 2) hint = (size_t)left + 1;
  }
  for (;;) {
    size_t unread = f->rb.len - f->rpos, room;
    ssize_t k;
    if (unread >= f->fill_want) return 0;
    if (atomic_load(&f->abort) >= 1) return UV_ECANCELED; /* (what came
                                                             stays in rb) */
    room = f->fill_want == SIZE_MAX ? hint : f->fill_want - unread;
    if (room < FILL_CHUNK) room = FILL_CHUNK;
    if (f->rb.cap - f->rb.len < room && tidal__buf_grow(&f->rb, room) != 0)
      return UV_ENOMEM;
    room = f->rb.cap - f->rb.len;
    if (f->seekable) {
      k = pread(f->fd, f->rb.data + f->rb.len, room,
                (off_t)(f->pos + (int64_t)unread));
    } else {
      int rc = wait_ready(f, POLLIN, 1);
      if (rc != 0) return rc;
      k = read(f->fd, f->rb.data + f->rb.len, room);
    }
    if (k < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return ERR;
    }
    if (k == 0) {
      f->eof = 1;
      return 0;
    }
    f->rb.len += (size_t)k;
    hint = FILL_CHUNK;
    if (f->fill_line && has_newline(f->rb.data + f->rb.len - k, (size_t)k))
      return 0;
  }
}

static void job_file(io_fsreq *r) {
  io_file *f = (io_file *)r->obj;
  int rc = 0;
  if (r->op & J_OPEN) {
    int fd = open(r->path, r->flags | O_CLOEXEC, 0666);
    if (fd < 0) {
      r->result = ERR;
      return;
    }
    f->fd = fd;
    f->seekable = lseek(fd, 0, SEEK_CUR) >= 0;
    if (f->seekable && r->mode) { /* "a": starts at the end, as stdio */
      off_t end = lseek(fd, 0, SEEK_END);
      if (end >= 0) f->pos = end;
    }
    r->result = 0;
    return;
  }
  if ((r->op & J_FLUSH) && f->wb.len > 0) flush_wb(f);
  if ((r->op & J_FILL) && f->err == 0) rc = fill_rb(f);
  if ((r->op & J_STAT) && fstat(f->fd, &r->st) != 0) rc = ERR;
  if (r->op & J_CLOSE) {
    if (close(f->fd) != 0 && errno != EINTR && f->err == 0) f->err = ERR;
    f->fd = -1;
  }
  r->result = rc;
}

/* ---------------------------------------------------- lifetime (loop) */

static void maybe_free(io_file *f) {
  if (!f->busy && f->fd < 0 && f->obj.ud == NULL) file_free(f);
}

/* Synchronously, on the loop thread: the runtime is ending. */
static void close_now(io_file *f) {
  if (f->fd >= 0) {
    if (f->wb.len > 0) flush_wb(f);
    close(f->fd);
    f->fd = -1;
  }
  maybe_free(f);
}

static void wake_head(io_file *f) {
  tidal_task *t = tidal__wq_pop(&f->waiters);
  if (t != NULL) tidal__wake(t, 0);
}

static int start_job(io_file *f, int op, tidal_task *t);

/* The job is done and taken: the file is idle again. f may be freed. */
static void job_done(io_file *f) {
  f->busy = 0;
  f->req.task = NULL;
  if (f->dead) { /* (abort stays: a stuck pipe must not hold up the exit) */
    close_now(f);
    return;
  }
  atomic_store(&f->abort, 0);
  if (f->obj.ud == NULL && f->fd >= 0) {
    /* closed or collected while busy, or its close job was cancelled
    ** before it started: close it in the background */
    if (start_job(f, J_FLUSH | J_CLOSE, NULL) != 0) close_now(f);
    return;
  }
  if (f->waiters.head != NULL) wake_head(f);
  maybe_free(f);
}

static void job_release(io_fsreq *r) { /* (an orphan's: nobody reads) */
  io_file *f = (io_file *)r->obj;
  f->eof = 0;
  job_done(f);
}

static void open_orphan(io_fsreq *r) {
  io_file *f = (io_file *)r->obj;
  if (f->fd >= 0) {
    close(f->fd);
    f->fd = -1;
  }
}

/* 0, or a UV error (nothing started). */
static int start_job(io_file *f, int op, tidal_task *t) {
  int rc;
  if (op & J_FILL) { /* move the unread bytes to the front first */
    size_t unread = f->rb.len - f->rpos;
    if (f->rpos > 0 && unread > 0)
      memmove(f->rb.data, f->rb.data + f->rpos, unread);
    f->rb.len = unread;
    f->rpos = 0;
  }
  f->req.op = op;
  f->req.result = 0;
  f->req.orphan = (op & J_OPEN) ? open_orphan : NULL;
  f->req.task = t;
  f->busy = 1;
  rc = io__fsreq_start(&f->req);
  if (rc != 0) {
    f->busy = 0;
    f->req.task = NULL;
  }
  return rc;
}

/* The cancel of a task parked on its file's job. */
static int job_cancel(tidal_task *t) {
  io_file *f = (io_file *)t->wobj;
  if (uv_cancel((uv_req_t *)&f->req.work) != 0)
    atomic_store(&f->abort, 1); /* running: a pipe read stops */
  f->req.task = NULL;
  return 1;
}

/* A task parked on a job, and in the continuation, the job taken back. */
static int park_job(lua_State *L, tidal_task *t, io_file *f,
                    const tidal_waitop *op, lua_KFunction k) {
  lua_pushlightuserdata(L, f); /* (t->wobj is cleared by the wake) */
  return tidal__park(L, t, op, f, k);
}

static io_file *take_job(lua_State *L, tidal_task *t) {
  io_file *f = (io_file *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (t->flags & TF_WAKECANCEL) tidal__resumed(L, t); /* an orphan now */
  if (t->cancel | t->tmo) { /* done, but cancelled before we ran */
    if (f->req.orphan) f->req.orphan(&f->req);
    f->eof = 0; /* (nobody reads for it) */
    job_done(f);
    tidal__resumed(L, t); /* raises */
  }
  return f;
}

/* ----------------------------------------------------------- userdata */

#define F_CLOSED_MSG "attempt to use a closed file"

static io_file *tofile(lua_State *L, const char *fname) {
  return (io_file *)io__check(L, TT_FILE, fname);
}

static void file_push_err(lua_State *L, io_file *f, int rc,
                          const char *fname) {
  io__fail(L, rc, fname, "%s", f->path);
  io__error_field(L, "path", f->path);
}

/* "nil, err" for the deferred error, cleared */
static int deferred(lua_State *L, io_file *f, const char *fname) {
  int rc = f->err;
  f->err = 0;
  file_push_err(L, f, rc, fname);
  return 2;
}

static int fail(lua_State *L, io_file *f, int rc, const char *fname) {
  file_push_err(L, f, rc, fname);
  return 2;
}

/* ----------------------------------------------------- waiting for idle */

static int queued_cancel(tidal_task *t) {
  io_file *f = (io_file *)t->wobj;
  tidal__wq_remove(&f->waiters, t);
  return 1;
}

/*
** Each method runs its body again when the file is idle. A task that
** finds it busy waits in the queue (front again when it finds it busy
** once more, so the order is kept); one that is woken and finds it idle
** wakes the next one too, which then finds it busy or idle in turn.
*/
typedef struct method {
  const char *name;
  int (*body)(lua_State *L, tidal_task *t, io_file *f);
  tidal_waitop queued; /* waiting for the file to be idle */
  tidal_waitop job;    /* waiting for its job */
} method;

static int queued_k(lua_State *L, int status, lua_KContext kc);
static int body_close(lua_State *L, tidal_task *t, io_file *f);
static int body_tbc(lua_State *L, tidal_task *t, io_file *f);

static int wait_idle(lua_State *L, tidal_task *t, io_file *f,
                     const method *m, int front) {
  if (front)
    tidal__wq_push_front(&f->waiters, t);
  else
    tidal__wq_push(&f->waiters, t);
  lua_pushlightuserdata(L, (void *)m);
  return tidal__park(L, t, &m->queued, f, queued_k);
}

static int queued_k(lua_State *L, int status, lua_KContext kc) {
  tidal_task *t = (tidal_task *)kc;
  const method *m = (const method *)lua_touserdata(L, -1);
  io_ud *u = (io_ud *)lua_touserdata(L, 1);
  io_file *f = (io_file *)u->core;
  (void)status;
  lua_pop(L, 1);
  if (tidal__wake_lost(t) && f != NULL && !f->busy) wake_head(f);
  tidal__resumed(L, t);
  if (f == NULL) { /* closed meanwhile */
    if (m->body == body_close || m->body == body_tbc) {
      lua_pushboolean(L, 1);
      return 1;
    }
    lua_pushnil(L);
    tidal__error_push(L, "closed", "%s: the file was closed", m->name);
    return 2;
  }
  if (f->busy) return wait_idle(L, t, f, m, 1);
  if (f->waiters.head != NULL) wake_head(f);
  return m->body(L, t, f);
}

/* Entry of every method: the file at 1, checked; runs the body now or
** once the file is idle. */
static int enter(lua_State *L, const method *m) {
  tidal_task *t = tidal__wait_begin(L, m->name);
  io_file *f = tofile(L, m->name);
  if (f->busy || f->waiters.head != NULL) return wait_idle(L, t, f, m, 0);
  return m->body(L, t, f);
}

/* ---------------------------------------------------------------- read */

/* A cursor over the unread bytes, during one read call. */
typedef struct cursor {
  const char *p;
  size_t n, i; /* bytes, position */
  int eof;     /* nothing comes after p[n) */
  size_t want; /* when more is needed: unread bytes wanted (SIZE_MAX: to
                  EOF, or to a newline if line) */
  int line;
} cursor;

enum { P_OK, P_FAIL, P_MORE };

static int more(cursor *c, size_t want, int line) {
  c->want = want;
  c->line = line;
  return P_MORE;
}

static int read_line(lua_State *L, cursor *c, int chop) {
  const char *s = c->p + c->i;
  size_t left = c->n - c->i;
  const char *nl = left ? (const char *)memchr(s, '\n', left) : NULL;
  if (nl != NULL) {
    size_t len = (size_t)(nl - s);
    lua_pushlstring(L, s, chop ? len : len + 1);
    c->i += len + 1;
    return P_OK;
  }
  if (!c->eof) return more(c, SIZE_MAX, 1);
  lua_pushlstring(L, s, left);
  c->i = c->n;
  return left > 0 ? P_OK : P_FAIL;
}

static int read_chars(lua_State *L, cursor *c, size_t k) {
  size_t left = c->n - c->i;
  if (left < k && !c->eof)
    return more(c, k > SIZE_MAX - c->i ? SIZE_MAX : c->i + k, 0);
  if (k > left) k = left;
  lua_pushlstring(L, c->p + c->i, k);
  c->i += k;
  return k > 0 ? P_OK : P_FAIL;
}

static int test_eof(lua_State *L, cursor *c) {
  if (c->i >= c->n && !c->eof) return more(c, c->i + 1, 0);
  lua_pushliteral(L, "");
  return c->i < c->n ? P_OK : P_FAIL;
}

static int read_all(lua_State *L, cursor *c) {
  if (!c->eof) return more(c, SIZE_MAX, 0);
  lua_pushlstring(L, c->p + c->i, c->n - c->i);
  c->i = c->n;
  return P_OK;
}

/* liolib's read_number over the cursor: the look-ahead character is the
** one at c->i, consumed only when taken into the numeral. */
typedef struct RN {
  cursor *c;
  int ch;   /* look-ahead, or EOF */
  int n;    /* characters in buff */
  int more; /* ran into the end of what is buffered (not EOF) */
  char buff[L_MAXLENNUM + 1];
} RN;

static int peek(RN *rn) {
  cursor *c = rn->c;
  if (c->i < c->n) return (unsigned char)c->p[c->i];
  if (!c->eof) rn->more = 1;
  return EOF;
}

static int nextc(RN *rn) {
  if (rn->n >= L_MAXLENNUM) {
    rn->buff[0] = '\0';
    return 0;
  }
  rn->buff[rn->n++] = (char)rn->ch;
  rn->c->i++;
  rn->ch = peek(rn);
  return 1;
}

static int test2(RN *rn, const char *set) {
  if (rn->ch != EOF && (rn->ch == set[0] || rn->ch == set[1]))
    return nextc(rn);
  return 0;
}

static int readdigits(RN *rn, int hex) {
  int count = 0;
  while (rn->ch != EOF && (hex ? isxdigit(rn->ch) : isdigit(rn->ch)) &&
         nextc(rn))
    count++;
  return count;
}

static int read_number(lua_State *L, cursor *c) {
  RN rn;
  int count = 0, hex = 0;
  char decp[2];
  rn.c = c;
  rn.n = 0;
  rn.more = 0;
  decp[0] = lua_getlocaledecpoint();
  decp[1] = '.';
  while ((rn.ch = peek(&rn)) != EOF && isspace(rn.ch)) c->i++;
  test2(&rn, "-+");
  if (test2(&rn, "00")) {
    if (test2(&rn, "xX"))
      hex = 1;
    else
      count = 1;
  }
  count += readdigits(&rn, hex);
  if (test2(&rn, decp)) count += readdigits(&rn, hex);
  if (count > 0 && test2(&rn, hex ? "pP" : "eE")) {
    test2(&rn, "-+");
    readdigits(&rn, 0);
  }
  if (rn.more) return more(c, c->n + 1, 0);
  rn.buff[rn.n] = '\0';
  if (lua_stringtonumber(L, rn.buff)) return P_OK;
  lua_pushnil(L);
  return P_FAIL;
}

/* The formats from stack index first (n of them; 0: one "l"). */
static int check_formats(lua_State *L, int first, int n, const char *fname) {
  for (int i = first; i < first + n; i++) {
    if (lua_type(L, i) == LUA_TNUMBER) {
      int isint;
      lua_Integer k = lua_tointegerx(L, i, &isint);
      if (!isint || k < 0)
        return luaL_error(L, "%s: a byte count must be a non-negative "
                             "integer, got %s",
                          fname, lua_tostring(L, i));
    } else {
      const char *p = lua_tostring(L, i);
      if (lua_type(L, i) != LUA_TSTRING)
        return luaL_error(L, "%s: invalid format (a %s; use \"n\", \"l\", "
                             "\"L\", \"a\" or a byte count)",
                          fname, luaL_typename(L, i));
      if (*p == '*') p++;
      if (strchr("nlLa", *p) == NULL || *p == '\0')
        return luaL_error(L, "%s: invalid format '%s' (use \"n\", \"l\", "
                             "\"L\", \"a\" or a byte count)",
                          fname, lua_tostring(L, i));
    }
  }
  return 0;
}

/* Parses the formats at first..first+n-1 (n == 0: "l") over the cursor,
** pushing one value per format, nil for the first that fails and none
** after it. P_MORE: nothing pushed (the caller's top is restored). */
static int parse(lua_State *L, cursor *c, int first, int n, int *nres) {
  int top = lua_gettop(L), st = P_OK, i;
  luaL_checkstack(L, n + LUA_MINSTACK, "too many arguments");
  if (n == 0) {
    st = read_line(L, c, 1);
    i = 1;
  } else {
    for (i = 0; i < n && st == P_OK; i++) {
      int idx = first + i;
      if (lua_type(L, idx) == LUA_TNUMBER) {
        size_t k = (size_t)lua_tointeger(L, idx);
        st = k == 0 ? test_eof(L, c) : read_chars(L, c, k);
      } else {
        const char *p = lua_tostring(L, idx);
        if (*p == '*') p++;
        switch (*p) {
        case 'n': st = read_number(L, c); break;
        case 'l': st = read_line(L, c, 1); break;
        case 'L': st = read_line(L, c, 0); break;
        default: st = read_all(L, c); break;
        }
      }
    }
  }
  if (st == P_MORE) {
    lua_settop(L, top);
    return P_MORE;
  }
  if (st == P_FAIL) {
    lua_pop(L, 1);
    lua_pushnil(L);
  }
  *nres = n == 0 ? 1 : i;
  return st;
}

enum { RD_READ, RD_LINES };

static int read_k(lua_State *L, int status, lua_KContext kc);
static int lines_k(lua_State *L, int status, lua_KContext kc);
static const method m_read, m_lines;

/* The read itself; stack: file, formats (2..top). */
static int read_body(lua_State *L, tidal_task *t, io_file *f, int mode) {
  const method *m = mode == RD_LINES ? &m_lines : &m_read;
  int nfmt = lua_gettop(L) - 1, nres = 0, st;
  cursor c;
  c.eof = f->eof && f->wb.len == 0;
  f->eof = 0; /* (this call consumes it) */
  if (f->err != 0) return deferred(L, f, m->name);
  if (!f->rd) return fail(L, f, UV_EBADF, m->name);
  c.p = f->rb.data ? f->rb.data + f->rpos : "";
  c.n = f->rb.len - f->rpos;
  c.i = 0;
  st = parse(L, &c, 2, nfmt, &nres);
  if (st == P_MORE) {
    int rc;
    f->fill_want = c.want;
    f->fill_line = (uint8_t)c.line;
    rc = start_job(f, J_FLUSH | J_FILL, t);
    if (rc != 0) return fail(L, f, rc, m->name);
    return park_job(L, t, f, &m->job, mode == RD_LINES ? lines_k : read_k);
  }
  /* consume what the formats took */
  f->rpos += c.i;
  f->pos += (int64_t)c.i;
  if (f->rpos == f->rb.len) {
    f->rpos = f->rb.len = 0;
    if (f->rb.cap > RB_KEEP) tidal__buf_free(&f->rb);
  }
  return nres;
}

/* after a fill: an error, or parse again */
static int fill_done(lua_State *L, tidal_task *t, int mode) {
  io_file *f = take_job(L, t);
  const method *m = mode == RD_LINES ? &m_lines : &m_read;
  int rc = f->req.result;
  job_done(f); /* (the file stays open: its userdata is at 1) */
  if (rc < 0) return fail(L, f, rc, m->name);
  return read_body(L, t, f, mode);
}

static int read_k(lua_State *L, int status, lua_KContext kc) {
  (void)status;
  return fill_done(L, (tidal_task *)kc, RD_READ);
}

static int body_read(lua_State *L, tidal_task *t, io_file *f) {
  return read_body(L, t, f, RD_READ);
}

static const method m_read = {"File:read",
                              body_read,
                              {"File:read (queued)", queued_cancel, NULL},
                              {"File:read", job_cancel, NULL}};

static const tidal_restart r_read;

static int l_read(lua_State *L) {
  tidal_task *t = tidal__wait_begin(L, m_read.name);
  tofile(L, m_read.name);
  check_formats(L, 2, lua_gettop(L) - 1, m_read.name);
  TIDAL_SPEND(L, t, &r_read);
  return enter(L, &m_read);
}

static const tidal_restart r_read = {l_read};

/* --------------------------------------------------------------- lines */

/* The iterator's results: values, nothing at the end, or raise. */
static int lines_result(lua_State *L, int n) {
  if (n > 0 && lua_toboolean(L, -n)) return n;
  if (n > 1) return lua_error(L); /* nil, err: raise err */
  return 0;
}

static int lines_k(lua_State *L, int status, lua_KContext kc) {
  (void)status;
  return lines_result(L, fill_done(L, (tidal_task *)kc, RD_LINES));
}

static int body_lines(lua_State *L, tidal_task *t, io_file *f) {
  return lines_result(L, read_body(L, t, f, RD_LINES));
}

static const method m_lines = {"File:lines",
                               body_lines,
                               {"File:lines (queued)", queued_cancel, NULL},
                               {"File:lines", job_cancel, NULL}};

static const tidal_restart r_lines_iter;

/* upvalues: ctx, file, n, formats... */
static int lines_iter(lua_State *L) {
  int n = (int)lua_tointeger(L, lua_upvalueindex(3)), i;
  io_ud *u = (io_ud *)lua_touserdata(L, lua_upvalueindex(2));
  tidal_task *t = tidal__wait_begin(L, m_lines.name);
  if (u->core == NULL) return luaL_error(L, "File:lines: file is already closed");
  lua_settop(L, 0);
  luaL_checkstack(L, n + LUA_MINSTACK, "too many arguments");
  lua_pushvalue(L, lua_upvalueindex(2));
  for (i = 1; i <= n; i++) lua_pushvalue(L, lua_upvalueindex(3 + i));
  TIDAL_SPEND(L, t, &r_lines_iter);
  return enter(L, &m_lines);
}

static const tidal_restart r_lines_iter = {lines_iter};

#define MAXARGLINE 250

static int l_lines(lua_State *L) {
  int n = lua_gettop(L) - 1;
  tofile(L, "File:lines");
  if (n > MAXARGLINE)
    return luaL_error(L, "File:lines: too many formats (at most %d)",
                      MAXARGLINE);
  check_formats(L, 2, n, "File:lines");
  lua_pushvalue(L, lua_upvalueindex(1)); /* ctx */
  lua_pushvalue(L, 1);
  lua_pushinteger(L, n);
  lua_rotate(L, 2, 3); /* ctx, file, n before the formats */
  lua_pushcclosure(L, lines_iter, 3 + n);
  return 1;
}

/* --------------------------------------------------------------- write */

static const method m_write;

/* after a flush: the file (at 1) for write, true for flush (as io's); or
** the error */
static int flush_done(lua_State *L, tidal_task *t, const char *fname) {
  io_file *f = take_job(L, t);
  job_done(f);
  if (f->err != 0) return deferred(L, f, fname);
  if (fname == m_write.name) {
    lua_settop(L, 1);
  } else {
    lua_pushboolean(L, 1);
  }
  return 1;
}

static int write_k(lua_State *L, int status, lua_KContext kc) {
  (void)status;
  return flush_done(L, (tidal_task *)kc, m_write.name);
}

static int body_write(lua_State *L, tidal_task *t, io_file *f) {
  int top = lua_gettop(L), i, rc;
  size_t added = 0;
  if (f->err != 0) return deferred(L, f, m_write.name);
  if (!f->wr) return fail(L, f, UV_EBADF, m_write.name);
  if (f->rb.len > 0) f->rpos = f->rb.len = 0; /* the read-ahead is stale */
  if (f->wb.len == 0) f->wstart = f->pos;
  for (i = 2; i <= top; i++) {
    char num[64];
    const char *s;
    size_t len;
    if (lua_type(L, i) == LUA_TNUMBER) {
      int k = lua_isinteger(L, i)
                  ? snprintf(num, sizeof num, LUA_INTEGER_FMT,
                             (LUAI_UACINT)lua_tointeger(L, i))
                  : snprintf(num, sizeof num, LUA_NUMBER_FMT,
                             (LUAI_UACNUMBER)lua_tonumber(L, i));
      s = num;
      len = (size_t)k;
    } else {
      s = lua_tolstring(L, i, &len);
    }
    if (tidal__buf_add(&f->wb, s, len) != 0)
      return fail(L, f, UV_ENOMEM, m_write.name);
    f->pos += (int64_t)len;
    added += len;
  }
  if (f->wb.len == 0) {
    lua_settop(L, 1);
    return 1;
  }
  if (f->vbuf == VB_NO || f->wb.len >= f->vsize ||
      (f->vbuf == VB_LINE &&
       has_newline(f->wb.data + f->wb.len - added, added))) {
    rc = start_job(f, J_FLUSH, t);
    if (rc != 0) return fail(L, f, rc, m_write.name);
    lua_settop(L, 1);
    return park_job(L, t, f, &m_write.job, write_k);
  }
  lua_settop(L, 1);
  return 1;
}

static const method m_write = {"File:write",
                               body_write,
                               {"File:write (queued)", queued_cancel, NULL},
                               {"File:write", job_cancel, NULL}};

static const tidal_restart r_write;

static int l_write(lua_State *L) {
  tidal_task *t = tidal__wait_begin(L, m_write.name);
  int top = lua_gettop(L);
  tofile(L, m_write.name);
  for (int i = 2; i <= top; i++) {
    int ty = lua_type(L, i);
    if (ty != LUA_TSTRING && ty != LUA_TNUMBER)
      return luaL_error(L, "File:write: argument #%d must be a string or a "
                           "number, got %s",
                        i - 1, luaL_typename(L, i));
  }
  TIDAL_SPEND(L, t, &r_write);
  return enter(L, &m_write);
}

static const tidal_restart r_write = {l_write};

/* --------------------------------------------------------------- flush */

static const method m_flush;

static int flush_only_k(lua_State *L, int status, lua_KContext kc) {
  (void)status;
  return flush_done(L, (tidal_task *)kc, m_flush.name);
}

static int body_flush(lua_State *L, tidal_task *t, io_file *f) {
  if (f->err != 0) return deferred(L, f, m_flush.name);
  lua_settop(L, 1);
  if (f->wb.len > 0) {
    int rc = start_job(f, J_FLUSH, t);
    if (rc != 0) return fail(L, f, rc, m_flush.name);
    return park_job(L, t, f, &m_flush.job, flush_only_k);
  }
  lua_pushboolean(L, 1);
  return 1;
}

static const method m_flush = {"File:flush",
                               body_flush,
                               {"File:flush (queued)", queued_cancel, NULL},
                               {"File:flush", job_cancel, NULL}};

static int l_flush(lua_State *L) {
  return enter(L, &m_flush);
}

/* ---------------------------------------------------------------- seek */

static const method m_seek;

static int seek_k(lua_State *L, int status, lua_KContext kc);

static int body_seek(lua_State *L, tidal_task *t, io_file *f) {
  static const char *const names[] = {"set", "cur", "end", NULL};
  int op = luaL_checkoption(L, 2, "cur", names);
  lua_Integer off = luaL_optinteger(L, 3, 0), base, np;
  size_t unread = f->rb.len - f->rpos;
  if (f->err != 0) return deferred(L, f, m_seek.name);
  if (!f->seekable) return fail(L, f, UV_ESPIPE, m_seek.name);
  if (f->wb.len > 0) { /* as fseek: write out first */
    int rc = start_job(f, J_FLUSH, t);
    if (rc != 0) return fail(L, f, rc, m_seek.name);
    return park_job(L, t, f, &m_seek.job, seek_k);
  }
  if (op == 0) {
    base = 0;
  } else if (op == 1) {
    base = f->pos;
  } else {
    off_t end = lseek(f->fd, 0, SEEK_END); /* (no I/O: the inode's size) */
    if (end < 0) return fail(L, f, ERR, m_seek.name);
    base = end;
  }
  if ((off > 0 && base > INT64_MAX - off) || base + off < 0)
    return fail(L, f, UV_EINVAL, m_seek.name);
  np = base + off;
  if (np >= f->pos && np <= f->pos + (lua_Integer)unread) {
    f->rpos += (size_t)(np - f->pos); /* within the read-ahead: keep it */
  } else {
    f->rpos = f->rb.len = 0;
  }
  if (f->rpos == f->rb.len) f->rpos = f->rb.len = 0;
  f->pos = np;
  lua_pushinteger(L, np);
  return 1;
}

static int seek_k(lua_State *L, int status, lua_KContext kc) {
  tidal_task *t = (tidal_task *)kc;
  io_file *f = take_job(L, t);
  (void)status;
  job_done(f);
  return body_seek(L, t, f); /* (a flush error is reported there) */
}

static const method m_seek = {"File:seek",
                              body_seek,
                              {"File:seek (queued)", queued_cancel, NULL},
                              {"File:seek", job_cancel, NULL}};

static const tidal_restart r_seek;

static int l_seek(lua_State *L) {
  static const char *const names[] = {"set", "cur", "end", NULL};
  tidal_task *t = tidal__wait_begin(L, m_seek.name);
  const char *w;
  tofile(L, m_seek.name);
  w = luaL_optstring(L, 2, "cur");
  for (int i = 0;; i++) {
    if (names[i] == NULL)
      return luaL_error(L, "File:seek: invalid whence '%s' (use \"set\", "
                           "\"cur\" or \"end\")",
                        w);
    if (strcmp(names[i], w) == 0) break;
  }
  if (!lua_isnoneornil(L, 3) && !lua_isinteger(L, 3))
    return luaL_error(L, "File:seek: the offset must be an integer, got %s",
                      lua_type(L, 3) == LUA_TNUMBER ? lua_tostring(L, 3)
                                                    : luaL_typename(L, 3));
  lua_settop(L, 3);
  TIDAL_SPEND(L, t, &r_seek);
  return enter(L, &m_seek);
}

static const tidal_restart r_seek = {l_seek};

/* ------------------------------------------------------------ setvbuf */

static int l_setvbuf(lua_State *L) {
  static const char *const names[] = {"no", "full", "line", NULL};
  io_file *f = tofile(L, "File:setvbuf");
  const char *m = luaL_checkstring(L, 2);
  lua_Integer size = luaL_optinteger(L, 3, IO_FILE_BUF);
  int op;
  for (op = 0; names[op] != NULL && strcmp(names[op], m) != 0; op++) {
  }
  if (names[op] == NULL)
    return luaL_error(L, "File:setvbuf: invalid mode '%s' (use \"no\", "
                         "\"full\" or \"line\")",
                      m);
  f->vbuf = (uint8_t)op;
  f->vsize = size > 0 ? (size_t)size : 1;
  lua_pushboolean(L, 1);
  return 1;
}

/* ---------------------------------------------------------------- stat */

static const method m_stat;

static int stat_k(lua_State *L, int status, lua_KContext kc) {
  tidal_task *t = (tidal_task *)kc;
  io_file *f = take_job(L, t);
  int rc = f->req.result;
  struct stat st = f->req.st;
  (void)status;
  job_done(f);
  if (f->err != 0) return deferred(L, f, m_stat.name);
  if (rc < 0) return fail(L, f, rc, m_stat.name);
  io__push_stat(L, &st);
  return 1;
}

static int body_stat(lua_State *L, tidal_task *t, io_file *f) {
  int rc = start_job(f, J_FLUSH | J_STAT, t);
  if (rc != 0) return fail(L, f, rc, m_stat.name);
  lua_settop(L, 1);
  return park_job(L, t, f, &m_stat.job, stat_k);
}

static const method m_stat = {"File:stat",
                              body_stat,
                              {"File:stat (queued)", queued_cancel, NULL},
                              {"File:stat", job_cancel, NULL}};

static int l_stat(lua_State *L) {
  return enter(L, &m_stat);
}

/* --------------------------------------------------------------- close */

static const method m_close;

/* The file stops being usable now: its userdata reads as closed, and the
** tasks waiting for it get "closed". */
static void detach(io_file *f) {
  tidal_task *t;
  io__ud_detach(&f->obj, IO_UD_CLOSED);
  if (f->obj.iw != NULL) io__live_remove(f->obj.iw, &f->obj);
  while ((t = tidal__wq_pop(&f->waiters)) != NULL) tidal__wake(t, 0);
}

/* the path (uservalue 1 of the userdata at 1) in an error for rc */
static int fail_ud(lua_State *L, int rc, const char *fname) {
  const char *path;
  lua_getiuservalue(L, 1, 1);
  path = lua_tostring(L, -1);
  io__fail(L, rc, fname, "%s", path);
  io__error_field(L, "path", path);
  return 2;
}

static int close_k(lua_State *L, int status, lua_KContext kc) {
  tidal_task *t = (tidal_task *)kc;
  io_file *f = take_job(L, t);
  int err = f->err;
  (void)status;
  job_done(f); /* (frees f) */
  if (err != 0) return fail_ud(L, err, m_close.name);
  lua_pushboolean(L, 1);
  return 1;
}

static int body_close(lua_State *L, tidal_task *t, io_file *f) {
  int rc;
  detach(f);
  rc = start_job(f, J_FLUSH | J_CLOSE, t);
  if (rc != 0) {
    close_now(f);
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_settop(L, 1);
  return park_job(L, t, f, &m_close.job, close_k);
}

/* __close with no error unwinding, in a task: as close(), raising a
** failure (a write that could not be flushed is never lost silently) */
static int tbc_k(lua_State *L, int status, lua_KContext kc) {
  if (close_k(L, status, kc) == 2) return lua_error(L);
  return 0;
}

static int body_tbc(lua_State *L, tidal_task *t, io_file *f) {
  int rc;
  detach(f);
  rc = start_job(f, J_FLUSH | J_CLOSE, t);
  if (rc != 0) {
    close_now(f);
    return 0;
  }
  lua_settop(L, 1);
  return park_job(L, t, f, &m_close.job, tbc_k);
}

static const method m_close = {"File:close",
                               body_close,
                               {"File:close (queued)", queued_cancel, NULL},
                               {"File:close", job_cancel, NULL}};

static const method m_tbc = {"File:__close",
                             body_tbc,
                             {"File:__close (queued)", queued_cancel, NULL},
                             {"File:__close", job_cancel, NULL}};

static int l_close(lua_State *L) {
  io_ud *u = io__ud(L, TT_FILE, m_close.name);
  if (u->core == NULL) { /* closed already: nothing to do */
    lua_pushboolean(L, 1);
    return 1;
  }
  return enter(L, &m_close);
}

/* ------------------------------------------------------ gc, tostring */

/* The userdata is collected (or closed without waiting): close the file
** in the background. */
static void close_background(io_file *f) {
  detach(f);
  if (f->busy) return; /* (job_done closes it) */
  if (start_job(f, J_FLUSH | J_CLOSE, NULL) != 0) close_now(f);
}

static int l_gc(lua_State *L) {
  io_ud *u = (io_ud *)tidal__checkud(L, 1, TT_FILE, "File:__gc");
  io__ud_unhot(L, TT_FILE, u);
  if (u->core != NULL) close_background((io_file *)u->core);
  return 0;
}

/* <close>: leaving the scope normally in a task closes it as close() does
** (waiting, and raising a failure); otherwise (an error unwinding, no
** task) it closes in the background, as the collector does. */
static int l_tbc(lua_State *L) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  io_ud *u = io__ud(L, TT_FILE, "File:__close");
  io_file *f = (io_file *)u->core;
  tidal_task *t = ctx->cur;
  if (f == NULL) return 0;
  if (lua_isnil(L, 2) && t != NULL && t->co == L && lua_isyieldable(L) &&
      f->obj.iw != NULL && f->obj.iw->w == ctx->w)
    return enter(L, &m_tbc);
  close_background(f);
  return 0;
}

static int l_tostring(lua_State *L) {
  io_ud *u = io__ud(L, TT_FILE, "File:__tostring");
  io_file *f = (io_file *)u->core;
  if (f == NULL)
    lua_pushliteral(L, "tidal.File (closed)");
  else
    lua_pushfstring(L, "tidal.File (%s)", f->path);
  return 1;
}

/* shutdown hook: the runtime ends (the userdata is detached already) */
static void file_shutdown(io_obj *o) {
  io_file *f = (io_file *)o;
  tidal_task *t;
  while ((t = tidal__wq_pop(&f->waiters)) != NULL) { /* (none by now) */
  }
  f->obj.iw = NULL;
  f->dead = 1;
  atomic_store(&f->abort, 2); /* a stuck pipe must not hold up the exit */
  if (f->busy) return;        /* (the job's end closes it) */
  close_now(f);
}

/* ---------------------------------------------------------------- open */

/* mode as io.open's: [rwa]%+?b*, and 'x' (O_EXCL) after w as C11 */
static int parse_mode(const char *m, int *flags, int *rd, int *wr,
                      int *append_end) {
  int plus = 0, fl;
  char c = *m++;
  if (c != 'r' && c != 'w' && c != 'a') return 0;
  if (*m == '+') {
    plus = 1;
    m++;
  }
  fl = c == 'r' ? 0 : O_CREAT | (c == 'w' ? O_TRUNC : O_APPEND);
  for (; *m; m++) {
    if (*m == 'b') continue;
    if (*m == 'x' && c == 'w') {
      fl |= O_EXCL;
      continue;
    }
    return 0;
  }
  *flags = fl | (plus ? O_RDWR : c == 'r' ? O_RDONLY : O_WRONLY);
  *rd = plus || c == 'r';
  *wr = plus || c != 'r';
  *append_end = c == 'a' && !plus;
  return 1;
}

static int open_k(lua_State *L, int status, lua_KContext kc) {
  tidal_task *t = (tidal_task *)kc;
  io_file *f = take_job(L, t);
  io_ud *u = (io_ud *)lua_touserdata(L, 3);
  int rc = f->req.result;
  (void)status;
  if (rc < 0) {
    job_done(f); /* (frees f) */
    io__fail(L, rc, "tidal.fs.open", "%s", lua_tostring(L, 1));
    io__error_field(L, "path", lua_tostring(L, 1));
    return 2;
  }
  free(f->req.path);
  f->req.path = NULL;
  io__ud_attach(u, &f->obj);
  io__live_add(f->obj.iw, &f->obj);
  job_done(f);
  lua_settop(L, 3);
  return 1;
}

static const tidal_waitop open_op = {"tidal.fs.open", job_cancel, NULL};

/* core._fs_open(path [, mode]) */
static int l_open(lua_State *L) {
  const char *fname = open_op.name;
  const char *path = io__path_check(L, 1, fname);
  const char *mode = luaL_optstring(L, 2, "r");
  int flags, rd, wr, append_end, rc;
  tidal_task *t;
  io_worker *iw;
  io_file *f;
  if (!parse_mode(mode, &flags, &rd, &wr, &append_end))
    return luaL_error(L, "%s: invalid mode '%s' (use \"r\", \"w\", \"a\", "
                         "\"r+\", \"w+\" or \"a+\", with an optional "
                         "\"b\", and \"x\" after w)",
                      fname, mode);
  t = tidal__wait_begin(L, fname);
  iw = io__worker_check(L, fname);
  lua_settop(L, 2);
  io__ud_new(L, TT_FILE, 1); /* closed, at 3; uservalue 1: the path */
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, 3, 1);
  f = (io_file *)calloc(1, sizeof *f);
  if (f == NULL) return luaL_error(L, "%s: not enough memory", fname);
  f->fd = -1;
  f->path = strdup(path);
  f->req.path = strdup(path);
  if (f->path == NULL || f->req.path == NULL) {
    file_free(f);
    return luaL_error(L, "%s: not enough memory", fname);
  }
  f->req.work.data = &f->req;
  f->req.iw = iw;
  f->req.run = job_file;
  f->req.release = job_release;
  f->req.obj = f;
  f->req.flags = flags;
  f->req.mode = append_end;
  f->obj.shutdown = file_shutdown;
  f->obj.iw = iw;
  f->rd = (uint8_t)rd;
  f->wr = (uint8_t)wr;
  f->append = (flags & O_APPEND) != 0;
  f->vbuf = VB_FULL;
  f->vsize = IO_FILE_BUF;
  atomic_init(&f->abort, 0);
  rc = start_job(f, J_OPEN, t);
  if (rc != 0) {
    file_free(f);
    io__fail(L, rc, fname, "%s", path);
    io__error_field(L, "path", path);
    return 2;
  }
  return park_job(L, t, f, &open_op, open_k);
}

/* ------------------------------------------------------------ the type */

static const luaL_Reg meta[] = {{"__gc", l_gc},
                                {"__close", l_tbc},
                                {"__tostring", l_tostring},
                                {NULL, NULL}};

static const luaL_Reg methods[] = {
    {"read", l_read},   {"write", l_write},     {"lines", l_lines},
    {"seek", l_seek},   {"flush", l_flush},     {"setvbuf", l_setvbuf},
    {"stat", l_stat},   {"close", l_close},     {NULL, NULL}};

static const luaL_Reg funcs[] = {{"_fs_open", l_open}, {NULL, NULL}};

/* stack: module, ctx */
void io__file_open(lua_State *L) {
  tidal__newtype(L, TT_FILE, "tidal.File", "File", meta, methods);
  tidal__register(L, funcs);
}
