/*
** channel.c: tidal.channel([capacity]) -> tx, rx. Multi-producer,
** single-consumer (any task may hold the receiver), bounded or unbounded.
**
** The channel is a C core shared by its ends (Sender and Receiver userdata,
** reference-counted). Buffered values live in a ring of slots in C:
** numbers, booleans and light userdata stay in the slot itself (no table
** is touched per message), any other value sits in a Lua table at the same
** slot (the ends' uservalue, one table for all), so within one Lua state a
** value is passed by reference. A capacity is a limit, not an allocation: the ring
** starts small and doubles in place as values arrive, up to the capacity
** (it does not shrink: it keeps the size of the largest backlog). Waits
** follow wake-then-take (kernel.h): a sender puts the value in the buffer
** and wakes a waiting receiver, which takes it when it runs; a bounded
** channel wakes a waiting sender when room appears. A task cancelled between
** its wake and its turn leaves the channel as it was and passes the wake on,
** so a cancelled recv loses no message and a cancelled send delivers nothing.
**
** Ends that are closed, collected, or leave a <close> scope close their side:
** the last Sender closing ends the stream (recv gives nil once drained);
** the Receiver closing refuses new sends (values already buffered can still
** be received).
**
** Shared mode: when an end is copied to another Lua state (another worker,
** the blocking pool), the channel becomes shared, for good: from then on
** every operation takes its mutex, values are copied (encoded by the sender,
** decoded by the receiver: transfer.c) into a ring of buffers, and waiters
** on other workers are woken through their worker's remote queue. The
** switch happens on the owning thread, before any other thread can see the
** channel, so reading `shared` needs no lock. An end in flight (copied but
** not yet rebuilt) counts as an open end of its side.
*/
#include "shared.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define SENDER_MT "tidal.Sender"
#define RECEIVER_MT "tidal.Receiver"

typedef struct chan {
  atomic_int refs; /* ends alive (and in flight) */
  int nsenders;    /* open Sender ends */
  int nreceivers;  /* open Receiver ends */
  int cap;       /* bounded capacity, 0: unbounded */
  int size;      /* slots in the ring (grows as needed, up to cap) */
  int head, n;   /* ring: values at slots head .. head+n-1 (mod size), 1-based */
  int reserved;  /* bounded: room promised to senders woken for it that have
                    not run yet (n + reserved <= cap), so that a later send
                    cannot take it first */
  int taking;    /* shared: values out of the ring while a receiver decodes
                    them; their room is kept, so that one that cannot be
                    rebuilt goes back (n + reserved + taking <= cap) */
  uint8_t rx_closed;
  tidal_wq recvq, sendq;
  tidal_shared sh; /* cross-worker mode: its mutex guards all of the above
                      but refs */
  tidal_buf *ring; /* shared: the values, encoded; slot i-1 for Lua slot i */
  struct cval *vals; /* local: the values, slot i-1 for Lua slot i */
} chan;

/* A value buffered in local mode: a scalar is kept here, anything else in
** the Lua ring at the same slot (CV_REF). */
enum { CV_REF, CV_INT, CV_FLT, CV_FALSE, CV_TRUE, CV_LUD };
typedef struct cval {
  union {
    lua_Integer i;
    lua_Number n;
    void *p;
  } u;
  int tag;
} cval;


typedef struct end {
  tidal_handle h; /* first; h.core: the channel (NULL once finalized) */
} end;

#define CH(e) ((chan *)(e)->h.core)

/* -------------------------------------------------------------- the core */

/* cur: the worker running on this thread, or NULL */
static void chan_unref(chan *ch, tidal_worker *cur) {
  if (atomic_fetch_sub(&ch->refs, 1) != 1) return;
  tidal__wq_orphan(&ch->recvq, cur); /* (see kernel.h) */
  tidal__wq_orphan(&ch->sendq, cur);
  if (ch->sh.on) {
    for (int i = 0; i < ch->n; i++) {
      tidal_buf *b = &ch->ring[(ch->head - 1 + i) % ch->size];
      tidal__xfer_discard(b->data, b->len);
      tidal__buf_free(b);
    }
    free(ch->ring);
  }
  tidal__sh_destroy(&ch->sh);
  free(ch->vals);
  free(ch);
}


/* Wake t: directly when it is ours, else through its worker. */
static void wake(chan *ch, tidal_task *t, tidal_worker *cur) {
  tidal__sh_wake(&ch->sh, t, cur);
}

/* room for a value that was not promised to a woken sender */
static int has_room(const chan *ch) {
  return ch->cap == 0 || ch->n + ch->reserved + ch->taking < ch->cap;
}

/* Wake the first waiting sender for the room that just appeared, keeping
** that room for it. */
static void wake_sender(chan *ch, tidal_worker *cur) {
  if (ch->sendq.head != NULL && has_room(ch)) {
    ch->reserved++;
    wake(ch, tidal__wq_pop(&ch->sendq), cur);
  }
}

static void wake_one(chan *ch, tidal_wq *q, tidal_worker *cur) {
  tidal_task *t = tidal__wq_pop(q);
  if (t != NULL) wake(ch, t, cur);
}

static void wake_all(chan *ch, tidal_wq *q, tidal_worker *cur) {
  tidal_task *t;
  while ((t = tidal__wq_pop(q)) != NULL) wake(ch, t, cur);
}

/* The ring's next size when it is full: double, up to the capacity. */
static int next_size(const chan *ch) {
  if (ch->size > INT_MAX / 2) return -1;
  int size = ch->size * 2;
  return ch->cap && size > ch->cap ? ch->cap : size;
}

/* The next slot after s (1-based) in a ring of size slots */
#define RING_NEXT(s, size) ((s) == (size) ? 1 : (s) + 1)

/* A full ring grows in place (the ends share the Lua table): the values
** from the head to the end of the old size move up to the end of the new
** size, and the Lua slots they leave are cleared (nothing buffered stays
** referenced once taken). The end at eidx gives the Lua ring. */
static void buf_grow(lua_State *L, chan *ch, int eidx) {
  int size = next_size(ch), buf = 0;
  if (size < 0) luaL_error(L, "Sender:send: too many values buffered");
  cval *v = (cval *)realloc(ch->vals, (size_t)size * sizeof *v);
  if (v == NULL) luaL_error(L, "Sender:send: not enough memory");
  ch->vals = v;
  if (ch->head > 1) { /* wrapped: slots head .. old size move up by d */
    int d = size - ch->size;
    for (int i = ch->size; i >= ch->head; i--) {
      v[i - 1 + d] = v[i - 1];
      if (v[i - 1].tag != CV_REF) continue;
      if (buf == 0) {
        luaL_checkstack(L, 3, "Sender:send");
        lua_getiuservalue(L, eidx, 1);
        buf = lua_gettop(L);
      }
      lua_rawgeti(L, buf, i);
      lua_rawseti(L, buf, i + d);
      lua_pushnil(L);
      lua_rawseti(L, buf, i);
    }
    if (buf != 0) lua_settop(L, buf - 1);
    ch->head += d;
  }
  ch->size = size;
}

/* Buffers the value at index val, of type vt; eidx: an end (its uservalue
** is the Lua ring). Local mode. */
static void buf_push(lua_State *L, chan *ch, int eidx, int val, int vt) {
  if (ch->n == ch->size) buf_grow(L, ch, eidx);
  int s = ch->head + ch->n; /* 1-based */
  if (s > ch->size) s -= ch->size;
  cval *c = &ch->vals[s - 1];
  switch (vt) {
  case LUA_TNUMBER:
    if (lua_isinteger(L, val)) {
      c->u.i = lua_tointeger(L, val);
      c->tag = CV_INT;
    } else {
      c->u.n = lua_tonumber(L, val);
      c->tag = CV_FLT;
    }
    break;
  case LUA_TBOOLEAN:
    c->tag = lua_toboolean(L, val) ? CV_TRUE : CV_FALSE;
    break;
  case LUA_TLIGHTUSERDATA:
    c->u.p = lua_touserdata(L, val);
    c->tag = CV_LUD;
    break;
  default:
    lua_getiuservalue(L, eidx, 1);
    lua_pushvalue(L, val);
    lua_rawseti(L, -2, s);
    lua_pop(L, 1);
    c->tag = CV_REF;
  }
  ch->n++;
}

/* Pushes the value at slot s (1-based), clearing its Lua slot */
static void push_slot(lua_State *L, chan *ch, int eidx, int s, int clear) {
  const cval *c = &ch->vals[s - 1];
  switch (c->tag) {
  case CV_INT: lua_pushinteger(L, c->u.i); break;
  case CV_FLT: lua_pushnumber(L, c->u.n); break;
  case CV_FALSE: lua_pushboolean(L, 0); break;
  case CV_TRUE: lua_pushboolean(L, 1); break;
  case CV_LUD: lua_pushlightuserdata(L, c->u.p); break;
  default:
    lua_getiuservalue(L, eidx, 1);
    lua_rawgeti(L, -1, s);
    if (clear) {
      lua_pushnil(L);
      lua_rawseti(L, -3, s);
    }
    lua_remove(L, -2);
  }
}

/* pushes the oldest value (local mode) */
static void buf_take(lua_State *L, chan *ch, int eidx) {
  push_slot(L, ch, eidx, ch->head, 1);
  ch->head = RING_NEXT(ch->head, ch->size);
  ch->n--;
}

/* ------------------------------------------------------------- shared */

/* Shared ring: encoded values at slots head .. head+n-1 (1-based, like the
** Lua ring). Under the lock. Grows when unbounded. */
static int ring_push(chan *ch, tidal_buf *b) {
  if (ch->n + ch->taking >= ch->size) { /* (room for those to come back) */
    int size = next_size(ch);
    if (size < 0) return -1;
    tidal_buf *r = (tidal_buf *)calloc((size_t)size, sizeof *r);
    if (r == NULL) return -1;
    for (int i = 0; i < ch->n; i++)
      r[i] = ch->ring[(ch->head - 1 + i) % ch->size];
    free(ch->ring);
    ch->ring = r;
    ch->head = 1;
    ch->size = size;
  }
  ch->ring[(ch->head - 1 + ch->n) % ch->size] = *b;
  ch->n++;
  return 0;
}

static tidal_buf ring_take(chan *ch) {
  tidal_buf b = ch->ring[ch->head - 1];
  memset(&ch->ring[ch->head - 1], 0, sizeof b);
  ch->head = ch->head % ch->size + 1;
  ch->n--;
  return b;
}

/* Puts a taken value back at the head (its room was kept: taking). */
static void ring_unshift(chan *ch, tidal_buf *b) {
  ch->head = (ch->head + ch->size - 2) % ch->size + 1;
  ch->ring[ch->head - 1] = *b;
  ch->n++;
}

static int ended(const chan *ch);

/* Takes the value at the head and decodes it onto L (locked on entry;
** unlocks). Decoding runs outside the lock (it may run Lua code: require,
** finalizers that use this channel), with the value out of the ring and
** its room kept. If it cannot be rebuilt here (a module this state lacks,
** memory), it goes back at the head and recv raises: the message is not
** lost; it stays for the next try here or for a receiver on another
** worker. */
static int shared_take(lua_State *L, chan *ch, tidal_worker *cur,
                       const char *fname) {
  tidal_buf b = ring_take(ch);
  ch->taking++;
  uv_mutex_unlock(&ch->sh.mu);
  int n = tidal__xfer_decode(L, b.data, b.len);
  uv_mutex_lock(&ch->sh.mu);
  ch->taking--;
  if (n == 1) {
    wake_sender(ch, cur);
    /* receivers that waited for it to come back see the end */
    if (ch->n == 0 && ch->taking == 0 && ended(ch))
      wake_all(ch, &ch->recvq, cur);
    uv_mutex_unlock(&ch->sh.mu);
    tidal__xfer_discard(b.data, b.len);
    tidal__buf_free(&b);
    return 1;
  }
  ring_unshift(ch, &b);
  wake_one(ch, &ch->recvq, cur); /* it is there for others again */
  uv_mutex_unlock(&ch->sh.mu);
  if (n > 0) lua_pop(L, n); /* (a buffer of a channel holds one value) */
  if (n >= 0) lua_pushliteral(L, "not one value");
  return luaL_error(L,
                    "%s: cannot rebuild the message in this Lua state: %s "
                    "(it stays in the channel)",
                    fname, lua_tostring(L, -1));
}

/* The end at idx (of the owning state) is being copied: switch to shared
** mode, encoding what is buffered. Must not raise. */
static int make_shared(lua_State *L, chan *ch, int idx) {
  tidal_buf *r;
  int i, buf;
  if (ch->sh.on) return 1;
  idx = lua_absindex(L, idx);
  r = (tidal_buf *)calloc((size_t)ch->size, sizeof *r);
  if (r == NULL) return 0;
  if (!lua_checkstack(L, 6)) {
    free(r);
    return 0;
  }
  lua_getiuservalue(L, idx, 1);
  buf = lua_gettop(L);
  for (i = 0; i < ch->n; i++) {
    int slot = (ch->head - 1 + i) % ch->size;
    push_slot(L, ch, idx, slot + 1, 0);
    int fail = tidal__xfer_encode(L, lua_gettop(L), 1, "message", &r[slot]);
    lua_pop(L, fail ? 2 : 1);
    if (fail) break;
  }
  tidal_wq *qs[2] = {&ch->recvq, &ch->sendq};
  if (i < ch->n || tidal__sh_enable(&ch->sh, qs, 2)) {
    while (i-- > 0) {
      int slot = (ch->head - 1 + i) % ch->size;
      tidal__xfer_discard(r[slot].data, r[slot].len);
      tidal__buf_free(&r[slot]);
    }
    free(r);
    lua_settop(L, buf - 1);
    return 0;
  }
  for (i = 1; i <= ch->size; i++) { /* the Lua ring is not used any more */
    lua_pushnil(L);
    lua_rawseti(L, buf, i);
  }
  lua_settop(L, buf - 1);
  free(ch->vals); /* (not used any more either) */
  ch->vals = NULL;
  ch->ring = r; /* (shared now: tidal__sh_enable) */
  return 1;
}

/* ------------------------------------------------------------------ ends */

#define check_end(L, idx, tt, fname) ((end *)tidal__checkud(L, idx, tt, fname))

/* self of a hot method: checked once per object (see TIDAL_HOT), inline
** in send and recv: a hit costs one lua_touserdata and a compare */
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
static inline end *self_end(lua_State *L, tidal_ctx *ctx, int tt,
                            const char *fname) {
  end *e = (end *)lua_touserdata(L, 1);
  if (e != NULL && TIDAL_HOT(&ctx->aux, tt, e) == e) return e;
  e = (end *)tidal__checkud(L, 1, tt, fname);
  if (CH(e) != NULL) TIDAL_HOT(&ctx->aux, tt, e) = e;
  return e;
}

static const tidal_htype tx_type, rx_type;

/* Pushes a new end, closed (harmless until it gets its channel); buf:
** its ring. */
static end *new_end(lua_State *L, tidal_ctx *ctx, int tt, int buf) {
  end *e = (end *)tidal__handle_new(L, &ctx->aux,
                                    tt == TT_SENDER ? &tx_type : &rx_type,
                                    sizeof *e, 1);
  lua_pushvalue(L, buf);
  lua_setiuservalue(L, -2, 1);
  return e;
}

/* Pushes a new end over ch (taking a reference); buf: its ring. */
static void push_end(lua_State *L, tidal_ctx *ctx, chan *ch, int tt,
                     int buf) {
  end *e = new_end(L, ctx, tt, buf);
  tidal__handle_attach(&e->h, ch);
  atomic_fetch_add(&ch->refs, 1);
}


static void sender_gone(chan *ch, tidal_worker *cur) {
  if (--ch->nsenders == 0) wake_all(ch, &ch->recvq, cur); /* see the end */
}

/* A sender end is closed (once: the handle helper marks it). */
static void close_sender(lua_State *L, tidal_handle *h, int explicit) {
  chan *ch = (chan *)h->core;
  tidal_worker *cur = tidal__cur_worker(L);
  (void)explicit;
  tidal__sh_lock(&ch->sh);
  sender_gone(ch, cur);
  tidal__sh_unlock(&ch->sh);
}

/* rx:close(): no more sends, for every receiver */
static void shut(chan *ch, tidal_worker *cur) {
  ch->rx_closed = 1;
  ch->reserved = 0;              /* nothing more will be sent */
  wake_all(ch, &ch->sendq, cur); /* they see the channel closed */
  wake_all(ch, &ch->recvq, cur);
}

static void receiver_gone(chan *ch, tidal_worker *cur) {
  if (--ch->nreceivers == 0 && !ch->rx_closed) shut(ch, cur);
}

/* A receiver end is closed: explicitly (close(), <close>) it closes the
** channel for every receiver; collected, it only counts as gone. */
static void close_receiver(lua_State *L, tidal_handle *h, int explicit) {
  chan *ch = (chan *)h->core;
  tidal_worker *cur = tidal__cur_worker(L);
  tidal__sh_lock(&ch->sh);
  receiver_gone(ch, cur);
  if (explicit && !ch->rx_closed) shut(ch, cur);
  tidal__sh_unlock(&ch->sh);
}

static void unref(lua_State *L, void *core) {
  chan_unref((chan *)core, tidal__cur_worker(L));
}

/* A finalized end is a closed one with no channel (core NULL): every
** method checks. __close closes the end's side but keeps the channel, so
** the end stays usable (as a closed end) through other references until it
** is collected. */
static const tidal_htype tx_type = {TT_SENDER, "sender", close_sender, unref};
static const tidal_htype rx_type = {TT_RECEIVER, "receiver", close_receiver,
                                    unref};

static int l_sender_gc(lua_State *L) {
  return tidal__handle_gc(L, &tx_type, "Sender:__gc");
}

static int l_receiver_gc(lua_State *L) {
  return tidal__handle_gc(L, &rx_type, "Receiver:__gc");
}

static int l_sender_close(lua_State *L) {
  return tidal__handle_close(L, &tx_type, "Sender:__close");
}

static int l_receiver_close(lua_State *L) {
  return tidal__handle_close(L, &rx_type, "Receiver:__close");
}

/* tidal.channel([capacity]) -> tx, rx */
static int l_channel(lua_State *L) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  int cap = 0;
  if (!lua_isnoneornil(L, 1)) {
    if (!lua_isinteger(L, 1) || lua_tointeger(L, 1) < 1 ||
        lua_tointeger(L, 1) > TIDAL_CHANNEL_MAX)
      return luaL_error(L,
                        "tidal.channel: capacity must be an integer >= 1 "
                        "and <= %d (or nil for an unbounded channel), got %s",
                        TIDAL_CHANNEL_MAX, tidal__describe(L, 1));
    cap = (int)lua_tointeger(L, 1);
  }
  lua_settop(L, 0);
  int size = cap && cap < 16 ? cap : 16;
  lua_createtable(L, size, 0); /* the ring, uservalue of both ends */
  /* both ends first, closed and harmless, so that nothing can raise once
  ** the core is allocated */
  end *tx = new_end(L, ctx, TT_SENDER, 1);
  end *rx = new_end(L, ctx, TT_RECEIVER, 1);
  chan *ch = (chan *)calloc(1, sizeof *ch);
  cval *vals = (cval *)calloc((size_t)size, sizeof *vals);
  if (ch == NULL || vals == NULL) {
    free(ch);
    free(vals);
    return luaL_error(L, "tidal.channel: not enough memory");
  }
  ch->vals = vals;
  ch->cap = cap;
  ch->size = size;
  ch->head = 1;
  ch->nsenders = 1;
  ch->nreceivers = 1;
  atomic_init(&ch->refs, 2);
  tidal__handle_attach(&tx->h, ch);
  tidal__handle_attach(&rx->h, ch);
  return 2;
}

/* lua_settop(L, n) where the stack most often has n values already (a
** continuation, a wait): lua_gettop is the cheaper of the two. */
static inline void keep_top(lua_State *L, int n) {
  if (lua_gettop(L) != n) lua_settop(L, n);
}

/* ---------------------------------------------------------------- errors */

static int fail(lua_State *L, const char *kind, const char *msg) {
  lua_pushnil(L);
  tidal__error_push(L, kind, "%s", msg);
  return 2;
}

/* -------------------------------------------------------------- waiting */

static int send_cancel(tidal_task *t) {
  chan *ch = (chan *)t->wobj;
  /* 0: a wake is on its way */
  return tidal__sh_withdraw(&ch->sh, &ch->sendq, t, NULL, NULL);
}

static int recv_cancel(tidal_task *t) {
  chan *ch = (chan *)t->wobj;
  return tidal__sh_withdraw(&ch->sh, &ch->recvq, t, NULL, NULL);
}

static const tidal_waitop send_op = {"Sender:send", send_cancel, NULL};
static const tidal_waitop recv_op = {"Receiver:recv", recv_cancel, NULL};

/* Parks t on q (the lock held when shared; released here). */
static int park_on(lua_State *L, tidal_task *t, chan *ch, tidal_wq *q,
                   int front, const tidal_waitop *op, lua_KFunction k) {
  return tidal__sh_park(L, &ch->sh, t, q, front, op, ch, k);
}

/* --------------------------------------------------------------- Sender */

static int l_send(lua_State *L);
static const tidal_restart send_again = {l_send};
static int closed_sender(lua_State *L, const char *fname);

/* value at 2, of type vt; local mode */
static int try_put(lua_State *L, chan *ch, tidal_worker *cur, int vt) {
  buf_push(L, ch, 1, 2, vt);
  if (ch->recvq.head) wake_one(ch, &ch->recvq, cur);
  lua_pushboolean(L, 1);
  return 1;
}

/* Shared mode, value at v, encoded in b (taken): stores it if there is room
** (returns 1 result), else returns -1 with the lock still held. */
static int shared_put(lua_State *L, chan *ch, tidal_worker *cur,
                      tidal_buf *b, int fair) {
  uv_mutex_lock(&ch->sh.mu);
  if (ch->rx_closed) {
    uv_mutex_unlock(&ch->sh.mu);
    tidal__xfer_discard(b->data, b->len);
    tidal__buf_free(b);
    return fail(L, "closed", "channel closed");
  }
  if (has_room(ch) && (!fair || ch->sendq.head == NULL)) {
    if (ring_push(ch, b)) {
      uv_mutex_unlock(&ch->sh.mu);
      tidal__xfer_discard(b->data, b->len);
      tidal__buf_free(b);
      return luaL_error(L, "Sender:send: not enough memory");
    }
    if (ch->recvq.head) wake_one(ch, &ch->recvq, cur);
    uv_mutex_unlock(&ch->sh.mu);
    lua_pushboolean(L, 1);
    return 1;
  }
  tidal__xfer_discard(b->data, b->len); /* encoded again when it retries */
  tidal__buf_free(b);
  return -1;
}

static void encode_value(lua_State *L, int v, tidal_buf *b,
                         const char *fname) {
  if (tidal__xfer_encode(L, v, 1, "message", b))
    luaL_error(L,
               "%s: %s (this channel crosses workers: its values are "
               "copied)",
               fname, lua_tostring(L, -1));
}

static int send_k(lua_State *L, int status, lua_KContext k) {
  tidal_task *t = (tidal_task *)k;
  chan *ch = CH((end *)lua_touserdata(L, 1));
  tidal_worker *cur = t->w;
  (void)status;
  if (ch == NULL) { /* its __gc was called while it waited */
    tidal__resumed(L, t);
    return closed_sender(L, "Sender:send");
  }
  tidal__sh_lock(&ch->sh);
  /* woken for room (not by its cancellation, nor by the receiver closing):
  ** the room kept for it is its own now */
  if (!(t->flags & TF_WAKECANCEL) && !ch->rx_closed && ch->reserved > 0)
    ch->reserved--;
  if (tidal__wake_lost(t)) wake_sender(ch, cur); /* pass the room on */
  tidal__sh_unlock(&ch->sh);
  tidal__resumed(L, t);
  keep_top(L, 2);
  if (ch->sh.on) {
    tidal_buf b = {NULL, 0, 0};
    encode_value(L, 2, &b, "Sender:send");
    int n = shared_put(L, ch, cur, &b, 0);
    if (n >= 0) return n;
    return park_on(L, t, ch, &ch->sendq, 1, &send_op, send_k);
  }
  if (ch->rx_closed) return fail(L, "closed", "channel closed");
  if (has_room(ch)) return try_put(L, ch, cur, lua_type(L, 2));
  /* the room was taken: keep our turn */
  return park_on(L, t, ch, &ch->sendq, 1, &send_op, send_k);
}

static int closed_sender(lua_State *L, const char *fname) {
  return luaL_error(L, "%s: attempt to use a closed sender (use an open "
                       "clone)", fname);
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
  chan *ch = CH(e);
  int vt = lua_type(L, 2);
  if (vt <= LUA_TNIL) check_value(L, "Sender:send");
  if (e->h.closed) return closed_sender(L, "Sender:send");
  if (t != NULL && t->co == L) {
    if (--t->budget == 0) {
      if (lua_isyieldable(L)) return tidal__budget_yield(L, t, &send_again);
      t->budget = 1;
    }
  }
  if (ch->sh.on) {
    tidal_buf b = {NULL, 0, 0};
    lua_settop(L, 2);
    encode_value(L, 2, &b, "Sender:send");
    if (t != NULL && t->co != L) t = NULL;
    int n = shared_put(L, ch, ctx->w, &b, 1);
    if (n >= 0) return n;
    if (t == NULL || !lua_isyieldable(L)) {
      uv_mutex_unlock(&ch->sh.mu);
      t = tidal__wait_begin(L, "Sender:send"); /* raises */
    }
    return park_on(L, t, ch, &ch->sendq, 0, &send_op, send_k);
  }
  if (ch->rx_closed) return fail(L, "closed", "channel closed");
  if (has_room(ch) && ch->sendq.head == NULL)
    return try_put(L, ch, ctx->w, vt);
  lua_settop(L, 2);
  t = tidal__wait_ok(L, t, "Sender:send"); /* raises outside a task */
  return park_on(L, t, ch, &ch->sendq, 0, &send_op, send_k);
}

/* select's fast path for tx:send_op(v): the sender at base, v above */
static int try_send_op(lua_State *L, int base) {
  end *e = (end *)lua_touserdata(L, base);
  chan *ch = CH(e);
  if (e->h.closed) return -1; /* run() raises the misuse */
  if (ch->sh.on) {
    tidal_buf b = {NULL, 0, 0};
    if (tidal__xfer_encode(L, base + 1, 1, "message", &b)) {
      lua_pop(L, 1);
      return -1; /* run() raises with the reason */
    }
    int n = shared_put(L, ch, tidal__cur_worker(L), &b, 1);
    if (n < 0) uv_mutex_unlock(&ch->sh.mu);
    return n;
  }
  if (ch->rx_closed) return fail(L, "closed", "channel closed");
  if (!has_room(ch) || ch->sendq.head != NULL) return -1;
  buf_push(L, ch, base, base + 1, lua_type(L, base + 1));
  if (ch->recvq.head) wake_one(ch, &ch->recvq, NULL); /* (local: direct) */
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
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  end *e = check_end(L, 1, TT_SENDER, "Sender:try_send");
  chan *ch = CH(e);
  check_value(L, "Sender:try_send");
  lua_settop(L, 2);
  if (e->h.closed) return closed_sender(L, "Sender:try_send");
  if (ch->sh.on) {
    tidal_buf b = {NULL, 0, 0};
    encode_value(L, 2, &b, "Sender:try_send");
    int n = shared_put(L, ch, ctx->w, &b, 1);
    if (n >= 0) return n;
    uv_mutex_unlock(&ch->sh.mu);
    return fail(L, "full", "channel full");
  }
  if (ch->rx_closed) return fail(L, "closed", "channel closed");
  if (!has_room(ch) || ch->sendq.head != NULL)
    return fail(L, "full", "channel full");
  return try_put(L, ch, ctx->w, lua_type(L, 2));
}

static int l_clone(lua_State *L) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  end *e = check_end(L, 1, TT_SENDER, "Sender:clone");
  if (e->h.closed) return closed_sender(L, "Sender:clone");
  lua_getiuservalue(L, 1, 1);
  push_end(L, ctx, CH(e), TT_SENDER, lua_gettop(L));
  tidal__sh_lock(&CH(e)->sh);
  CH(e)->nsenders++;
  tidal__sh_unlock(&CH(e)->sh);
  return 1;
}

static int l_close_sender(lua_State *L) {
  return tidal__handle_close(L, &tx_type, "Sender:close");
}

static int ended(const chan *ch) {
  return ch->nsenders == 0 || ch->rx_closed;
}

static int is_closed(lua_State *L, end *e, int sender) {
  chan *ch = CH(e);
  int closed = 1;
  if (ch != NULL) {
    tidal__sh_lock(&ch->sh);
    closed = e->h.closed || ch->rx_closed ||
             (!sender && ch->nsenders == 0 && ch->n == 0 && ch->taking == 0);
    tidal__sh_unlock(&ch->sh);
  }
  lua_pushboolean(L, closed);
  return 1;
}

static int l_sender_is_closed(lua_State *L) {
  return is_closed(L, check_end(L, 1, TT_SENDER, "Sender:is_closed"), 1);
}

static int l_receiver_is_closed(lua_State *L) {
  return is_closed(L, check_end(L, 1, TT_RECEIVER, "Receiver:is_closed"), 0);
}

/* -------------------------------------------------------------- Receiver */

static int l_recv(lua_State *L);
static const tidal_restart recv_again = {l_recv};

/* Takes a buffered value (top), waking a sender now that there is room.
** Local mode, or shared with the lock held (released here). */
static int take(lua_State *L, chan *ch, tidal_worker *cur, const char *fname) {
  if (ch->sh.on) return shared_take(L, ch, cur, fname);
  buf_take(L, ch, 1);
  wake_sender(ch, cur);
  return 1;
}

static int recv_k(lua_State *L, int status, lua_KContext k) {
  tidal_task *t = (tidal_task *)k;
  chan *ch = CH((end *)lua_touserdata(L, 1));
  (void)status;
  if (ch == NULL) { /* its __gc was called while it waited: closed */
    tidal__resumed(L, t);
    return 0;
  }
  tidal__sh_lock(&ch->sh);
  if (tidal__wake_lost(t) && ch->n > 0) wake_one(ch, &ch->recvq, t->w);
  tidal__sh_unlock(&ch->sh);
  tidal__resumed(L, t);
  keep_top(L, 1);
  tidal__sh_lock(&ch->sh);
  if (ch->n > 0) return take(L, ch, t->w, "Receiver:recv");
  if (ended(ch) && ch->taking == 0) {
    tidal__sh_unlock(&ch->sh);
    return 0;
  }
  /* the value was taken: keep our turn */
  return park_on(L, t, ch, &ch->recvq, 1, &recv_op, recv_k);
}

/* rx:recv() -> value, or nil once closed and drained */
static int l_recv(lua_State *L) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  end *e = self_end(L, ctx, TT_RECEIVER, "Receiver:recv");
  tidal_task *t = ctx->cur;
  chan *ch = CH(e);
  if (ch == NULL) return 0; /* finalized: closed */
  if (t != NULL && t->co == L) {
    if (--t->budget == 0) {
      if (lua_isyieldable(L)) {
        lua_settop(L, 1);
        return tidal__budget_yield(L, t, &recv_again);
      }
      t->budget = 1;
    }
  }
  if (!ch->sh.on) {
    if (ch->n > 0) return take(L, ch, ctx->w, "Receiver:recv");
    if (ended(ch)) return 0;
    keep_top(L, 1);
    t = tidal__wait_ok(L, t, "Receiver:recv"); /* raises outside a task */
    return park_on(L, t, ch, &ch->recvq, 0, &recv_op, recv_k);
  }
  lua_settop(L, 1);
  uv_mutex_lock(&ch->sh.mu);
  if (ch->n > 0) return take(L, ch, ctx->w, "Receiver:recv");
  if (ended(ch) && ch->taking == 0) { /* (one taken may come back) */
    uv_mutex_unlock(&ch->sh.mu);
    return 0;
  }
  if (t == NULL || t->co != L || !lua_isyieldable(L)) {
    uv_mutex_unlock(&ch->sh.mu);
    tidal__wait_begin(L, "Receiver:recv"); /* raises */
  }
  return park_on(L, t, ch, &ch->recvq, 0, &recv_op, recv_k);
}

/* select's fast path for rx:recv_op(): the receiver at base */
static int try_recv_op(lua_State *L, int base) {
  chan *ch = CH((end *)lua_touserdata(L, base));
  if (ch == NULL) return 0; /* finalized: closed */
  if (ch->sh.on) {
    uv_mutex_lock(&ch->sh.mu);
    if (ch->n > 0)
      return shared_take(L, ch, tidal__cur_worker(L), "Receiver:recv");
    int e = ended(ch) && ch->taking == 0;
    uv_mutex_unlock(&ch->sh.mu);
    return e ? 0 : -1;
  }
  if (ch->n > 0) {
    buf_take(L, ch, base); /* (at base + 1) */
    wake_sender(ch, NULL); /* (local: woken directly, no worker needed) */
    return 1;
  }
  return ended(ch) ? 0 : -1;
}

/* try_recv_op without the receiver on the stack, for a number, a boolean
** or a light userdata at the head (-2: let try_recv_op see) */
static int try_recv_fast(lua_State *L, void *target) {
  chan *ch = CH((end *)target);
  if (ch == NULL || ch->sh.on) return -2;
  if (ch->n > 0) {
    if (ch->vals[ch->head - 1].tag == CV_REF) return -2;
    buf_take(L, ch, 0); /* (no Lua ring needed) */
    wake_sender(ch, NULL); /* (local: woken directly, no worker needed) */
    return 1;
  }
  return ended(ch) ? -2 : -1;
}

static int l_recv_op(lua_State *L) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  check_end(L, 1, TT_RECEIVER, "Receiver:recv_op");
  tidal__op_new(L, ctx, "Receiver:recv", l_recv, try_recv_op, 1, 1);
  tidal__op_fast(L, try_recv_fast);
  return 1;
}

/* rx:try_recv() -> value | nil, err (empty / closed) */
static int l_try_recv(lua_State *L) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  end *e = check_end(L, 1, TT_RECEIVER, "Receiver:try_recv");
  chan *ch = CH(e);
  lua_settop(L, 1);
  if (ch == NULL) return fail(L, "closed", "channel closed");
  tidal__sh_lock(&ch->sh);
  if (ch->n > 0) return take(L, ch, ctx->w, "Receiver:try_recv");
  int end_ = ended(ch) && ch->taking == 0;
  tidal__sh_unlock(&ch->sh);
  if (end_) return fail(L, "closed", "channel closed");
  return fail(L, "empty", "channel empty");
}

static int l_close_receiver(lua_State *L) {
  return tidal__handle_close(L, &rx_type, "Receiver:close");
}

/* #tx, #rx: values buffered (0 once finalized) */
static int len(lua_State *L, end *e) {
  int n = 0;
  if (CH(e) != NULL) {
    tidal__sh_lock(&CH(e)->sh);
    n = CH(e)->n;
    tidal__sh_unlock(&CH(e)->sh);
  }
  lua_pushinteger(L, n);
  return 1;
}

static int l_sender_len(lua_State *L) {
  return len(L, check_end(L, 1, TT_SENDER, "Sender:__len"));
}

static int l_receiver_len(lua_State *L) {
  return len(L, check_end(L, 1, TT_RECEIVER, "Receiver:__len"));
}

/* for v in rx do ... end: rx is called as the iterator */
static int l_call(lua_State *L) {
  return l_recv(L);
}

static int tostring(lua_State *L, end *e, int sender) {
  if (CH(e) == NULL) {
    lua_pushstring(L, sender ? "tidal.Sender (closed)"
                             : "tidal.Receiver (closed)");
  } else {
    tidal__sh_lock(&CH(e)->sh);
    int n = CH(e)->n;
    tidal__sh_unlock(&CH(e)->sh);
    if (CH(e)->cap)
      lua_pushfstring(L, "tidal.%s (capacity %d, %d buffered%s%s)",
                      sender ? "Sender" : "Receiver", CH(e)->cap, n,
                      CH(e)->sh.on ? ", shared" : "",
                      e->h.closed ? ", closed" : "");
    else
      lua_pushfstring(L, "tidal.%s (unbounded, %d buffered%s%s)",
                      sender ? "Sender" : "Receiver", n,
                      CH(e)->sh.on ? ", shared" : "",
                      e->h.closed ? ", closed" : "");
  }
  return 1;
}

static int l_sender_tostring(lua_State *L) {
  return tostring(L, check_end(L, 1, TT_SENDER, "Sender:__tostring"), 1);
}

static int l_receiver_tostring(lua_State *L) {
  return tostring(L, check_end(L, 1, TT_RECEIVER, "Receiver:__tostring"), 0);
}

/* --------------------------------------------------- copying the ends */

static void *share_end(lua_State *L, int idx, int sender) {
  end *e = (end *)lua_touserdata(L, idx);
  chan *ch;
  if (e == NULL || (ch = CH(e)) == NULL || e->h.closed) return NULL;
  if (!make_shared(L, ch, idx)) return NULL;
  uv_mutex_lock(&ch->sh.mu);
  if (sender)
    ch->nsenders++; /* the end in flight counts as open */
  else
    ch->nreceivers++;
  uv_mutex_unlock(&ch->sh.mu);
  atomic_fetch_add(&ch->refs, 1);
  return ch;
}

static void *share_sender(lua_State *L, int idx) {
  return share_end(L, idx, 1);
}

static void *share_receiver(lua_State *L, int idx) {
  return share_end(L, idx, 0);
}

static void push_copy(lua_State *L, void *obj, int tt) {
  chan *ch = (chan *)obj;
  lua_newtable(L); /* an unused ring: the channel is shared */
  push_end(L, tidal__ctx_need(L), ch, tt, lua_gettop(L));
  lua_remove(L, -2);
  uv_mutex_lock(&ch->sh.mu);
  if (tt == TT_SENDER)
    ch->nsenders++;
  else
    ch->nreceivers++;
  uv_mutex_unlock(&ch->sh.mu);
}

static void push_sender(lua_State *L, void *obj) {
  push_copy(L, obj, TT_SENDER);
}

static void push_receiver(lua_State *L, void *obj) {
  push_copy(L, obj, TT_RECEIVER);
}

/* A buffer with an end in flight is discarded: that end closes. */
static void drop_sender(void *obj) {
  chan *ch = (chan *)obj;
  uv_mutex_lock(&ch->sh.mu);
  sender_gone(ch, NULL);
  uv_mutex_unlock(&ch->sh.mu);
  chan_unref(ch, NULL);
}

static void drop_receiver(void *obj) {
  chan *ch = (chan *)obj;
  uv_mutex_lock(&ch->sh.mu);
  receiver_gone(ch, NULL);
  uv_mutex_unlock(&ch->sh.mu);
  chan_unref(ch, NULL);
}

static const tidal_xtype sender_xtype = {SENDER_MT, share_sender, push_sender,
                                         drop_sender};
static const tidal_xtype receiver_xtype = {RECEIVER_MT, share_receiver,
                                           push_receiver, drop_receiver};

static const luaL_Reg sender_methods[] = {
    {"send", l_send},   {"try_send", l_try_send},   {"clone", l_clone},
    {"send_op", l_send_op},
    {"close", l_close_sender}, {"is_closed", l_sender_is_closed},
    {NULL, NULL}};

static const luaL_Reg receiver_methods[] = {
    {"recv", l_recv},   {"try_recv", l_try_recv}, {"close", l_close_receiver},
    {"recv_op", l_recv_op},
    {"is_closed", l_receiver_is_closed}, {NULL, NULL}};

static const luaL_Reg sender_meta[] = {{"__gc", l_sender_gc},
                                       {"__close", l_sender_close},
                                       {"__tostring", l_sender_tostring},
                                       {"__len", l_sender_len},
                                       {NULL, NULL}};

static const luaL_Reg receiver_meta[] = {{"__gc", l_receiver_gc},
                                         {"__close", l_receiver_close},
                                         {"__tostring", l_receiver_tostring},
                                         {"__len", l_receiver_len},
                                         {"__call", l_call},
                                         {NULL, NULL}};

static const luaL_Reg funcs[] = {{"channel", l_channel}, {NULL, NULL}};

/* stack: module, ctx */
void tidal__channel_open(lua_State *L) {
  tidal__newtype(L, TT_SENDER, SENDER_MT, "Sender", sender_meta,
                 sender_methods);
  tidal__newtype(L, TT_RECEIVER, RECEIVER_MT, "Receiver", receiver_meta,
                 receiver_methods);
  tidal__xfer_register(&sender_xtype);
  tidal__xfer_register(&receiver_xtype);
  tidal__register(L, funcs);
}
