/*
** oneshot.c: tidal.oneshot() -> tx, rx: a channel for exactly one value.
**
** tx:send(v) never waits: true, or nil, err (kind "closed") when the
** receiver is gone. rx:recv() waits for the value: the value, or nil, err
** ("closed") when the sender was closed (or collected) without sending.
** The value lives in a holder table shared by both ends.
*/
#include "tidal_int.h"

#include <stdlib.h>

#define TX_MT "tidal.OneshotSender"
#define RX_MT "tidal.OneshotReceiver"

typedef struct oneshot {
  int refs;
  uint8_t sent, taken, tx_closed, rx_closed;
  tidal_wq waiters;
} oneshot;

typedef struct end {
  oneshot *o;
  uint8_t closed;
} end;

static void wake_all(tidal_wq *q) {
  tidal_task *t;
  while ((t = tidal__wq_pop(q)) != NULL) tidal__wake(t, 0);
}

static int fail(lua_State *L, const char *kind, const char *msg) {
  lua_pushnil(L);
  tidal__error_push(L, kind, "%s", msg);
  return 2;
}

static void push_end(lua_State *L, tidal_ctx *ctx, oneshot *o, int tt,
                     int holder) {
  end *e = (end *)lua_newuserdatauv(L, sizeof *e, 1);
  e->o = NULL;
  tidal__setmt(L, ctx, tt);
  lua_pushvalue(L, holder);
  lua_setiuservalue(L, -2, 1);
  e->o = o;
  e->closed = 0;
  o->refs++;
}

static int l_oneshot(lua_State *L) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  oneshot *o = (oneshot *)calloc(1, sizeof *o);
  if (o == NULL) return luaL_error(L, "tidal.oneshot: not enough memory");
  o->refs = 1;
  lua_createtable(L, 1, 0);
  int holder = lua_gettop(L);
  push_end(L, ctx, o, TT_ONESHOT_TX, holder);
  push_end(L, ctx, o, TT_ONESHOT_RX, holder);
  if (--o->refs == 0) free(o); /* (cannot happen: the ends hold it) */
  return 2;
}

static void close_tx(end *e) {
  if (e->closed) return;
  e->closed = 1;
  e->o->tx_closed = 1;
  wake_all(&e->o->waiters);
}

static void close_rx(end *e) {
  if (e->closed) return;
  e->closed = 1;
  e->o->rx_closed = 1;
  wake_all(&e->o->waiters); /* they see it closed */
}

static int l_end_gc(lua_State *L) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  end *e = (end *)lua_touserdata(L, 1);
  if (e->o == NULL) return 0;
  if (tidal__toud(L, ctx, 1, TT_ONESHOT_TX))
    close_tx(e);
  else
    close_rx(e);
  if (--e->o->refs == 0) free(e->o);
  e->o = NULL;
  return 0;
}

/* __close: closes the end but keeps the core until the end is collected */
static int l_end_close(lua_State *L) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  end *e = (end *)lua_touserdata(L, 1);
  if (e->o == NULL) return 0;
  if (tidal__toud(L, ctx, 1, TT_ONESHOT_TX))
    close_tx(e);
  else
    close_rx(e);
  return 0;
}

/* tx:send(v) -> true | nil, err */
static int l_send(lua_State *L) {
  end *e = (end *)tidal__checkud(L, 1, TT_ONESHOT_TX, "OneshotSender:send");
  oneshot *o = e->o;
  if (lua_isnoneornil(L, 2))
    return luaL_error(L, "OneshotSender:send: cannot send nil (a receiver "
                         "reads nil as closed); send false or a table");
  if (o->sent)
    return luaL_error(L, "OneshotSender:send: a value was sent already "
                         "(a oneshot carries one value)");
  if (e->closed)
    return luaL_error(L, "OneshotSender:send: this sender was closed");
  if (o->rx_closed) return fail(L, "closed", "receiver closed");
  lua_getiuservalue(L, 1, 1);
  lua_pushvalue(L, 2);
  lua_rawseti(L, -2, 1);
  o->sent = 1;
  close_tx(e); /* wakes the receiver */
  lua_pushboolean(L, 1);
  return 1;
}

static int l_close_tx(lua_State *L) {
  close_tx((end *)tidal__checkud(L, 1, TT_ONESHOT_TX, "OneshotSender:close"));
  return 0;
}

static int take(lua_State *L, oneshot *o) {
  lua_getiuservalue(L, 1, 1);
  lua_rawgeti(L, -1, 1);
  lua_pushnil(L);
  lua_rawseti(L, -3, 1);
  o->taken = 1;
  return 1;
}

static int recv_cancel(tidal_task *t) {
  tidal__wq_remove(&((oneshot *)t->wobj)->waiters, t);
  return 1;
}

static const tidal_waitop recv_op = {"OneshotReceiver:recv", recv_cancel};

static int recv_now(lua_State *L, oneshot *o, int *ready) {
  *ready = 1;
  if (o->sent && !o->taken) return take(L, o);
  if (o->rx_closed) return fail(L, "closed", "receiver closed");
  if (o->tx_closed || o->taken) return fail(L, "closed", "sender closed");
  *ready = 0;
  return 0;
}

static int recv_k(lua_State *L, int status, lua_KContext k) {
  tidal_task *t = (tidal_task *)k;
  oneshot *o = ((end *)lua_touserdata(L, 1))->o;
  int ready, n;
  (void)status;
  if (tidal__wake_lost(t)) wake_all(&o->waiters); /* another may take it */
  tidal__resumed(L, t);
  n = recv_now(L, o, &ready);
  if (ready) return n;
  tidal__wq_push_front(&o->waiters, t);
  return tidal__park(L, t, &recv_op, o, recv_k);
}

static int l_recv(lua_State *L);
static const tidal_restart recv_again = {l_recv};

/* rx:recv() -> value | nil, err (closed) */
static int l_recv(lua_State *L) {
  end *e = (end *)tidal__checkud(L, 1, TT_ONESHOT_RX, "OneshotReceiver:recv");
  oneshot *o = e->o;
  int ready, n;
  tidal_task *t = tidal__wait_begin(L, "OneshotReceiver:recv");
  TIDAL_SPEND(L, t, &recv_again);
  lua_settop(L, 1);
  n = recv_now(L, o, &ready);
  if (ready) return n;
  tidal__wq_push(&o->waiters, t);
  return tidal__park(L, t, &recv_op, o, recv_k);
}

/* rx:try_recv() -> value | nil, err (empty / closed) */
static int l_try_recv(lua_State *L) {
  end *e = (end *)tidal__checkud(L, 1, TT_ONESHOT_RX,
                                  "OneshotReceiver:try_recv");
  int ready, n;
  lua_settop(L, 1);
  n = recv_now(L, e->o, &ready);
  if (ready) return n;
  return fail(L, "empty", "no value yet");
}

static int l_close_rx(lua_State *L) {
  close_rx((end *)tidal__checkud(L, 1, TT_ONESHOT_RX, "OneshotReceiver:close"));
  return 0;
}

static int l_is_closed(lua_State *L) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  end *e = (end *)tidal__toud(L, ctx, 1, TT_ONESHOT_TX);
  if (e != NULL) {
    lua_pushboolean(L, e->closed || e->o->rx_closed);
  } else {
    e = (end *)tidal__checkud(L, 1, TT_ONESHOT_RX, "is_closed");
    lua_pushboolean(L, e->closed || e->o->taken ||
                           (e->o->tx_closed && !e->o->sent));
  }
  return 1;
}

static const luaL_Reg tx_methods[] = {{"send", l_send},
                                      {"close", l_close_tx},
                                      {"is_closed", l_is_closed},
                                      {NULL, NULL}};

static const luaL_Reg rx_methods[] = {{"recv", l_recv},
                                      {"try_recv", l_try_recv},
                                      {"close", l_close_rx},
                                      {"is_closed", l_is_closed},
                                      {NULL, NULL}};

static const luaL_Reg meta[] = {
    {"__gc", l_end_gc}, {"__close", l_end_close}, {NULL, NULL}};

static const luaL_Reg funcs[] = {{"oneshot", l_oneshot}, {NULL, NULL}};

/* stack: module, ctx */
void tidal__oneshot_open(lua_State *L) {
  tidal__newtype(L, TT_ONESHOT_TX, TX_MT, meta, tx_methods);
  tidal__newtype(L, TT_ONESHOT_RX, RX_MT, meta, rx_methods);
  tidal__register(L, funcs);
}
