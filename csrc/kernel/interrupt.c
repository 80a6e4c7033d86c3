/*
** interrupt.c: interrupting Lua code that runs without waiting, and Ctrl-C.
**
** A task is cancelled where it waits (kernel.h); Lua code that never
** waits -- an endless loop, a long computation -- is reached with a count
** hook instead, as lua5.4 reaches a running script on Ctrl-C (lua.c's
** laction / lstop). Whoever wants it interrupted -- the SIGINT handler,
** the thread shutting the runtime down, a task aborting a parallel task --
** sets the hook on the coroutine the worker is resuming now
** (w->running_co): lua_sethook is the one call of the Lua API meant to be
** made from outside the thread that runs the code. The hook fires after
** TIDAL_IRQ_GRACE more instructions of that coroutine: code that reaches a
** wait before then is cancelled there as usual, only runaway code is
** interrupted at an arbitrary instruction. It raises the task's
** cancellation (cancelled, or interrupted for Ctrl-C), once: a task that has
** seen its cancellation (TF_CSEEN) runs its cleanup undisturbed. A hook
** left on a coroutine that went back to the worker's pool finds nothing to
** do and removes itself. Code in a finalizer (__gc) is never interrupted:
** the hook comes back later.
**
** What cannot be interrupted: a C function that does not return (a
** blocking read, os.execute), and a busy loop inside a plain coroutine
** (coroutine.wrap) of the task: the hook is set on the task's own
** coroutine, and fires when control comes back to it.
**
** The coroutine a hook is set on must stay alive meanwhile: the worker
** publishes running_co around each resume, and before a coroutine can be
** reset or collected it waits for the threads setting a hook
** (tidal__irq_quiesce; a Dekker handshake with irq_users).
**
** Ctrl-C: while tidal.run or rt:block_on runs, a uv_signal_t watches
** SIGINT on the runtime's loop (unreferenced: it keeps nothing alive). Its
** callback runs only when the loop polls, which a busy task never lets it
** do, so the process-wide handler that libuv installs is wrapped: ours calls
** libuv's (which still feeds every uv_signal_t, tidal's own and any other
** watcher in the process), then flags each running runtime (IRQ_SIGINT) and
** sets the hook on what it runs. The scheduler cancels the main task with
** kind "interrupted"; a second SIGINT restores the default disposition and
** ends the process. When the last runtime stops watching, the disposition
** from before is restored, so the host's own SIGINT handling is untouched
** afterwards. A process that ignores SIGINT (SIG_IGN) keeps ignoring it.
** A program that waits for SIGINT itself (the signal module) claims it with
** tidal__sigint_claim: then the handler leaves the interruption out.
*/
#include "kernel.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------- the hook */

/* Is L running a finalizer (at any depth)? Lua names such a frame __gc. */
int tidal__irq_in_finalizer(lua_State *L) {
  lua_Debug ar;
  for (int level = 0; lua_getstack(L, level, &ar); level++) {
    if (lua_getinfo(L, "n", &ar) && ar.namewhat != NULL && ar.name != NULL &&
        strcmp(ar.namewhat, "metamethod") == 0 && strcmp(ar.name, "__gc") == 0)
      return 1;
  }
  return 0;
}

/* Did another thread ask to abort t (one of its subscribers says so)? */
static int aborted_elsewhere(tidal_task *t) {
  for (tidal_sub *sub = t->ext->subs; sub != NULL; sub = sub->next)
    if (sub->cls->aborted != NULL && sub->cls->aborted(sub)) return 1;
  return 0;
}

/* The cancellation to raise in t, running on w, or CK_NONE. */
static int pending(tidal_worker *w, tidal_task *t) {
  int irq = atomic_load(&w->irq);
  int kind = CK_NONE;
  if (irq & IRQ_SIGINT)
    kind = CK_INTERRUPT;
  else if (irq & IRQ_SHUTDOWN)
    kind = CK_SHUTDOWN;
  else if (t->ext != NULL && aborted_elsewhere(t))
    kind = CK_ABORT;
  if (kind > t->cancel) return kind;
  if (t->flags & TF_CSEEN) return CK_NONE; /* it knows: let it clean up */
  /* cancelled, and it has not seen it yet */
  if (kind != CK_NONE || t->cancel >= CK_SHUTDOWN) return t->cancel;
  return CK_NONE;
}

static void irq_hook(lua_State *L, lua_Debug *ar) {
  tidal_ctx *ctx;
  tidal_worker *w;
  tidal_task *t;
  int kind;
  (void)ar;
  lua_sethook(L, NULL, 0, 0); /* first: a request set from now on stays */
  ctx = tidal__ctx(L);
  if (ctx == NULL || (w = ctx->w) == NULL || (t = ctx->cur) == NULL ||
      t->co != L)
    return; /* left over on a pooled coroutine, or a plain coroutine's */
  if ((kind = pending(w, t)) == CK_NONE) return;
  if (tidal__irq_in_finalizer(L)) { /* not there: look again later */
    lua_sethook(L, irq_hook, LUA_MASKCOUNT, TIDAL_IRQ_GRACE / 16);
    return;
  }
  tidal__cancel(t, kind); /* (running: only records the kind) */
  tidal__raise_cancel(L, t);
}

/* Sets the hook on co. For a coroutine of the calling thread's own worker,
** or under tidal__irq_arm's protocol. */
void tidal__irq_set(lua_State *co) {
  if (lua_gethook(co) != irq_hook)
    lua_sethook(co, irq_hook, LUA_MASKCOUNT, TIDAL_IRQ_GRACE);
}

/* Any thread (and the SIGINT handler): interrupt what w runs now. */
void tidal__irq_arm(tidal_worker *w) {
  lua_State *co;
  atomic_fetch_add(&w->irq_users, 1);
  co = atomic_load(&w->running_co);
  if (co != NULL) tidal__irq_set(co);
  atomic_fetch_sub(&w->irq_users, 1);
}

void tidal__irq_request(tidal_worker *w, int irq) {
  atomic_fetch_or(&w->irq, irq);
  tidal__irq_arm(w);
}

/* w's thread, after running_co stopped pointing at a coroutine that is now
** about to be reset or dropped: wait for threads still setting a hook on
** the coroutine they read before. */
void tidal__irq_quiesce(tidal_worker *w) {
  atomic_thread_fence(memory_order_seq_cst);
  while (atomic_load(&w->irq_users) != 0) uv_sleep(0);
}

/* ------------------------------------------------------------- Ctrl-C */

#define SIG_SLOTS 64 /* runtimes watching SIGINT at once */

typedef struct sigwatch {
  uv_signal_t h;
  int slot; /* in sig_slot, or -1 while not watching */
} sigwatch;

static uv_once_t sig_once = UV_ONCE_INIT;
static uv_mutex_t sig_mu;          /* guards what follows, up to the atomics */
static int sig_users;              /* runtimes watching */
static int sig_ignored;            /* SIGINT was SIG_IGN when the first began */
static struct sigaction sig_prev;  /* the disposition before the first */
static struct sigaction sig_uv;    /* libuv's handler, wrapped by ours */
static _Atomic(tidal_worker *) sig_slot[SIG_SLOTS];
static atomic_int sig_inflight;    /* handlers running now */
static atomic_int sig_count;       /* SIGINTs since the first began */
static atomic_int sig_claims;      /* waiters of the signal module */

static void sig_init(void) {
  if (uv_mutex_init(&sig_mu)) abort();
}

/* The first SIGINT interrupts every runtime watching; the next one ends
** the process. Async-signal-safe. */
static void sigint_act(void) {
  if (atomic_load(&sig_claims) > 0) return; /* a program waits for it */
  if (atomic_fetch_add(&sig_count, 1) > 0) {
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(SIGINT, &dfl, NULL);
    raise(SIGINT); /* delivered as soon as the handler returns */
    return;
  }
  for (int i = 0; i < SIG_SLOTS; i++) {
    tidal_worker *w = atomic_load(&sig_slot[i]);
    if (w != NULL) tidal__irq_request(w, IRQ_SIGINT);
  }
}

static void on_sigint(int signum) {
  int saved = errno;
  atomic_fetch_add(&sig_inflight, 1);
  if (sig_uv.sa_handler != SIG_DFL && sig_uv.sa_handler != SIG_IGN)
    sig_uv.sa_handler(signum); /* libuv: every uv_signal_t watching */
  sigint_act();
  atomic_fetch_sub(&sig_inflight, 1);
  errno = saved;
}

static int wrapped(void) {
  struct sigaction cur;
  return sigaction(SIGINT, NULL, &cur) == 0 && !(cur.sa_flags & SA_SIGINFO) &&
         cur.sa_handler == on_sigint;
}

/* Our watcher's callback: a fallback for when libuv put its own handler
** back in place of ours (then busy code is not reached, the rest works). */
static void on_uv_sigint(uv_signal_t *h, int signum) {
  (void)h;
  (void)signum;
  if (!wrapped()) {
    atomic_fetch_add(&sig_inflight, 1);
    sigint_act();
    atomic_fetch_sub(&sig_inflight, 1);
  }
}

static void sigwatch_close_cb(uv_handle_t *h) {
  free(tidal__container_of(h, sigwatch, h));
}

static void sigwatch_close(tidal_worker *w, void *data) {
  sigwatch *s = (sigwatch *)data;
  tidal__sigint_stop(w);
  uv_close((uv_handle_t *)&s->h, sigwatch_close_cb);
}

/* Worker 0 of a runtime about to run block_on: watch SIGINT. Without
** memory, or with SIG_SLOTS runtimes watching already, it goes without. */
static const tidal_ext_class sigint_ext = {"sigint", sigwatch_close, NULL};

void tidal__sigint_start(tidal_worker *w) {
  sigwatch *s = (sigwatch *)tidal__ext_get(w, &sigint_ext);
  int slot = -1;
  uv_once(&sig_once, sig_init);
  if (!w->handles_open) return;
  if (s == NULL) {
    if ((s = (sigwatch *)malloc(sizeof *s)) == NULL) return;
    if (uv_signal_init(w->loop, &s->h)) {
      free(s);
      return;
    }
    s->slot = -1;
    if (tidal__ext_set(w, &sigint_ext, s)) { /* (full) */
      uv_close((uv_handle_t *)&s->h, sigwatch_close_cb);
      return;
    }
  }
  if (s->slot >= 0) return; /* watching already */
  uv_mutex_lock(&sig_mu);
  for (int i = 0; i < SIG_SLOTS && slot < 0; i++)
    if (atomic_load(&sig_slot[i]) == NULL) slot = i;
  if (slot < 0) goto out;
  if (sig_users == 0) {
    if (sigaction(SIGINT, NULL, &sig_prev) != 0) goto out;
    sig_ignored = !(sig_prev.sa_flags & SA_SIGINFO) &&
                  sig_prev.sa_handler == SIG_IGN;
    atomic_store(&sig_count, 0);
  }
  if (sig_ignored) goto out; /* e.g. started in the background: leave it */
  if (uv_signal_start(&s->h, on_uv_sigint, SIGINT)) goto out;
  uv_unref((uv_handle_t *)&s->h);
  if (sig_users == 0) {
    struct sigaction sa;
    if (sigaction(SIGINT, NULL, &sig_uv) == 0 &&
        !(sig_uv.sa_flags & SA_SIGINFO) && sig_uv.sa_handler != SIG_DFL &&
        sig_uv.sa_handler != SIG_IGN && sig_uv.sa_handler != on_sigint) {
      sa = sig_uv;
      sa.sa_handler = on_sigint;
      sigaction(SIGINT, &sa, NULL);
    } else {
      memset(&sig_uv, 0, sizeof sig_uv);
      sig_uv.sa_handler = SIG_DFL;
    }
  }
  sig_users++;
  s->slot = slot;
  atomic_store(&sig_slot[slot], w);
out:
  uv_mutex_unlock(&sig_mu);
}

/* Stop watching (idempotent); the disposition from before comes back when
** no runtime watches any more. */
void tidal__sigint_stop(tidal_worker *w) {
  sigwatch *s = (sigwatch *)tidal__ext_get(w, &sigint_ext);
  if (s == NULL || s->slot < 0) return;
  uv_mutex_lock(&sig_mu);
  atomic_store(&sig_slot[s->slot], NULL);
  s->slot = -1;
  uv_signal_stop(&s->h);
  if (--sig_users == 0) {
    /* libuv put SIG_DFL back if it watches SIGINT nowhere else; if it
    ** still does, its own handler goes back in place of ours */
    if (wrapped())
      sigaction(SIGINT, &sig_uv, NULL);
    else
      sigaction(SIGINT, &sig_prev, NULL);
  }
  uv_mutex_unlock(&sig_mu);
  atomic_fetch_and(&w->irq, ~IRQ_SIGINT);
  /* a handler running on another thread may still be using w */
  while (atomic_load(&sig_inflight) != 0) uv_sleep(0);
}

/* The scheduler of w: was there a Ctrl-C to act on? */
int tidal__sigint_take(tidal_worker *w) {
  if (!(atomic_load_explicit(&w->irq, memory_order_relaxed) & IRQ_SIGINT))
    return 0;
  return (atomic_fetch_and(&w->irq, ~IRQ_SIGINT) & IRQ_SIGINT) != 0;
}

void tidal__sigint_claim(int delta) {
  atomic_fetch_add(&sig_claims, delta);
}
