/*
** kernel/kernel.h: the kernel of tidal.core -- tasks and the workers that
** run them.
**
** Offers: tasks (spawn, the task body, outcomes, joiners, task sets and
** subscribers: task.c), the park / wake / cancel protocol and the run
** queue (sched.c), wait queues (wq.c), deadlines (timer.c: the heap and
** timers with fire callbacks; poll.c: the loop poll that fires them),
** cancel scopes (scope.c), workers with their extensions and remote wakes
** (worker.c), the workers of a runtime and their threads (family.c), the
** run loops (loop.c), interrupting busy Lua code and Ctrl-C
** (interrupt.c), the per-state context (ctx.c).
**
** May use: auxlib (errors, tracebacks, types, the context's aux part),
** tidal.h, libuv. Never names what is built on it (channels, groups,
** records, HTTP, the Runtime object): a layer above that must react to
** the kernel registers a hook -- a timer's fire callback, a task set's
** member_done, a task subscriber, a worker or family extension's close /
** shutdown / free hooks, a waitop's cancel / abandon, the context's
** host_hook.
**
** Concepts and their files:
**   ctx.c        the per-state context (aux's part first)
**   task.c       tasks: spawn, the body, outcomes, joiners, sets,
**                subscribers, the message handler, FailureReport
**   sched.c      run queue, park / wake / cancel, budget, refusing
**                foreign resumes
**   wq.c         wait queues and lists of parked tasks
**   timer.c      the deadline heap, clocks, timer start / stop
**   poll.c       one poll of the loop: due timers, idle collection
**   scope.c      cancel scopes (tidal.timeout is built on them)
**   worker.c     a worker's life, its extensions, remote wakes
**   family.c     the workers and threads of a runtime
**   loop.c       block_on, step, shutdown, a worker thread's loop
**   interrupt.c  interrupting Lua code that does not wait; Ctrl-C
*/
#ifndef TIDAL_KERNEL_H
#define TIDAL_KERNEL_H

#include "auxlib/auxlib.h" /* first: it defines _DEFAULT_SOURCE */

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <lauxlib.h>
#include <lua.h>
#include <uv.h>

#include "tidal.h"

/* Resumes a task may take before its waits yield to the scheduler. */
#define TIDAL_BUDGET 128
/* Resumes between two non-blocking polls of the loop (timers, I/O). */
#define TIDAL_POLL_EVERY 61
/* A failed task's error that nobody observed is reported when its handle
** is collected: the scheduler collects this long (ns) after such a
** failure, then again at doubling intervals up to the maximum while one
** is still held. */
#define TIDAL_REPORT_AFTER 500000000u
#define TIDAL_REPORT_MAX 60000000000u
/* Idle coroutines kept for reuse by each worker. */
#define TIDAL_POOL_MAX 1024
/* Most arguments a task can be spawned with: they are kept in its handle's
** uservalues, of which a userdata has fewer than USHRT_MAX. */
#define TIDAL_MAX_ARGS 65533
#define TIDAL_HANDLE_MT "tidal.JoinHandle"


typedef struct tidal_ctx tidal_ctx;
typedef struct tidal_worker tidal_worker;
typedef struct tidal_task tidal_task;
typedef struct tidal_timer tidal_timer;
typedef struct tidal_task_ext tidal_task_ext;
typedef struct tidal_scope tidal_scope;

/* ---------------------------------------------------------------- timers */

/* A deadline in a worker's heap, embedded in its owner; never allocated on
** its own. A task's own timer (t->timer, while it waits with a deadline:
** tidal__timer_start) wakes the task when due. Any other timer is the
** first member of a tidal_ctimer (tidal__ctimer_start), whose fire
** callback runs instead. Both fire after the loop's poll, outside any
** libuv callback, with no Lua (sched.c). The heap knows no kinds. */
struct tidal_timer {
  uint64_t due; /* uv_hrtime() clock, nanoseconds */
  uint32_t id;  /* its slot in the heap (timer.c); 0 while not armed */
  uint8_t call; /* in a tidal_ctimer: call its fire (else: wake the task) */
};

typedef struct tidal_ctimer tidal_ctimer;
typedef void (*tidal_timer_fn)(tidal_worker *w, tidal_ctimer *ct);
struct tidal_ctimer {
  tidal_timer tm; /* first */
  tidal_timer_fn fire;
};

/* The heap holds (due, slot) pairs, so a sift compares keys in the array
** and records moves in a dense array of positions, without touching the
** timers themselves, scattered in their owners (timer.c). */
typedef struct tidal_hent {
  uint64_t due;
  uint32_t id; /* slot: tm[id] is the timer, pos[id] - 1 this entry's index */
} tidal_hent;

typedef struct tidal_heap {
  tidal_hent *v;
  uint32_t n, cap;
  tidal_timer **tm; /* by slot (1..); slot 0 unused */
  uint32_t *pos;    /* by slot: heap index + 1; a free slot: the next free */
  uint32_t nslot, slot_cap, free_slot;
} tidal_heap;

int tidal__heap_push(tidal_heap *h, tidal_timer *tm); /* 0 or UV_ENOMEM */
void tidal__heap_remove(tidal_heap *h, tidal_timer *tm);
void tidal__heap_free(tidal_heap *h);
#define tidal__heap_top(h) ((h)->n ? (h)->tm[(h)->v[0].id] : NULL)

/* Convert seconds (as given by Lua) to a deadline; HUGE or NaN-free
** durations beyond ~100 years saturate. */
uint64_t tidal__deadline(double seconds);
/* The same for a point in time on the tidal.now() clock (seconds): the
** past saturates to now, beyond ~100 years from now to that. Not NaN. */
uint64_t tidal__deadline_at(double at);
uint64_t tidal__coarse_ns(void); /* cheap monotonic clock, ms resolution */

/* ------------------------------------------------------- wait queues */

/* An intrusive FIFO of parked tasks. A task waits on one thing at a time,
** so its links live in the task itself and queuing never allocates. */
typedef struct tidal_wq {
  tidal_task *head, *tail;
} tidal_wq;

void tidal__wq_push(tidal_wq *q, tidal_task *t);
void tidal__wq_push_front(tidal_wq *q, tidal_task *t);
void tidal__wq_remove(tidal_wq *q, tidal_task *t);
tidal_task *tidal__wq_pop(tidal_wq *q);
/* Its object becomes shared: its waiters may be woken from other threads. */
void tidal__wq_shared(tidal_wq *q);
/* Whether t is still in q (no waker took it out yet). Under q's lock. */
static inline int tidal__wq_has(const tidal_wq *q, const tidal_task *t);

/* An intrusive unordered list through the same links (head only). */
void tidal__list_push(tidal_task **head, tidal_task *t);
void tidal__list_remove(tidal_task **head, tidal_task *t);

/* --------------------------------------------------- park/wake/cancel */

/*
** How a primitive parks a task (the one interface every waiting call uses):
**
**   static int l_op(lua_State *L) {
**     tidal_task *t = tidal__wait_begin(L, "tidal.op");  -- raises on misuse
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
** A cancelled task does not wait: tidal__park raises its cancellation
** instead (withdrawing the registration through op->cancel), so an
** operation that can complete at once still completes in a cancelled task
** (cleanup code can send a last message, release a lock), while every
** actual wait raises again (sticky).
**
** The waker (on the worker's thread) unregisters the task, may push values
** on t->co's stack, and calls tidal__wake(t, nvalues). From another thread
** it calls tidal__wake_remote instead (the worker then wakes the task on
** its own thread).
**
** Wake, then take: a waker does not hand a value to a parked task; it makes
** the value available (a message stays in the channel) and wakes the task,
** which takes it when it runs. If the task is cancelled between the wake and
** its turn, tidal__resumed raises and nothing was taken; the op's
** continuation first checks tidal__wake_lost(t) and passes the wake on to the
** next waiter. So a cancelled wait never loses anything.
**
** Handoff (task.c): tidal__park may, instead of yielding, run the run
** queue's head nested on the parking task's C stack and then call op_k
** directly when that woke the task and it is next in line. So op_k must not
** assume a real yield happened, and a waker must not push values on the
** stack of the task that is handing off (w->handing); none does today, every
** wake is tidal__wake(t, 0).
**
** Lua code may resume a task's coroutine itself (coroutine.resume on a
** captured coroutine.running()): op_k never sees that. Every yield of a
** task goes through sched.c, which runs op_k only when the scheduler
** resumes the task, and refuses any other resume (the task stays as it
** was). Lua code may also close the coroutine (coroutine.close): then op_k
** never runs; the task is cancelled, op->cancel withdrawing its wait
** (task.c).
**
** Cancellation (abort, timeout, shutdown, deadlock) of a parked task calls
** op->cancel(t). It must undo the registration and return 1; or return 0
** when the operation has already completed and a (remote) wake is on its
** way: then the completion is delivered and the cancellation is raised at
** the task's next wait. A completed operation is never undone.
**
** A task whose coroutine is closed while it waits (Lua code closed it, or
** shutdown found nothing left to wake it) never runs its continuation:
** after op->cancel, op->abandon (if any) lets the primitive forget it for
** good. It returns 1 when it took the task out of a queue that cancel had
** left it in (the task is then woken to be finished).
*/
typedef struct tidal_waitop {
  const char *name;            /* what the task waits in, e.g. "tidal.sleep" */
  int (*cancel)(tidal_task *t); /* undo the registration; see above */
  int (*abandon)(tidal_task *t, void *obj); /* may be NULL; see above */
} tidal_waitop;

/* For TIDAL_SPEND: the C function to call again after the budget yield. */
typedef struct tidal_restart {
  lua_CFunction fn;
} tidal_restart;

/* ---------------------------------------------------------------- tasks */

enum { TS_NEW, TS_RUNNABLE, TS_RUNNING, TS_PARKED, TS_DONE };

/* Cancellation kinds, in increasing precedence. CK_CLOSED: Lua code closed
** the task's coroutine (task.c); it can never run again. */
enum {
  CK_NONE, CK_TIMEOUT, CK_ABORT, CK_SHUTDOWN, CK_INTERRUPT, CK_DEADLOCK,
  CK_CLOSED
};

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
#define TF_INTERNAL 0x0400  /* a pooled handle of select / join_all */
#define TF_HANDOFF 0x0800   /* continuing after a handoff (see sched.c) */

/* One bit that belongs to the primitive the task is parked in (as nres
** does while it is queued): set by its waker, on the task's own thread, and
** cleared in its continuation. */
#define TF_OPFLAG 0x1000
#define TF_SLOW 0x2000      /* reported for running long without waiting */
#define TF_XWAIT 0x4000     /* parked on something another thread may wake */
#define TF_CSEEN 0x8000     /* its cancellation was raised in it (sched.c) */

/*
** A task: the payload of its JoinHandle userdata, so a handle costs one
** allocation (kept small: thousands of them sleep at once, and a burst of
** spawns writes one per task). The handle has one uservalue for a task
** spawned with no argument or with one that is nil, a boolean, a number or
** a light userdata (kept in v, in C), else 1 + nargs:
**   not started: 1 = the function, 2.. = its arguments (or v)
**   started:     1 = the function (its coroutine is in the worker's
**                coroutine table at coslot)
**   done:        one scalar result in v, else 1.. = its results (or, when
**                they do not fit, a packed table in 1 with TF_PACKED); for
**                a failure, 1 = {err, traceback}
** While alive, the worker's anchors table holds the handle at anchors[slot]
** (and, once started, its coroutine's stack too). A task's name, if any, is
** in the worker's names table (weak keys: handle -> name).
*/
enum { TV_NONE, TV_NIL, TV_BOOL, TV_INT, TV_FLT, TV_LUD }; /* t->vt */

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
  tidal_task_ext *ext;    /* rarely needed state, or NULL */
  uint64_t id;
  int32_t slot; /* index in the anchors table */
  int32_t nres; /* not started: arguments; alive: values for the next
                   resume; done: results */
  union {
    /* alive: what goes on when the scheduler resumes it (sched.c) */
    lua_KFunction k;
    /* not started: its only argument; done: its only result (task.c),
    ** when vt says so */
    union {
      lua_Integer i;
      lua_Number n;
      void *p;
    } v;
  };
  uint16_t flags;
  uint8_t state, cancel, budget;
  uint8_t tmo; /* expired timeout scopes it is still inside */
  uint8_t vt;  /* TV_NONE, or what v holds */
  int32_t coslot; /* started: its coroutine's index in the worker's table */
};

/* A cancel scope: a deadline around a protected call in the current task
** (scope.c; tidal.timeout is built on it). */
struct tidal_scope {
  tidal_scope *next, *prev; /* the worker's active scopes, newest first */
  tidal_task *task;
  tidal_ctimer timer;
  double seconds;
  const char *label; /* who opened it, for the error: "tidal.timeout" */
  int err_ref;       /* the timeout error once raised (registry), or NOREF */
  uint8_t expired;
  uint8_t at;        /* seconds is a deadline (tidal__scope_open_at) */
};

/* Who hears of a task's end, besides those parked in await/join on it:
**
** A task set (a group of tasks started together: select, join_all,
** tidal.group) links its live members; when one is done, it leaves the set
** and the set's member_done runs (no Lua; in done order). A task is in at
** most one set.
**
** Subscribers (a record that copies the outcome for other workers) are
** told once the task is done and released, with its handle on the stack
** so that its outcome is readable (tidal__push_outcome), and may say that
** another thread asked to abort it (interrupt.c's hook asks). */
typedef struct tidal_taskset tidal_taskset;
struct tidal_taskset {
  tidal_task *live; /* live members, through their ext */
  int nlive;
  void (*member_done)(tidal_taskset *s, tidal_task *t);
};

typedef struct tidal_sub tidal_sub;
typedef struct tidal_subclass {
  /* t is done: its handle is at hidx in L (the worker's state); t's
  ** outcome is readable. s is no longer t's subscriber. */
  void (*release)(tidal_sub *s, lua_State *L, tidal_task *t, int hidx);
  /* 1 if another thread asked to abort the task (any time, t's thread) */
  int (*aborted)(tidal_sub *s);
} tidal_subclass;
struct tidal_sub {
  tidal_sub *next;
  const tidal_subclass *cls;
};

/* Per-task state most tasks never need, taken on first use from the
** worker's free list and given back when the task is released (done). */
struct tidal_task_ext {
  tidal_task *joiners;       /* tasks parked in await/join on this one */
  tidal_taskset *set;        /* the task set it is in, or NULL */
  tidal_task *snext, *sprev; /* links among the set's live members */
  tidal_sub *subs;           /* told when it is done and released */
};

tidal_task_ext *tidal__task_ext(tidal_task *t); /* NULL: out of memory */
/* t (alive) joins s: 0, or -1 when out of memory (its ext). */
int tidal__taskset_add(tidal_taskset *s, tidal_task *t);
void tidal__taskset_remove(tidal_taskset *s, tidal_task *t);
#define tidal__taskset_next(t) ((t)->ext->snext)
/* sub hears of t's end: 0, or -1 when out of memory (its ext). */
int tidal__task_subscribe(tidal_task *t, tidal_sub *sub);
/* t's subscriber of class cls, or NULL. */
tidal_sub *tidal__task_sub_find(tidal_task *t, const tidal_subclass *cls);

/* ---------------------------------------------------------------- worker */

/* Per-worker extensions: state a layer above keeps per worker (the HTTP
** multi handles, the blocking jobs, the free groups, io, ...), created on
** first use and found by its class. close runs at shutdown after every
** task has finished and before the loop closes, in the reverse of the
** order the extensions were set (the last set closes first, as
** destructors do): it must uv_close its handles (the worker then runs the
** loop until they are closed) and free what it owns. It also runs when a
** runtime is collected without close(). shutdown (may be NULL) runs as the
** worker starts shutting down, before its tasks are cancelled: work in
** flight that tasks wait for is stopped there. */
#define TIDAL_EXT_MAX 8

typedef struct tidal_ext_class {
  const char *name; /* for debugging: "http" */
  void (*close)(tidal_worker *w, void *data);
  void (*shutdown)(tidal_worker *w, void *data);
} tidal_ext_class;

typedef struct tidal_ext {
  const tidal_ext_class *cls;
  void *data;
} tidal_ext;

/* w's extension of class cls, or NULL. */
static inline void *tidal__ext_get(tidal_worker *w, const tidal_ext_class *c);
/* Sets it (once per class): 0; UV_ENOMEM when TIDAL_EXT_MAX are set;
** UV_ECANCELED once the worker closed its handles (close would never run:
** the caller frees data). */
int tidal__ext_set(tidal_worker *w, const tidal_ext_class *c, void *data);

/* Something another thread asked a worker to do: wake task, or run fn (in
** the worker's scheduler, outside libuv callbacks: it may use L). */
typedef void (*tidal_remote_fn)(tidal_worker *w, lua_State *L, void *arg);
typedef struct tidal_remote {
  tidal_task *task;
  tidal_remote_fn fn;
  void *arg;
} tidal_remote;

typedef struct tidal_family tidal_family;

/* A worker's libuv handles, allocated apart from it: on a host's loop they
** are closed without running that loop, and their close callbacks (run when
** the host next runs it) free this after the worker is gone. Their data
** fields stay NULL (luv reads a handle's data as its own). */
typedef struct tidal_uvh {
  uv_timer_t timer; /* armed for the heap's earliest deadline */
  uv_async_t async; /* remote wakes (unreferenced: never keeps it alive) */
  uv_check_t check; /* a host's loop: runs the tasks after each poll */
  uv_idle_t idle;   /* a host's loop: no blocking poll while tasks are ready */
  tidal_worker *w;  /* NULL once the worker closed them */
  int open;         /* handles whose close callback has not run yet */
} tidal_uvh;

struct tidal_worker {
  uv_loop_t *loop; /* own_loop, or a host's loop */
  uv_loop_t own_loop;
  tidal_uvh *h;        /* its handles (uvtimer, async: see tidal_uvh) */
  uint8_t hostloop;    /* runs on a host's loop (from its check phase) */
  uint8_t idle_on;     /* h->idle is started */
  uv_mutex_t rlock;    /* guards remote, nremote, remote_cap */
  tidal_remote *remote;
  size_t nremote, remote_cap;
  atomic_int remote_pending;
  uint64_t armed;      /* deadline the uv timer is armed for, 0 if not */
  int polling;         /* inside uv_run (tidal__poll) */
  uint64_t report_at;  /* look for dropped failed tasks then (0: no need) */
  uint64_t report_every; /* and then again this much later */
  tidal_heap timers;
  tidal_task *rq_head, *rq_tail; /* run queue (intrusive, see sched.c) */
  uint32_t rq_len;
  lua_State *L;        /* the state's main thread */
  tidal_ctx *ctx;
  int anchors_ref, pool_ref, side_ref; /* registry refs (tables) */
  int *free_slots;
  int nfree, free_cap, next_slot;
  /* idle coroutines (task.c): a stack of npool, each with its index in
  ** the coroutine table (pool_ref), which holds every coroutine of the
  ** worker, idle or running a task, at an index from the free list */
  struct tidal_idle { lua_State *co; int slot; } *idle;
  int npool, idle_cap;
  int *co_free;
  int co_nfree, co_free_cap, co_next;
  int batch_left; /* steps the scheduler's batch may still take (task.c) */
  uint64_t next_id;
  tidal_ext ext[TIDAL_EXT_MAX]; /* set in slots 0 .. next_ext - 1 */
  int next_ext;
  tidal_scope *scopes, *free_scopes; /* scope.c */
  tidal_task_ext *free_exts;         /* task.c */
  int ipool_ref, nipool;             /* spare internal handles (task.c) */
  uint64_t slow_ns;    /* report a resume longer than this (0: never) */
  tidal_family *family; /* the runtime's workers (family.c) */
  tidal_worker *rt_next; /* the next in ctx->runtimes */
  int index;           /* this worker's index in the family */
  atomic_int load;     /* live tasks, read by other threads */
  atomic_int assigned; /* tasks sent here by spawn_parallel, not started */
  atomic_int started;  /* the worker is up (family.c) */
  int external;        /* tasks parked on something another thread wakes */
  uint8_t stop;        /* worker thread: leave the loop when idle */
  /* interrupt.c: other threads (and the SIGINT handler) interrupt Lua code
  ** running on this worker with a hook on the coroutine it runs now */
  _Atomic(lua_State *) running_co; /* coroutine being resumed, or NULL */
  atomic_int irq;       /* IRQ_* requested */
  atomic_int irq_users; /* threads setting a hook on running_co now */
  /* family.c: posts (tidal__wake_remote) are refused once it is gone */
  atomic_int gone;
  atomic_int posters;   /* threads inside tidal__wake_remote for it */
  uint64_t gc_resumes; /* st.resumes at the last idle collection */
  uint64_t gc_at;      /* coarse time of the last idle collection */
  tidal_task *main;    /* task of the current block_on */
  tidal_task *top;     /* task resumed by the scheduler loop itself */
  tidal_task *handing; /* the task whose handoff is running (task.c) */
  int nested;          /* steps running nested (handoff, select) */
  int handoffs;        /* nested steps since the loop's last one */
  uint64_t slice0;     /* coarse start of the running step's slice */
  uint64_t slice_end;  /* coarse time the last step ended, for the next
                          step of the batch to start from (0: read it) */
  int running;         /* inside block_on or step */
  int closing, closed, handles_open;
  struct {
    uint64_t spawned, resumes, polls, finished, failed, cancelled;
    uint32_t alive, parked;
  } st;
};

static inline int tidal__wq_has(const tidal_wq *q, const tidal_task *t) {
  return q->head == t || t->qprev != NULL;
}

static inline void *tidal__ext_get(tidal_worker *w,
                                   const tidal_ext_class *c) {
  for (int i = 0; i < w->next_ext; i++)
    if (w->ext[i].cls == c) return w->ext[i].data;
  return NULL;
}

/* the kernel's userdata types, numbered in its range (auxlib.h); their
** metatables are registered per state and recognised by pointer (no
** string lookups on hot paths). */
enum { TT_HANDLE = TIDAL_TT_KERNEL, TT_REPORT, TT_KERNEL_END };
_Static_assert((int)TT_KERNEL_END <= (int)TIDAL_TT_FLOW, "kernel type ids");

/* Per Lua state: one for every state that loaded tidal.core. aux's part
** comes first, so the context is also a tidal_actx (upvalue 1 of every C
** function of the module is this one userdata). */
struct tidal_ctx {
  tidal_actx aux;   /* first */
  tidal_worker *w;  /* worker whose scheduler is running now, or NULL */
  tidal_worker *runtimes; /* worker 0 of each open runtime of this state,
                             through rt_next (runtime.c) */
  tidal_task *cur;  /* task being resumed, or NULL */
  int msgh_ref;     /* the tasks' message handler (registry) */
  int names_ref;    /* weak table: JoinHandle -> task name */
  uint8_t pool;     /* a state of the blocking pool (outside any task) */
  /* Whoever runs Lua code in this state outside any task (the blocking
  ** pool) hears when a runtime's loop starts (w) and stops (NULL) running
  ** in it: tidal.run inside a job (loop.c). */
  void (*host_hook)(void *data, tidal_worker *w);
  void *host_data;
  /* Lua code resuming or closing a task's coroutine (sched.c, task.c) */
  lua_CFunction co_resume, co_close, co_wrap; /* lcorolib's, at load */
  lua_State *rf_thread;             /* thread with refuse's hook, or NULL */
  lua_Hook rf_hook;                 /* its own hook, put back after */
  int rf_mask, rf_count;
  int closer_ref; /* to-be-closed value at the base of every task */
  /* the host's report hook for this state (tidal_runtime_set_report) */
  tidal_report_fn report;
  void *report_ud;
};

/* The state's context (registry), or NULL. */
static inline tidal_ctx *tidal__ctx(lua_State *L) {
  return (tidal_ctx *)tidal__actx(L);
}
/* The state's context, loading tidal.core into a state that has none (a
** state that receives a handle). May raise. */
static inline tidal_ctx *tidal__ctx_need(lua_State *L) {
  return (tidal_ctx *)tidal__actx_need(L);
}
/* stack: module. Pushes the state's context, creating it on first use. */
void tidal__ctx_open(lua_State *L);

/* the kernel's side table of a worker (w->side_ref): its slots */
enum { SIDE_UNOBSERVED = 1, SIDE_DEADLOCK, SIDE_N = SIDE_DEADLOCK };

/* The worker whose scheduler runs in L's state now, or NULL. Only for C
** functions of the module and methods of its types: they all carry the
** context as upvalue 1 (cheaper than the registry lookup of tidal__ctx,
** which matters on release paths such as Guard:release). */
static inline tidal_worker *tidal__cur_worker(lua_State *L) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  return ctx ? ctx->w : NULL;
}
/* The object the tasks in q wait on is being freed, so nothing can wake
** them any more: they stay parked, registered nowhere, and cancelling them
** later touches nothing. Happens when finalizers run in creation order at
** lua_close (the runtime's own __gc withdraws every wait afterwards) or
** after a __gc called by hand. cur: the worker running on this thread, or
** NULL (its tasks then stop counting as waiting on another thread). */
void tidal__wq_orphan(tidal_wq *q, tidal_worker *cur);

/* sched.c */
int tidal__worker_init(tidal_worker *w, lua_State *L, tidal_ctx *ctx,
                       uv_loop_t *host_loop);
void tidal__worker_free(tidal_worker *w); /* after handles are closed */
void tidal__worker_close_handles(tidal_worker *w);
void tidal__ext_shutdown(tidal_worker *w); /* runs the shutdown hooks */
void tidal__runq_push(tidal_worker *w, tidal_task *t);
tidal_task *tidal__runq_pop(tidal_worker *w);
void tidal__runq_remove(tidal_worker *w, tidal_task *t);
tidal_task *tidal__wait_begin(lua_State *L, const char *fname);
/* tidal__wait_begin for a caller that has the context's current task t. */
static inline tidal_task *tidal__wait_ok(lua_State *L, tidal_task *t,
                                         const char *fname) {
  if (t != NULL && t->co == L && lua_isyieldable(L)) return t;
  return tidal__wait_begin(L, fname); /* raises */
}
tidal_task *tidal__task_check(lua_State *L, const char *fname);
void tidal__interrupt(tidal_task *t);
int tidal__park(lua_State *L, tidal_task *t, const tidal_waitop *op,
                void *obj, lua_KFunction k);
/* The same, for an object shared between workers: the wake may come from
** another thread, so the worker's loop must stay alive meanwhile. */
int tidal__park_shared(lua_State *L, tidal_task *t, const tidal_waitop *op,
                       void *obj, lua_KFunction k);
void tidal__wake(tidal_task *t, int nvalues);
int tidal__wake_remote(tidal_worker *w, tidal_task *t, tidal_remote_fn fn,
                       void *arg);
void tidal__drain_remote(tidal_worker *w, lua_State *L);
/* Wake t, which may belong to another worker than cur (NULL: unknown). */
void tidal__wake_any(tidal_worker *cur, tidal_task *t);
/* A task of w starts / stops waiting on something another thread wakes. */
void tidal__external(tidal_worker *w, int delta);
void tidal__async_ref(tidal_worker *w);
void tidal__requeue(tidal_task *t);
int tidal__budget_yield(lua_State *L, tidal_task *t, const tidal_restart *r);
int tidal__yield(lua_State *L, tidal_task *t, lua_KFunction k);
void tidal__unhook(lua_State *L, tidal_ctx *ctx);
void tidal__refuse(lua_State *L); /* message on top */
void tidal__cancel(tidal_task *t, int kind);
int tidal__raise_cancel(lua_State *L, tidal_task *t); /* never returns */
/* A task resumes from a wait: raise if its wait was withdrawn, or if it was
** cancelled after the wake but before it ran (its operation is not observed
** yet, so it is withdrawn too: the waker's ops pass such wakes on, see
** tidal__wake_lost). Inline: every wait's continuation calls it. */
static inline void tidal__resumed(lua_State *L, tidal_task *t) {
  if ((t->flags & TF_WAKECANCEL) || (t->cancel | t->tmo)) {
    t->flags &= ~TF_WAKECANCEL;
    tidal__raise_cancel(L, t);
  }
}
/* Was t woken for its operation, but is about to raise a cancellation
** instead? Then the primitive must pass the wake on to the next waiter. */
static inline int tidal__wake_lost(tidal_task *t) {
  return !(t->flags & TF_WAKECANCEL) && (t->cancel | t->tmo);
}
void tidal__push_cancel_error(lua_State *L, tidal_task *t);
/* The handle at the top of the stack, of task t dropped with its collected
** runtime, lets go of its coroutine (or function and arguments); a started
** one gets its outcome: failed, as cancelled. */
void tidal__task_release(lua_State *L, tidal_task *t, int started);
/* Starts t's own timer (t->timer: t waits with a deadline and is woken
** when it passes; its op's cancel stops it). 0 or UV_ENOMEM. */
int tidal__timer_start(tidal_worker *w, tidal_timer *tm, uint64_t due);
/* Starts a timer whose fire callback runs when due. 0 or UV_ENOMEM. */
int tidal__ctimer_start(tidal_worker *w, tidal_ctimer *ct, uint64_t due,
                        tidal_timer_fn fire);
void tidal__timer_stop(tidal_worker *w, tidal_timer *tm); /* either kind */
void tidal__poll(tidal_worker *w, lua_State *L, int block,
                 uint64_t max_wait_ns);
uint64_t tidal__idle_gc(tidal_worker *w, lua_State *L);
int tidal__pending(tidal_worker *w);
int tidal__slot_alloc(tidal_worker *w);
void tidal__slot_free(tidal_worker *w, int slot);

#define TIDAL_SPEND(L, t, r)                                                   \
  do {                                                                         \
    if (--(t)->budget == 0) return tidal__budget_yield((L), (t), (r));         \
  } while (0)

/* task.c */
/* stack: module, ctx. The tasks' message handler and closer, the
** FailureReport type (the JoinHandle type is lib's: lib/handle.c). */
void tidal__kernel_open(lua_State *L);
/* waiter (parked on h in await/join) is woken when h is done: 0, or -1
** when out of memory (h's ext); unjoin withdraws it. */
int tidal__task_join(tidal_task *h, tidal_task *waiter);
void tidal__task_unjoin(tidal_task *h, tidal_task *waiter);
tidal_task *tidal__spawn(lua_State *L, tidal_worker *w, int first);
/* A task for select / join_all: fn at fnidx, pushes its handle (pooled,
** never shown to users), not queued. Give the handle back with
** tidal__spawn_internal_done once the task is done and its outcome read. */
tidal_task *tidal__spawn_internal(lua_State *L, tidal_worker *w, int fnidx);
void tidal__spawn_internal_done(lua_State *L, tidal_worker *w, int hidx);
int tidal__run_batch(tidal_worker *w, lua_State *L, int max);
int tidal__run_now(lua_State *L, tidal_task *t);
int tidal__handoff(lua_State *L, tidal_task *t);
void tidal__task_finish_unstarted(tidal_task *t);
void tidal__task_finish_forced(tidal_worker *w, lua_State *L, tidal_task *t);
int tidal__push_outcome(lua_State *L, tidal_task *t, int idx, int raise);
tidal_task *tidal__task_from_anchor(lua_State *L, int idx);
void tidal__push_handle(lua_State *L, tidal_task *t); /* alive task */
/* "task 5 (name)"; handle at idx, or 0 to look it up (alive task) */
void tidal__push_label(lua_State *L, tidal_task *t, int handle);
void tidal__report_unobserved(lua_State *L, tidal_worker *w);
/* Reports the failed tasks whose handles were dropped since; returns
** whether some failure is still unobserved (its handle is still held). */
int tidal__report_dropped(lua_State *L, tidal_worker *w);
const char *tidal__state_name(const tidal_task *t);
/* Pushes "source:line" where task t (handle at ud) is: the innermost Lua
** frame of its coroutine, or where its function is defined if it has not
** started. */
void tidal__push_where(lua_State *L, tidal_task *t, int ud);

/* kernel/loop.c: the run loops of a worker */
/* Runs stack[first..top] as w's main task until it is done (deadlock is
** detected: the main task fails with the report); pushes its handle and
** returns it. Ctrl-C is watched from here on: the caller stops watching
** (tidal__sigint_stop) when it is done with the runtime. */
tidal_task *tidal__block_on(lua_State *L, tidal_worker *w, int first);
/* Polls once (waiting up to timeout s when nothing is runnable) and runs
** what is runnable. */
void tidal__worker_step(lua_State *L, tidal_worker *w, double timeout);
/* Shutdown, in two steps: every task of w is cancelled and unwinds
** (unwind); then the family's threads do the same and end, and w's loop
** and memory go (close). No callback runs after close returns. */
void tidal__worker_unwind(lua_State *L, tidal_worker *w);
void tidal__worker_close(lua_State *L, tidal_worker *w);
/* w's runtime was collected without close(): w goes without running any
** task code. */
void tidal__worker_drop(lua_State *L, tidal_worker *w);
/* w, worker 0 of a new runtime, is listed in its state's open runtimes
** (unlisted by tidal__worker_close / tidal__worker_drop). */
void tidal__worker_list(tidal_worker *w);
/* Seconds until w has something to do: 0 now, -1 never (a host's poll). */
double tidal__worker_next_timeout(tidal_worker *w);
/* A worker on a host's loop: its check handle runs this after each poll
** (poll.c); tasks queued while the loop is elsewhere start its idle handle
** so that the poll does not block (tidal__host_kick). */
void tidal__host_check(tidal_worker *w);
void tidal__host_kick(tidal_worker *w);
/* Reports msg (one text, no final newline) to the host's hook of w's
** runtime (w may be NULL), else of L's state, else to stderr as
** "tidal: <msg>". Any thread; no Lua is called. */
void tidal__report_msg(lua_State *L, tidal_worker *w, int kind,
                       const char *msg);
/* The same for the value at idx (a string, else "error"). */
void tidal__report_text(lua_State *L, tidal_worker *w, int kind, int idx);
/* A worker thread's scheduler: runs until its family stops it, then
** cancels its tasks and lets them unwind. */
void tidal__worker_run(lua_State *L, tidal_worker *w);

/* kernel/scope.c: cancel scopes. Opening one in task t sets a deadline
** (seconds; <= 0: expired at once; HUGE_VAL: none) after which t's waits
** raise the scope's timeout error, "<label>: timed out after <s> s", until
** the scope is closed (sticky); the error is raised at the outermost
** expired scope, so nested scopes unwind to the right one. NULL: no
** memory (nothing left behind). */
tidal_scope *tidal__scope_open(tidal_task *t, double seconds,
                               const char *label);
/* The same with a deadline on the tidal.now() clock (seconds; not after
** now: expired at once; HUGE_VAL: none); its error says "<label>: deadline
** passed". */
tidal_scope *tidal__scope_open_at(tidal_task *t, double at,
                                  const char *label);
/* Whether the error at idx is sc's own timeout error. */
int tidal__scope_owns(lua_State *L, tidal_scope *sc, int idx);
/* Leaves the scope: unlinked, its deadline stopped. */
void tidal__scope_close(lua_State *L, tidal_scope *sc);
int tidal__scope_error(lua_State *L, tidal_task *t); /* pushes, or 0 */
void tidal__scopes_drop(tidal_worker *w, tidal_task *t); /* t == NULL: all */

/* family.c: the workers of a runtime */
struct tidal_family {
  int n;                /* workers, including worker 0 */
  tidal_worker **w;     /* w[0]: the runtime's own; w[1..]: threads */
  uv_thread_t *threads; /* threads[i] runs w[i], i >= 1 */
  int nstarted;         /* threads running */
  uv_sem_t ready;
  char start_error[256];
  char *thread_name, *path, *cpath;
  uint64_t slow_ns;
  atomic_uint_fast64_t next_id; /* ids of tasks spawned in parallel */
  /* the host's report hook (tidal_runtime_set_report), under ext_lock */
  tidal_report_fn report;
  void *report_ud;
  uv_mutex_t ext_lock; /* guards ext, next_ext (any thread) */
  struct {
    const struct tidal_fext_class *cls;
    void *data;
  } ext[TIDAL_EXT_MAX];
  int next_ext;
};

/* Per-family extensions: state a layer above shares between the workers
** and threads of a runtime (the blocking pool's idle Lua states), created
** on first use by any thread and freed with the family, once every worker
** thread is joined. */
typedef struct tidal_fext_class {
  const char *name;
  void *(*create)(tidal_family *f); /* NULL: no memory */
  void (*free)(tidal_family *f, void *data);
} tidal_fext_class;

/* f's extension of class c, created on first use; NULL: no memory. */
void *tidal__family_ext(tidal_family *f, const tidal_fext_class *c);

tidal_family *tidal__family_new(tidal_worker *w0, int nthreads,
                                const char *thread_name, const char *path,
                                const char *cpath, char *err, size_t errlen);
void tidal__family_stop(tidal_family *f);
void tidal__family_free(tidal_family *f);
tidal_worker *tidal__family_pick(tidal_family *f);
/* w takes no more posts; what was posted before runs now (w's thread). */
void tidal__worker_retire(tidal_worker *w, lua_State *L);

/* interrupt.c: interrupting Lua code that does not wait (see there). */
#define TIDAL_IRQ_GRACE 1000000 /* instructions (~10 ms) before the hook */
enum { IRQ_SIGINT = 1, IRQ_SHUTDOWN = 2 }; /* bits of w->irq */
/* Around each resume (w's thread): co is what w runs now. */
static inline lua_State *tidal__irq_enter(tidal_worker *w, lua_State *co) {
  lua_State *prev = atomic_load_explicit(&w->running_co, memory_order_relaxed);
  atomic_store_explicit(&w->running_co, co, memory_order_release);
  return prev;
}
static inline void tidal__irq_leave(tidal_worker *w, lua_State *prev) {
  atomic_store_explicit(&w->running_co, prev, memory_order_release);
}
void tidal__irq_quiesce(tidal_worker *w); /* before a coroutine is dropped */
void tidal__irq_arm(tidal_worker *w);     /* any thread */
void tidal__irq_request(tidal_worker *w, int irq); /* any thread */
void tidal__irq_set(lua_State *co); /* a coroutine of the caller's worker */
int tidal__irq_in_finalizer(lua_State *L);
void tidal__sigint_start(tidal_worker *w); /* worker 0, around block_on */
void tidal__sigint_stop(tidal_worker *w);
int tidal__sigint_take(tidal_worker *w);
/* The signal module, while a task waits for SIGINT: Ctrl-C goes to it
** instead of interrupting the runtime (delta +1 / -1). */
void tidal__sigint_claim(int delta);

#endif
