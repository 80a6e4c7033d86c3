/*
** notify.c: tidal.notify(), a wake-up signal between tasks (as Tokio's
** Notify). n:notified() waits for a notification; n:notify_one() wakes the
** first waiter, or stores one permit that the next notified() consumes at
** once; n:notify_waiters() wakes every task waiting now and stores nothing.
** A task woken by notify_one but cancelled before it runs passes the
** notification on.
**
** A Notify copied to another worker (an argument of spawn_parallel, a
** message) is the same Notify there: it becomes shared (shared.h), its
** state behind a mutex, and a waiter on another worker is woken through
** that worker's queue.
*/
#include "shared.h"

#include <stdlib.h>

#define NOTIFY_MT "tidal.Notify"

/* a waiter was woken by notify_one (the kernel's bit for the primitive),
** set on the waiter's own thread */
#define TF_NOTIFIED TF_OPFLAG

typedef struct notify {
  atomic_int refs; /* its userdata, in every state */
  uint8_t permit;
  tidal_wq waiters;
  tidal_shared sh; /* cross-worker mode: its mutex guards the above */
} notify;

typedef struct notifyud {
  tidal_handle h; /* first; h.core: the notify (NULL once finalized) */
} notifyud;

#define NT(u) ((notify *)(u)->h.core)

/* cur: the worker running on this thread, or NULL */
static void notify_unref(notify *n, tidal_worker *cur) {
  if (atomic_fetch_sub(&n->refs, 1) != 1) return;
  tidal__wq_orphan(&n->waiters, cur); /* (see kernel.h) */
  tidal__sh_destroy(&n->sh);
  free(n);
}

static void unref(lua_State *L, void *core) {
  notify_unref((notify *)core, tidal__cur_worker(L));
}

static const tidal_htype notify_type = {TT_NOTIFY, "notify", NULL, unref};

/* The notify of the Notify at 1 (checked once per object: TIDAL_HOT, which
** its __gc clears); raises once it is finalized. */
static notify *self(lua_State *L, tidal_ctx *ctx, const char *fname) {
  notifyud *u = (notifyud *)tidal__self(L, &ctx->aux, TT_NOTIFY, fname);
  if (NT(u) == NULL) tidal__closed_error(L, fname, notify_type.what);
  TIDAL_HOT(&ctx->aux, TT_NOTIFY, u) = u;
  return NT(u);
}

#define CTX(L) ((tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1)))

static int l_notify(lua_State *L) {
  tidal_ctx *ctx = CTX(L);
  notifyud *u = (notifyud *)tidal__handle_new(L, &ctx->aux, &notify_type,
                                              sizeof *u, 0);
  notify *n = (notify *)calloc(1, sizeof *n);
  if (n == NULL) return luaL_error(L, "tidal.notify: not enough memory");
  atomic_init(&n->refs, 1);
  tidal__handle_attach(&u->h, n);
  return 1;
}

/* Posted to the worker of a waiter that notify_one woke from another
** thread: a task's flags are only touched on its own thread. */
static void notified_msg(tidal_worker *w, lua_State *L, void *arg) {
  tidal_task *t = (tidal_task *)arg;
  (void)w;
  (void)L;
  if (t->state != TS_PARKED) return;
  t->flags |= TF_NOTIFIED;
  tidal__wake(t, 0);
}

/* Wakes the first waiter that can be reached, else stores the permit.
** Locked. */
static void notify_one(notify *n, tidal_worker *cur) {
  tidal_task *t;
  while ((t = tidal__wq_pop(&n->waiters)) != NULL) {
    if (!n->sh.on || t->w == cur) {
      tidal__wake(t, 0);
      t->flags |= TF_NOTIFIED;
      return;
    }
    if (tidal__wake_remote(t->w, NULL, notified_msg, t) == 0) return;
    /* (else its worker is gone: the next waiter gets it) */
  }
  n->permit = 1;
}

static int wait_cancel(tidal_task *t) {
  notify *n = (notify *)t->wobj;
  /* 0: the wake is on its way (notified_k passes it on) */
  return tidal__sh_withdraw(&n->sh, &n->waiters, t, NULL, n);
}

static const tidal_waitop notified_op = {"Notify:notified", wait_cancel, NULL};

static int notified_k(lua_State *L, int status, lua_KContext k) {
  tidal_task *t = (tidal_task *)k;
  notify *n = NT((notifyud *)lua_touserdata(L, 1));
  int one = (t->flags & TF_NOTIFIED) != 0; /* (set on this thread) */
  (void)status;
  t->flags &= ~TF_NOTIFIED;
  if (one && n != NULL && tidal__wake_lost(t)) {
    tidal__sh_lock(&n->sh);
    notify_one(n, t->w);
    tidal__sh_unlock(&n->sh);
  }
  tidal__resumed(L, t);
  return 0;
}

static int l_notified(lua_State *L);
static const tidal_restart notified_again = {l_notified};

/* n:notified(): waits until notified */
static int l_notified(lua_State *L) {
  notify *n = self(L, CTX(L), "Notify:notified");
  tidal_task *t = tidal__wait_begin(L, "Notify:notified");
  TIDAL_SPEND(L, t, &notified_again);
  lua_settop(L, 1);
  tidal__sh_lock(&n->sh);
  if (n->permit) {
    n->permit = 0;
    tidal__sh_unlock(&n->sh);
    return 0;
  }
  t->flags &= ~TF_NOTIFIED;
  return tidal__sh_park(L, &n->sh, t, &n->waiters, 0, &notified_op, n,
                        notified_k);
}

static int l_notify_one(lua_State *L) {
  tidal_ctx *ctx = CTX(L);
  notify *n = self(L, ctx, "Notify:notify_one");
  tidal__sh_lock(&n->sh);
  notify_one(n, ctx->w);
  tidal__sh_unlock(&n->sh);
  return 0;
}

/* wakes every task waiting now; returns how many */
static int l_notify_waiters(lua_State *L) {
  tidal_ctx *ctx = CTX(L);
  notify *n = self(L, ctx, "Notify:notify_waiters");
  tidal_worker *cur = ctx->w;
  tidal_task *t;
  lua_Integer count = 0;
  tidal__sh_lock(&n->sh);
  while ((t = tidal__wq_pop(&n->waiters)) != NULL) {
    tidal__sh_wake(&n->sh, t, cur);
    count++;
  }
  tidal__sh_unlock(&n->sh);
  lua_pushinteger(L, count);
  return 1;
}

static int l_tostring(lua_State *L) {
  notifyud *u = (notifyud *)tidal__checkud(L, 1, TT_NOTIFY,
                                           "Notify:__tostring");
  notify *n = NT(u);
  int permit;
  if (n == NULL) {
    lua_pushliteral(L, "tidal.Notify (closed)");
    return 1;
  }
  tidal__sh_lock(&n->sh);
  permit = n->permit;
  tidal__sh_unlock(&n->sh);
  lua_pushfstring(L, "tidal.Notify (%s)",
                  permit ? "notified" : "not notified");
  return 1;
}

static int l_gc(lua_State *L) {
  return tidal__handle_gc(L, &notify_type, "Notify:__gc");
}

/* ------------------------------------------------ copying to other workers */

static void *share(lua_State *L, int idx) {
  notifyud *u = (notifyud *)lua_touserdata(L, idx);
  notify *n = u ? NT(u) : NULL;
  (void)L;
  if (n == NULL) return NULL;
  tidal_wq *q = &n->waiters;
  /* on the owning thread: nobody else sees it yet */
  if (tidal__sh_enable(&n->sh, &q, 1)) return NULL;
  atomic_fetch_add(&n->refs, 1);
  return n;
}

static void push_copy(lua_State *L, void *obj) {
  notifyud *u = (notifyud *)tidal__handle_new(L, NULL, &notify_type,
                                              sizeof *u, 0);
  atomic_fetch_add(&((notify *)obj)->refs, 1);
  tidal__handle_attach(&u->h, obj);
}

static void drop(void *obj) {
  notify_unref((notify *)obj, NULL);
}

static const tidal_xtype notify_xtype = {NOTIFY_MT, share, push_copy, drop};

static const luaL_Reg methods[] = {{"notified", l_notified},
                                   {"notify_one", l_notify_one},
                                   {"notify_waiters", l_notify_waiters},
                                   {NULL, NULL}};

static const luaL_Reg meta[] = {
    {"__tostring", l_tostring}, {"__gc", l_gc}, {NULL, NULL}};

static const luaL_Reg funcs[] = {{"notify", l_notify}, {NULL, NULL}};

/* stack: module, ctx */
void tidal__notify_open(lua_State *L) {
  tidal__newtype(L, TT_NOTIFY, NOTIFY_MT, "Notify", meta, methods);
  tidal__xfer_register(&notify_xtype);
  tidal__register(L, funcs);
}
