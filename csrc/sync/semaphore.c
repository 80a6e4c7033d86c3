/*
** semaphore.c: tidal.semaphore(n), a counting semaphore with FIFO waiters.
**
** s:acquire([k]) waits for k permits (default 1) and returns a Permit that
** gives them back when released, closed (<close>) or collected. Waiters are
** served in order: a large request at the head is not overtaken by smaller
** ones behind it. Permits are handed to the head waiter directly; a waiter
** cancelled before it runs gives them back, which serves the next. close()
** makes pending and later acquires return nil, err (kind "closed"); as in
** Tokio it leaves the count alone (permits given back later still count,
** and available() says so), and a waiter already granted its permits
** keeps them. A semaphore holds at most TIDAL_SEM_MAX permits in all
** (available or out): a larger count is an argument error, never an
** overflow.
**
** Shared mode (copied to another state): operations take the semaphore's
** mutex; waiters on other workers are woken through their remote queues.
*/
#include "shared.h"

#include <stdlib.h>

#define SEM_MT "tidal.Semaphore"
#define PERMIT_MT "tidal.Permit"

/* Most permits a semaphore can hold (Tokio's MAX_PERMITS is usize::MAX
** >> 3); a single acquire asks for at most INT32_MAX. */
#define TIDAL_SEM_MAX (LUA_MAXINTEGER >> 3)

/* A waiter was woken with its permits (not by close): the kernel's bit for
** the primitive a task is parked in, set on the task's own thread. */
#define TF_GRANTED TF_OPFLAG

typedef struct sem {
  atomic_int refs;   /* the semaphore's userdata (any state), live permits */
  lua_Integer avail; /* permits available */
  lua_Integer total; /* permits it holds: available, out or granted */
  uint8_t closed;
  tidal_wq waiters; /* each wants t->nres permits */
  tidal_shared sh;  /* cross-worker mode: its mutex guards the above */
} sem;



typedef struct semud {
  tidal_handle h; /* first; h.core: the semaphore (NULL once finalized) */
} semud;

#define SM(u) ((sem *)(u)->h.core)

typedef struct permit {
  sem *s;
  lua_Integer k;
} permit;

/* cur: the worker running on this thread, or NULL */
static void sem_unref(sem *s, tidal_worker *cur) {
  if (atomic_fetch_sub(&s->refs, 1) != 1) return;
  tidal__wq_orphan(&s->waiters, cur); /* (see kernel.h) */
  tidal__sh_destroy(&s->sh);
  free(s);
}

/* Posted to the worker of a waiter granted its permits from another
** thread: a task's flags are only touched on its own thread. */
static void granted_msg(tidal_worker *w, lua_State *L, void *arg) {
  tidal_task *t = (tidal_task *)arg;
  (void)w;
  (void)L;
  if (t->state != TS_PARKED) return;
  t->flags |= TF_GRANTED;
  tidal__wake(t, 0);
}

/* Serve waiters from the head while enough permits are available. Locked. */
static void serve(sem *s, tidal_worker *cur) {
  tidal_task *t;
  while ((t = s->waiters.head) != NULL && (s->closed || t->nres <= s->avail)) {
    lua_Integer k = t->nres; /* (read before the wake: it resets nres) */
    tidal__wq_pop(&s->waiters);
    if (s->closed) { /* woken without permits: it sees "closed" */
      tidal__sh_wake(&s->sh, t, cur);
    } else if (!s->sh.on || t->w == cur) {
      s->avail -= k;
      t->flags |= TF_GRANTED;
      tidal__wake(t, 0);
    } else if (tidal__wake_remote(t->w, NULL, granted_msg, t) == 0) {
      s->avail -= k;
    } /* (else its worker is gone: the permits stay available) */
  }
}

static void give_back(sem *s, lua_Integer k, tidal_worker *cur) {
  tidal__sh_lock(&s->sh);
  s->avail += k;
  serve(s, cur);
  tidal__sh_unlock(&s->sh);
}

/* Pushes a Permit that holds nothing yet: made before permits are taken,
** so that a memory error cannot lose them (STYLE.md). */
static void new_permit(lua_State *L, tidal_ctx *ctx) {
  permit *p = (permit *)lua_newuserdatauv(L, sizeof *p, 0);
  p->s = NULL;
  p->k = 0;
  tidal__setmt(L, &ctx->aux, TT_PERMIT);
}

/* The Permit on top (from new_permit) gets k permits of s. */
static int push_permit(lua_State *L, sem *s, lua_Integer k) {
  permit *p = (permit *)lua_touserdata(L, -1);
  p->s = s;
  p->k = k;
  atomic_fetch_add(&s->refs, 1);
  return 1;
}

/* The count at index 2: 1 when absent, else an integer from 1 to max. */
static lua_Integer check_k(lua_State *L, const char *fname, lua_Integer max) {
  lua_Integer k = 1;
  if (!lua_isnoneornil(L, 2)) {
    if (!lua_isinteger(L, 2) || lua_tointeger(L, 2) < 1 ||
        lua_tointeger(L, 2) > max)
      luaL_error(L,
                 "%s: the number of permits must be an integer >= 1 and "
                 "<= %I, got %s",
                 fname, (LUAI_UACINT)max, tidal__describe(L, 2));
    k = lua_tointeger(L, 2);
  }
  return k;
}

static int closed(lua_State *L) {
  lua_pushnil(L);
  tidal__error_push(L, "closed", "semaphore closed");
  return 2;
}

/* Under the lock, with a new Permit on top: takes k permits at once if it
** can (FIFO: not past waiters) and returns the results, lock released; or
** -1, lock held. */
static int try_take(lua_State *L, sem *s, lua_Integer k) {
  if (s->closed) {
    tidal__sh_unlock(&s->sh);
    return closed(L);
  }
  if (s->waiters.head == NULL && k <= s->avail) {
    s->avail -= k;
    tidal__sh_unlock(&s->sh);
    return push_permit(L, s, k);
  }
  return -1;
}

static void unref(lua_State *L, void *core) {
  sem_unref((sem *)core, tidal__cur_worker(L));
}

/* A finalized semaphore has no core: every method checks (close() closes
** the semaphore itself, for every handle, not the handle). */
static const tidal_htype sem_type = {TT_SEMAPHORE, "semaphore", NULL, unref};

/* tidal.semaphore(n) */
static int l_semaphore(lua_State *L) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  if (!lua_isinteger(L, 1) || lua_tointeger(L, 1) < 0 ||
      lua_tointeger(L, 1) > TIDAL_SEM_MAX)
    return luaL_error(L,
                      "tidal.semaphore: the number of permits must be an "
                      "integer >= 0 and <= %I, got %s",
                      (LUAI_UACINT)TIDAL_SEM_MAX, tidal__describe(L, 1));
  lua_Integer n = lua_tointeger(L, 1);
  semud *u = (semud *)tidal__handle_new(L, &ctx->aux, &sem_type, sizeof *u,
                                        0);
  sem *s = (sem *)calloc(1, sizeof *s);
  if (s == NULL) return luaL_error(L, "tidal.semaphore: not enough memory");
  atomic_init(&s->refs, 1);
  s->avail = s->total = n;
  tidal__handle_attach(&u->h, s);
  return 1;
}

/* The core of the Semaphore at 1; NULL once finalized. */
static sem *check_sem(lua_State *L, const char *fname) {
  return SM((semud *)tidal__checkud(L, 1, TT_SEMAPHORE, fname));
}

/* smaller requests behind a cancelled large one may go */
static void serve_after(void *obj, tidal_worker *cur) {
  serve((sem *)obj, cur);
}

static int sem_cancel(tidal_task *t) {
  sem *s = (sem *)t->wobj;
  /* 0: the permits are on their way */
  return tidal__sh_withdraw(&s->sh, &s->waiters, t, serve_after, s);
}

static const tidal_waitop acquire_op = {"Semaphore:acquire", sem_cancel, NULL};

static int acquire_k(lua_State *L, int status, lua_KContext ctxk) {
  tidal_task *t = (tidal_task *)ctxk;
  sem *s = SM((semud *)lua_touserdata(L, 1));
  lua_Integer k = lua_isnoneornil(L, 2) ? 1 : lua_tointeger(L, 2);
  (void)status;
  if (s == NULL) { /* its __gc was called while it waited */
    tidal__resumed(L, t);
    return closed(L);
  }
  int granted = (t->flags & TF_GRANTED) != 0; /* (set on this thread) */
  t->flags &= ~TF_GRANTED;
  if (granted && tidal__wake_lost(t)) give_back(s, k, t->w);
  tidal__resumed(L, t);
  if (!granted) return closed(L); /* woken by close() */
  lua_settop(L, 3); /* the Permit made before parking */
  return push_permit(L, s, k);
}

static int l_acquire(lua_State *L);
static const tidal_restart acquire_again = {l_acquire};

/* s:acquire([k]) -> permit | nil, err (closed) */
static int l_acquire(lua_State *L) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  sem *s = check_sem(L, "Semaphore:acquire");
  lua_Integer k = check_k(L, "Semaphore:acquire", INT32_MAX);
  if (s == NULL) return closed(L); /* finalized */
  tidal_task *t = tidal__wait_begin(L, "Semaphore:acquire");
  TIDAL_SPEND(L, t, &acquire_again);
  lua_settop(L, 2);
  new_permit(L, ctx); /* at 3 */
  tidal__sh_lock(&s->sh);
  int r = try_take(L, s, k);
  if (r >= 0) return r;
  t->nres = (int32_t)k; /* what it waits for, while parked */
  t->flags &= ~TF_GRANTED;
  return tidal__sh_park(L, &s->sh, t, &s->waiters, 0, &acquire_op, s,
                       acquire_k);
}

/* s:try_acquire([k]) -> permit | nil, err (no_permits / closed) */
static int l_try_acquire(lua_State *L) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  sem *s = check_sem(L, "Semaphore:try_acquire");
  lua_Integer k = check_k(L, "Semaphore:try_acquire", INT32_MAX);
  if (s == NULL) return closed(L); /* finalized */
  tidal__sh_lock(&s->sh);
  int avail = s->closed || (s->waiters.head == NULL && k <= s->avail);
  tidal__sh_unlock(&s->sh);
  if (avail) { /* (a loop of failing attempts makes no garbage) */
    lua_settop(L, 2);
    new_permit(L, ctx); /* (may run finalizers: try_take checks again) */
    tidal__sh_lock(&s->sh);
    int r = try_take(L, s, k);
    if (r >= 0) return r;
    tidal__sh_unlock(&s->sh);
  }
  lua_pushnil(L);
  tidal__error_push(L, "no_permits", "not enough permits available");
  return 2;
}

/* s:available(): permits available now (still counted once closed; 0
** once finalized) */
static int l_available(lua_State *L) {
  sem *s = check_sem(L, "Semaphore:available");
  lua_Integer n = 0;
  if (s != NULL) {
    tidal__sh_lock(&s->sh);
    n = s->avail;
    tidal__sh_unlock(&s->sh);
  }
  lua_pushinteger(L, n);
  return 1;
}

/* s:add_permits(k) */
static int l_add_permits(lua_State *L) {
  sem *s = check_sem(L, "Semaphore:add_permits");
  lua_Integer k = check_k(L, "Semaphore:add_permits", TIDAL_SEM_MAX);
  if (s == NULL)
    return tidal__closed_error(L, "Semaphore:add_permits", "semaphore");
  tidal__sh_lock(&s->sh);
  if (k > TIDAL_SEM_MAX - s->total) {
    lua_Integer total = s->total;
    tidal__sh_unlock(&s->sh);
    return luaL_error(L,
                      "Semaphore:add_permits: a semaphore holds at most %I "
                      "permits (it has %I, available or out)",
                      (LUAI_UACINT)TIDAL_SEM_MAX, (LUAI_UACINT)total);
  }
  s->total += k;
  s->avail += k;
  serve(s, tidal__cur_worker(L));
  tidal__sh_unlock(&s->sh);
  return 0;
}

static int l_close(lua_State *L) {
  sem *s = check_sem(L, "Semaphore:close");
  if (s == NULL) return 0;
  tidal__sh_lock(&s->sh);
  s->closed = 1;
  serve(s, tidal__cur_worker(L)); /* everyone waiting gets "closed" */
  tidal__sh_unlock(&s->sh);
  return 0;
}

static int l_sem_gc(lua_State *L) {
  return tidal__handle_gc(L, &sem_type, "Semaphore:__gc");
}

static int l_sem_tostring(lua_State *L) {
  sem *s = check_sem(L, "Semaphore:__tostring");
  if (s == NULL) {
    lua_pushliteral(L, "tidal.Semaphore (closed)");
    return 1;
  }
  tidal__sh_lock(&s->sh);
  lua_Integer avail = s->avail;
  int c = s->closed;
  tidal__sh_unlock(&s->sh);
  lua_pushfstring(L, "tidal.Semaphore (%I available%s)", avail,
                  c ? ", closed" : "");
  return 1;
}

static void *share(lua_State *L, int idx) {
  semud *u = (semud *)lua_touserdata(L, idx);
  sem *s = u ? SM(u) : NULL;
  (void)L;
  if (s == NULL) return NULL;
  tidal_wq *q = &s->waiters;
  /* on the owning thread: nobody else sees it yet */
  if (tidal__sh_enable(&s->sh, &q, 1)) return NULL;
  atomic_fetch_add(&s->refs, 1);
  return s;
}

static void push_copy(lua_State *L, void *obj) {
  semud *u = (semud *)tidal__handle_new(L, NULL, &sem_type, sizeof *u, 0);
  atomic_fetch_add(&((sem *)obj)->refs, 1);
  tidal__handle_attach(&u->h, obj);
}

static void drop(void *obj) {
  sem_unref((sem *)obj, NULL);
}

static const tidal_xtype sem_xtype = {SEM_MT, share, push_copy, drop};

/* ---------------------------------------------------------------- Permit */

static int permit_release(permit *p, tidal_worker *cur) {
  if (p->k == 0 || p->s == NULL) return 0;
  lua_Integer k = p->k;
  p->k = 0;
  give_back(p->s, k, cur); /* (kept, unused, once closed) */
  return 1;
}

static int l_release(lua_State *L) {
  permit *p = (permit *)tidal__checkud(L, 1, TT_PERMIT, "Permit:release");
  lua_pushboolean(L, permit_release(p, tidal__cur_worker(L)));
  return 1;
}

static int l_permit_close(lua_State *L) {
  permit *p = (permit *)tidal__checkud(L, 1, TT_PERMIT, "Permit:__close");
  if (p->s != NULL) permit_release(p, tidal__cur_worker(L));
  return 0;
}

static int l_permit_gc(lua_State *L) {
  permit *p = (permit *)tidal__checkud(L, 1, TT_PERMIT, "Permit:__gc");
  if (p->s == NULL) return 0;
  permit_release(p, tidal__cur_worker(L));
  sem_unref(p->s, tidal__cur_worker(L));
  p->s = NULL;
  return 0;
}

static int l_permit_count(lua_State *L) {
  permit *p = (permit *)tidal__checkud(L, 1, TT_PERMIT, "Permit:count");
  lua_pushinteger(L, p->k);
  return 1;
}

static const luaL_Reg sem_methods[] = {
    {"acquire", l_acquire},         {"try_acquire", l_try_acquire},
    {"available", l_available},     {"add_permits", l_add_permits},
    {"close", l_close},             {NULL, NULL}};

static const luaL_Reg sem_meta[] = {
    {"__gc", l_sem_gc}, {"__tostring", l_sem_tostring}, {NULL, NULL}};

static const luaL_Reg permit_methods[] = {
    {"release", l_release}, {"count", l_permit_count}, {NULL, NULL}};

static const luaL_Reg permit_meta[] = {
    {"__close", l_permit_close}, {"__gc", l_permit_gc}, {NULL, NULL}};

static const luaL_Reg funcs[] = {{"semaphore", l_semaphore}, {NULL, NULL}};

/* stack: module, ctx */
void tidal__semaphore_open(lua_State *L) {
  tidal__newtype(L, TT_SEMAPHORE, SEM_MT, "Semaphore", sem_meta, sem_methods);
  tidal__newtype(L, TT_PERMIT, PERMIT_MT, "Permit", permit_meta,
                 permit_methods);
  tidal__xfer_register(&sem_xtype);
  tidal__register(L, funcs);
}
