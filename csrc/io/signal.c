/*
** signal.c: tidal.signal -- waiting for a signal in a task.
**
**   signal.wait(name)    the next delivery after the call; every task
**                        waiting for it gets it
**   signal.ctrl_c()      wait("int")
**   signal.listen(name)  a SignalListener: l:recv() -> name, count (the
**                        deliveries since the last recv, counted from
**                        listen() on), l:close(), <close>
**
** Each worker keeps one slot per signal number: a uv_signal_t (libuv feeds
** every loop's watchers of a signal, so waiters on every worker wake), the
** tasks in wait(), and the open listeners. The slot watches the signal
** while it has users (waiters + listeners); when the last leaves, the
** watcher stops and the signal has its default effect again (libuv puts
** SIG_DFL back once no watcher of that signal is left in the process). So
** between two wait() calls a SIGTERM ends the process; a program that
** handles a signal in a loop holds it with listen().
**
** The slot's handle is referenced only while a task is parked on it (in
** wait() or recv()): a task waiting for a signal keeps the runtime alive
** (it is not a deadlock), an open listener nobody reads does not.
**
** Ctrl-C: while the SIGINT slot has users it holds a claim
** (tidal__sigint_claim): the runtime's SIGINT handler then leaves main
** alone, and SIGINT goes to the waiters and listeners only.
**
** No Lua runs in the libuv callback: it counts and wakes. A woken task
** takes its delivery when it runs (wake, then take): a wait() cancelled
** after its wake takes nothing (every waiter was woken for that delivery
** anyway); a recv() cancelled after its wake passes the wake on, and the
** count stays for the next recv().
*/
#include "io.h"

#include <ctype.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define SIGLISTEN_MT "tidal.SignalListener"

/* ------------------------------------------------------------ names */

static const struct {
  const char *name;
  int signum;
} signames[] = {
    {"hup", SIGHUP},   {"int", SIGINT},     {"quit", SIGQUIT},
    {"kill", SIGKILL}, {"usr1", SIGUSR1},   {"usr2", SIGUSR2},
    {"pipe", SIGPIPE}, {"alrm", SIGALRM},   {"term", SIGTERM},
    {"chld", SIGCHLD}, {"cont", SIGCONT},   {"stop", SIGSTOP},
    {"tstp", SIGTSTP}, {"winch", SIGWINCH},
};
#define NSIGNAMES (sizeof signames / sizeof signames[0])

const char *io__signame(int signum) {
  for (size_t i = 0; i < NSIGNAMES; i++)
    if (signames[i].signum == signum) return signames[i].name;
  return NULL;
}

int io__signum(lua_State *L, int idx) {
  char low[16];
  const char *s;
  size_t len, i;
  if (lua_type(L, idx) == LUA_TNUMBER) {
    lua_Integer n;
    if (!lua_isinteger(L, idx)) return -1;
    n = lua_tointeger(L, idx);
    return n > 0 && n < 65 && io__signame((int)n) ? (int)n : -1;
  }
  if (lua_type(L, idx) != LUA_TSTRING) return -1;
  s = lua_tolstring(L, idx, &len);
  if (len > 3 && strncasecmp(s, "sig", 3) == 0) {
    s += 3;
    len -= 3;
  }
  if (len == 0 || len >= sizeof low) return -1;
  for (i = 0; i < len; i++) low[i] = (char)tolower((unsigned char)s[i]);
  low[len] = '\0';
  for (i = 0; i < NSIGNAMES; i++)
    if (strcmp(low, signames[i].name) == 0) return signames[i].signum;
  return -1;
}

/* The signal at idx for tidal.signal: raises on a bad or uncatchable one. */
static int check_signal(lua_State *L, int idx, const char *fname) {
  int signum = io__signum(L, idx);
  if (signum < 0) {
    luaL_Buffer b;
    int t = lua_type(L, idx);
    if (t != LUA_TSTRING && t != LUA_TNUMBER)
      return luaL_error(L,
                        "%s: expected a signal name such as \"int\" or "
                        "\"term\", got %s",
                        fname, t == LUA_TNONE ? "no value" : lua_typename(L, t));
    luaL_buffinit(L, &b);
    for (size_t i = 0; i < NSIGNAMES; i++) {
      if (i) luaL_addstring(&b, ", ");
      luaL_addstring(&b, signames[i].name);
    }
    luaL_pushresult(&b);
    const char *known = lua_tostring(L, -1);
    const char *given = luaL_tolstring(L, idx, NULL);
    return luaL_error(L, "%s: unknown signal '%s' (known: %s)", fname, given,
                      known);
  }
  if (signum == SIGKILL || signum == SIGSTOP)
    return luaL_error(L, "%s: SIG%s cannot be caught", fname,
                      signum == SIGKILL ? "KILL" : "STOP");
  if (signum == SIGPIPE)
    return luaL_error(L,
                      "%s: SIGPIPE cannot be waited for (tidal ignores it, "
                      "so that a write to a closed peer returns an error "
                      "of kind broken_pipe)",
                      fname);
  return signum;
}

/* ------------------------------------------------------------ slots */

typedef struct sigslot sigslot;
typedef struct siglisten siglisten;

struct sigslot {
  uv_signal_t h;
  io_worker *iw;
  sigslot *next;
  int signum;
  int users;   /* waiters + listeners: the signal is watched while > 0 */
  int nparked; /* tasks parked in wait() or recv(): referenced while > 0 */
  uint8_t claimed; /* holds a SIGINT claim */
  tidal_wq waiters; /* tasks in wait() */
  siglisten *listeners;
};

/* The worker's signal state: in the live list, so that the worker's io
** close hook closes the slots (shutdown). */
typedef struct sigstate {
  io_obj obj;
  sigslot *slots;
} sigstate;

struct siglisten {
  io_obj obj;
  sigslot *slot; /* NULL once the worker's slots are gone */
  siglisten *next, *prev;
  lua_Integer count; /* deliveries since the last recv */
  tidal_wq receivers;
};

static void slot_close_cb(uv_handle_t *h) {
  sigslot *sl = (sigslot *)h->data;
  io_worker *iw = sl->iw;
  free(sl);
  io__release(iw);
}

/* delta tasks start (> 0) or stop (< 0) being parked on the slot */
static void slot_park(sigslot *sl, int delta) {
  int before = sl->nparked;
  sl->nparked += delta;
  if (before == 0 && sl->nparked > 0)
    uv_ref((uv_handle_t *)&sl->h);
  else if (before > 0 && sl->nparked == 0)
    uv_unref((uv_handle_t *)&sl->h);
}

/* n users leave; the last one stops the watcher */
static void slot_unuse(sigslot *sl, int n) {
  sl->users -= n;
  if (sl->users > 0 || n == 0) return;
  uv_signal_stop(&sl->h);
  if (sl->claimed) {
    sl->claimed = 0;
    tidal__sigint_claim(-1);
  }
}

static void on_signal(uv_signal_t *h, int signum) {
  sigslot *sl = (sigslot *)h->data;
  tidal_task *t;
  int n = 0;
  (void)signum;
  for (siglisten *l = sl->listeners; l != NULL; l = l->next) {
    l->count++;
    if ((t = tidal__wq_pop(&l->receivers)) != NULL) {
      slot_park(sl, -1);
      tidal__wake(t, 0);
    }
  }
  while ((t = tidal__wq_pop(&sl->waiters)) != NULL) {
    slot_park(sl, -1);
    tidal__wake(t, 0);
    n++;
  }
  slot_unuse(sl, n); /* the waiters are served: they leave */
}

/* The worker is closing: nobody is parked. */
static void sigstate_shutdown(io_obj *o) {
  sigstate *ss = (sigstate *)o;
  io_worker *iw = o->iw;
  sigslot *sl, *next;
  for (sl = ss->slots; sl != NULL; sl = next) {
    next = sl->next;
    for (siglisten *l = sl->listeners; l != NULL; l = l->next) l->slot = NULL;
    sl->listeners = NULL;
    slot_unuse(sl, sl->users);
    uv_close((uv_handle_t *)&sl->h, slot_close_cb);
  }
  iw->sig = NULL;
  free(ss);
}

/* Starts using the worker's slot for signum (watching the signal if it
** was not); returns it, or NULL with *err set. */
static sigslot *slot_use(io_worker *iw, int signum, int *err) {
  sigstate *ss = (sigstate *)iw->sig;
  sigslot *sl;
  *err = UV_ENOMEM;
  if (ss == NULL) {
    if ((ss = (sigstate *)calloc(1, sizeof *ss)) == NULL) return NULL;
    ss->obj.shutdown = sigstate_shutdown;
    io__live_add(iw, &ss->obj);
    iw->sig = ss;
  }
  for (sl = ss->slots; sl != NULL && sl->signum != signum; sl = sl->next) {
  }
  if (sl == NULL) {
    if ((sl = (sigslot *)calloc(1, sizeof *sl)) == NULL) return NULL;
    if ((*err = uv_signal_init(iw->w->loop, &sl->h)) != 0) {
      free(sl);
      return NULL;
    }
    sl->h.data = sl;
    sl->iw = iw;
    sl->signum = signum;
    io__hold(iw);
    sl->next = ss->slots;
    ss->slots = sl;
  }
  if (sl->users == 0) {
    if ((*err = uv_signal_start(&sl->h, on_signal, signum)) != 0) return NULL;
    if (sl->nparked == 0) uv_unref((uv_handle_t *)&sl->h);
    if (signum == SIGINT) {
      sl->claimed = 1;
      tidal__sigint_claim(1);
    }
  }
  sl->users++;
  return sl;
}

/* The slot for signum of the worker running in L, in use; or NULL with
** nil, err pushed. */
static sigslot *use(lua_State *L, int signum, const char *fname) {
  io_worker *iw = io__worker_check(L, fname);
  int err;
  sigslot *sl = slot_use(iw, signum, &err);
  if (sl == NULL) io__fail(L, err, fname, "%s", io__signame(signum));
  return sl;
}

/* ------------------------------------------------------------- wait */

static int wait_cancel(tidal_task *t) {
  sigslot *sl = (sigslot *)t->wobj;
  tidal__wq_remove(&sl->waiters, t);
  slot_park(sl, -1);
  slot_unuse(sl, 1);
  return 1;
}

static const tidal_waitop wait_op = {"tidal.signal.wait", wait_cancel, NULL};

static int wait_k(lua_State *L, int status, lua_KContext k) {
  (void)status;
  tidal__resumed(L, (tidal_task *)k);
  lua_pushstring(L, io__signame((int)lua_tointeger(L, 1)));
  return 1;
}

static int do_wait(lua_State *L, int signum, const char *fname) {
  tidal_task *t = tidal__wait_begin(L, fname);
  sigslot *sl;
  lua_settop(L, 0);
  lua_pushinteger(L, signum);
  if ((sl = use(L, signum, fname)) == NULL) return 2;
  tidal__wq_push(&sl->waiters, t);
  slot_park(sl, 1);
  return tidal__park(L, t, &wait_op, sl, wait_k);
}

/* signal.wait(name) -> name | nil, err */
static int l_wait(lua_State *L) {
  return do_wait(L, check_signal(L, 1, "tidal.signal.wait"),
                 "tidal.signal.wait");
}

/* signal.ctrl_c() -> "int" */
static int l_ctrl_c(lua_State *L) {
  return do_wait(L, SIGINT, "tidal.signal.ctrl_c");
}

/* ------------------------------------------------------------ listen */

static void listen_unlink(siglisten *l) {
  sigslot *sl = l->slot;
  if (sl == NULL) return;
  if (l->prev)
    l->prev->next = l->next;
  else
    sl->listeners = l->next;
  if (l->next) l->next->prev = l->prev;
  l->slot = NULL;
  slot_unuse(sl, 1);
}

/* the worker is closing (nobody parked): stop listening */
static void listen_shutdown(io_obj *o) {
  siglisten *l = (siglisten *)o;
  listen_unlink(l);
  free(l);
}

/* Closes l: the tasks in recv() wake and find it closed (orphan: they
** stay parked instead, registered nowhere, for a finalizer). */
static void listen_close(lua_State *L, siglisten *l, int orphan) {
  tidal_task *t;
  int n = 0;
  io__live_remove(l->obj.iw, &l->obj);
  io__ud_detach(&l->obj, IO_UD_CLOSED);
  for (t = l->receivers.head; t != NULL; t = t->qnext) n++;
  if (l->slot != NULL) slot_park(l->slot, -n);
  if (orphan)
    tidal__wq_orphan(&l->receivers, tidal__cur_worker(L));
  else
    while ((t = tidal__wq_pop(&l->receivers)) != NULL) tidal__wake(t, 0);
  listen_unlink(l);
  free(l);
}

/* signal.listen(name) -> listener | nil, err */
static int l_listen(lua_State *L) {
  int signum = check_signal(L, 1, "tidal.signal.listen");
  io_ud *u;
  siglisten *l;
  sigslot *sl;
  io__worker_check(L, "tidal.signal.listen");
  lua_settop(L, 1);
  u = io__ud_new(L, TT_SIGLISTEN, 0); /* closed until it works */
  if ((l = (siglisten *)calloc(1, sizeof *l)) == NULL)
    return io__fail(L, UV_ENOMEM, "tidal.signal.listen", NULL);
  if ((sl = use(L, signum, "tidal.signal.listen")) == NULL) {
    free(l);
    return 2;
  }
  l->slot = sl;
  l->next = sl->listeners;
  if (sl->listeners) sl->listeners->prev = l;
  sl->listeners = l;
  l->obj.shutdown = listen_shutdown;
  io__live_add(sl->iw, &l->obj);
  io__ud_attach(u, &l->obj);
  return 1;
}

static int recv_closed(lua_State *L) {
  return io__fail_kind(L, "closed",
                       "SignalListener:recv: the listener was closed");
}

static int recv_take(lua_State *L, siglisten *l) {
  lua_pushstring(L, io__signame(l->slot->signum));
  lua_pushinteger(L, l->count);
  l->count = 0;
  return 2;
}

static int recv_cancel(tidal_task *t) {
  siglisten *l = (siglisten *)t->wobj;
  tidal__wq_remove(&l->receivers, t);
  if (l->slot) slot_park(l->slot, -1);
  return 1;
}

static const tidal_waitop recv_op = {"SignalListener:recv", recv_cancel, NULL};

static int recv_k(lua_State *L, int status, lua_KContext k);

static int recv_park(lua_State *L, tidal_task *t, siglisten *l, int front) {
  if (front)
    tidal__wq_push_front(&l->receivers, t);
  else
    tidal__wq_push(&l->receivers, t);
  slot_park(l->slot, 1);
  return tidal__park(L, t, &recv_op, l, recv_k);
}

static int recv_k(lua_State *L, int status, lua_KContext k) {
  tidal_task *t = (tidal_task *)k;
  siglisten *l = (siglisten *)((io_ud *)lua_touserdata(L, 1))->core;
  tidal_task *next;
  (void)status;
  if (l != NULL && l->slot != NULL && tidal__wake_lost(t) && l->count > 0 &&
      (next = tidal__wq_pop(&l->receivers)) != NULL) {
    slot_park(l->slot, -1); /* its deliveries stay: for the next receiver */
    tidal__wake(next, 0);
  }
  tidal__resumed(L, t);
  if (l == NULL || l->slot == NULL) return recv_closed(L);
  if (l->count > 0) return recv_take(L, l);
  return recv_park(L, t, l, 1); /* taken by another: still first */
}

static int l_recv(lua_State *L);
static const tidal_restart recv_again = {l_recv};

/* l:recv() -> name, count | nil, err (closed) */
static int l_recv(lua_State *L) {
  io_ud *u = io__ud(L, TT_SIGLISTEN, "SignalListener:recv");
  siglisten *l = (siglisten *)u->core;
  tidal_task *t = tidal__wait_begin(L, "SignalListener:recv");
  TIDAL_SPEND(L, t, &recv_again);
  lua_settop(L, 1);
  if (l == NULL || l->slot == NULL) return recv_closed(L);
  if (l->obj.iw->w != t->w)
    return luaL_error(L, "SignalListener:recv: this signal listener "
                         "belongs to another runtime");
  if (l->count > 0 && l->receivers.head == NULL) return recv_take(L, l);
  return recv_park(L, t, l, 0);
}

static int l_close(lua_State *L) {
  io_ud *u = io__ud(L, TT_SIGLISTEN, "SignalListener:close");
  if (u->core != NULL) listen_close(L, (siglisten *)u->core, 0);
  return 0;
}

static int l_gc(lua_State *L) {
  io_ud *u = io__ud(L, TT_SIGLISTEN, "SignalListener:__gc");
  if (u->core != NULL) listen_close(L, (siglisten *)u->core, 1);
  io__ud_unhot(L, TT_SIGLISTEN, u);
  return 0;
}

static int l_tostring(lua_State *L) {
  io_ud *u = io__ud(L, TT_SIGLISTEN, "SignalListener:__tostring");
  siglisten *l = (siglisten *)u->core;
  if (l == NULL || l->slot == NULL)
    lua_pushliteral(L, "tidal.SignalListener (closed)");
  else
    lua_pushfstring(L, "tidal.SignalListener (%s, %I pending)",
                    io__signame(l->slot->signum), l->count);
  return 1;
}

static const luaL_Reg methods[] = {
    {"recv", l_recv}, {"close", l_close}, {NULL, NULL}};

static const luaL_Reg meta[] = {{"__gc", l_gc},
                                {"__close", l_close},
                                {"__tostring", l_tostring},
                                {NULL, NULL}};

static const luaL_Reg funcs[] = {{"_signal_wait", l_wait},
                                 {"_signal_ctrl_c", l_ctrl_c},
                                 {"_signal_listen", l_listen},
                                 {NULL, NULL}};

/* stack: module, ctx */
void tidal__signal_open(lua_State *L) {
  tidal__newtype(L, TT_SIGLISTEN, SIGLISTEN_MT, "SignalListener", meta, methods);
  tidal__register(L, funcs);
}
