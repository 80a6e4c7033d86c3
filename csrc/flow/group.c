/*
** group.c: tasks started and awaited together -- tidal.select,
** tidal.join_all and tidal.group.
**
** A group knows its live members (linked through their ext) and keeps the
** members that finished but were not collected yet in a FIFO. A task waiting
** on the group is woken each time a member finishes. Members are ordinary
** tasks with ordinary JoinHandles, kept reachable by whoever owns the group
** (the waiting task's stack for select and join_all, the group userdata's
** uservalue for tidal.group), so the task pointers in the FIFO stay valid.
**
** Structured: select, join_all and a closing group cancel the members that
** are left and wait for them to unwind before returning. That wait is
** shielded: the waiting task's own cancellation does not interrupt it; it is
** raised once the members are gone.
*/
#include "flow.h"

#include <stdlib.h>
#include <string.h>

#define GROUP_MT "tidal.Group"

struct tidal_group {
  tidal_worker *w;
  tidal_taskset set; /* the live members (a kernel task set) */
  tidal_task **done; /* finished, not yet collected: FIFO ring */
  tidal_wq waiters;  /* tasks parked until a member finishes */
  tidal_group *free_next; /* in the worker's free list (scratch groups) */
  int dhead, ndone, dcap;
  int n;      /* select: branches; join_all: elements */
  int winner; /* select: the winning branch; join_all: the failed one */
  int phase;  /* where the waiting task is */
  tidal_task *first; /* select: the member that finished first */
  uint8_t closed;
  uint8_t select;     /* a select: the first member to finish wins */
  uint8_t decided;    /* select: a winner is known, or none can win now */
  uint8_t cancelling; /* cancel_members is running */
  uint8_t scratch;    /* of select / join_all (push_scratch_group) */
  uint8_t orphan;     /* its task will never come back: drop when empty */
};

enum { PH_WAIT = 1, PH_DRAIN_OK, PH_DRAIN_RAISE, PH_DRAIN_ERROR };

/* ------------------------------------------------------------- members */

/* Adds t (alive, same worker) to g. Raises on out of memory. */
static void member_add(lua_State *L, tidal_group *g, tidal_task *t) {
  int need = g->set.nlive + g->ndone + 1;
  if (need > g->dcap) {
    int cap = g->dcap ? g->dcap * 2 : 8;
    while (cap < need) cap *= 2;
    tidal_task **v = (tidal_task **)malloc((size_t)cap * sizeof *v);
    if (v == NULL) luaL_error(L, "tidal: not enough memory");
    for (int i = 0; i < g->ndone; i++)
      v[i] = g->done[(g->dhead + i) % g->dcap];
    free(g->done);
    g->done = v;
    g->dcap = cap;
    g->dhead = 0;
  }
  if (tidal__taskset_add(&g->set, t)) luaL_error(L, "tidal: not enough memory");
}

static void drop_scratch_group(tidal_group *g);

/* Cancel the live members (they unwind when they next run). A member that
** has not started yet finishes inside tidal__cancel and leaves the live
** list (its links are cleared), so the next one is read first. */
static void cancel_members(tidal_group *g) {
  tidal_task *m, *next;
  if (g->cancelling) return;
  g->cancelling = 1;
  for (m = g->set.live; m != NULL; m = next) {
    next = tidal__taskset_next(m);
    tidal__cancel(m, CK_ABORT);
  }
  g->cancelling = 0;
}

/* The kernel says: member t is done (it left the set). */
static void member_done(tidal_taskset *s, tidal_task *t) {
  tidal_group *g = tidal__container_of(s, tidal_group, set);
  tidal_task *j;
  g->done[(g->dhead + g->ndone++) % g->dcap] = t; /* room reserved on add */
  if (g->select) {
    /* The first to finish wins. Cancel the others now, before they run
    ** again: one woken for its operation (a recv whose message arrived)
    ** then passes the wake on instead of taking what the winner's select
    ** will never return. */
    if (!g->decided) {
      g->decided = 1;
      g->first = t;
    }
    cancel_members(g);
  }
  while ((j = tidal__wq_pop(&g->waiters)) != NULL) tidal__wake(j, 0);
  if (g->orphan && g->set.nlive == 0) drop_scratch_group(g);
}

static tidal_task *take_done(tidal_group *g) {
  tidal_task *t;
  if (g->ndone == 0) return NULL;
  t = g->done[g->dhead];
  g->dhead = (g->dhead + 1) % g->dcap;
  g->ndone--;
  return t;
}

/* Forget the members (the group goes away; live ones run on, detached). */
static void group_release(tidal_group *g) {
  while (g->set.live) tidal__taskset_remove(&g->set, g->set.live);
  free(g->done);
  g->done = NULL;
  g->ndone = g->dcap = g->dhead = 0;
}

/* Cancel the live members and let them unwind at once, nested in the
** current task (they may still park while unwinding). */
static void cancel_live(lua_State *L, tidal_group *g) {
  tidal_task *m, *next;
  cancel_members(g);
  if (L == NULL) return;
  for (m = g->set.live; m != NULL; m = next) {
    next = tidal__taskset_next(m);
    if (m->state != TS_PARKED) tidal__run_now(L, m);
  }
}

static int wait_cancel(tidal_task *t) {
  tidal__wq_remove(&((tidal_group *)t->wobj)->waiters, t);
  return 1;
}

/* The members were cancelled and will finish: keep waiting for them. */
static int shield_cancel(tidal_task *t) {
  (void)t;
  return 0;
}

/* The selecting task is cancelled while it waits: no branch may win any
** more, and the branches are cancelled at once, before they run again (a
** branch woken for its operation passes the wake on instead of taking a
** message the cancelled select would drop). */
static int select_cancel(tidal_task *t) {
  tidal_group *g = (tidal_group *)t->wobj;
  tidal__wq_remove(&g->waiters, t);
  g->decided = 1;
  cancel_members(g);
  return 1;
}

static int abandon(tidal_task *t, void *obj);

static const tidal_waitop select_op = {"tidal.select", select_cancel,
                                       abandon};
static int l_select(lua_State *L);
static const tidal_restart select_again = {l_select};
static const tidal_waitop join_all_op = {"tidal.join_all", wait_cancel,
                                         abandon};
static const tidal_waitop join_next_op = {"Group:join_next", wait_cancel,
                                          abandon};
static const tidal_waitop wait_op = {"Group:wait", wait_cancel, abandon};
static const tidal_waitop drain_op = {"(cancelled tasks unwinding)",
                                      shield_cancel, abandon};

static int park(lua_State *L, tidal_task *t, tidal_group *g,
                const tidal_waitop *op, lua_KFunction k) {
  tidal__wq_push(&g->waiters, t);
  return tidal__park(L, t, op, g, k);
}

/* Did the waiting task wake for a member, or to be cancelled? */
static int wake_cancelled(tidal_task *t) {
  if ((t->flags & TF_WAKECANCEL) || (t->cancel | t->tmo)) {
    t->flags &= ~TF_WAKECANCEL;
    return 1;
  }
  return 0;
}

static tidal_group *push_group(lua_State *L, tidal_worker *w, int nuv) {
  tidal_group *g = (tidal_group *)lua_newuserdatauv(L, sizeof *g, nuv);
  memset(g, 0, sizeof *g);
  g->w = w;
  g->set.member_done = member_done;
  tidal__setmt(L, &w->ctx->aux, TT_GROUP);
  return g;
}

/* The worker's free scratch groups: an extension of the worker, freed
** with it. */
typedef struct free_groups {
  tidal_group *head;
} free_groups;

static void free_groups_close(tidal_worker *w, void *data) {
  free_groups *fg = (free_groups *)data;
  tidal_group *g;
  (void)w;
  while ((g = fg->head) != NULL) {
    fg->head = g->free_next;
    free(g->done);
    free(g);
  }
  free(fg);
}

static const tidal_ext_class groups_ext = {"flow.groups", free_groups_close,
                                           NULL};

/* select and join_all keep their group in C, off the worker's free list,
** and push it as a light userdata. If the waiting task is closed without
** finishing (a forced shutdown), the group is simply not given back. */
static tidal_group *push_scratch_group(lua_State *L, tidal_worker *w) {
  free_groups *fg = (free_groups *)tidal__ext_get(w, &groups_ext);
  tidal_group *g = fg != NULL ? fg->head : NULL;
  if (g != NULL) {
    fg->head = g->free_next;
    tidal_task **done = g->done;
    int dcap = g->dcap;
    memset(g, 0, sizeof *g);
    g->done = done; /* keep the FIFO's memory */
    g->dcap = dcap;
  } else if ((g = (tidal_group *)calloc(1, sizeof *g)) == NULL) {
    luaL_error(L, "tidal: not enough memory");
  }
  g->w = w;
  g->set.member_done = member_done;
  g->scratch = 1;
  lua_pushlightuserdata(L, g);
  return g;
}

/* Done with a scratch group: members are gone (or detached). Back to the
** free list (made on first use), or freed when there is none (no memory,
** or the worker closed). */
static void drop_scratch_group(tidal_group *g) {
  tidal_worker *w = g->w;
  free_groups *fg = (free_groups *)tidal__ext_get(w, &groups_ext);
  while (g->set.live) tidal__taskset_remove(&g->set, g->set.live);
  g->ndone = g->dhead = 0;
  if (fg == NULL && (fg = (free_groups *)calloc(1, sizeof *fg)) != NULL &&
      tidal__ext_set(w, &groups_ext, fg) != 0) {
    free(fg);
    fg = NULL;
  }
  if (fg == NULL) {
    free(g->done);
    free(g);
    return;
  }
  g->free_next = fg->head;
  fg->head = g;
}

/* Task t waited on group obj, and will never run its continuation again
** (its coroutine was closed, or shutdown closed it); its op's cancel was
** called (and t is in no queue since). t leaves the waiters even where
** cancel keeps it waiting for the members to unwind (returns 1 then), and
** a select's or join_all's group goes back to the free list once its
** members are gone. */
static int abandon(tidal_task *t, void *obj) {
  tidal_group *g = (tidal_group *)obj;
  int waited = 0;
  if (tidal__wq_has(&g->waiters, t)) {
    tidal__wq_remove(&g->waiters, t);
    waited = 1;
  }
  if (g->scratch && !g->orphan) {
    g->orphan = 1;
    if (g->set.nlive == 0 && g->waiters.head == NULL) drop_scratch_group(g);
  }
  return waited;
}

/* Index (1..m) of member t among the m handles from stack index base+1. */
static int handle_index(lua_State *L, int base, int m, tidal_task *t) {
  for (int i = 1; i <= m; i++)
    if (lua_touserdata(L, base + i) == t) return i;
  return 0;
}

/* -------------------------------------------------------------- select */

/* stack: [1] branches, [2] the group (light userdata), [3 .. 2+n] keys,
** then a slot per branch considered so far, branch i's at 2+n+i: its
** task's handle once started; false for an op not ready yet (started
** later); for an op that completed at once while other branches run, its
** packed results. */

static int select_k(lua_State *L, int status, lua_KContext k);

/* Give the branches' pooled handles back (the winner's after its outcome
** was read). */
static void select_cleanup(lua_State *L, tidal_group *g, int nslots,
                           int except) {
  for (int i = 1; i <= nslots; i++)
    if (i != except && lua_type(L, 2 + g->n + i) == LUA_TUSERDATA)
      tidal__spawn_internal_done(L, g->w, 2 + g->n + i);
}

static int select_done(lua_State *L, tidal_task *t, tidal_group *g) {
  if (g->set.nlive > 0) {
    cancel_live(L, g);
    if (g->set.nlive > 0) return park(L, t, g, &drain_op, select_k);
  }
  int n = g->n, nslots = lua_gettop(L) - 2 - n;
  int win = g->winner, phase = g->phase;
  select_cleanup(L, g, nslots, win);
  drop_scratch_group(g);
  int h = 2 + n + win;
  if (phase == PH_DRAIN_RAISE) {
    if (win && lua_type(L, h) == LUA_TUSERDATA)
      tidal__spawn_internal_done(L, t->w, h);
    return tidal__raise_cancel(L, t);
  }
  if (lua_type(L, h) == LUA_TTABLE) { /* an op that completed at once */
    int nr = (int)lua_rawlen(L, h);
    lua_getfield(L, h, "n");
    nr = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    luaL_checkstack(L, nr + 2, "tidal.select: too many results");
    lua_pushvalue(L, 2 + win);
    for (int i = 1; i <= nr; i++) lua_rawgeti(L, h, i);
    return nr + 1;
  }
  tidal_task *wt = (tidal_task *)lua_touserdata(L, h);
  if (wt->flags & (TF_FAILED | TF_CANCELLED)) /* raises: no give back */
    return tidal__push_outcome(L, wt, h, 1);
  lua_pushvalue(L, 2 + win); /* the key */
  int nr = tidal__push_outcome(L, wt, h, 1);
  tidal__spawn_internal_done(L, t->w, h);
  return 1 + nr;
}

static int select_k(lua_State *L, int status, lua_KContext k) {
  tidal_task *t = (tidal_task *)k;
  tidal_group *g = (tidal_group *)lua_touserdata(L, 2);
  (void)status;
  if (g->phase == PH_WAIT) {
    int cancelled = wake_cancelled(t);
    if (g->first != NULL) {
      /* a branch finished: its operation completed and is never undone,
      ** even if the selecting task was cancelled since (that is raised at
      ** its next wait) */
      g->winner =
          handle_index(L, 2 + g->n, lua_gettop(L) - 2 - g->n, g->first);
      g->phase = PH_DRAIN_OK;
    } else if (cancelled) {
      g->phase = PH_DRAIN_RAISE;
    } else {
      return park(L, t, g, &select_op, select_k);
    }
  }
  return select_done(L, t, g);
}

/* Starts branch i's value (at the top) as a child task in slot 2+n+i (which
** is the top after the call). Returns 1 if it finished at once. */
static int start_branch(lua_State *L, tidal_task *t, tidal_group *g, int i) {
  tidal_task *c = tidal__spawn_internal(L, t->w, -1);
  lua_replace(L, -2); /* the handle takes the branch value's place */
  if (lua_gettop(L) != 2 + g->n + i) lua_replace(L, 2 + g->n + i);
  member_add(L, g, c);
  if (tidal__run_now(L, c)) {
    take_done(g);
    g->winner = i;
    g->phase = PH_DRAIN_OK;
    return 1;
  }
  return 0;
}

/* tidal.select(branches) -> key, ... of the first branch to finish */
static int l_select(lua_State *L) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  tidal_task *t = tidal__wait_ok(L, ctx->cur, "tidal.select");
  int n = 0;
  if (!lua_istable(L, 1))
    return luaL_error(L,
                      "tidal.select: expected a table of functions "
                      "(the branches), got %s",
                      luaL_typename(L, 1));
  TIDAL_SPEND(L, t, &select_again);
  if (t->cancel | t->tmo) tidal__raise_cancel(L, t); /* nothing started */
  if (lua_gettop(L) != 1) lua_settop(L, 1); /* (cheaper when it is) */
  /* Fast path: leading op branches are tried in order; the first that can
  ** complete at once wins, and nothing else starts. */
  for (int i = 1, nargs;; i++) {
    lua_pushinteger(L, i);
    lua_rawgeti(L, 1, i);
    const void *o = tidal__op_get(L, ctx, 3);
    if (o == NULL) break;
    lua_settop(L, 2); /* (the op stays in the branches) */
    int nr = tidal__op_try_fast(L, o);
    if (nr >= 0) return nr + 1; /* i under the results */
    if (nr == -1) {
      lua_settop(L, 1);
      continue;
    }
    lua_settop(L, 1);
    lua_rawgeti(L, 1, i);
    o = tidal__op_push(L, ctx, 2, &nargs);
    nr = tidal__op_try(L, o, 3);
    if (nr >= 0) { /* i in the slot below the results (op or more) */
      lua_pushinteger(L, i);
      lua_replace(L, -nr - 2);
      return nr + 1;
    }
    lua_settop(L, 1);
  }
  lua_settop(L, 1);
  tidal_group *g = push_scratch_group(L, t->w);
  g->select = 1;
  if (lua_rawgeti(L, 1, 1) != LUA_TNIL) { /* an array: in order */
    n = (int)lua_rawlen(L, 1);
    lua_pop(L, 1);
    luaL_checkstack(L, 2 * n + 8, "tidal.select: too many branches");
    for (int i = 1; i <= n; i++) lua_pushinteger(L, i);
  } else { /* keyed: in table order */
    lua_pop(L, 1);
    lua_pushnil(L);
    while (lua_next(L, 1)) {
      lua_pop(L, 1);
      luaL_checkstack(L, 8, "tidal.select: too many branches");
      lua_pushvalue(L, -1);
      n++;
    }
    luaL_checkstack(L, n + 8, "tidal.select: too many branches");
  }
  for (int i = 1; i <= n; i++) {
    lua_pushvalue(L, 2 + i);
    lua_rawget(L, 1);
    if (lua_type(L, -1) != LUA_TFUNCTION &&
        !tidal__op_is(L, ctx, -1) &&
        !tidal__is_callable(L, -1)) {
      drop_scratch_group(g);
      lua_pushvalue(L, 2 + i);
      return luaL_error(L, "tidal.select: branch %s is a %s, not a function",
                        luaL_tolstring(L, -1, NULL), luaL_typename(L, -2));
    }
    lua_pop(L, 1);
  }
  if (n == 0) {
    drop_scratch_group(g);
    return luaL_error(L, "tidal.select: no branches given");
  }
  g->n = n;
  /* Branches start in order: one that finishes before the next has started
  ** wins, and the later ones never start. An op that can complete at once
  ** does so here, in this task. */
  for (int i = 1; i <= n; i++) {
    int slot = 2 + n + i, nargs;
    lua_pushvalue(L, 2 + i);
    lua_rawget(L, 1);
    const void *o = tidal__op_push(L, ctx, -1, &nargs);
    if (o != NULL) {
      int base = lua_gettop(L) - nargs + 1;
      int nr = tidal__op_try(L, o, base);
      if (nr < 0) {
        lua_settop(L, slot - 1);
        lua_pushboolean(L, 0); /* started below if nothing wins first */
        continue;
      }
      if (g->set.nlive == 0) { /* the common case: nothing else started */
        drop_scratch_group(g);
        lua_pushvalue(L, 2 + i);
        lua_insert(L, -nr - 1);
        return nr + 1;
      }
      lua_createtable(L, nr, 1); /* keep them while the others unwind */
      lua_insert(L, -nr - 1);
      for (int j = nr; j >= 1; j--) lua_rawseti(L, -j - 1, j);
      lua_pushinteger(L, nr);
      lua_setfield(L, -2, "n");
      lua_replace(L, slot);
      lua_settop(L, slot);
      g->decided = 1;
      g->winner = i;
      g->phase = PH_DRAIN_OK;
      return select_done(L, t, g);
    }
    if (start_branch(L, t, g, i)) return select_done(L, t, g);
    if (t->cancel | t->tmo) { /* a branch cancelled the selecting task */
      g->phase = PH_DRAIN_RAISE;
      return select_done(L, t, g);
    }
  }
  /* nothing finished: start the ops that were not ready, in order */
  for (int i = 1; i <= n; i++) {
    if (lua_type(L, 2 + n + i) != LUA_TBOOLEAN) continue;
    lua_pushvalue(L, 2 + i);
    lua_rawget(L, 1);
    if (start_branch(L, t, g, i)) return select_done(L, t, g);
    if (t->cancel | t->tmo) {
      g->phase = PH_DRAIN_RAISE;
      return select_done(L, t, g);
    }
  }
  g->phase = PH_WAIT;
  return park(L, t, g, &select_op, select_k);
}

/* ------------------------------------------------------------ join_all */

/* stack: [1] list, [2] group, [3 .. 2+n] member handles (element i's at
** 2+i); an element that was a JoinHandle gets a member that awaits it. */

static int join_all_k(lua_State *L, int status, lua_KContext k);

/* Abort the JoinHandles the caller passed in whose watchers still run. */
static void abort_given(lua_State *L, tidal_group *g) {
  for (int i = 1; i <= g->n; i++) {
    tidal_task *m = (tidal_task *)lua_touserdata(L, 2 + i);
    if (m->state == TS_DONE) continue;
    lua_rawgeti(L, 1, i);
    tidal_task *given =
        (tidal_task *)tidal__toud(L, &g->w->ctx->aux, -1, TT_HANDLE);
    if (given != NULL) tidal__cancel(given, CK_ABORT);
    lua_pop(L, 1);
  }
}

static int join_all_done(lua_State *L, tidal_task *t, tidal_group *g) {
  if (g->set.nlive > 0) {
    if (g->phase != PH_WAIT) {
      abort_given(L, g);
      cancel_live(L, g);
    }
    if (g->set.nlive > 0)
      return park(L, t, g, g->phase == PH_WAIT ? &join_all_op : &drain_op,
                  join_all_k);
  }
  int phase = g->phase, failed = g->winner, n = g->n;
  drop_scratch_group(g);
  if (phase == PH_DRAIN_RAISE) return tidal__raise_cancel(L, t);
  if (phase == PH_DRAIN_ERROR) {
    int h = 2 + failed;
    return tidal__push_outcome(L, (tidal_task *)lua_touserdata(L, h), h, 1);
  }
  lua_createtable(L, n, 0);
  for (int i = 1; i <= n; i++) {
    int top = lua_gettop(L);
    int nr = tidal__push_outcome(L, (tidal_task *)lua_touserdata(L, 2 + i),
                                 2 + i, 1);
    lua_createtable(L, nr, 1);
    lua_insert(L, top + 1);
    for (int j = nr; j >= 1; j--) lua_rawseti(L, top + 1, j);
    lua_pushinteger(L, nr);
    lua_setfield(L, -2, "n");
    lua_rawseti(L, top, i);
    tidal__spawn_internal_done(L, t->w, 2 + i);
  }
  return 1;
}

static int join_all_k(lua_State *L, int status, lua_KContext k) {
  tidal_task *t = (tidal_task *)k;
  tidal_group *g = (tidal_group *)lua_touserdata(L, 2);
  tidal_task *d;
  (void)status;
  if (g->phase == PH_WAIT) {
    if (wake_cancelled(t)) {
      g->phase = PH_DRAIN_RAISE;
    } else {
      while ((d = take_done(g)) != NULL) {
        if (d->flags & (TF_FAILED | TF_CANCELLED)) {
          g->winner = handle_index(L, 2, g->n, d);
          g->phase = PH_DRAIN_ERROR;
          break;
        }
      }
    }
  }
  return join_all_done(L, t, g);
}

static int l_await_body(lua_State *L); /* awaits a given JoinHandle */
static int l_join_all(lua_State *L);
static const tidal_restart join_all_again = {l_join_all};

/* tidal.join_all(fns_or_handles) -> { {n=..., ...}, ... } */
static int l_join_all(lua_State *L) {
  tidal_task *t = tidal__wait_begin(L, "tidal.join_all");
  if (!lua_istable(L, 1))
    return luaL_error(L,
                      "tidal.join_all: expected a list of functions or "
                      "JoinHandles, got %s",
                      luaL_typename(L, 1));
  TIDAL_SPEND(L, t, &join_all_again);
  if (t->cancel | t->tmo) tidal__raise_cancel(L, t); /* nothing started */
  lua_settop(L, 1);
  int n = (int)lua_rawlen(L, 1);
  /* everything that may raise comes before the members start */
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, 1, i);
    tidal_task *given =
        (tidal_task *)tidal__toud(L, &t->w->ctx->aux, -1, TT_HANDLE);
    if (given == NULL && !tidal__is_callable(L, -1))
      return luaL_error(L,
                        "tidal.join_all: element %d is a %s, not a function "
                        "or a JoinHandle",
                        i, luaL_typename(L, -1));
    if (given == t)
      return luaL_error(L,
                        "tidal.join_all: element %d is the calling task's "
                        "own handle (a task cannot wait for itself)",
                        i);
    if (given != NULL && given->state != TS_DONE && given->w != t->w)
      return luaL_error(L,
                        "tidal.join_all: element %d belongs to another "
                        "runtime",
                        i);
    lua_pop(L, 1);
  }
  luaL_checkstack(L, n + 8, "tidal.join_all: too many elements");
  tidal_group *g = push_scratch_group(L, t->w);
  g->n = n;
  for (int i = 1; i <= n; i++) {
    int base = lua_gettop(L);
    lua_rawgeti(L, 1, i);
    tidal_task *given =
        (tidal_task *)tidal__toud(L, &t->w->ctx->aux, -1, TT_HANDLE);
    if (given != NULL) {
      lua_pushvalue(L, lua_upvalueindex(1));
      lua_insert(L, -2);
      lua_pushcclosure(L, l_await_body, 2); /* the handle is its upvalue 2 */
    }
    tidal_task *c = tidal__spawn_internal(L, t->w, base + 1);
    lua_replace(L, base + 1);
    lua_settop(L, base + 1);
    tidal__runq_push(t->w, c);
    member_add(L, g, c);
  }
  g->phase = PH_WAIT;
  return join_all_done(L, t, g);
}

/* ---------------------------------------------------------- tidal.group */

/* A group userdata has one uservalue: a table handle-pointer -> handle for
** the members not collected yet. */

static tidal_group *check_group(lua_State *L, const char *fname) {
  tidal_group *g = (tidal_group *)tidal__checkud(L, 1, TT_GROUP, fname);
  if (lua_getiuservalue(L, 1, 1) != LUA_TTABLE)
    luaL_error(L, "%s: expected a group from tidal.group()", fname);
  lua_pop(L, 1);
  return g;
}

/* Pushes the handle of collected member t and drops it from the group. */
static void push_member(lua_State *L, tidal_task *t) {
  lua_getiuservalue(L, 1, 1);
  lua_pushlightuserdata(L, t);
  lua_rawget(L, -2);
  lua_pushlightuserdata(L, t);
  lua_pushnil(L);
  lua_rawset(L, -4);
  lua_remove(L, -2);
}

static int l_group(lua_State *L) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  if (ctx->w == NULL)
    return luaL_error(L,
                      "tidal.group: not inside a tidal task (wrap the code "
                      "in tidal.run)");
  push_group(L, ctx->w, 2);
  lua_newtable(L);
  lua_setiuservalue(L, -2, 1);
  return 1;
}

/* g:spawn([opts,] fn, ...) */
static int l_gspawn(lua_State *L) {
  tidal_group *g = check_group(L, "Group:spawn");
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  if (g->closed) return luaL_error(L, "Group:spawn: the group is closed");
  if (ctx->w != g->w)
    return luaL_error(L, "Group:spawn: the group belongs to another runtime");
  tidal_task *c = tidal__spawn(L, g->w, 2);
  if (c->state == TS_DONE) return 1; /* cancelled at birth: shutting down */
  member_add(L, g, c);
  lua_getiuservalue(L, 1, 1);
  lua_pushlightuserdata(L, c);
  lua_pushvalue(L, -3);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  return 1;
}

static int l_join_next(lua_State *L);
static const tidal_restart join_next_again = {l_join_next};

static int join_next_k(lua_State *L, int status, lua_KContext k) {
  tidal_task *t = (tidal_task *)k;
  (void)status;
  tidal__resumed(L, t);
  return l_join_next(L);
}

/* Spends t's budget on a wait that completes at once, as any wait does
** (DESIGN.md section 1), in a task that can yield; 1 if it yielded. */
#define SPEND_READY(L, t, again)                                               \
  do {                                                                         \
    if ((t) != NULL && (t)->co == (L) && lua_isyieldable(L))                   \
      TIDAL_SPEND((L), (t), (again));                                          \
  } while (0)

/* g:join_next() -> true, ... | false, err | nil when none is left */
static int l_join_next(lua_State *L) {
  tidal_group *g = check_group(L, "Group:join_next");
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  tidal_task *d;
  lua_settop(L, 1);
  if (g->ndone > 0 || g->set.nlive == 0) {
    SPEND_READY(L, ctx->cur, &join_next_again);
    if ((d = take_done(g)) != NULL) {
      push_member(L, d);
      return tidal__push_outcome(L, d, 2, 0);
    }
    return 0;
  }
  tidal_task *t = tidal__wait_begin(L, "Group:join_next");
  TIDAL_SPEND(L, t, &join_next_again);
  return park(L, t, g, &join_next_op, join_next_k);
}

/* Is task t a live member of g, or running nested inside one (a select
** branch a member started at once)? Then it cannot wait for g's members to
** finish: it would wait for itself. */
static int is_member(tidal_task *t, tidal_group *g) {
  if (t == NULL) return 0;
  if (t->ext != NULL && t->ext->set == &g->set) return 1;
  if (t->w->nested == 0) return 0;
  for (tidal_task *m = g->set.live; m != NULL; m = tidal__taskset_next(m))
    if (m->state == TS_RUNNING) return 1; /* resumed what runs now */
  return 0;
}

static int l_wait(lua_State *L);
static const tidal_restart wait_again = {l_wait};

static int wait_k(lua_State *L, int status, lua_KContext k) {
  tidal_task *t = (tidal_task *)k;
  tidal_group *g = (tidal_group *)lua_touserdata(L, 1);
  (void)status;
  if (g->phase == PH_WAIT && wake_cancelled(t)) {
    g->phase = 0; /* the members run on; closing the group cancels them */
    return tidal__raise_cancel(L, t);
  }
  return l_wait(L);
}

/* g:wait(): waits for every member; the first error cancels the rest, waits
** for them to unwind, and is raised. */
static int l_wait(lua_State *L) {
  tidal_group *g = check_group(L, "Group:wait");
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  tidal_task *d;
  if (is_member(ctx->cur, g))
    return luaL_error(L, "Group:wait: a member cannot wait for its own group "
                         "(nor can a select branch it runs): it would wait "
                         "for itself to finish");
  lua_settop(L, 1);
  if (g->phase != PH_DRAIN_ERROR) {
    while ((d = take_done(g)) != NULL) {
      push_member(L, d);
      if (d->flags & (TF_FAILED | TF_CANCELLED)) {
        lua_setiuservalue(L, 1, 2); /* keep the failed one */
        g->phase = PH_DRAIN_ERROR;
        break;
      }
      lua_pop(L, 1);
    }
  }
  if (g->phase == PH_DRAIN_ERROR) {
    cancel_live(L, g);
    while ((d = take_done(g)) != NULL) {
      push_member(L, d);
      lua_pop(L, 1);
    }
    if (g->set.nlive > 0)
      return park(L, (tidal_task *)tidal__task_check(L, "Group:wait"), g,
                  &drain_op, wait_k);
    g->phase = 0;
    lua_getiuservalue(L, 1, 2);
    lua_pushnil(L);
    lua_setiuservalue(L, 1, 2);
    return tidal__push_outcome(L, (tidal_task *)lua_touserdata(L, 2), 2, 1);
  }
  if (g->set.nlive == 0) {
    SPEND_READY(L, ctx->cur, &wait_again);
    g->phase = 0;
    return 0;
  }
  tidal_task *t = tidal__wait_begin(L, "Group:wait");
  g->phase = PH_WAIT;
  return park(L, t, g, &wait_op, wait_k);
}

static int l_gabort(lua_State *L) {
  tidal_group *g = check_group(L, "Group:abort");
  cancel_live(NULL, g);
  return 0;
}

static int l_gclose(lua_State *L);

static int gclose_k(lua_State *L, int status, lua_KContext k) {
  (void)status;
  (void)k;
  return l_gclose(L);
}

/* closing a group aborts what is left and waits for it to unwind */
static int l_gclose(lua_State *L) {
  tidal_group *g = check_group(L, "Group:close");
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  tidal_task *t = ctx->cur;
  if (is_member(t, g))
    return luaL_error(L, "Group:close: a member cannot close its own group "
                         "(nor can a select branch it runs): it would wait "
                         "for itself to finish (g:abort() cancels the "
                         "members without waiting)");
  g->closed = 1;
  if (g->set.nlive == 0) return 0;
  int can_wait = t != NULL && t->co == L && lua_isyieldable(L);
  cancel_live(can_wait ? L : NULL, g);
  if (g->set.nlive == 0 || !can_wait) return 0;
  return park(L, t, g, &drain_op, gclose_k);
}

static int l_glen(lua_State *L) {
  tidal_group *g = check_group(L, "Group:__len");
  lua_pushinteger(L, g->set.nlive + g->ndone);
  return 1;
}

/* __gc: forgets the members; a finalized group is a closed one with none
** (a finalizer may still reach it) */
static int l_group_gc(lua_State *L) {
  tidal_group *g = (tidal_group *)tidal__checkud(L, 1, TT_GROUP, "Group:__gc");
  tidal_task *j;
  group_release(g);
  g->closed = 1;
  /* (__gc called by hand) a task waiting on it finds no member left */
  while ((j = tidal__wq_pop(&g->waiters)) != NULL) tidal__wake(j, 0);
  return 0;
}

static int await_body_k(lua_State *L, int status, lua_KContext k) {
  (void)status;
  (void)k;
  return lua_gettop(L);
}

/* A join_all member for a given JoinHandle (upvalue 2): h:await(). Called
** with no arguments (internal tasks get none), and it must be able to wait,
** hence lua_callk. */
static int l_await_body(lua_State *L) {
  lua_settop(L, 0);
  lua_pushvalue(L, lua_upvalueindex(2));
  lua_getfield(L, 1, "await");
  lua_insert(L, 1);
  lua_callk(L, 1, LUA_MULTRET, 0, await_body_k);
  return await_body_k(L, LUA_OK, 0);
}

static const luaL_Reg group_methods[] = {
    {"spawn", l_gspawn}, {"join_next", l_join_next}, {"wait", l_wait},
    {"abort", l_gabort}, {"close", l_gclose},        {NULL, NULL}};

static const luaL_Reg group_meta[] = {{"__close", l_gclose},
                                      {"__len", l_glen},
                                      {"__gc", l_group_gc},
                                      {NULL, NULL}};

static const luaL_Reg funcs[] = {{"select", l_select},
                                 {"join_all", l_join_all},
                                 {"group", l_group},
                                 {NULL, NULL}};

/* stack: module, ctx */
void tidal__group_open(lua_State *L) {
  tidal__newtype(L, TT_GROUP, GROUP_MT, "Group", group_meta, group_methods);
  tidal__register(L, funcs);
}
