/*
** oneshot.c: tidal.oneshot() -> tx, rx: a channel for exactly one value.
**
** tx:send(v) never waits: true, or nil, err (kind "closed") when the
** receiver is gone. rx:recv() waits for the value: the value, or nil, err
** ("closed") when the sender was closed (or collected) without sending.
** The value lives in a holder table shared by both ends.
**
** Shared mode (an end was copied to another state): operations take the
** oneshot's mutex, the value is copied (encoded when sent, decoded when
** received) and waiters on other workers are woken through their worker's
** remote queue. An end in flight counts as an open end of its side.
*/
#include "shared.h"

#include <stdlib.h>

#define TX_MT "tidal.OneshotSender"
#define RX_MT "tidal.OneshotReceiver"

typedef struct oneshot {
  atomic_int refs;
  int ntx, nrx; /* open ends of each side (in any state, or in flight) */
  uint8_t sent, taken, tx_closed, rx_closed;
  uint8_t taking; /* shared: a receiver is decoding val (outside the lock) */
  tidal_wq waiters;
  tidal_shared sh; /* cross-worker mode: its mutex guards the above and val */
  tidal_buf val; /* shared: the value, encoded */
} oneshot;

typedef struct end {
  tidal_handle h; /* first; h.core: the oneshot (NULL once finalized) */
} end;

#define OS(e) ((oneshot *)(e)->h.core)


/* cur: the worker running on this thread, or NULL */
static void unref(oneshot *o, tidal_worker *cur) {
  if (atomic_fetch_sub(&o->refs, 1) != 1) return;
  tidal__wq_orphan(&o->waiters, cur); /* (see kernel.h) */
  if (o->sh.on) {
    if (o->val.data) tidal__xfer_discard(o->val.data, o->val.len);
    tidal__buf_free(&o->val);
  }
  tidal__sh_destroy(&o->sh);
  free(o);
}


static void wake_all(oneshot *o, tidal_worker *cur) {
  tidal_task *t;
  while ((t = tidal__wq_pop(&o->waiters)) != NULL)
    tidal__sh_wake(&o->sh, t, cur);
}

static int fail(lua_State *L, const char *kind, const char *msg) {
  lua_pushnil(L);
  tidal__error_push(L, kind, "%s", msg);
  return 2;
}

/* Pushes a new end, closed (harmless until it gets its oneshot). */
static const tidal_htype tx_type, rx_type;

static end *new_end(lua_State *L, tidal_ctx *ctx, int tt, int holder) {
  end *e = (end *)tidal__handle_new(L, &ctx->aux,
                                    tt == TT_ONESHOT_TX ? &tx_type : &rx_type,
                                    sizeof *e, 1);
  lua_pushvalue(L, holder);
  lua_setiuservalue(L, -2, 1);
  return e;
}

static void push_end(lua_State *L, tidal_ctx *ctx, oneshot *o, int tt,
                     int holder) {
  end *e = new_end(L, ctx, tt, holder);
  tidal__handle_attach(&e->h, o);
  atomic_fetch_add(&o->refs, 1);
}

static int l_oneshot(lua_State *L) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  lua_settop(L, 0);
  lua_createtable(L, 1, 0);
  end *tx = new_end(L, ctx, TT_ONESHOT_TX, 1);
  end *rx = new_end(L, ctx, TT_ONESHOT_RX, 1);
  oneshot *o = (oneshot *)calloc(1, sizeof *o);
  if (o == NULL) return luaL_error(L, "tidal.oneshot: not enough memory");
  atomic_init(&o->refs, 2); /* the ends hold it */
  o->ntx = o->nrx = 1;
  tidal__handle_attach(&tx->h, o);
  tidal__handle_attach(&rx->h, o);
  return 2;
}

/* Locked. */
static void tx_gone(oneshot *o, tidal_worker *cur) {
  if (--o->ntx == 0 && !o->tx_closed) {
    o->tx_closed = 1;
    wake_all(o, cur);
  }
}

static void rx_gone(oneshot *o, tidal_worker *cur) {
  if (--o->nrx == 0 && !o->rx_closed) {
    o->rx_closed = 1;
    wake_all(o, cur); /* they see it closed */
  }
}

/* The oneshot ends when every copy of its sender is closed: a sender
** copied to another state (a pool job, a worker) may still send after the
** original is closed or collected. */
static void tx_closed(oneshot *o, tidal_worker *cur) {
  tidal__sh_lock(&o->sh);
  tx_gone(o, cur);
  tidal__sh_unlock(&o->sh);
}

/* (once: the handle helper marks the end closed) */
static void close_tx(lua_State *L, tidal_handle *h, int explicit) {
  (void)explicit;
  tx_closed((oneshot *)h->core, tidal__cur_worker(L));
}

static void close_rx(lua_State *L, tidal_handle *h, int explicit) {
  oneshot *o = (oneshot *)h->core;
  tidal_worker *cur = tidal__cur_worker(L);
  tidal__sh_lock(&o->sh);
  if (explicit && !o->rx_closed) {
    o->rx_closed = 1;
    wake_all(o, cur);
  }
  rx_gone(o, cur);
  tidal__sh_unlock(&o->sh);
}

static void unref_core(lua_State *L, void *core) {
  unref((oneshot *)core, tidal__cur_worker(L));
}

/* A finalized end is a closed one without its core: every method checks.
** __close closes the end but keeps the core until the end is collected. */
static const tidal_htype tx_type = {TT_ONESHOT_TX, "sender", close_tx,
                                    unref_core};
static const tidal_htype rx_type = {TT_ONESHOT_RX, "receiver", close_rx,
                                    unref_core};

static int l_tx_gc(lua_State *L) {
  return tidal__handle_gc(L, &tx_type, "OneshotSender:__gc");
}

static int l_rx_gc(lua_State *L) {
  return tidal__handle_gc(L, &rx_type, "OneshotReceiver:__gc");
}

static int l_tx_close(lua_State *L) {
  return tidal__handle_close(L, &tx_type, "OneshotSender:__close");
}

static int l_rx_close(lua_State *L) {
  return tidal__handle_close(L, &rx_type, "OneshotReceiver:__close");
}

/* tx:send(v) -> true | nil, err */
static int l_send(lua_State *L) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  end *e = (end *)tidal__checkud(L, 1, TT_ONESHOT_TX, "OneshotSender:send");
  oneshot *o = OS(e);
  tidal_buf b = {NULL, 0, 0};
  if (lua_isnoneornil(L, 2))
    return luaL_error(L, "OneshotSender:send: cannot send nil (a receiver "
                         "reads nil as closed); send false or a table");
  if (o == NULL)
    return tidal__closed_error(L, "OneshotSender:send", "sender");
  lua_settop(L, 2);
  if (o->sh.on && tidal__xfer_encode(L, 2, 1, "message", &b))
    return luaL_error(L,
                      "OneshotSender:send: %s (this oneshot crosses workers: "
                      "its value is copied)",
                      lua_tostring(L, -1));
  tidal__sh_lock(&o->sh);
  const char *misuse = o->sent    ? "a value was sent already (a oneshot "
                                    "carries one value)"
                       : e->h.closed ? "attempt to use a closed sender"
                                   : NULL;
  if (misuse != NULL || o->rx_closed) {
    tidal__sh_unlock(&o->sh);
    if (b.data) tidal__xfer_discard(b.data, b.len);
    tidal__buf_free(&b);
    if (misuse) return luaL_error(L, "OneshotSender:send: %s", misuse);
    return fail(L, "closed", "receiver closed");
  }
  if (o->sh.on) {
    o->val = b;
  } else {
    lua_getiuservalue(L, 1, 1);
    lua_pushvalue(L, 2);
    lua_rawseti(L, -2, 1);
  }
  o->sent = 1;
  wake_all(o, ctx->w); /* the receiver takes it */
  tidal__sh_unlock(&o->sh);
  e->h.closed = 1; /* a oneshot's sender is used up */
  tx_closed(o, ctx->w);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_close_tx(lua_State *L) {
  return tidal__handle_close(L, &tx_type, "OneshotSender:close");
}

static int recv_cancel(tidal_task *t) {
  oneshot *o = (oneshot *)t->wobj;
  return tidal__sh_withdraw(&o->sh, &o->waiters, t, NULL, NULL);
}

static const tidal_waitop recv_op = {"OneshotReceiver:recv", recv_cancel, NULL};

/* Locked; unlocks. Pushes the outcome and returns its count, or -1 (still
** locked) when there is nothing yet. */
static int recv_now(lua_State *L, oneshot *o) {
  if (o->taking) return -1; /* another receiver is decoding it */
  if (o->sent && !o->taken) {
    if (o->sh.on) {
      /* Decoded outside the lock (it may run Lua code), in place: while
      ** taking, nobody else touches val. Taken only once it is rebuilt:
      ** if it cannot be here, it stays for the next try (or another
      ** worker's receiver). */
      o->taking = 1;
      uv_mutex_unlock(&o->sh.mu);
      int n = tidal__xfer_decode(L, o->val.data, o->val.len);
      uv_mutex_lock(&o->sh.mu);
      o->taking = 0;
      tidal_buf b = {NULL, 0, 0};
      if (n == 1) {
        o->taken = 1;
        b = o->val;
        o->val.data = NULL;
        o->val.len = o->val.cap = 0;
      }
      wake_all(o, NULL); /* receivers that waited meanwhile look again */
      uv_mutex_unlock(&o->sh.mu);
      if (n == 1) {
        tidal__xfer_discard(b.data, b.len);
        tidal__buf_free(&b);
        return 1;
      }
      if (n > 0) lua_pop(L, n);
      if (n >= 0) lua_pushliteral(L, "not one value");
      return luaL_error(L,
                        "OneshotReceiver:recv: cannot rebuild the value in "
                        "this Lua state: %s (it stays in the oneshot)",
                        lua_tostring(L, -1));
    }
    o->taken = 1;
    lua_getiuservalue(L, 1, 1);
    lua_rawgeti(L, -1, 1);
    lua_pushnil(L);
    lua_rawseti(L, -3, 1);
    return 1;
  }
  if (o->rx_closed || o->tx_closed || o->taken) {
    const char *why = o->rx_closed ? "receiver closed" : "sender closed";
    tidal__sh_unlock(&o->sh);
    return fail(L, "closed", why);
  }
  return -1;
}

static int park(lua_State *L, tidal_task *t, oneshot *o, int front,
                lua_KFunction k) {
  return tidal__sh_park(L, &o->sh, t, &o->waiters, front, &recv_op, o, k);
}

static int finalized(lua_State *L) {
  return fail(L, "closed", "receiver closed");
}

static int recv_k(lua_State *L, int status, lua_KContext k) {
  tidal_task *t = (tidal_task *)k;
  oneshot *o = OS((end *)lua_touserdata(L, 1));
  int n;
  (void)status;
  if (o == NULL) { /* its __gc was called while it waited */
    tidal__resumed(L, t);
    return finalized(L);
  }
  tidal__sh_lock(&o->sh);
  if (tidal__wake_lost(t)) wake_all(o, t->w); /* another may take it */
  tidal__sh_unlock(&o->sh);
  tidal__resumed(L, t);
  tidal__sh_lock(&o->sh);
  if ((n = recv_now(L, o)) >= 0) return n;
  return park(L, t, o, 1, recv_k);
}

static int l_recv(lua_State *L);
static const tidal_restart recv_again = {l_recv};

/* rx:recv() -> value | nil, err (closed) */
static int l_recv(lua_State *L) {
  end *e = (end *)tidal__checkud(L, 1, TT_ONESHOT_RX, "OneshotReceiver:recv");
  oneshot *o = OS(e);
  int n;
  if (o == NULL) return finalized(L);
  tidal_task *t = tidal__wait_begin(L, "OneshotReceiver:recv");
  TIDAL_SPEND(L, t, &recv_again);
  lua_settop(L, 1);
  tidal__sh_lock(&o->sh);
  if ((n = recv_now(L, o)) >= 0) return n;
  return park(L, t, o, 0, recv_k);
}

/* rx:try_recv() -> value | nil, err (empty / closed) */
static int l_try_recv(lua_State *L) {
  end *e = (end *)tidal__checkud(L, 1, TT_ONESHOT_RX,
                                  "OneshotReceiver:try_recv");
  int n;
  lua_settop(L, 1);
  if (OS(e) == NULL) return finalized(L);
  tidal__sh_lock(&OS(e)->sh);
  if ((n = recv_now(L, OS(e))) >= 0) return n;
  tidal__sh_unlock(&OS(e)->sh);
  return fail(L, "empty", "no value yet");
}

static int l_close_rx(lua_State *L) {
  return tidal__handle_close(L, &rx_type, "OneshotReceiver:close");
}

static int l_tx_is_closed(lua_State *L) {
  end *e = (end *)tidal__checkud(L, 1, TT_ONESHOT_TX,
                                  "OneshotSender:is_closed");
  int closed = 1;
  if (OS(e) != NULL) {
    tidal__sh_lock(&OS(e)->sh);
    closed = e->h.closed || OS(e)->rx_closed;
    tidal__sh_unlock(&OS(e)->sh);
  }
  lua_pushboolean(L, closed);
  return 1;
}

static int l_rx_is_closed(lua_State *L) {
  end *e = (end *)tidal__checkud(L, 1, TT_ONESHOT_RX,
                                  "OneshotReceiver:is_closed");
  int closed = 1;
  if (OS(e) != NULL) {
    tidal__sh_lock(&OS(e)->sh);
    closed = e->h.closed || OS(e)->taken || (OS(e)->tx_closed && !OS(e)->sent);
    tidal__sh_unlock(&OS(e)->sh);
  }
  lua_pushboolean(L, closed);
  return 1;
}

/* ------------------------------------------------------ copying the ends */

static void *share(lua_State *L, int idx, int tx) {
  end *e = (end *)lua_touserdata(L, idx);
  oneshot *o = e ? OS(e) : NULL;
  if (o == NULL || e->h.closed) return NULL;
  if (!o->sh.on) { /* on the owning thread: nobody else sees it yet */
    if (o->sent && !o->taken) { /* encode the value already sent */
      if (!lua_checkstack(L, 4)) return NULL;
      lua_getiuservalue(L, idx, 1);
      lua_rawgeti(L, -1, 1);
      int fail_ = tidal__xfer_encode(L, lua_gettop(L), 1, "message", &o->val);
      lua_pop(L, fail_ ? 3 : 2);
      if (fail_) return NULL;
    }
    tidal_wq *q = &o->waiters;
    if (tidal__sh_enable(&o->sh, &q, 1)) {
      if (o->val.data) tidal__xfer_discard(o->val.data, o->val.len);
      tidal__buf_free(&o->val);
      return NULL;
    }
  }
  uv_mutex_lock(&o->sh.mu);
  if (tx)
    o->ntx++;
  else
    o->nrx++;
  uv_mutex_unlock(&o->sh.mu);
  atomic_fetch_add(&o->refs, 1);
  return o;
}

static void *share_tx(lua_State *L, int idx) {
  return share(L, idx, 1);
}

static void *share_rx(lua_State *L, int idx) {
  return share(L, idx, 0);
}

static void push_copy(lua_State *L, void *obj, int tt) {
  oneshot *o = (oneshot *)obj;
  lua_newtable(L); /* an unused holder: the value is copied */
  push_end(L, tidal__ctx_need(L), o, tt, lua_gettop(L));
  lua_remove(L, -2);
  uv_mutex_lock(&o->sh.mu);
  if (tt == TT_ONESHOT_TX)
    o->ntx++;
  else
    o->nrx++;
  uv_mutex_unlock(&o->sh.mu);
}

static void push_tx(lua_State *L, void *obj) {
  push_copy(L, obj, TT_ONESHOT_TX);
}

static void push_rx(lua_State *L, void *obj) {
  push_copy(L, obj, TT_ONESHOT_RX);
}

static void drop_tx(void *obj) {
  oneshot *o = (oneshot *)obj;
  uv_mutex_lock(&o->sh.mu);
  tx_gone(o, NULL);
  uv_mutex_unlock(&o->sh.mu);
  unref(o, NULL);
}

static void drop_rx(void *obj) {
  oneshot *o = (oneshot *)obj;
  uv_mutex_lock(&o->sh.mu);
  rx_gone(o, NULL);
  uv_mutex_unlock(&o->sh.mu);
  unref(o, NULL);
}

static const tidal_xtype tx_xtype = {TX_MT, share_tx, push_tx, drop_tx};
static const tidal_xtype rx_xtype = {RX_MT, share_rx, push_rx, drop_rx};

static const luaL_Reg tx_methods[] = {{"send", l_send},
                                      {"close", l_close_tx},
                                      {"is_closed", l_tx_is_closed},
                                      {NULL, NULL}};

static const luaL_Reg rx_methods[] = {{"recv", l_recv},
                                      {"try_recv", l_try_recv},
                                      {"close", l_close_rx},
                                      {"is_closed", l_rx_is_closed},
                                      {NULL, NULL}};

static const luaL_Reg tx_meta[] = {
    {"__gc", l_tx_gc}, {"__close", l_tx_close}, {NULL, NULL}};

static const luaL_Reg rx_meta[] = {
    {"__gc", l_rx_gc}, {"__close", l_rx_close}, {NULL, NULL}};

static const luaL_Reg funcs[] = {{"oneshot", l_oneshot}, {NULL, NULL}};

/* stack: module, ctx */
void tidal__oneshot_open(lua_State *L) {
  tidal__newtype(L, TT_ONESHOT_TX, TX_MT, "OneshotSender", tx_meta, tx_methods);
  tidal__newtype(L, TT_ONESHOT_RX, RX_MT, "OneshotReceiver", rx_meta,
                 rx_methods);
  tidal__xfer_register(&tx_xtype);
  tidal__xfer_register(&rx_xtype);
  tidal__register(L, funcs);
}
