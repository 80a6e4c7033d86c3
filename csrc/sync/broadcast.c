/*
** broadcast.c: tidal.broadcast(capacity) -> tx, rx. Every receiver sees
** every value sent after it subscribed; sending never waits. The last
** `capacity` values are kept in a ring; a receiver that falls further
** behind gets nil, err (kind "lagged", err.skipped = how many it missed) and
** continues with the oldest value still kept. recv gives nil once every
** sender is closed and the receiver has seen everything. The ring is a Lua
** table that grows as values are sent, up to the capacity (a limit, not an
** allocation).
*/
#include "sync.h"

#include <stdlib.h>

#define TX_MT "tidal.BroadcastSender"
#define RX_MT "tidal.BroadcastReceiver"

typedef struct bcast {
  int refs, nsenders, cap;
  lua_Integer head, tail; /* sequence of the oldest kept / of the next */
  tidal_wq waiters;
} bcast;

typedef struct end {
  tidal_handle h; /* first; h.core: the bcast */
  lua_Integer next; /* receiver: the next sequence it reads */
} end;

#define CORE(e) ((bcast *)(e)->h.core)

static void wake_all(tidal_wq *q) {
  tidal_task *t;
  while ((t = tidal__wq_pop(q)) != NULL) tidal__wake(t, 0);
}

static void bcast_unref(bcast *b) {
  if (--b->refs > 0) return;
  tidal__wq_orphan(&b->waiters, NULL); /* (see kernel.h) */
  free(b);
}

static void close_tx(lua_State *L, tidal_handle *h, int explicit) {
  (void)L;
  (void)explicit;
  bcast *b = (bcast *)h->core;
  if (--b->nsenders == 0) wake_all(&b->waiters);
}

static void unref(lua_State *L, void *core) {
  (void)L;
  bcast_unref((bcast *)core);
}

static const tidal_htype tx_type = {TT_BCAST_TX, "sender", close_tx, unref};
static const tidal_htype rx_type = {TT_BCAST_RX, "receiver", NULL, unref};

/* Pushes an end over b, or a closed one (completed by the caller) when b
** is NULL. */
static end *push_end(lua_State *L, tidal_ctx *ctx, bcast *b,
                     const tidal_htype *c, int holder) {
  end *e = (end *)tidal__handle_new(L, &ctx->aux, c, sizeof *e, 1);
  lua_pushvalue(L, holder);
  lua_setiuservalue(L, -2, 1);
  if (b == NULL) return e;
  tidal__handle_attach(&e->h, b);
  e->next = b->tail;
  b->refs++;
  if (c == &tx_type) b->nsenders++;
  return e;
}

static int l_broadcast(lua_State *L) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  if (!lua_isinteger(L, 1) || lua_tointeger(L, 1) < 1 ||
      lua_tointeger(L, 1) > TIDAL_CHANNEL_MAX)
    return luaL_error(L, "tidal.broadcast: capacity must be an integer >= 1 "
                         "and <= %d, got %s",
                      TIDAL_CHANNEL_MAX, tidal__describe(L, 1));
  int cap = (int)lua_tointeger(L, 1);
  lua_settop(L, 0);
  lua_createtable(L, cap < 16 ? cap : 16, 0); /* the ring; grows */
  /* the ends first, so that nothing raises once the core is allocated */
  end *tx = push_end(L, ctx, NULL, &tx_type, 1);
  end *rx = push_end(L, ctx, NULL, &rx_type, 1);
  bcast *b = (bcast *)calloc(1, sizeof *b);
  if (b == NULL) return luaL_error(L, "tidal.broadcast: not enough memory");
  b->cap = cap;
  b->refs = 2;
  b->nsenders = 1;
  tidal__handle_attach(&tx->h, b);
  tidal__handle_attach(&rx->h, b);
  return 2;
}

static int l_tx_gc(lua_State *L) {
  return tidal__handle_gc(L, &tx_type, "BroadcastSender:__gc");
}

static int l_rx_gc(lua_State *L) {
  return tidal__handle_gc(L, &rx_type, "BroadcastReceiver:__gc");
}

/* __close: closes a sender but keeps the core until the end is collected */
static int l_tx_close(lua_State *L) {
  return tidal__handle_close(L, &tx_type, "BroadcastSender:__close");
}

static int l_rx_close(lua_State *L) {
  return tidal__handle_close(L, &rx_type, "BroadcastReceiver:__close");
}

static end *check_tx(lua_State *L, const char *fname) {
  return (end *)tidal__handle_check(L, 1, &tx_type, fname);
}

/* tx:send(v) -> true; never waits */
static int l_send(lua_State *L) {
  end *e = check_tx(L, "BroadcastSender:send");
  bcast *b = CORE(e);
  if (lua_isnoneornil(L, 2))
    return luaL_error(L, "BroadcastSender:send: cannot send nil (receivers "
                         "read nil as the end); send false or a table");
  lua_getiuservalue(L, 1, 1);
  lua_pushvalue(L, 2);
  lua_rawseti(L, -2, (lua_Integer)(b->tail % b->cap) + 1);
  b->tail++;
  if (b->tail - b->head > b->cap) b->head = b->tail - b->cap;
  wake_all(&b->waiters);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_subscribe(lua_State *L) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  end *e = check_tx(L, "BroadcastSender:subscribe");
  lua_getiuservalue(L, 1, 1);
  push_end(L, ctx, CORE(e), &rx_type, lua_gettop(L));
  return 1;
}

static int l_clone(lua_State *L) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  end *e = check_tx(L, "BroadcastSender:clone");
  lua_getiuservalue(L, 1, 1);
  push_end(L, ctx, CORE(e), &tx_type, lua_gettop(L));
  return 1;
}

static int l_close_tx(lua_State *L) {
  return tidal__handle_close(L, &tx_type, "BroadcastSender:close");
}

/* Tries to read: pushes the results and returns their count, or -1. */
static int recv_now(lua_State *L, end *e) {
  bcast *b = CORE(e);
  if (b == NULL) return 0; /* finalized: closed */
  if (e->next < b->head) {
    lua_Integer skipped = b->head - e->next;
    e->next = b->head;
    lua_pushnil(L);
    tidal__error_push(L, "lagged", "receiver lagged behind: %I values skipped",
                      skipped);
    lua_pushinteger(L, skipped);
    lua_setfield(L, -2, "skipped");
    return 2;
  }
  if (e->next < b->tail) {
    lua_getiuservalue(L, 1, 1);
    lua_rawgeti(L, -1, (lua_Integer)(e->next % b->cap) + 1);
    e->next++;
    return 1;
  }
  if (b->nsenders == 0) return 0;
  return -1;
}

static int recv_cancel(tidal_task *t) {
  tidal__wq_remove(&((bcast *)t->wobj)->waiters, t);
  return 1;
}

static const tidal_waitop recv_op = {"BroadcastReceiver:recv", recv_cancel,
                                     NULL};

static int recv_k(lua_State *L, int status, lua_KContext k) {
  tidal_task *t = (tidal_task *)k;
  end *e = (end *)lua_touserdata(L, 1);
  int n;
  (void)status;
  tidal__resumed(L, t); /* every receiver was woken: nothing to pass on */
  if ((n = recv_now(L, e)) >= 0) return n; /* (0 if finalized meanwhile) */
  tidal__wq_push(&CORE(e)->waiters, t);
  return tidal__park(L, t, &recv_op, CORE(e), recv_k);
}

static int l_recv(lua_State *L);
static const tidal_restart recv_again = {l_recv};

/* rx:recv() -> value | nil, err (lagged) | nil at the end */
static int l_recv(lua_State *L) {
  end *e = (end *)tidal__checkud(L, 1, TT_BCAST_RX, "BroadcastReceiver:recv");
  int n;
  if (CORE(e) == NULL) return 0; /* finalized: closed */
  tidal_task *t = tidal__wait_begin(L, "BroadcastReceiver:recv");
  TIDAL_SPEND(L, t, &recv_again);
  lua_settop(L, 1);
  if ((n = recv_now(L, e)) >= 0) return n;
  tidal__wq_push(&CORE(e)->waiters, t);
  return tidal__park(L, t, &recv_op, CORE(e), recv_k);
}

/* rx:try_recv() -> value | nil, err (empty / lagged / closed) */
static int l_try_recv(lua_State *L) {
  end *e = (end *)tidal__checkud(L, 1, TT_BCAST_RX,
                                  "BroadcastReceiver:try_recv");
  int n;
  lua_settop(L, 1);
  n = recv_now(L, e);
  if (n > 0) return n;
  lua_pushnil(L);
  if (n == 0)
    tidal__error_push(L, "closed", "broadcast closed");
  else
    tidal__error_push(L, "empty", "nothing new");
  return 2;
}

/* #rx: values it has not read yet (0 once finalized) */
static int l_len(lua_State *L) {
  end *e = (end *)tidal__checkud(L, 1, TT_BCAST_RX, "BroadcastReceiver:__len");
  if (CORE(e) == NULL) {
    lua_pushinteger(L, 0);
    return 1;
  }
  lua_Integer from = e->next > CORE(e)->head ? e->next : CORE(e)->head;
  lua_pushinteger(L, CORE(e)->tail - from);
  return 1;
}

static const luaL_Reg tx_methods[] = {{"send", l_send},
                                      {"subscribe", l_subscribe},
                                      {"clone", l_clone},
                                      {"close", l_close_tx},
                                      {NULL, NULL}};

static const luaL_Reg rx_methods[] = {
    {"recv", l_recv}, {"try_recv", l_try_recv}, {NULL, NULL}};

static const luaL_Reg tx_meta[] = {
    {"__gc", l_tx_gc}, {"__close", l_tx_close}, {NULL, NULL}};

static const luaL_Reg rx_meta[] = {
    {"__gc", l_rx_gc}, {"__close", l_rx_close}, {"__len", l_len}, {NULL, NULL}};

static const luaL_Reg funcs[] = {{"broadcast", l_broadcast}, {NULL, NULL}};

/* stack: module, ctx */
void tidal__broadcast_open(lua_State *L) {
  tidal__newtype(L, TT_BCAST_TX, TX_MT, "BroadcastSender", tx_meta, tx_methods);
  tidal__newtype(L, TT_BCAST_RX, RX_MT, "BroadcastReceiver", rx_meta,
                 rx_methods);
  tidal__register(L, funcs);
}
