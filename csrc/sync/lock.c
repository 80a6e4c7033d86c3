/*
** lock.c: tidal.mutex() and tidal.rwlock(), FIFO-fair async locks, and
** their guards.
**
** A lock is a C core shared by its userdata (and by its guards, which keep
** it alive). Ownership passes directly from the releasing task to the first
** waiter (no barging), so waiters are served in order. A waiter that is
** cancelled before it runs again never observed the lock: it releases what
** it was granted, which passes ownership on, and raises. A guard is a
** to-be-closed value: `local g <close> = m:lock()`; `g:release()` releases
** early and a second release is a no-op; a guard that is collected while
** still holding releases its lock.
**
** RwLock: readers share, writers are exclusive. Writers are not starved: a
** reader arriving while anyone waits queues behind them, and a release
** grants the head of the queue (one writer, or every reader up to the next
** writer).
**
** Shared mode (the lock was copied to another state): every operation takes
** the lock's mutex and waiters on other workers are woken through their
** worker's remote queue. A waiter's kind (read / write) is in its nres while
** it is queued, where the granting thread may read it under the mutex.
*/
#include "shared.h"

#include <stdlib.h>

#define MUTEX_MT "tidal.Mutex"
#define RWLOCK_MT "tidal.RwLock"
#define GUARD_MT "tidal.Guard"

enum { G_MUTEX, G_READ, G_WRITE };

typedef struct lock {
  atomic_int refs; /* the lock's userdata (in any state) and live guards */
  int readers;     /* rwlock: read holders */
  uint8_t held;    /* mutex held, or rwlock held for writing */
  uint8_t rw;
  tidal_wq waiters; /* waiting tasks; nres: their G_* kind */
  tidal_shared sh;  /* cross-worker mode: its mutex guards the above */
} lock;


typedef struct lockud {
  tidal_handle h; /* first; h.core: the lock (NULL once finalized) */
} lockud;

#define LK(u) ((lock *)(u)->h.core)

typedef struct guard {
  lock *l;
  uint8_t kind;
  uint8_t held;
} guard;

/* cur: the worker running on this thread, or NULL */
static void lock_unref(lock *l, tidal_worker *cur) {
  if (atomic_fetch_sub(&l->refs, 1) != 1) return;
  tidal__wq_orphan(&l->waiters, cur); /* (see kernel.h) */
  tidal__sh_destroy(&l->sh);
  free(l);
}


static void wake(lock *l, tidal_task *t, tidal_worker *cur) {
  tidal__wq_pop(&l->waiters);
  tidal__sh_wake(&l->sh, t, cur);
}

/* Grant the lock to waiters at the head of the queue, in order. Locked. */
static void grant(lock *l, tidal_worker *cur) {
  tidal_task *t;
  while ((t = l->waiters.head) != NULL) {
    if (t->nres != G_READ) {
      if (l->held || l->readers > 0) return;
      l->held = 1;
      wake(l, t, cur);
      return;
    }
    if (l->held) return;
    l->readers++;
    wake(l, t, cur);
  }
}

/* Locked. */
static void release(lock *l, int kind, tidal_worker *cur) {
  if (kind == G_READ)
    l->readers--;
  else
    l->held = 0;
  grant(l, cur);
}

/* ----------------------------------------------------------------- guards */

/* Pushes a guard for lock l, which the caller has just taken. Cannot
** raise: the lock is never left taken without a guard. */
static int push_guard(lua_State *L, tidal_ctx *ctx, lock *l, int kind) {
  guard *g = (guard *)lua_touserdata(L, -1);
  g->l = l;
  g->kind = (uint8_t)kind;
  g->held = 1;
  atomic_fetch_add(&l->refs, 1);
  (void)ctx;
  return 1;
}

/* Pushes a guard that holds nothing yet, before the lock is taken: creating
** it may raise (out of memory), taking the lock may not (STYLE.md). */
static void new_guard(lua_State *L, tidal_ctx *ctx) {
  guard *g = (guard *)lua_newuserdatauv(L, sizeof *g, 0);
  g->l = NULL;
  g->kind = G_MUTEX;
  g->held = 0;
  tidal__setmt(L, &ctx->aux, TT_GUARD);
}

static int guard_release(guard *g, tidal_worker *cur) {
  if (!g->held) return 0;
  g->held = 0;
  tidal__sh_lock(&g->l->sh);
  release(g->l, g->kind, cur);
  tidal__sh_unlock(&g->l->sh);
  return 1;
}

/* g:release() -> true, or false if it was released already */
static int l_release(lua_State *L) {
  guard *g = (guard *)tidal__checkud(L, 1, TT_GUARD, "Guard:release");
  lua_pushboolean(L, guard_release(g, tidal__cur_worker(L)));
  return 1;
}

static int l_guard_close(lua_State *L) {
  guard *g = (guard *)tidal__checkud(L, 1, TT_GUARD, "Guard:__close");
  if (g->l != NULL) guard_release(g, tidal__cur_worker(L));
  return 0;
}

static int l_guard_gc(lua_State *L) {
  guard *g = (guard *)tidal__checkud(L, 1, TT_GUARD, "Guard:__gc");
  if (g->l == NULL) return 0;
  guard_release(g, tidal__cur_worker(L));
  lock_unref(g->l, tidal__cur_worker(L));
  g->l = NULL;
  return 0;
}

static int l_held(lua_State *L) {
  guard *g = (guard *)tidal__checkud(L, 1, TT_GUARD, "Guard:is_held");
  lua_pushboolean(L, g->held);
  return 1;
}

static int l_guard_tostring(lua_State *L) {
  guard *g = (guard *)tidal__checkud(L, 1, TT_GUARD, "Guard:__tostring");
  static const char *const kinds[] = {"mutex", "read", "write"};
  lua_pushfstring(L, "tidal.Guard (%s, %s)", kinds[g->kind],
                  g->held ? "held" : "released");
  return 1;
}

/* ------------------------------------------------------------------ locks */

static void unref(lua_State *L, void *core) {
  lock_unref((lock *)core, tidal__cur_worker(L));
}

/* A lock is never closed, only finalized: a finalized lock has no core
** (every method checks). */
static const tidal_htype mutex_type = {TT_MUTEX, "mutex", NULL, unref};
static const tidal_htype rwlock_type = {TT_RWLOCK, "rwlock", NULL, unref};

static lock *new_lock(lua_State *L, tidal_ctx *ctx, int rw,
                      const char *fname) {
  lockud *u = (lockud *)tidal__handle_new(
      L, &ctx->aux, rw ? &rwlock_type : &mutex_type, sizeof *u, 0);
  lock *l = (lock *)calloc(1, sizeof *l);
  if (l == NULL) luaL_error(L, "%s: not enough memory", fname);
  atomic_init(&l->refs, 1);
  l->rw = (uint8_t)rw;
  tidal__handle_attach(&u->h, l);
  return l;
}

static int l_mutex(lua_State *L) {
  new_lock(L, (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1)), 0,
           "tidal.mutex");
  return 1;
}

static int l_rwlock(lua_State *L) {
  new_lock(L, (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1)), 1,
           "tidal.rwlock");
  return 1;
}

static const tidal_htype *lock_type(int tt) {
  return tt == TT_MUTEX ? &mutex_type : &rwlock_type;
}

/* The lock of the Mutex or RwLock at 1, which must be of type tt; raises
** once it was finalized. */
static lock *check_lock(lua_State *L, int tt, const char *fname) {
  return LK((lockud *)tidal__handle_check(L, 1, lock_type(tt), fname));
}

static int l_mutex_gc(lua_State *L) {
  return tidal__handle_gc(L, &mutex_type, "Mutex:__gc");
}

static int l_rwlock_gc(lua_State *L) {
  return tidal__handle_gc(L, &rwlock_type, "RwLock:__gc");
}

/* readers queued behind a cancelled writer may go */
static void grant_after(void *obj, tidal_worker *cur) {
  grant((lock *)obj, cur);
}

static int lock_cancel(tidal_task *t) {
  lock *l = (lock *)t->wobj;
  /* 0: the grant is on its way */
  return tidal__sh_withdraw(&l->sh, &l->waiters, t, grant_after, l);
}

static const tidal_waitop mutex_op = {"Mutex:lock", lock_cancel, NULL};
static const tidal_waitop read_op = {"RwLock:read", lock_cancel, NULL};
static const tidal_waitop write_op = {"RwLock:write", lock_cancel, NULL};

static int acquired(lua_State *L, lua_KContext k, int kind) {
  tidal_task *t = (tidal_task *)k;
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  lock *l = (lock *)LK((lockud *)lua_touserdata(L, 1));
  if (l == NULL) { /* its __gc was called while it waited */
    tidal__resumed(L, t);
    return tidal__closed_error(L, kind == G_MUTEX ? "Mutex:lock"
                                  : kind == G_READ ? "RwLock:read"
                                                   : "RwLock:write",
                               kind == G_MUTEX ? "mutex" : "rwlock");
  }
  if (tidal__wake_lost(t)) { /* granted, never observed: pass it on */
    tidal__sh_lock(&l->sh);
    release(l, kind, t->w);
    tidal__sh_unlock(&l->sh);
  }
  tidal__resumed(L, t);
  lua_settop(L, 2); /* the guard made before parking */
  return push_guard(L, ctx, l, kind);
}

static int mutex_k(lua_State *L, int status, lua_KContext k) {
  (void)status;
  return acquired(L, k, G_MUTEX);
}

static int read_k(lua_State *L, int status, lua_KContext k) {
  (void)status;
  return acquired(L, k, G_READ);
}

static int write_k(lua_State *L, int status, lua_KContext k) {
  (void)status;
  return acquired(L, k, G_WRITE);
}

static int free_for(const lock *l, int kind) {
  return l->waiters.head == NULL &&
         (kind == G_READ ? !l->held : !l->held && l->readers == 0);
}

static void take(lock *l, int kind) {
  if (kind == G_READ)
    l->readers++;
  else
    l->held = 1;
}

static int acquire(lua_State *L, int tt, int kind, const char *fname,
                   const tidal_restart *again, const tidal_waitop *op) {
  static const lua_KFunction ks[] = {mutex_k, read_k, write_k};
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  lockud *u = (lockud *)tidal__self(L, &ctx->aux, tt, fname);
  lock *l = LK(u);
  if (l == NULL) return tidal__closed_error(L, fname, lock_type(tt)->what);
  TIDAL_HOT(&ctx->aux, tt, u) = u; /* cleared by its __gc */
  tidal_task *t = tidal__wait_ok(L, ctx->cur, fname);
  TIDAL_SPEND(L, t, again);
  lua_settop(L, 1);
  new_guard(L, ctx); /* at 2: the lock is never taken without one */
  tidal__sh_lock(&l->sh);
  if (free_for(l, kind)) {
    take(l, kind);
    tidal__sh_unlock(&l->sh);
    return push_guard(L, ctx, l, kind);
  }
  t->nres = kind; /* for the granter, while queued */
  return tidal__sh_park(L, &l->sh, t, &l->waiters, 0, op, l, ks[kind]);
}

static int l_lock(lua_State *L);
static int l_read(lua_State *L);
static int l_write(lua_State *L);
static const tidal_restart lock_again = {l_lock};
static const tidal_restart read_again = {l_read};
static const tidal_restart write_again = {l_write};

/* m:lock() -> guard */
static int l_lock(lua_State *L) {
  return acquire(L, TT_MUTEX, G_MUTEX, "Mutex:lock", &lock_again, &mutex_op);
}

static int l_read(lua_State *L) {
  return acquire(L, TT_RWLOCK, G_READ, "RwLock:read", &read_again, &read_op);
}

static int l_write(lua_State *L) {
  return acquire(L, TT_RWLOCK, G_WRITE, "RwLock:write", &write_again,
                 &write_op);
}

/* Non-waiting attempts: work anywhere, even outside a task. */
static int try_acquire(lua_State *L, int tt, int kind, const char *fname) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  lock *l = check_lock(L, tt, fname);
  tidal__sh_lock(&l->sh);
  int avail = free_for(l, kind);
  tidal__sh_unlock(&l->sh);
  if (!avail) { /* (a loop of failing attempts makes no garbage) */
    lua_pushnil(L);
    return 1;
  }
  lua_settop(L, 1);
  new_guard(L, ctx); /* (may run finalizers: check again below) */
  tidal__sh_lock(&l->sh);
  if (free_for(l, kind)) {
    take(l, kind);
    tidal__sh_unlock(&l->sh);
    return push_guard(L, ctx, l, kind);
  }
  tidal__sh_unlock(&l->sh);
  lua_pushnil(L);
  return 1;
}

/* select's fast path for m:lock_op() */
static int try_lock_op(lua_State *L, int base) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  lock *l = LK((lockud *)lua_touserdata(L, base));
  if (l == NULL) return -1; /* finalized: run() raises */
  new_guard(L, ctx);
  tidal__sh_lock(&l->sh);
  if (!free_for(l, G_MUTEX)) {
    tidal__sh_unlock(&l->sh);
    lua_pop(L, 1);
    return -1;
  }
  take(l, G_MUTEX);
  tidal__sh_unlock(&l->sh);
  return push_guard(L, ctx, l, G_MUTEX);
}

static int l_lock_op(lua_State *L) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  check_lock(L, TT_MUTEX, "Mutex:lock_op");
  tidal__op_new(L, ctx, "Mutex:lock", l_lock, try_lock_op, 1, 1);
  return 1;
}

static int l_try_lock(lua_State *L) {
  return try_acquire(L, TT_MUTEX, G_MUTEX, "Mutex:try_lock");
}

static int l_try_read(lua_State *L) {
  return try_acquire(L, TT_RWLOCK, G_READ, "RwLock:try_read");
}

static int l_try_write(lua_State *L) {
  return try_acquire(L, TT_RWLOCK, G_WRITE, "RwLock:try_write");
}

static int is_locked(lua_State *L, lock *l) {
  tidal__sh_lock(&l->sh);
  lua_pushboolean(L, l->held || l->readers > 0);
  tidal__sh_unlock(&l->sh);
  return 1;
}

static int l_mutex_is_locked(lua_State *L) {
  return is_locked(L, check_lock(L, TT_MUTEX, "Mutex:is_locked"));
}

static int l_rwlock_is_locked(lua_State *L) {
  return is_locked(L, check_lock(L, TT_RWLOCK, "RwLock:is_locked"));
}

static int lock_tostring(lua_State *L, int tt, const char *fname) {
  lock *l = LK((lockud *)tidal__checkud(L, 1, tt, fname));
  if (l == NULL)
    lua_pushfstring(L, "tidal.%s (closed)",
                    tt == TT_MUTEX ? "Mutex" : "RwLock");
  else if (!l->rw)
    lua_pushfstring(L, "tidal.Mutex (%s)", l->held ? "locked" : "unlocked");
  else if (l->held)
    lua_pushliteral(L, "tidal.RwLock (write-locked)");
  else
    lua_pushfstring(L, "tidal.RwLock (%d readers)", l->readers);
  return 1;
}

static int l_mutex_tostring(lua_State *L) {
  return lock_tostring(L, TT_MUTEX, "Mutex:__tostring");
}

static int l_rwlock_tostring(lua_State *L) {
  return lock_tostring(L, TT_RWLOCK, "RwLock:__tostring");
}

/* ------------------------------------------------- copying the locks */

static void *share(lua_State *L, int idx) {
  lockud *u = (lockud *)lua_touserdata(L, idx);
  lock *l = u ? LK(u) : NULL;
  if (l == NULL) return NULL;
  tidal_wq *q = &l->waiters;
  /* on the owning thread: nobody else sees it yet */
  if (tidal__sh_enable(&l->sh, &q, 1)) return NULL;
  atomic_fetch_add(&l->refs, 1);
  return l;
}

static void push_copy(lua_State *L, void *obj) {
  lock *l = (lock *)obj;
  lockud *u = (lockud *)tidal__handle_new(
      L, NULL, l->rw ? &rwlock_type : &mutex_type, sizeof *u, 0);
  atomic_fetch_add(&l->refs, 1);
  tidal__handle_attach(&u->h, l);
}

static void drop(void *obj) {
  lock_unref((lock *)obj, NULL);
}

static const tidal_xtype mutex_xtype = {MUTEX_MT, share, push_copy, drop};
static const tidal_xtype rwlock_xtype = {RWLOCK_MT, share, push_copy, drop};

static const luaL_Reg mutex_methods[] = {{"lock", l_lock},
                                         {"try_lock", l_try_lock},
                                         {"lock_op", l_lock_op},
                                         {"is_locked", l_mutex_is_locked},
                                         {NULL, NULL}};

static const luaL_Reg rwlock_methods[] = {
    {"read", l_read},         {"write", l_write},
    {"try_read", l_try_read}, {"try_write", l_try_write},
    {"is_locked", l_rwlock_is_locked}, {NULL, NULL}};

static const luaL_Reg mutex_meta[] = {
    {"__gc", l_mutex_gc}, {"__tostring", l_mutex_tostring}, {NULL, NULL}};

static const luaL_Reg rwlock_meta[] = {
    {"__gc", l_rwlock_gc}, {"__tostring", l_rwlock_tostring}, {NULL, NULL}};

static const luaL_Reg guard_methods[] = {
    {"release", l_release}, {"is_held", l_held}, {NULL, NULL}};

static const luaL_Reg guard_meta[] = {{"__close", l_guard_close},
                                      {"__gc", l_guard_gc},
                                      {"__tostring", l_guard_tostring},
                                      {NULL, NULL}};

static const luaL_Reg funcs[] = {
    {"mutex", l_mutex}, {"rwlock", l_rwlock}, {NULL, NULL}};

/* stack: module, ctx */
void tidal__lock_open(lua_State *L) {
  tidal__newtype(L, TT_MUTEX, MUTEX_MT, "Mutex", mutex_meta, mutex_methods);
  tidal__newtype(L, TT_RWLOCK, RWLOCK_MT, "RwLock", rwlock_meta,
                 rwlock_methods);
  tidal__newtype(L, TT_GUARD, GUARD_MT, "Guard", guard_meta, guard_methods);
  tidal__xfer_register(&mutex_xtype);
  tidal__xfer_register(&rwlock_xtype);
  tidal__register(L, funcs);
}
