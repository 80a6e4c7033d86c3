/*
** tidal_int.h: the core's internal interface, shared by the C files of
** tidal.core. Not installed; hosts use tidal.h.
**
** Concepts and the files that own them:
**   timer.c      a binary heap of deadlines per worker (no Lua)
**   sched.c      the worker: run queue, park / wake / cancel, polling,
**                remote wakes from other threads
**   task.c       tasks and JoinHandles: spawn, the task body, outcomes
**   runtime.c    the Runtime object: run, block_on, step, close, deadlock
**   time.c       sleep, yield, now
**   error.c      error objects (kind, message) and tracebacks
**   introspect.c tasks(), stats()
**   core.c       luaopen_tidal_core and the per-state context
**   http*.c      tidal.http's C core (see http_int.h)
*/
#ifndef TIDAL_INT_H
#define TIDAL_INT_H

/* POSIX types that uv.h needs under -std=c11; include this header first */
#ifndef _DEFAULT_SOURCE
#define _DEFAULT_SOURCE
#endif

#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>

#include <lauxlib.h>
#include <lua.h>
#include <uv.h>

#include "tidal.h"

/* Resumes a task may take before its waits yield to the scheduler. */
#define TIDAL_BUDGET 128
/* Resumes between two non-blocking polls of the loop (timers, I/O). */
#define TIDAL_POLL_EVERY 61
/* Idle coroutines kept for reuse by each worker. */
#define TIDAL_POOL_MAX 1024

#define TIDAL_ERROR_MT "tidal.Error"
#define TIDAL_HANDLE_MT "tidal.JoinHandle"
#define TIDAL_RUNTIME_MT "tidal.Runtime"

#define tidal__container_of(p, T, m) ((T *)((char *)(p)-offsetof(T, m)))

typedef struct tidal_ctx tidal_ctx;
typedef struct tidal_worker tidal_worker;
typedef struct tidal_task tidal_task;
typedef struct tidal_timer tidal_timer;

/* ---------------------------------------------------------------- timers */

/* A deadline in a worker's heap. Embedded in whatever owns it (a task, a
** timeout scope); never allocated on its own. */
struct tidal_timer {
  uint64_t due; /* uv_hrtime() clock, nanoseconds */
  uint32_t pos; /* heap index + 1; 0 while not armed */
  uint8_t kind; /* TK_*: what firing means */
};

/* timer kinds */
enum { TK_SLEEP = 1, TK_SCOPE };

typedef struct tidal_heap {
  tidal_timer **v;
  uint32_t n, cap;
} tidal_heap;

int tidal__heap_push(tidal_heap *h, tidal_timer *tm); /* 0 or UV_ENOMEM */
void tidal__heap_remove(tidal_heap *h, tidal_timer *tm);
void tidal__heap_free(tidal_heap *h);
#define tidal__heap_top(h) ((h)->n ? (h)->v[0] : NULL)

/* Convert seconds (as given by Lua) to a deadline; HUGE or NaN-free
** durations beyond ~100 years saturate. */
uint64_t tidal__deadline(double seconds);

/* ------------------------------------------------------- wait queues */

/* An intrusive FIFO of parked tasks. A task waits on one thing at a time,
** so its links live in the task itself and queuing never allocates. */
typedef struct tidal_wq {
  tidal_task *head, *tail;
} tidal_wq;

void tidal__wq_push(tidal_wq *q, tidal_task *t);
void tidal__wq_remove(tidal_wq *q, tidal_task *t);
tidal_task *tidal__wq_pop(tidal_wq *q);

/* An intrusive unordered list through the same links (head only). */
void tidal__list_push(tidal_task **head, tidal_task *t);
void tidal__list_remove(tidal_task **head, tidal_task *t);

/* --------------------------------------------------- park/wake/cancel */

/*
** How a primitive parks a task (the one interface every waiting call uses):
**
**   static int l_op(lua_State *L) {
**     tidal_task *t = tidal__wait_begin(L, "tidal.op");  -- raises on misuse
**                                                        -- and on a pending
**                                                        -- cancellation
**     TIDAL_SPEND(L, t, &op_restart);    -- cooperative budget
**     if (ready) return results;          -- fast path, nothing registered
**     register t (e.g. tidal__wq_push(&obj->waiters, t));
**     return tidal__park(L, t, &op_waitop, obj, op_k);
**   }
**   static int op_k(lua_State *L, int status, lua_KContext k) {
**     tidal_task *t = (tidal_task *)k;
**     tidal__resumed(L, t);      -- raises if the wait was cancelled
**     return results;            -- values the waker deposited are on top
**   }
**
** The waker (on the worker's thread) unregisters the task, may push values
** on t->co's stack, and calls tidal__wake(t, nvalues). From another thread
** it calls tidal__wake_remote instead (the worker then wakes the task on
** its own thread).
**
** Cancellation (abort, timeout, shutdown, deadlock) of a parked task calls
** op->cancel(t). It must undo the registration and return 1; or return 0
** when the operation has already completed and a (remote) wake is on its
** way: then the completion is delivered and the cancellation is raised at
** the task's next wait. A completed operation is never undone.
*/
typedef struct tidal_waitop {
  const char *name;            /* what the task waits in, e.g. "tidal.sleep" */
  int (*cancel)(tidal_task *t); /* undo the registration; see above */
} tidal_waitop;

/* For TIDAL_SPEND: the C function to call again after the budget yield. */
typedef struct tidal_restart {
  lua_CFunction fn;
} tidal_restart;

/* ---------------------------------------------------------------- tasks */

enum { TS_NEW, TS_RUNNABLE, TS_RUNNING, TS_PARKED, TS_DONE };

/* Cancellation kinds, in increasing precedence. */
enum { CK_NONE, CK_TIMEOUT, CK_ABORT, CK_SHUTDOWN, CK_DEADLOCK };

/* task flags */
#define TF_QUEUED 0x0001    /* in the run queue */
#define TF_FAILED 0x0002    /* outcome: an error */
#define TF_CANCELLED 0x0004 /* outcome: cancelled */
#define TF_OBSERVED 0x0008  /* outcome seen by await/join */
#define TF_PACKED 0x0010    /* results packed in a table */
#define TF_REPORTED 0x0020  /* unobserved failure already reported */
#define TF_NAMED 0x0040     /* has a name in the worker's names table */
#define TF_NOSTART 0x0080   /* cancelled before it started */
#define TF_WAKECANCEL 0x0100 /* woken because its wait was cancelled */
#define TF_RERAISE 0x0200   /* await is re-raising another task's error */

/*
** A task: the payload of its JoinHandle userdata, so a handle costs one
** allocation (kept small: thousands of them sleep at once). The handle has
** nuv = 1 + max(1, nargs) uservalues:
**   not started: 1 = the function, 2.. = its arguments
**   started:     1 = its coroutine
**   done:        2.. = its results (or, when they do not fit, a packed table
**                in 2 with TF_PACKED); for a failure, 2 = {err, traceback}
** While alive, the worker's anchors table holds the handle at anchors[slot],
** which keeps the coroutine reachable too. A task's name, if any, is in the
** worker's names table (weak keys: handle -> name).
*/
struct tidal_task {
  lua_State *co;   /* the coroutine, while started and not done */
  tidal_worker *w; /* owning worker; NULL once done and released */
  union {
    struct {
      tidal_task *qnext, *qprev; /* run queue, or the wait queue it is in */
    };
    tidal_timer timer; /* while in tidal.sleep (in no queue then) */
  };
  const tidal_waitop *op; /* what it is parked on */
  void *wobj;             /* the object it is parked on */
  tidal_task *joiners;    /* tasks parked in await/join on this one */
  uint64_t id;
  int32_t slot; /* index in the anchors table */
  int32_t nres; /* not started: arguments; alive: values for the next
                   resume; done: results */
  uint16_t nuv; /* uservalues of the handle */
  uint16_t flags;
  uint8_t state, cancel, budget;
};

/* ---------------------------------------------------------------- worker */

/* Per-worker extensions: state a subsystem keeps per worker (the HTTP multi
** handle, ...), created on first use. close() runs at shutdown after every
** task has finished and before the loop closes: it must uv_close its
** handles (the worker then runs the loop until they are closed) and free
** what it owns. It also runs when a runtime is collected without close(). */
enum { TIDAL_EXT_HTTP, TIDAL_EXT_BLOCKING, TIDAL_EXT_N };

typedef struct tidal_ext {
  void *data;
  void (*close)(tidal_worker *w, void *data);
} tidal_ext;

typedef struct tidal_remote {
  tidal_task *task;
  void (*fn)(tidal_worker *w, void *arg);
  void *arg;
} tidal_remote;

struct tidal_worker {
  uv_loop_t *loop; /* own_loop, or a host's loop */
  uv_loop_t own_loop;
  uv_timer_t uvtimer;  /* armed for the heap's earliest deadline */
  uv_async_t async;    /* remote wakes (unreferenced: never keeps it alive) */
  uv_mutex_t rlock;    /* guards remote, nremote, remote_cap */
  tidal_remote *remote;
  size_t nremote, remote_cap;
  atomic_int remote_pending;
  uint64_t armed;      /* deadline the uv timer is armed for, 0 if not */
  tidal_heap timers;
  tidal_task *rq_head, *rq_tail; /* run queue (intrusive, see sched.c) */
  uint32_t rq_len;
  lua_State *L;        /* the state's main thread */
  tidal_ctx *ctx;
  int anchors_ref, pool_ref, aux_ref; /* registry refs (tables) */
  int *free_slots;
  int nfree, free_cap, next_slot;
  int npool;
  uint64_t next_id;
  tidal_ext ext[TIDAL_EXT_N];
  tidal_task *main;    /* task of the current block_on */
  int running;         /* inside block_on or step */
  int closing, closed, handles_open;
  struct {
    uint64_t spawned, resumes, polls, finished, failed, cancelled;
    uint32_t alive, parked;
  } st;
};

/* Per Lua state: one for every state that loaded tidal.core. */
struct tidal_ctx {
  tidal_worker *w;  /* worker whose scheduler is running now, or NULL */
  tidal_task *cur;  /* task being resumed, or NULL */
  int msgh_ref;     /* the tasks' message handler (registry) */
  int handle_mt_ref, error_mt_ref;
  int tbs_ref;      /* weak table: error value -> traceback */
  int names_ref;    /* weak table: JoinHandle -> task name */
  int stbs_ref;     /* string error -> traceback, bounded */
  int nstbs;
};

/* aux table slots (per worker) */
enum { AUX_UNOBSERVED = 1, AUX_DEADLOCK, AUX_N = AUX_DEADLOCK };

/* core.c */
tidal_ctx *tidal__ctx(lua_State *L); /* the state's context (registry) */
void tidal__register(lua_State *L, const luaL_Reg *funcs); /* [t, ctx] */

/* sched.c */
int tidal__worker_init(tidal_worker *w, lua_State *L, tidal_ctx *ctx,
                       uv_loop_t *host_loop);
void tidal__worker_free(tidal_worker *w); /* after handles are closed */
void tidal__worker_close_handles(tidal_worker *w);
void tidal__runq_push(tidal_worker *w, tidal_task *t);
tidal_task *tidal__runq_pop(tidal_worker *w);
tidal_task *tidal__wait_begin(lua_State *L, const char *fname);
int tidal__park(lua_State *L, tidal_task *t, const tidal_waitop *op,
                void *obj, lua_KFunction k);
void tidal__wake(tidal_task *t, int nvalues);
int tidal__wake_remote(tidal_worker *w, tidal_task *t,
                       void (*fn)(tidal_worker *, void *), void *arg);
void tidal__resumed(lua_State *L, tidal_task *t);
void tidal__requeue(tidal_task *t);
int tidal__budget_yield(lua_State *L, tidal_task *t, const tidal_restart *r);
void tidal__cancel(tidal_task *t, int kind);
int tidal__raise_cancel(lua_State *L, tidal_task *t); /* never returns */
void tidal__push_cancel_error(lua_State *L, tidal_task *t);
int tidal__timer_start(tidal_worker *w, tidal_timer *tm, uint64_t due);
void tidal__timer_stop(tidal_worker *w, tidal_timer *tm);
void tidal__poll(tidal_worker *w, int block, uint64_t max_wait_ns);
int tidal__pending(tidal_worker *w);
int tidal__slot_alloc(tidal_worker *w);
void tidal__slot_free(tidal_worker *w, int slot);

#define TIDAL_SPEND(L, t, r)                                                   \
  do {                                                                         \
    if (--(t)->budget == 0) return tidal__budget_yield((L), (t), (r));         \
  } while (0)

/* task.c */
void tidal__task_open(lua_State *L); /* registers the JoinHandle type */
tidal_task *tidal__spawn(lua_State *L, tidal_worker *w, int first);
int tidal__run_batch(tidal_worker *w, lua_State *L, int max);
void tidal__task_finish_unstarted(tidal_task *t);
void tidal__task_finish_forced(tidal_worker *w, lua_State *L, tidal_task *t);
int tidal__push_outcome(lua_State *L, tidal_task *t, int idx, int raise);
tidal_task *tidal__task_from_anchor(lua_State *L, int idx);
void tidal__push_handle(lua_State *L, tidal_task *t); /* alive task */
/* "task 5 (name)"; handle at idx, or 0 to look it up (alive task) */
void tidal__push_label(lua_State *L, tidal_task *t, int handle);
void tidal__report_unobserved(lua_State *L, tidal_worker *w);
const char *tidal__state_name(const tidal_task *t);

/* runtime.c */
void tidal__runtime_open(lua_State *L);

/* time.c */
void tidal__time_open(lua_State *L);

/* error.c */
void tidal__error_open(lua_State *L);
void tidal__error_push(lua_State *L, const char *kind, const char *fmt, ...);
const char *tidal__error_kind(lua_State *L, int idx); /* NULL if not ours */
void tidal__push_errstring(lua_State *L, int idx); /* never raises */
void tidal__traceback_set(lua_State *L, tidal_ctx *ctx, int err, int tb);
int tidal__traceback_get(lua_State *L, tidal_ctx *ctx, int err);

/* http.c */
void tidal__http_open(lua_State *L);

/* introspect.c */
void tidal__introspect_open(lua_State *L);
void tidal__push_where(lua_State *L, tidal_task *t, int ud);
int tidal__push_tasks(lua_State *L, tidal_worker *w);
int tidal__push_stats(lua_State *L, tidal_worker *w);

#endif
