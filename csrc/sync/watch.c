/*
** watch.c: tidal.watch(initial) -> tx, rx: a single value that changes
** over time. rx:borrow() reads the current value; rx:changed() waits until
** a value newer than the last one this receiver saw was sent (true), or
** returns nil, err (kind "closed") once the sender is closed and the last
** value was seen. Receivers start having seen the current value.
*/
#include "sync.h"

#include <stdlib.h>

#define TX_MT "tidal.WatchSender"
#define RX_MT "tidal.WatchReceiver"

typedef struct watch {
  int refs;
  uint8_t tx_closed;
  lua_Integer version;
  tidal_wq waiters;
} watch;

typedef struct end {
  tidal_handle h; /* first; h.core: the watch */
  lua_Integer seen; /* receiver: last version seen */
} end;

#define CORE(e) ((watch *)(e)->h.core)

static void wake_all(tidal_wq *q) {
  tidal_task *t;
  while ((t = tidal__wq_pop(q)) != NULL) tidal__wake(t, 0);
}

static void watch_unref(watch *w) {
  if (--w->refs > 0) return;
  tidal__wq_orphan(&w->waiters, NULL); /* (see kernel.h) */
  free(w);
}

static void close_tx(lua_State *L, tidal_handle *h, int explicit) {
  (void)L;
  (void)explicit;
  watch *w = (watch *)h->core;
  w->tx_closed = 1;
  wake_all(&w->waiters);
}

static void unref(lua_State *L, void *core) {
  (void)L;
  watch_unref((watch *)core);
}

static const tidal_htype tx_type = {TT_WATCH_TX, "sender", close_tx, unref};
static const tidal_htype rx_type = {TT_WATCH_RX, "receiver", NULL, unref};

/* Pushes an end over w, or a closed one (completed by the caller) when w
** is NULL. */
static end *push_end(lua_State *L, tidal_ctx *ctx, watch *w,
                     const tidal_htype *c, int holder) {
  end *e = (end *)tidal__handle_new(L, &ctx->aux, c, sizeof *e, 1);
  lua_pushvalue(L, holder);
  lua_setiuservalue(L, -2, 1);
  if (w == NULL) return e;
  tidal__handle_attach(&e->h, w);
  e->seen = w->version;
  w->refs++;
  return e;
}

static int l_watch(lua_State *L) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  lua_settop(L, 1);
  lua_createtable(L, 1, 0);
  lua_pushvalue(L, 1);
  lua_rawseti(L, -2, 1);
  /* the ends first, so that nothing raises once the core is allocated */
  end *tx = push_end(L, ctx, NULL, &tx_type, 2);
  end *rx = push_end(L, ctx, NULL, &rx_type, 2);
  watch *w = (watch *)calloc(1, sizeof *w);
  if (w == NULL) return luaL_error(L, "tidal.watch: not enough memory");
  w->refs = 2;
  tidal__handle_attach(&tx->h, w);
  tidal__handle_attach(&rx->h, w);
  return 2;
}

static int l_tx_gc(lua_State *L) {
  return tidal__handle_gc(L, &tx_type, "WatchSender:__gc");
}

static int l_rx_gc(lua_State *L) {
  return tidal__handle_gc(L, &rx_type, "WatchReceiver:__gc");
}

/* __close: closes a sender but keeps the core until the end is collected */
static int l_tx_close(lua_State *L) {
  return tidal__handle_close(L, &tx_type, "WatchSender:__close");
}

static int l_rx_close(lua_State *L) {
  return tidal__handle_close(L, &rx_type, "WatchReceiver:__close");
}

static end *check_tx(lua_State *L, const char *fname) {
  return (end *)tidal__handle_check(L, 1, &tx_type, fname);
}

/* tx:send(v): sets the value and wakes the receivers */
static int l_send(lua_State *L) {
  end *e = check_tx(L, "WatchSender:send");
  lua_settop(L, 2);
  lua_getiuservalue(L, 1, 1);
  lua_pushvalue(L, 2);
  lua_rawseti(L, -2, 1);
  CORE(e)->version++;
  wake_all(&CORE(e)->waiters);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_subscribe(lua_State *L) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  end *e = check_tx(L, "WatchSender:subscribe");
  lua_getiuservalue(L, 1, 1);
  push_end(L, ctx, CORE(e), &rx_type, lua_gettop(L));
  return 1;
}

static int l_close_tx(lua_State *L) {
  return tidal__handle_close(L, &tx_type, "WatchSender:close");
}

static int l_borrow(lua_State *L) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  if (tidal__toud(L, &ctx->aux, 1, TT_WATCH_TX) == NULL)
    tidal__checkud(L, 1, TT_WATCH_RX, "WatchReceiver:borrow");
  lua_getiuservalue(L, 1, 1);
  lua_rawgeti(L, -1, 1);
  return 1;
}

static int l_clone(lua_State *L) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  end *e = (end *)tidal__checkud(L, 1, TT_WATCH_RX, "WatchReceiver:clone");
  if (CORE(e) == NULL)
    return tidal__closed_error(L, "WatchReceiver:clone", "receiver");
  lua_getiuservalue(L, 1, 1);
  end *c = push_end(L, ctx, CORE(e), &rx_type, lua_gettop(L));
  c->seen = e->seen;
  return 1;
}

static int changed_now(lua_State *L, end *e) {
  if (CORE(e) == NULL) { /* finalized: closed */
    lua_pushnil(L);
    tidal__error_push(L, "closed", "watch receiver closed");
    return 2;
  }
  if (e->seen < CORE(e)->version) {
    e->seen = CORE(e)->version;
    lua_pushboolean(L, 1);
    return 1;
  }
  if (CORE(e)->tx_closed) {
    lua_pushnil(L);
    tidal__error_push(L, "closed", "watch sender closed");
    return 2;
  }
  return -1;
}

static int wait_cancel(tidal_task *t) {
  tidal__wq_remove(&((watch *)t->wobj)->waiters, t);
  return 1;
}

static const tidal_waitop changed_op = {"WatchReceiver:changed", wait_cancel,
                                        NULL};

static int changed_k(lua_State *L, int status, lua_KContext k) {
  tidal_task *t = (tidal_task *)k;
  end *e = (end *)lua_touserdata(L, 1);
  int n;
  (void)status;
  tidal__resumed(L, t); /* all were woken: nothing to pass on */
  if ((n = changed_now(L, e)) >= 0) return n;
  tidal__wq_push(&CORE(e)->waiters, t);
  return tidal__park(L, t, &changed_op, CORE(e), changed_k);
}

static int l_changed(lua_State *L);
static const tidal_restart changed_again = {l_changed};

/* rx:changed() -> true | nil, err (closed) */
static int l_changed(lua_State *L) {
  end *e = (end *)tidal__checkud(L, 1, TT_WATCH_RX, "WatchReceiver:changed");
  int n;
  if (CORE(e) == NULL) return changed_now(L, e);
  tidal_task *t = tidal__wait_begin(L, "WatchReceiver:changed");
  TIDAL_SPEND(L, t, &changed_again);
  lua_settop(L, 1);
  if ((n = changed_now(L, e)) >= 0) return n;
  tidal__wq_push(&CORE(e)->waiters, t);
  return tidal__park(L, t, &changed_op, CORE(e), changed_k);
}

static int l_has_changed(lua_State *L) {
  end *e = (end *)tidal__checkud(L, 1, TT_WATCH_RX, "WatchReceiver:has_changed");
  lua_pushboolean(L, CORE(e) != NULL && e->seen < CORE(e)->version);
  return 1;
}

static const luaL_Reg tx_methods[] = {{"send", l_send},
                                      {"subscribe", l_subscribe},
                                      {"borrow", l_borrow},
                                      {"close", l_close_tx},
                                      {NULL, NULL}};

static const luaL_Reg rx_methods[] = {{"borrow", l_borrow},
                                      {"changed", l_changed},
                                      {"has_changed", l_has_changed},
                                      {"clone", l_clone},
                                      {NULL, NULL}};

static const luaL_Reg tx_meta[] = {
    {"__gc", l_tx_gc}, {"__close", l_tx_close}, {NULL, NULL}};

static const luaL_Reg rx_meta[] = {
    {"__gc", l_rx_gc}, {"__close", l_rx_close}, {NULL, NULL}};

static const luaL_Reg funcs[] = {{"watch", l_watch}, {NULL, NULL}};

/* stack: module, ctx */
void tidal__watch_open(lua_State *L) {
  tidal__newtype(L, TT_WATCH_TX, TX_MT, "WatchSender", tx_meta, tx_methods);
  tidal__newtype(L, TT_WATCH_RX, RX_MT, "WatchReceiver", rx_meta, rx_methods);
  tidal__register(L, funcs);
}
