/*
** rhandle.c: JoinHandles that work across workers. A remote JoinHandle
** ("tidal.RemoteHandle", with the JoinHandle methods) points at a record
** (record.c); it crosses states by reference. A plain JoinHandle that is
** copied to another state gets a record too, on demand: the record
** subscribes to its task.
*/
#include "parallel.h"

#include <stdio.h>
#include <string.h>

#define RHANDLE_MT "tidal.RemoteHandle"

typedef struct rhandle {
  tidal_record *r;
} rhandle;

/* ------------------------------------------------------------- handles */

/* ------------------------------------------------------------- handles */

tidal_record **tidal__push_rhandle(lua_State *L, tidal_ctx *ctx,
                                   tidal_record *r) {
  rhandle *h = (rhandle *)lua_newuserdatauv(L, sizeof *h, 0);
  h->r = NULL;
  tidal__setmt(L, &ctx->aux, TT_RHANDLE);
  h->r = r; /* takes the caller's reference */
  return &h->r;
}

/* The record of the remote handle at 1; raises once it was finalized. */
static tidal_record *check_rh(lua_State *L, const char *fname) {
  tidal_record *r = ((rhandle *)tidal__checkud(L, 1, TT_RHANDLE, fname))->r;
  if (r == NULL) tidal__closed_error(L, fname, "JoinHandle");
  return r;
}

/* ------------------------------------------------------------- waiting */

typedef struct rnode {
  rwaiter n;
  tidal_record *r;
} rnode;

static int rnode_cancel(tidal_task *t) {
  rnode *n = (rnode *)t->wobj;
  tidal_record *r = n->r;
  int withdrawn = 0;
  uv_mutex_lock(&r->mu);
  if (!n->n.woken) {
    if (n->n.prev)
      n->n.prev->next = n->n.next;
    else
      r->waiters = n->n.next;
    if (n->n.next) n->n.next->prev = n->n.prev;
    withdrawn = 1;
  }
  uv_mutex_unlock(&r->mu);
  return withdrawn; /* else the wake is on its way */
}

static const tidal_waitop rawait_op = {"JoinHandle:await", rnode_cancel, NULL};
static const tidal_waitop rjoin_op = {"JoinHandle:join", rnode_cancel, NULL};

static int rwait_k(lua_State *L, lua_KContext k, int raise) {
  tidal_task *t = (tidal_task *)k;
  tidal__resumed(L, t);
  lua_settop(L, 1);
  tidal_record *r = ((rhandle *)lua_touserdata(L, 1))->r;
  if (r == NULL) /* its __gc was called while it waited */
    return tidal__closed_error(L, raise ? "JoinHandle:await"
                                        : "JoinHandle:join", "JoinHandle");
  return tidal__record_push_outcome(L, r, raise);
}

static int rawait_k(lua_State *L, int status, lua_KContext k) {
  (void)status;
  return rwait_k(L, k, 1);
}

static int rjoin_k(lua_State *L, int status, lua_KContext k) {
  (void)status;
  return rwait_k(L, k, 0);
}

static int l_rawait(lua_State *L);
static int l_rjoin(lua_State *L);
static const tidal_restart rawait_again = {l_rawait};
static const tidal_restart rjoin_again = {l_rjoin};

static int rwait(lua_State *L, int raise, const char *fname) {
  tidal_record *r = check_rh(L, fname);
  uv_mutex_lock(&r->mu);
  int done = r->done;
  uv_mutex_unlock(&r->mu);
  lua_settop(L, 1);
  if (done) {
    /* ready at once: still spends the budget, as any wait does */
    tidal_task *t = ((tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1)))->cur;
    if (t != NULL && t->co == L && lua_isyieldable(L))
      TIDAL_SPEND(L, t, raise ? &rawait_again : &rjoin_again);
    return tidal__record_push_outcome(L, r, raise);
  }
  tidal_task *t = tidal__wait_begin(L, fname);
  rnode *n = (rnode *)lua_newuserdatauv(L, sizeof *n, 0); /* kept at 2 */
  memset(n, 0, sizeof *n);
  n->n.t = t;
  n->r = r;
  uv_mutex_lock(&r->mu);
  if (r->done) {
    uv_mutex_unlock(&r->mu);
    lua_settop(L, 1);
    return tidal__record_push_outcome(L, r, raise);
  }
  n->n.next = r->waiters;
  if (r->waiters) r->waiters->prev = &n->n;
  r->waiters = &n->n;
  uv_mutex_unlock(&r->mu);
  return tidal__park_shared(L, t, raise ? &rawait_op : &rjoin_op, n,
                            raise ? rawait_k : rjoin_k);
}

static int l_rawait(lua_State *L) {
  return rwait(L, 1, "JoinHandle:await");
}

static int l_rjoin(lua_State *L) {
  return rwait(L, 0, "JoinHandle:join");
}

static int l_rabort(lua_State *L) {
  tidal__record_abort(check_rh(L, "JoinHandle:abort"), tidal__cur_worker(L));
  return 0;
}

static int l_ris_finished(lua_State *L) {
  tidal_record *r = check_rh(L, "JoinHandle:is_finished");
  uv_mutex_lock(&r->mu);
  lua_pushboolean(L, r->done);
  uv_mutex_unlock(&r->mu);
  return 1;
}

static int l_rid(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)check_rh(L, "JoinHandle:id")->id);
  return 1;
}

static int l_rname(lua_State *L) {
  tidal_record *r = check_rh(L, "JoinHandle:name");
  if (!r->name[0]) return 0;
  lua_pushstring(L, r->name);
  return 1;
}

static int l_rtostring(lua_State *L) {
  tidal_record *r = ((rhandle *)tidal__checkud(L, 1, TT_RHANDLE,
                                              "JoinHandle:__tostring"))->r;
  if (r == NULL) {
    lua_pushliteral(L, "tidal.JoinHandle: parallel task (finalized)");
    return 1;
  }
  uv_mutex_lock(&r->mu);
  int done = r->done, outcome = r->outcome;
  uv_mutex_unlock(&r->mu);
  lua_pushfstring(L, "tidal.JoinHandle: parallel task %I%s%s%s (%s)",
                  (lua_Integer)r->id, r->name[0] ? " (" : "", r->name,
                  r->name[0] ? ")" : "",
                  !done                      ? "running"
                  : outcome == TIDAL_R_OK          ? "done"
                  : outcome == TIDAL_R_FAILED      ? "failed"
                                             : "cancelled");
  return 1;
}

static int l_rgc(lua_State *L) {
  rhandle *h = (rhandle *)tidal__checkud(L, 1, TT_RHANDLE, "JoinHandle:__gc");
  if (h->r == NULL) return 0;
  tidal_record *r = h->r;
  h->r = NULL;
  uv_mutex_lock(&r->mu);
  int report = r->done && r->outcome == TIDAL_R_FAILED && !r->observed &&
               atomic_load(&r->refs) == 1;
  uv_mutex_unlock(&r->mu);
  if (report && tidal__record_push_outcome(L, r, 0) == 2) {
    tidal__push_errstring(L, -1);
    char id[32];
    snprintf(id, sizeof id, "%llu", (unsigned long long)r->id);
    lua_pushfstring(L,
                    "parallel task %s failed and its error was never "
                    "observed:\n%s",
                    id, lua_tostring(L, -1));
    tidal_ctx *ctx = tidal__ctx(L);
    tidal__report_text(L, ctx ? ctx->w : NULL, TIDAL_REPORT_ERROR, -1);
    lua_settop(L, 1);
  }
  tidal__record_unref(r);
  return 0;
}

/* ------------------------------------------------- sharing as a handle */

static void *rh_share(lua_State *L, int idx) {
  rhandle *h = (rhandle *)lua_touserdata(L, idx);
  if (h == NULL || h->r == NULL) return NULL;
  tidal__record_ref(h->r);
  return h->r;
}

static void rh_push(lua_State *L, void *obj) {
  tidal_ctx *ctx = tidal__ctx_need(L);
  tidal__record_ref((tidal_record *)obj);
  tidal__push_rhandle(L, ctx, (tidal_record *)obj);
}

static void rh_drop(void *obj) {
  tidal__record_unref((tidal_record *)obj);
}

static const tidal_xtype rhandle_xtype = {RHANDLE_MT, rh_share, rh_push,
                                          rh_drop};

/* A plain JoinHandle copied to another state: a record on demand, which
** the task publishes into when it finishes. */
static void *h_share(lua_State *L, int idx) {
  tidal_task *t = (tidal_task *)lua_touserdata(L, idx);
  tidal_record *r;
  if (t == NULL || (t->flags & TF_INTERNAL)) return NULL;
  if (t->state != TS_DONE) {
    if ((r = tidal__record_of(t)) == NULL) {
      if ((r = tidal__record_new()) == NULL) return NULL;
      tidal__record_target(r, t->w, t->id, 1);
      if (tidal__record_subscribe(r, t)) { /* the task's reference */
        tidal__record_unref(r);
        return NULL;
      }
    }
    tidal__record_ref(r);
    return r;
  }
  /* done: a finished record with its outcome copied now */
  if ((r = tidal__record_new()) == NULL) return NULL;
  r->id = t->id;
  tidal_buf buf = {NULL, 0, 0};
  int top = lua_gettop(L);
  int outcome = TIDAL_R_OK;
  if (t->flags & TF_CANCELLED) {
    outcome = TIDAL_R_CANCELLED;
  } else {
    int n = tidal__push_outcome(L, t, lua_absindex(L, idx), 0);
    if (!lua_toboolean(L, -n)) {
      outcome = TIDAL_R_FAILED;
      lua_pushnil(L);
      tidal__encode_outcome(L, 0, 2, NULL, &buf);
    } else {
      tidal__encode_outcome(L, 1, n - 1, NULL, &buf);
    }
  }
  lua_settop(L, top);
  r->out = buf;
  r->outcome = (uint8_t)outcome;
  r->done = 1;
  return r;
}

static const tidal_xtype handle_xtype = {TIDAL_HANDLE_MT, h_share, rh_push,
                                         rh_drop};

static const luaL_Reg methods[] = {{"await", l_rawait},
                                   {"join", l_rjoin},
                                   {"abort", l_rabort},
                                   {"is_finished", l_ris_finished},
                                   {"id", l_rid},
                                   {"name", l_rname},
                                   {NULL, NULL}};

static const luaL_Reg meta[] = {
    {"__gc", l_rgc}, {"__tostring", l_rtostring}, {NULL, NULL}};

/* stack: module, ctx */
void tidal__rhandle_open(lua_State *L) {
  tidal__newtype(L, TT_RHANDLE, RHANDLE_MT, "JoinHandle", meta, methods);
  tidal__xfer_register(&rhandle_xtype);
  tidal__xfer_register(&handle_xtype);
}

