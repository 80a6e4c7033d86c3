/*
** parallel/parallel.h: the parallel layer -- work that runs on another
** worker of the runtime (spawn_parallel) or on libuv's thread pool
** (spawn_blocking), and the remote JoinHandles that wait for it.
**
** Offers (inside the layer): records (record.c), the meeting point of the
** work and everyone waiting for it, whatever their worker; remote handles
** over them (rhandle.c); the open functions for tidal.core's opener.
** May use: kernel (tasks, park/wake, remote wakes, family extensions),
** auxlib, xfer (copying values between states). Knows nothing of sync,
** flow, http or lib. The kernel knows nothing of records: a record is a
** subscriber of its task (tidal_sub) and is given a cancel callback by
** whatever runs its work (a task, a blocking job).
*/
#ifndef TIDAL_PARALLEL_H
#define TIDAL_PARALLEL_H

#include "kernel/kernel.h"
#include "xfer/xfer.h"

enum { TT_RHANDLE = TIDAL_TT_PARALLEL, TT_PARALLEL_END };
_Static_assert((int)TT_PARALLEL_END <= (int)TIDAL_TT_HTTP,
               "parallel type ids");

/* ------------------------------------------------------------ records */

enum { TIDAL_R_OK, TIDAL_R_FAILED, TIDAL_R_CANCELLED };

/* A task parked in await/join on a record (rhandle.c). */
typedef struct rwaiter {
  struct rwaiter *next, *prev;
  tidal_task *t;
  uint8_t woken; /* taken by the publisher: the task will be woken */
} rwaiter;

typedef struct tidal_record {
  tidal_sub sub; /* of its task, while it runs on this process's worker */
  atomic_int refs;
  uv_mutex_t mu;
  uint8_t done, outcome, observed, abort;
  uint8_t interrupt; /* abort also interrupts busy Lua code on target */
  tidal_buf in;  /* function and arguments, until the target starts them */
  tidal_buf out; /* the outcome: a table {ok=, n=, ...} or {ok=false, ...} */
  rwaiter *waiters;
  tidal_worker *target; /* where the work runs */
  tidal_task *task;     /* the running task (touched by target only) */
  /* what an abort runs on target (under mu; changed on target only) */
  void (*cancel)(void *arg);
  void *cancel_arg;
  uint64_t id;
  char name[40];
} tidal_record;

tidal_record *tidal__record_new(void); /* one reference, the caller's */
void tidal__record_ref(tidal_record *r);
void tidal__record_unref(tidal_record *r); /* any thread */
/* Where the work runs and its id (before other threads see r); interrupt:
** an abort also interrupts Lua code busy on target (a task, not a job). */
void tidal__record_target(tidal_record *r, tidal_worker *w, uint64_t id,
                          int interrupt);
/* Stores the outcome (buf: encoded, or empty for a bare cancellation),
** wakes every waiter and clears the cancel callback. cur: this worker. */
void tidal__record_finish(tidal_record *r, tidal_worker *cur, int outcome,
                          tidal_buf *buf);
/* What an abort runs on the target (NULL clears it); target's thread. */
void tidal__record_on_cancel(tidal_record *r, void (*cancel)(void *arg),
                             void *arg);
/* r hears of task t's end and publishes its outcome; an abort cancels t.
** 0, or -1 when out of memory. */
int tidal__record_subscribe(tidal_record *r, tidal_task *t);
tidal_record *tidal__record_of(tidal_task *t); /* t's record, or NULL */
/* Any thread: posts the abort to the target unless r is done. */
void tidal__record_abort(tidal_record *r, tidal_worker *cur);
int tidal__record_aborted(tidal_record *r);
tidal_buf *tidal__record_input(tidal_record *r);
/* Pushes the outcome of done record r: raise: results or raise; else
** true, ... / false, err. */
int tidal__record_push_outcome(lua_State *L, tidal_record *r, int raise);
/* Encodes {ok = ..., ...} from the n values on top of L (pops them). */
void tidal__encode_outcome(lua_State *L, int ok, int n, const char *kind,
                           tidal_buf *buf);

/* ------------------------------------------------------------ handles */

/* Pushes a remote JoinHandle taking the caller's reference to r; r may be
** NULL (a closed handle), stored later through the returned pointer, so
** that the handle exists before anything is acquired. */
tidal_record **tidal__push_rhandle(lua_State *L, tidal_ctx *ctx,
                                   tidal_record *r);

/* stack: module, ctx */
void tidal__rhandle_open(lua_State *L);  /* the RemoteHandle type */
void tidal__parallel_open(lua_State *L); /* tidal.spawn_parallel */
void tidal__blocking_open(lua_State *L); /* tidal.spawn_blocking */
/* Was the job ctx's pool state runs stopped (aborted, or its runtime shut
** down)? 0 outside a job. rt:step in a job raises then (lib/runtime.c). */
int tidal__blocking_stopped(tidal_ctx *ctx);

#endif
