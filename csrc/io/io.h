/*
** io.h: the io layer's internal interface (tidal.net, tidal.fs,
** tidal.process, tidal.signal), shared by the C files of csrc/io/.
**
** io sits above the kernel (tasks, park/wake/cancel, workers), the
** auxiliary layer (context, types, errors) and the value layer (buffers,
** transfer), and below lib, which calls its open functions; nothing below
** calls into io except through the hooks it registers (the worker
** extension class "io" with its close hook, the xtypes).
**
**   err.c       errno -> error kind table, error objects for io failures
**   worker.c    per-worker io state: read scratch, live objects, request
**               free lists, SIGPIPE, closing everything when a runtime ends
**   stream.c    the Stream object over a uv_stream_t (TCP, unix, pipes)
**   listener.c  TCP and unix listeners (own socket, accept4, backoff)
**   connect.c   DNS, trying each address, uv_tcp_connect, uv_pipe_connect
**   addr.c      sockaddr <-> host/port, IP literals, tidal.net.resolve
**   udp.c       UdpSocket
**   move.c      Stream / Listener / UdpSocket moving to another worker
**   fs*.c file.c process.c signal.c: see their own headers
**
** Every io object belongs to the worker (runtime) that made it; when the
** runtime ends, the worker's io close hook closes whatever is still open.
*/
#ifndef TIDAL_IO_H
#define TIDAL_IO_H

#include "xfer/xfer.h" /* (first: it sets the POSIX feature macros) */
#include "kernel/kernel.h"

#include <sys/socket.h>

/* io's userdata types, numbered in its range (auxlib.h) */
enum {
  TT_STREAM = TIDAL_TT_IO, TT_LISTENER, TT_UDP, TT_FILE, TT_CHILD,
  TT_SIGLISTEN, TT_IO_END
};
_Static_assert((int)TT_IO_END <= (int)TIDAL_TT_LIB, "io type ids");

/* The open functions (lib/init.c calls them; stack: module, ctx). */
void tidal__net_open(lua_State *L);
void tidal__fs_open(lua_State *L);
void tidal__process_open(lua_State *L);
void tidal__signal_open(lua_State *L);

#define IO_SCRATCH (64 * 1024)    /* per-worker read scratch */
#define IO_READ_MAX (64 * 1024)   /* default read_buffer */
#define IO_LINE_MAX (64 * 1024)   /* default read_line max */
#define IO_WRITE_HWM (64 * 1024)  /* a write starts only at or below this */
#define IO_SMALL_WREQ 512         /* write requests up to this are pooled */
#define IO_BACKLOG 1024
#define IO_FILE_BUF (64 * 1024)

/* ---------------------------------------------------------------- err.c */

/* The error kind of a libuv error code ("not_found", "io", ...). */
const char *io__kind(int uverr);
/* Pushes an error object: kind = io__kind(uverr), errno = uv_err_name,
** message "<fname>: <subject>: <strerror> (<ERRNO>)" where subject is
** fmt formatted (lua_pushfstring's formats); fmt NULL: no subject. */
void io__error_push(lua_State *L, int uverr, const char *fname,
                    const char *fmt, ...);
/* Pushes nil and that error object; returns 2. */
int io__fail(lua_State *L, int uverr, const char *fname, const char *fmt,
             ...);
/* Errors not from errno (unexpected_eof, too_long, closed, timeout, ...):
** pushes nil and an error {kind, message = fmt formatted}; returns 2. */
int io__fail_kind(lua_State *L, const char *kind, const char *fmt, ...);
/* Sets field name of the error object on top to the string s. */
void io__error_field(lua_State *L, const char *name, const char *s);

/* ------------------------------------------------------------- worker.c */

typedef struct io_worker io_worker;
struct io_ud;

/* Every io core with a libuv handle or an fd is in its worker's live list
** while open, with io_obj as its FIRST member. */
typedef struct io_obj {
  struct io_obj *next, *prev;
  io_worker *iw;
  /* The worker is closing (runtime end): close now, no Lua, no waits
  ** (parked tasks are gone by then). The object is already unlinked. */
  void (*shutdown)(struct io_obj *o);
  /* The userdata: its core is cleared on close/shutdown, so it reads as
  ** closed; NULL once the userdata is collected (or never had one). */
  struct io_ud *ud;
} io_obj;

struct io_worker {
  tidal_worker *w;
  char *scratch; /* IO_SCRATCH bytes, for libuv alloc callbacks */
  io_obj *live;
  int holds;      /* libuv handles / requests not yet called back */
  uint8_t closed; /* the worker closed: freed once holds reaches 0 */
  /* free lists (stream.c: io__stream_free_lists empties them) */
  struct io_wreq *free_wreq; /* small write requests (stream.c) */
  int nfree_wreq;
  struct io_stream *free_streams; /* cores recycled after close_cb */
  int nfree_streams;
  void *sig; /* signal.c's per-worker state */
  void *fs;  /* fs.c's per-worker state */
  void *proc; /* process.c's per-worker state */
};

/* The worker's io state, created on first use (and SIGPIPE ignored, once
** per process, if it had its default action); NULL when out of memory or
** when the worker is closing. */
io_worker *io__worker(tidal_worker *w);
/* io__worker of the runtime running in L (upvalue 1 = ctx); raises
** "fname: not inside a tidal runtime" / out of memory. */
io_worker *io__worker_check(lua_State *L, const char *fname);
void io__live_add(io_worker *iw, io_obj *o);
void io__live_remove(io_worker *iw, io_obj *o);
/* A libuv handle or request that will call back into io memory: the io
** state stays allocated until every hold is released (close callbacks may
** run after the worker's close hook). */
static inline void io__hold(io_worker *iw) {
  iw->holds++;
}
void io__release(io_worker *iw);

/* In a continuation: was the task woken by its operation (1), or woken
** because a cancellation withdrew its wait (0)? A primitive that counts
** the tasks it woke and that have not run yet decrements only for 1. */
static inline int io__woken(const tidal_task *t) {
  return !(t->flags & TF_WAKECANCEL);
}

/* ----------------------------------------------------- userdata helper */

/* The userdata of every io type: the core (NULL once closed), and why it
** is NULL. Create it closed (core = NULL) before acquiring anything.
** IO_UD_PENDING: a stream, listener or UDP socket that moved here from
** another worker (move.c); its core is built from move on first use. */
enum {
  IO_UD_OPEN = 0, IO_UD_CLOSED, IO_UD_MOVED, IO_UD_TAKEN, IO_UD_PENDING
};
typedef struct io_ud {
  void *core;           /* starts with an io_obj */
  struct io_move *move; /* IO_UD_PENDING: what moved here */
  const void *tag;      /* its type's metatable (io__self); NULL after __gc */
  uint8_t state;        /* IO_UD_*: why core is NULL */
} io_ud;

/* Pushes a new closed userdata of type tt with nuv user values (ctx =
** upvalue 1). */
io_ud *io__ud_new(lua_State *L, int tt, int nuv);
/* Links a userdata and its core (o->ud, u->core). */
void io__ud_attach(io_ud *u, io_obj *o);
/* Unlinks them: the userdata reads as closed (state st), the core
** forgets it. Either may be NULL. */
void io__ud_detach(io_obj *o, int st);
/* __gc: forget the userdata in the check caches (TIDAL_HOT, its tag). */
void io__ud_unhot(lua_State *L, int tt, io_ud *u);
/* The userdata at index 1 of type tt (raises "fname: expected a <Type>
** as self ..." otherwise), open (raises "fname: attempt to use a closed
** <what>" / "... a <what> that moved to another worker") and owned by
** the runtime running now, if one runs (raises "fname: this <what>
** belongs to another runtime"). Returns its core. */
void *io__check(lua_State *L, int tt, const char *fname);
/* io__check's fast path, for the hot methods (ctx: upvalue 1). A userdata
** of io_ud's size whose tag is type tt's metatable is one of ours: the tag
** is set when it is made and cleared by its __gc, before the memory can be
** reused, so no other userdata carries it (as TIDAL_HOT, without the
** cache's misses when a worker has many streams). */
static inline void *io__self(lua_State *L, tidal_ctx *ctx, int tt,
                             const char *fname) {
  io_ud *u = (io_ud *)lua_touserdata(L, 1);
  if (u != NULL && lua_rawlen(L, 1) == sizeof *u && u->tag == ctx->aux.mt[tt] &&
      u->core != NULL && ((io_obj *)u->core)->iw->w == ctx->w)
    return u->core;
  return io__check(L, tt, fname);
}
/* The userdata at index 1 of type tt, open or not (for close, tostring). */
io_ud *io__ud(lua_State *L, int tt, const char *fname);
/* close / __gc of a userdata whose core is NULL: lets go of what moved
** here (move.c); nothing otherwise. */
void io__ud_forget(io_ud *u);
/* close() (gc 0) or __gc (gc 1) of the movable userdata at index 1 of type
** tt: close_core closes its core, or what moved here is let go (move.c). */
int io__ud_close(lua_State *L, int tt, const char *fname, int gc,
                 void (*close_core)(void *core));
/* io__check found u pending: builds its core in the running worker
** (move.c); raises when that cannot be done. */
io_obj *io__adopt(lua_State *L, io_ud *u, int tt, const char *fname);
/* "stream", "listener", ... for tt */
const char *io__what(int tt);

/* ------------------------------------------------------------- signal.c */

/* The signal number named at idx: "term", "TERM", "SIGTERM" (any case) or
** the number itself, for the signals tidal names (hup int quit kill usr1
** usr2 pipe alrm term chld cont stop tstp winch); -1 otherwise. */
int io__signum(lua_State *L, int idx);
/* "term" for SIGTERM, ...; NULL for a signal tidal does not name. */
const char *io__signame(int signum);

/* ------------------------------------------------------------- stream.c */

enum { IO_TCP = 1, IO_UNIX, IO_PIPE };
enum { IO_R = 1, IO_W = 2 }; /* directions a stream allows */
typedef struct io_stream io_stream;

/* A new stream core; its libuv handle is not initialised yet. */
io_stream *io__stream_new(io_worker *iw, int kind, int dirs);
/* For uv_tcp_init / uv_pipe_init / uv_spawn's stdio. */
uv_stream_t *io__stream_uv(io_stream *s);
/* Frees a core whose handle was never initialised. */
void io__stream_discard(io_stream *s);
/* After init + open/spawn: reading on (0 or a UV error). */
int io__stream_start(io_stream *s, size_t read_buffer);
/* Starts reading now, not at the first read that waits (a connecting TCP
** stream: epoll then watches it for both directions from the start). */
int io__stream_read_now(io_stream *s);
/* Pushes a closed Stream userdata; returns its index. */
int io__stream_newud(lua_State *L);
/* Attaches a started stream to the userdata at ud. */
void io__stream_attach(lua_State *L, int ud, io_stream *s);
/* Wakes the parked tasks (kind "closed"), then uv_close. */
void io__stream_close(io_stream *s);
/* Frees the worker's recycled stream cores and write requests. */
void io__stream_free_lists(io_worker *iw);

#endif
