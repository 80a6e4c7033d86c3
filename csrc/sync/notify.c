/*
** notify.c: tidal.notify(), a wake-up signal between tasks (as Tokio's
** Notify). n:notified() waits for a notification; n:notify_one() wakes the
** first waiter, or stores one permit that the next notified() consumes at
** once; n:notify_waiters() wakes every task waiting now and stores nothing.
** A task woken by notify_one but cancelled before it runs passes the
** notification on.
*/
#include "sync.h"

#include <stdlib.h>

#define NOTIFY_MT "tidal.Notify"

/* a waiter was woken by notify_one (the kernel's bit for the primitive) */
#define TF_NOTIFIED TF_OPFLAG

typedef struct notify {
  uint8_t permit;
  tidal_wq waiters;
} notify;

static notify *self(lua_State *L, const char *fname) {
  return (notify *)tidal__checkud(L, 1, TT_NOTIFY, fname);
}

static int l_notify(lua_State *L) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  notify *n = (notify *)lua_newuserdatauv(L, sizeof *n, 0);
  n->permit = 0;
  n->waiters.head = n->waiters.tail = NULL;
  tidal__setmt(L, &ctx->aux, TT_NOTIFY);
  return 1;
}

static void notify_one(notify *n) {
  tidal_task *t = tidal__wq_pop(&n->waiters);
  if (t == NULL) {
    n->permit = 1;
    return;
  }
  tidal__wake(t, 0);
  t->flags |= TF_NOTIFIED;
}

static int wait_cancel(tidal_task *t) {
  tidal__wq_remove(&((notify *)t->wobj)->waiters, t);
  return 1;
}

static const tidal_waitop notified_op = {"Notify:notified", wait_cancel, NULL};

static int notified_k(lua_State *L, int status, lua_KContext k) {
  tidal_task *t = (tidal_task *)k;
  notify *n = (notify *)lua_touserdata(L, 1);
  int one = (t->flags & TF_NOTIFIED) != 0;
  (void)status;
  t->flags &= ~TF_NOTIFIED;
  if (one && tidal__wake_lost(t)) notify_one(n);
  tidal__resumed(L, t);
  return 0;
}

static int l_notified(lua_State *L);
static const tidal_restart notified_again = {l_notified};

/* n:notified(): waits until notified */
static int l_notified(lua_State *L) {
  notify *n = self(L, "Notify:notified");
  tidal_task *t = tidal__wait_begin(L, "Notify:notified");
  TIDAL_SPEND(L, t, &notified_again);
  lua_settop(L, 1);
  if (n->permit) {
    n->permit = 0;
    return 0;
  }
  tidal__wq_push(&n->waiters, t);
  return tidal__park(L, t, &notified_op, n, notified_k);
}

static int l_notify_one(lua_State *L) {
  notify_one(self(L, "Notify:notify_one"));
  return 0;
}

/* wakes every task waiting now; returns how many */
static int l_notify_waiters(lua_State *L) {
  notify *n = self(L, "Notify:notify_waiters");
  tidal_task *t;
  lua_Integer count = 0;
  while ((t = tidal__wq_pop(&n->waiters)) != NULL) {
    tidal__wake(t, 0);
    count++;
  }
  lua_pushinteger(L, count);
  return 1;
}

static int l_tostring(lua_State *L) {
  notify *n = self(L, "Notify:__tostring");
  lua_pushfstring(L, "tidal.Notify (%s)",
                  n->permit ? "notified" : "not notified");
  return 1;
}

static const luaL_Reg methods[] = {{"notified", l_notified},
                                   {"notify_one", l_notify_one},
                                   {"notify_waiters", l_notify_waiters},
                                   {NULL, NULL}};

static const luaL_Reg meta[] = {{"__tostring", l_tostring}, {NULL, NULL}};

static const luaL_Reg funcs[] = {{"notify", l_notify}, {NULL, NULL}};

/* stack: module, ctx */
void tidal__notify_open(lua_State *L) {
  tidal__newtype(L, TT_NOTIFY, NOTIFY_MT, "Notify", meta, methods);
  tidal__register(L, funcs);
}
