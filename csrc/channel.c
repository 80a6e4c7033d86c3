/*
** channel.c: tidal.channel([capacity]) -> tx, rx. Multi-producer,
** single-consumer (any task may hold the receiver), bounded or unbounded.
**
** The channel is a C core shared by its ends (Sender and Receiver userdata,
** reference-counted). Buffered values live in a Lua table ring (the ends'
** uservalue), so within one Lua state a value is passed by reference. Waits
** follow wake-then-take (tidal_int.h): a sender puts the value in the buffer
** and wakes a waiting receiver, which takes it when it runs; a bounded
** channel wakes a waiting sender when room appears. A task cancelled between
** its wake and its turn leaves the channel as it was and passes the wake on,
** so a cancelled recv loses no message and a cancelled send delivers nothing.
**
** Ends that are closed, collected, or leave a <close> scope close their side:
** the last Sender closing ends the stream (recv gives nil once drained);
** the Receiver closing refuses new sends (values already buffered can still
** be received).
*/
#include "tidal_int.h"

#include <stdlib.h>
#include <string.h>

#define SENDER_MT "tidal.Sender"
#define RECEIVER_MT "tidal.Receiver"

typedef struct chan {
  int refs;      /* ends alive */
  int nsenders;  /* open Sender ends */
  int cap;       /* bounded capacity, 0: unbounded */
  int size;      /* slots in the buffer table (grows when unbounded) */
  int head, n;   /* ring: values at slots head .. head+n-1 (mod size), 1-based */
  int reserved;  /* bounded: room promised to senders woken for it that have
                    not run yet (n + reserved <= cap), so that a later send
                    cannot take it first */
  uint8_t rx_closed;
  tidal_wq recvq, sendq;
} chan;

typedef struct end {
  chan *ch;
  uint8_t closed;
} end;

/* -------------------------------------------------------------- the core */

static void chan_unref(chan *ch) {
  if (--ch->refs == 0) free(ch);
}

/* room for a value that was not promised to a woken sender */
static int has_room(const chan *ch) {
  return ch->cap == 0 || ch->n + ch->reserved < ch->cap;
}

/* Wake the first waiting sender for the room that just appeared, keeping
** that room for it. */
static void wake_sender(chan *ch) {
  if (ch->sendq.head != NULL && has_room(ch)) {
    ch->reserved++;
    tidal__wake(tidal__wq_pop(&ch->sendq), 0);
  }
}

static void wake_one(tidal_wq *q) {
  tidal_task *t = tidal__wq_pop(q);
  if (t != NULL) tidal__wake(t, 0);
}

static void wake_all(tidal_wq *q) {
  tidal_task *t;
  while ((t = tidal__wq_pop(q)) != NULL) tidal__wake(t, 0);
}

/* Ring table at index buf (in its holder at buf - 1); value on top
** (popped). An unbounded ring that is full doubles into a new table, which
** the holder (shared by every end) then points at. */
static void buf_push(lua_State *L, chan *ch, int buf) {
  if (ch->n == ch->size) {
    int size = ch->size * 2;
    lua_createtable(L, size, 0);
    for (int i = 0; i < ch->n; i++) {
      lua_rawgeti(L, buf, (ch->head - 1 + i) % ch->size + 1);
      lua_rawseti(L, -2, i + 1);
    }
    lua_pushvalue(L, -1);
    lua_rawseti(L, buf - 1, 1);
    lua_replace(L, buf);
    ch->head = 1;
    ch->size = size;
  }
  lua_rawseti(L, buf, (ch->head - 1 + ch->n) % ch->size + 1);
  ch->n++;
}

/* pushes the oldest value */
static void buf_take(lua_State *L, chan *ch, int buf) {
  lua_rawgeti(L, buf, ch->head);
  lua_pushnil(L);
  lua_rawseti(L, buf, ch->head);
  ch->head = ch->head % ch->size + 1;
  ch->n--;
}

/* ------------------------------------------------------------------ ends */

#define check_end(L, idx, tt, fname) ((end *)tidal__checkud(L, idx, tt, fname))

/* self of a hot method: checked once per object (see TIDAL_SELF) */
static end *self_end(lua_State *L, tidal_ctx *ctx, int tt, const char *fname) {
  end *e = (end *)tidal__self(L, ctx, tt, fname);
  if (e->ch != NULL) TIDAL_HOT(ctx, tt, e) = e;
  return e;
}

static int is_sender(lua_State *L, int idx) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  return tidal__toud(L, ctx, idx, TT_SENDER) != NULL;
}

static void push_end(lua_State *L, chan *ch, int tt, int buf) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  end *e = (end *)lua_newuserdatauv(L, sizeof *e, 1);
  e->ch = NULL;
  e->closed = 1; /* harmless until complete */
  tidal__setmt(L, ctx, tt);
  lua_pushvalue(L, buf);
  lua_setiuservalue(L, -2, 1);
  e->ch = ch;
  e->closed = 0;
  ch->refs++;
}

/* Pushes the ring of the end at idx and returns its index. A bounded
** channel's ends hold the ring itself; an unbounded one's hold a holder
** table whose [1] is the ring, so that growing it is seen by every end
** (the holder is then just below the ring). */
static int push_buf(lua_State *L, chan *ch, int idx) {
  lua_getiuservalue(L, idx, 1);
  if (ch->cap == 0) lua_rawgeti(L, -1, 1);
  return lua_gettop(L);
}

static void close_sender(end *e) {
  if (e->closed) return;
  e->closed = 1;
  if (--e->ch->nsenders == 0) wake_all(&e->ch->recvq); /* they see the end */
}

static void close_receiver(end *e) {
  if (e->closed) return;
  e->closed = 1;
  e->ch->rx_closed = 1;
  e->ch->reserved = 0;     /* nothing more will be sent */
  wake_all(&e->ch->sendq); /* they see the channel closed */
  wake_all(&e->ch->recvq);
}

static int l_end_gc(lua_State *L) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  end *e = (end *)lua_touserdata(L, 1);
  if (TIDAL_HOT(ctx, TT_SENDER, e) == e) TIDAL_HOT(ctx, TT_SENDER, e) = NULL;
  if (TIDAL_HOT(ctx, TT_RECEIVER, e) == e)
    TIDAL_HOT(ctx, TT_RECEIVER, e) = NULL;
  if (e->ch == NULL) return 0;
  if (is_sender(L, 1))
    close_sender(e);
  else
    close_receiver(e);
  chan_unref(e->ch);
  e->ch = NULL;
  return 0;
}

/* __close: closes the end's side but keeps the channel, so the end stays
** usable (as a closed end) through other references until it is collected */
static int l_end_close(lua_State *L) {
  end *e = (end *)lua_touserdata(L, 1);
  if (e->ch == NULL) return 0;
  if (is_sender(L, 1))
    close_sender(e);
  else
    close_receiver(e);
  return 0;
}

/* tidal.channel([capacity]) -> tx, rx */
static int l_channel(lua_State *L) {
  int cap = 0;
  if (!lua_isnoneornil(L, 1)) {
    if (!lua_isinteger(L, 1) || lua_tointeger(L, 1) < 1 ||
        lua_tointeger(L, 1) > (1 << 28))
      return luaL_error(L,
                        "tidal.channel: capacity must be an integer >= 1 "
                        "(or nil for an unbounded channel), got %s",
                        luaL_tolstring(L, 1, NULL));
    cap = (int)lua_tointeger(L, 1);
  }
  chan *ch = (chan *)calloc(1, sizeof *ch);
  if (ch == NULL) return luaL_error(L, "tidal.channel: not enough memory");
  ch->cap = cap;
  ch->size = cap ? cap : 16;
  ch->head = 1;
  ch->nsenders = 1;
  ch->refs = 1; /* held by this call until both ends own it */
  lua_createtable(L, ch->size, 0); /* the ring */
  if (cap == 0) {
    lua_createtable(L, 1, 0); /* its holder */
    lua_insert(L, -2);
    lua_rawseti(L, -2, 1);
  }
  int holder = lua_gettop(L);
  push_end(L, ch, TT_SENDER, holder);
  push_end(L, ch, TT_RECEIVER, holder);
  chan_unref(ch);
  return 2;
}

/* ---------------------------------------------------------------- errors */

static int fail(lua_State *L, const char *kind, const char *msg) {
  lua_pushnil(L);
  tidal__error_push(L, kind, "%s", msg);
  return 2;
}

/* --------------------------------------------------------------- Sender */

static int l_send(lua_State *L);
static const tidal_restart send_again = {l_send};

static int send_cancel(tidal_task *t) {
  tidal__wq_remove(&((chan *)t->wobj)->sendq, t);
  return 1;
}

static const tidal_waitop send_op = {"Sender:send", send_cancel};

/* After a sender gave up: room it was woken for goes to the next one. */
static void pass_send_wake(chan *ch) {
  wake_sender(ch);
}

/* value at 2 */
static int try_put(lua_State *L, chan *ch) {
  int buf = push_buf(L, ch, 1);
  lua_pushvalue(L, 2);
  buf_push(L, ch, buf);
  if (ch->recvq.head) wake_one(&ch->recvq);
  lua_pushboolean(L, 1);
  return 1;
}

static int send_k(lua_State *L, int status, lua_KContext k) {
  tidal_task *t = (tidal_task *)k;
  chan *ch = ((end *)lua_touserdata(L, 1))->ch;
  (void)status;
  /* woken for room (not by its cancellation, nor by the receiver closing):
  ** the room kept for it is its own now */
  if (!(t->flags & TF_WAKECANCEL) && !ch->rx_closed && ch->reserved > 0)
    ch->reserved--;
  if (tidal__wake_lost(t)) pass_send_wake(ch);
  tidal__resumed(L, t);
  lua_settop(L, 2);
  if (ch->rx_closed) return fail(L, "closed", "channel closed");
  if (has_room(ch)) return try_put(L, ch);
  tidal__wq_push_front(&ch->sendq, t); /* the room was taken: keep our turn */
  return tidal__park(L, t, &send_op, ch, send_k);
}

static void check_value(lua_State *L, const char *fname) {
  if (lua_isnoneornil(L, 2))
    luaL_error(L,
               "%s: cannot send nil (a receiver reads nil as the end of the "
               "stream); send false or a table instead",
               fname);
}

/* tx:send(v) -> true | nil, err (closed); waits while full */
static int l_send(lua_State *L) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  end *e = self_end(L, ctx, TT_SENDER, "Sender:send");
  tidal_task *t = ctx->cur;
  chan *ch = e->ch;
  if (lua_type(L, 2) <= LUA_TNIL) check_value(L, "Sender:send");
  if (e->closed)
    return luaL_error(L, "Sender:send: this sender was closed (use an open "
                         "clone)");
  if (t != NULL && t->co == L) {
    if (t->cancel | t->tmo) tidal__raise_cancel(L, t);
    if (--t->budget == 0) {
      if (lua_isyieldable(L)) return tidal__budget_yield(L, t, &send_again);
      t->budget = 1;
    }
  }
  if (ch->rx_closed) return fail(L, "closed", "channel closed");
  if (has_room(ch) && ch->sendq.head == NULL) return try_put(L, ch);
  lua_settop(L, 2);
  t = tidal__wait_begin(L, "Sender:send"); /* raises outside a task */
  tidal__wq_push(&ch->sendq, t);
  return tidal__park(L, t, &send_op, ch, send_k);
}

/* select's fast path for tx:send_op(v): the sender at base, v above */
static int try_send_op(lua_State *L, int base) {
  end *e = (end *)lua_touserdata(L, base);
  chan *ch = e->ch;
  if (e->closed) return -1; /* run() raises the misuse */
  if (ch->rx_closed) return fail(L, "closed", "channel closed");
  if (!has_room(ch) || ch->sendq.head != NULL) return -1;
  int buf = push_buf(L, ch, base);
  lua_pushvalue(L, base + 1);
  buf_push(L, ch, buf);
  lua_settop(L, buf - (ch->cap == 0) - 1);
  if (ch->recvq.head) wake_one(&ch->recvq);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_send_op(lua_State *L) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  check_end(L, 1, TT_SENDER, "Sender:send_op");
  check_value(L, "Sender:send_op");
  tidal__op_new(L, ctx, "Sender:send", l_send, try_send_op, 1, 2);
  return 1;
}

/* tx:try_send(v) -> true | nil, err (full / closed) */
static int l_try_send(lua_State *L) {
  end *e = check_end(L, 1, TT_SENDER, "Sender:try_send");
  check_value(L, "Sender:try_send");
  lua_settop(L, 2);
  if (e->closed)
    return luaL_error(L, "Sender:try_send: this sender was closed");
  if (e->ch->rx_closed) return fail(L, "closed", "channel closed");
  if (!has_room(e->ch) || e->ch->sendq.head != NULL)
    return fail(L, "full", "channel full");
  return try_put(L, e->ch);
}

static int l_clone(lua_State *L) {
  end *e = check_end(L, 1, TT_SENDER, "Sender:clone");
  if (e->closed)
    return luaL_error(L, "Sender:clone: this sender was closed (clone an "
                         "open one)");
  lua_getiuservalue(L, 1, 1);
  push_end(L, e->ch, TT_SENDER, lua_gettop(L));
  e->ch->nsenders++;
  return 1;
}

static int l_close_sender(lua_State *L) {
  close_sender(check_end(L, 1, TT_SENDER, "Sender:close"));
  return 0;
}

static int l_is_closed(lua_State *L) {
  int sender = is_sender(L, 1);
  end *e = sender ? (end *)lua_touserdata(L, 1)
                  : check_end(L, 1, TT_RECEIVER, "Receiver:is_closed");
  lua_pushboolean(L, e->closed || e->ch->rx_closed ||
                         (!sender && e->ch->nsenders == 0 && e->ch->n == 0));
  return 1;
}

/* -------------------------------------------------------------- Receiver */

static int l_recv(lua_State *L);
static const tidal_restart recv_again = {l_recv};

static int recv_cancel(tidal_task *t) {
  tidal__wq_remove(&((chan *)t->wobj)->recvq, t);
  return 1;
}

static const tidal_waitop recv_op = {"Receiver:recv", recv_cancel};

/* Takes a buffered value (top), waking a sender now that there is room. */
static int take(lua_State *L, chan *ch) {
  int buf = push_buf(L, ch, 1);
  buf_take(L, ch, buf);
  wake_sender(ch);
  return 1;
}

static int ended(const chan *ch) {
  return ch->nsenders == 0 || ch->rx_closed;
}

static int recv_k(lua_State *L, int status, lua_KContext k) {
  tidal_task *t = (tidal_task *)k;
  chan *ch = ((end *)lua_touserdata(L, 1))->ch;
  (void)status;
  if (tidal__wake_lost(t) && ch->n > 0) wake_one(&ch->recvq);
  tidal__resumed(L, t);
  lua_settop(L, 1);
  if (ch->n > 0) return take(L, ch);
  if (ended(ch)) return 0;
  tidal__wq_push_front(&ch->recvq, t); /* the value was taken: keep our turn */
  return tidal__park(L, t, &recv_op, ch, recv_k);
}

/* rx:recv() -> value, or nil once closed and drained */
static int l_recv(lua_State *L) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  end *e = self_end(L, ctx, TT_RECEIVER, "Receiver:recv");
  tidal_task *t = ctx->cur;
  chan *ch = e->ch;
  if (t != NULL && t->co == L) {
    if (t->cancel | t->tmo) tidal__raise_cancel(L, t);
    if (--t->budget == 0) {
      if (lua_isyieldable(L)) {
        lua_settop(L, 1);
        return tidal__budget_yield(L, t, &recv_again);
      }
      t->budget = 1;
    }
  }
  if (ch->n > 0) return take(L, ch);
  if (ended(ch)) return 0;
  lua_settop(L, 1);
  t = tidal__wait_begin(L, "Receiver:recv"); /* raises outside a task */
  tidal__wq_push(&ch->recvq, t);
  return tidal__park(L, t, &recv_op, ch, recv_k);
}

/* select's fast path for rx:recv_op(): the receiver at base */
static int try_recv_op(lua_State *L, int base) {
  chan *ch = ((end *)lua_touserdata(L, base))->ch;
  if (ch->n > 0) {
    int buf = push_buf(L, ch, base);
    buf_take(L, ch, buf);
    lua_replace(L, buf - (ch->cap == 0)); /* the value, in the ring's slot */
    lua_settop(L, buf - (ch->cap == 0));
    wake_sender(ch);
    return 1;
  }
  return ended(ch) ? 0 : -1;
}

static int l_recv_op(lua_State *L) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  check_end(L, 1, TT_RECEIVER, "Receiver:recv_op");
  tidal__op_new(L, ctx, "Receiver:recv", l_recv, try_recv_op, 1, 1);
  return 1;
}

/* rx:try_recv() -> value | nil, err (empty / closed) */
static int l_try_recv(lua_State *L) {
  end *e = check_end(L, 1, TT_RECEIVER, "Receiver:try_recv");
  lua_settop(L, 1);
  if (e->ch->n > 0) return take(L, e->ch);
  if (ended(e->ch)) return fail(L, "closed", "channel closed");
  return fail(L, "empty", "channel empty");
}

static int l_close_receiver(lua_State *L) {
  close_receiver(check_end(L, 1, TT_RECEIVER, "Receiver:close"));
  return 0;
}

static int l_len(lua_State *L) {
  end *e = (end *)lua_touserdata(L, 1);
  lua_pushinteger(L, e->ch->n);
  return 1;
}

/* for v in rx do ... end: rx is called as the iterator */
static int l_call(lua_State *L) {
  return l_recv(L);
}

static int l_tostring(lua_State *L) {
  end *e = (end *)lua_touserdata(L, 1);
  int sender = is_sender(L, 1);
  if (e->ch == NULL) {
    lua_pushstring(L, sender ? "tidal.Sender (freed)" : "tidal.Receiver");
  } else if (e->ch->cap) {
    lua_pushfstring(L, "tidal.%s (capacity %d, %d buffered%s)",
                    sender ? "Sender" : "Receiver", e->ch->cap, e->ch->n,
                    e->closed ? ", closed" : "");
  } else {
    lua_pushfstring(L, "tidal.%s (unbounded, %d buffered%s)",
                    sender ? "Sender" : "Receiver", e->ch->n,
                    e->closed ? ", closed" : "");
  }
  return 1;
}

static const luaL_Reg sender_methods[] = {
    {"send", l_send},   {"try_send", l_try_send},   {"clone", l_clone},
    {"send_op", l_send_op},
    {"close", l_close_sender}, {"is_closed", l_is_closed}, {NULL, NULL}};

static const luaL_Reg receiver_methods[] = {
    {"recv", l_recv},   {"try_recv", l_try_recv}, {"close", l_close_receiver},
    {"recv_op", l_recv_op},
    {"is_closed", l_is_closed}, {NULL, NULL}};

static const luaL_Reg sender_meta[] = {{"__gc", l_end_gc},
                                       {"__close", l_end_close},
                                       {"__tostring", l_tostring},
                                       {"__len", l_len},
                                       {NULL, NULL}};

static const luaL_Reg receiver_meta[] = {{"__gc", l_end_gc},
                                         {"__close", l_end_close},
                                         {"__tostring", l_tostring},
                                         {"__len", l_len},
                                         {"__call", l_call},
                                         {NULL, NULL}};

static const luaL_Reg funcs[] = {{"channel", l_channel}, {NULL, NULL}};

/* stack: module, ctx */
void tidal__channel_open(lua_State *L) {
  tidal__newtype(L, TT_SENDER, SENDER_MT, sender_meta, sender_methods);
  tidal__newtype(L, TT_RECEIVER, RECEIVER_MT, receiver_meta,
                 receiver_methods);
  tidal__register(L, funcs);
}
