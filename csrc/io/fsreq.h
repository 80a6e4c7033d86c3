/*
** fsreq.h: a task parked on a job of libuv's thread pool (fsreq.c); the
** interface between tidal.fs's functions (fs.c) and the File object
** (file.c).
**
** A job is one uv_work_t: its run function makes plain syscalls on a pool
** thread, never touches Lua, and closes every descriptor it opens unless
** it hands it over in the result. The callback (loop thread) always runs
** exactly once, after the job ran or was cancelled before it started:
**   - with a task parked on it, it wakes the task; the task's continuation
**     owns the request from then on (io__fsreq_take), reads the result and
**     frees it;
**   - without one (the wait was cancelled: the request is an orphan), it
**     cleans up the result nobody will take (orphan: close a descriptor
**     the job opened) and frees the request.
** So a cancelled fs wait leaks no descriptor, no memory and no request.
*/
#ifndef TIDAL_IO_FSREQ_H
#define TIDAL_IO_FSREQ_H

#include "io.h"

#include <sys/stat.h>

typedef struct io_fsreq io_fsreq;
typedef void (*io_fsreq_fn)(io_fsreq *r);

/* A userdata that owns a request while no job runs it for nobody: before
** it starts and after the continuation took it. Whatever raises meanwhile
** (a memory error while pushing the results), the collector frees it. */
typedef struct io_fsbox {
  io_fsreq *r;
} io_fsbox;

struct io_fsreq {
  uv_work_t work;      /* work.data = this */
  io_worker *iw;       /* held (io__hold) until the callback has run */
  io_fsbox *box;       /* the box that owns it, or NULL */
  tidal_task *task;    /* the task parked on it; NULL once orphaned */
  io_fsreq_fn run;     /* the job (pool thread) */
  io_fsreq_fn after;   /* loop thread, first in the callback (or NULL) */
  io_fsreq_fn orphan;  /* loop thread: clean up an untaken result (or NULL) */
  io_fsreq_fn release; /* frees it (NULL: io__fsreq_free) */
  int result;          /* >= 0, or a UV error code (UV_ECANCELED: not run) */
  /* the jobs' inputs and outputs */
  char *path, *path2;  /* owned (malloc'd copies) */
  tidal_buf buf, buf2; /* data in or out */
  int flags, mode, fd;
  size_t max;
  struct stat st;
  void *obj; /* file.c: its io_file */
  int op;
};

/* A zeroed request for job run (NULL when out of memory); fd = -1. */
io_fsreq *io__fsreq_new(io_worker *iw, io_fsreq_fn run);
/* Frees the request, its paths and its buffers. */
void io__fsreq_free(io_fsreq *r);
/* Pushes a box owning a new request for run with copies of path and path2
** (either may be NULL). Raises when out of memory (the box frees what was
** made). */
io_fsreq *io__fsreq_push(lua_State *L, io_worker *iw, io_fsreq_fn run,
                         const char *fname, const char *path,
                         const char *path2);
/* Frees the request of the box at idx now. */
void io__fsreq_done(lua_State *L, int idx);
/* Queues the job: 0, or a UV error (then nothing was queued). */
int io__fsreq_start(io_fsreq *r);
/* Parks t on the started request r, whose box is on top of the stack (op's
** cancel must be io__fsreq_cancel); k runs when it is done and calls
** io__fsreq_take. */
int io__fsreq_park(lua_State *L, tidal_task *t, io_fsreq *r,
                   const tidal_waitop *op, lua_KFunction k);
/* The cancel of every fs waitop: tries uv_cancel, orphans the request. */
int io__fsreq_cancel(tidal_task *t);
/* In the continuation: the request of the box on top of the stack (which
** stays there and owns it). If the wait was cancelled, raises the
** cancellation instead (an operation that completed meanwhile is cleaned
** up as an orphan's). */
io_fsreq *io__fsreq_take(lua_State *L, tidal_task *t);

/* The path at idx (raises unless it is a string without zero bytes). */
const char *io__path_check(lua_State *L, int idx, const char *fname);
/* Pushes the table of tidal.fs.stat for st. */
void io__push_stat(lua_State *L, const struct stat *st);

/* file.c: the File type and tidal.fs.open (core._fs_open) */
void io__file_open(lua_State *L); /* stack: module, ctx */

#endif
