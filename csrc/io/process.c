/*
** process.c: tidal.process's C core: spawn, the Child object, kill, pid
** (registered in tidal.core as core._process_*; lua/tidal/process.lua
** checks the options and builds exec over spawn).
**
** Reaping. libuv reaps a child (waitpid) only while its uv_process_t is
** open, and calls exit_cb then; so the handle is never closed before
** exit_cb, which records the status, wakes the waiters and closes it. No
** other code reaps, and no pid is signalled after exit_cb (it may have
** been reused by then).
**
** Ownership. A Child belongs to the worker that spawned it. Its handle is
** referenced only while a task waits on it, so a running child nobody
** waits for neither keeps the loop alive nor hides a deadlock. When the
** runtime ends, every child still running that is not detached is killed
** (SIGKILL) and its handle referenced, so the worker's last uv_run waits
** for exit_cb: no zombie, no orphan. A detached child's handle is closed
** instead, and the child runs on.
**
** A task cancelled while it waits on a child kills it (kill_signal, unless
** detached); the child is reaped in the background. Collecting a Child
** does not kill it (the collector's timing must not decide a process's
** fate): it runs on, and is reaped when it exits or killed when the
** runtime ends. close() (and <close>) kills it if it still runs.
**
** Pipes are io streams (stream.c) over socketpairs: what a child wrote
** stays readable after it exited.
*/
#include "io.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

extern char **environ;

typedef struct io_child {
  io_obj obj; /* first */
  uv_process_t proc; /* proc.data = this */
  int pid;
  uint8_t exited;  /* exit_cb ran: status, term_signal */
  uint8_t hclosed; /* the handle's close callback ran */
  uint8_t detached;
  int64_t status;
  int term_signal;
  int kill_signal;
  tidal_wq waiters;
  int nparked;
} io_child;

/* ------------------------------------------------------------- signals */

static const struct {
  const char *name;
  int sig;
} signals[] = {
    {"hup", SIGHUP},     {"int", SIGINT},       {"quit", SIGQUIT},
    {"ill", SIGILL},     {"trap", SIGTRAP},     {"abrt", SIGABRT},
    {"bus", SIGBUS},     {"fpe", SIGFPE},       {"kill", SIGKILL},
    {"usr1", SIGUSR1},   {"segv", SIGSEGV},     {"usr2", SIGUSR2},
    {"pipe", SIGPIPE},   {"alrm", SIGALRM},     {"term", SIGTERM},
    {"chld", SIGCHLD},   {"cont", SIGCONT},     {"stop", SIGSTOP},
    {"tstp", SIGTSTP},   {"ttin", SIGTTIN},     {"ttou", SIGTTOU},
    {"urg", SIGURG},     {"xcpu", SIGXCPU},     {"xfsz", SIGXFSZ},
    {"vtalrm", SIGVTALRM}, {"prof", SIGPROF},   {"winch", SIGWINCH},
    {"io", SIGIO},       {"sys", SIGSYS},       {NULL, 0}};

/* pushes the short name of sig ("term"), or its number as a string */
static void push_signame(lua_State *L, int sig) {
  for (int i = 0; signals[i].name; i++)
    if (signals[i].sig == sig) {
      lua_pushstring(L, signals[i].name);
      return;
    }
  lua_pushfstring(L, "%d", sig);
}

/* The signal at idx: a name ("term", "TERM", "SIGTERM") or a number;
** raises "fname: unknown signal 'x'" otherwise. */
static int check_signal(lua_State *L, int idx, int zero_ok,
                        const char *fname) {
  const char *s;
  if (lua_type(L, idx) == LUA_TNUMBER) {
    int isint;
    lua_Integer n = lua_tointegerx(L, idx, &isint);
    if (!isint || n < (zero_ok ? 0 : 1) || n > 64)
      return luaL_error(L, "%s: invalid signal number %s", fname,
                        lua_tostring(L, idx));
    return (int)n;
  }
  s = lua_tostring(L, idx);
  if (lua_type(L, idx) != LUA_TSTRING)
    return luaL_error(L, "%s: a signal must be a name (\"term\") or a "
                         "number, got %s",
                      fname, luaL_typename(L, idx));
  if (strncasecmp(s, "sig", 3) == 0 && s[3] != '\0') s += 3;
  for (int i = 0; signals[i].name; i++)
    if (strcasecmp(s, signals[i].name) == 0) return signals[i].sig;
  return luaL_error(L, "%s: unknown signal '%s' (use a name such as "
                       "\"term\", \"kill\", \"int\", \"hup\", \"usr1\", or a "
                       "number)",
                    fname, lua_tostring(L, idx));
}

/* core._process_signal(sig) -> number (checks a name for the facade) */
static int l_signal(lua_State *L) {
  const char *fname = luaL_optstring(L, 2, "tidal.process");
  lua_pushinteger(L, check_signal(L, 1, 0, fname));
  return 1;
}

/* ------------------------------------------------------------ lifetime */

static void child_free(io_child *c) {
  free(c);
}

static void proc_close_cb(uv_handle_t *h) {
  io_child *c = (io_child *)h->data;
  io_worker *iw = c->obj.iw;
  c->hclosed = 1;
  if (c->obj.ud == NULL) child_free(c);
  io__release(iw);
}

static void exit_cb(uv_process_t *p, int64_t status, int term_signal) {
  io_child *c = (io_child *)p->data;
  tidal_task *t;
  c->exited = 1;
  c->status = status;
  c->term_signal = term_signal;
  io__live_remove(c->obj.iw, &c->obj); /* (nothing to kill any more) */
  while ((t = tidal__wq_pop(&c->waiters)) != NULL) {
    c->nparked--;
    tidal__wake(t, 0);
  }
  uv_close((uv_handle_t *)p, proc_close_cb);
}

/* The runtime ends (the userdata is detached already). */
static void child_shutdown(io_obj *o) {
  io_child *c = (io_child *)o;
  if (c->exited) return; /* (its handle is closing) */
  if (c->detached) {
    uv_close((uv_handle_t *)&c->proc, proc_close_cb);
    return;
  }
  uv_process_kill(&c->proc, SIGKILL);
  uv_ref((uv_handle_t *)&c->proc); /* the last uv_run waits for exit_cb */
}

/* Kills c if it still runs and is not detached (close, cancelled waits). */
static void kill_running(io_child *c) {
  if (!c->exited && !c->detached) uv_process_kill(&c->proc, c->kill_signal);
}

/* ------------------------------------------------------------- Child */

#define CHILD(L, fname) ((io_child *)io__check(L, TT_CHILD, fname))

/* the result table, made once (uservalue 2) and returned again after */
static void push_result(lua_State *L, io_child *c) {
  if (lua_getiuservalue(L, 1, 2) == LUA_TTABLE) return;
  lua_pop(L, 1);
  lua_createtable(L, 0, 3);
  if (c->term_signal != 0) {
    push_signame(L, c->term_signal);
    lua_setfield(L, -2, "signal");
    lua_pushboolean(L, 0);
  } else {
    lua_pushinteger(L, (lua_Integer)c->status);
    lua_setfield(L, -2, "status");
    lua_pushboolean(L, c->status == 0);
  }
  lua_setfield(L, -2, "ok");
  lua_pushvalue(L, -1);
  lua_setiuservalue(L, 1, 2);
}

static int wait_cancel(tidal_task *t) {
  io_child *c = (io_child *)t->wobj;
  tidal__wq_remove(&c->waiters, t);
  if (--c->nparked == 0 && !c->exited) uv_unref((uv_handle_t *)&c->proc);
  kill_running(c); /* reaped in the background (exit_cb) */
  return 1;
}

static const tidal_waitop wait_op = {"Child:wait", wait_cancel, NULL};

static int wait_k(lua_State *L, int status, lua_KContext kc) {
  tidal_task *t = (tidal_task *)kc;
  io_ud *u = (io_ud *)lua_touserdata(L, 1);
  (void)status;
  tidal__resumed(L, t); /* (woken, then cancelled: it exited, nothing to
                           kill) */
  if (u->core == NULL) /* closed meanwhile (runtime end, close()) */
    return io__fail_kind(L, "closed", "Child:wait: the child was closed");
  push_result(L, (io_child *)u->core);
  return 1;
}

static const tidal_restart r_wait;

static int l_wait(lua_State *L) {
  tidal_task *t = tidal__wait_begin(L, "Child:wait");
  io_child *c = CHILD(L, "Child:wait");
  TIDAL_SPEND(L, t, &r_wait);
  lua_settop(L, 1);
  if (c->exited) {
    push_result(L, c);
    return 1;
  }
  tidal__wq_push(&c->waiters, t);
  if (c->nparked++ == 0) uv_ref((uv_handle_t *)&c->proc);
  return tidal__park(L, t, &wait_op, c, wait_k);
}

static const tidal_restart r_wait = {l_wait};

static int l_try_wait(lua_State *L) {
  io_child *c = CHILD(L, "Child:try_wait");
  lua_settop(L, 1);
  if (!c->exited) {
    lua_pushnil(L);
    return 1;
  }
  push_result(L, c);
  return 1;
}

static int l_kill(lua_State *L) {
  io_child *c = CHILD(L, "Child:kill");
  int sig = lua_isnoneornil(L, 2) ? SIGKILL
                                  : check_signal(L, 2, 0, "Child:kill");
  int rc;
  if (c->exited)
    return io__fail_kind(L, "exited", "Child:kill: the child (pid %d) has "
                                      "exited",
                         c->pid);
  rc = uv_process_kill(&c->proc, sig);
  if (rc != 0) return io__fail(L, rc, "Child:kill", "pid %d", c->pid);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_pid(lua_State *L) {
  io_ud *u = io__ud(L, TT_CHILD, "Child:pid");
  if (u->core == NULL) {
    /* the pid stays readable after close: uservalue 3 */
    lua_getiuservalue(L, 1, 3);
    return 1;
  }
  lua_pushinteger(L, ((io_child *)u->core)->pid);
  return 1;
}

/* closes the pipes in the stdio table (uservalue 1) */
static void close_pipes(lua_State *L) {
  static const char *const names[] = {"stdin", "stdout", "stderr"};
  if (lua_getiuservalue(L, 1, 1) != LUA_TTABLE) {
    lua_pop(L, 1);
    return;
  }
  for (int i = 0; i < 3; i++) {
    io_ud *su;
    lua_getfield(L, -1, names[i]);
    su = (io_ud *)lua_touserdata(L, -1);
    if (su != NULL && su->core != NULL)
      io__stream_close((io_stream *)su->core);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

/* detaches the userdata at 1 from c (freed now if its handle is closed) */
static void unlink_ud(io_child *c) {
  io__ud_detach(&c->obj, IO_UD_CLOSED);
  if (c->hclosed) child_free(c);
}

static int l_close(lua_State *L) {
  io_ud *u = io__ud(L, TT_CHILD, "Child:close");
  io_child *c = (io_child *)u->core;
  close_pipes(L);
  if (c == NULL) return 0;
  kill_running(c);
  unlink_ud(c);
  return 0;
}

static int l_gc(lua_State *L) {
  io_ud *u = (io_ud *)tidal__checkud(L, 1, TT_CHILD, "Child:__gc");
  io__ud_unhot(L, TT_CHILD, u);
  if (u->core != NULL) unlink_ud((io_child *)u->core); /* runs on */
  return 0;
}

static int l_tostring(lua_State *L) {
  io_ud *u = io__ud(L, TT_CHILD, "Child:__tostring");
  io_child *c = (io_child *)u->core;
  if (c == NULL)
    lua_pushliteral(L, "tidal.Child (closed)");
  else if (!c->exited)
    lua_pushfstring(L, "tidal.Child (pid %d, running)", c->pid);
  else if (c->term_signal)
    lua_pushfstring(L, "tidal.Child (pid %d, killed by signal %d)", c->pid,
                    c->term_signal);
  else
    lua_pushfstring(L, "tidal.Child (pid %d, exited %d)", c->pid,
                    (int)c->status);
  return 1;
}

/* __index: the methods, then stdin / stdout / stderr (uservalue 1);
** upvalue 2: the methods table */
static int l_index(lua_State *L) {
  tidal__checkud(L, 1, TT_CHILD, "Child:__index");
  lua_settop(L, 2);
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(2)) != LUA_TNIL) return 1;
  lua_pop(L, 1);
  if (lua_type(L, 2) == LUA_TSTRING &&
      lua_getiuservalue(L, 1, 1) == LUA_TTABLE) {
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    return 1;
  }
  lua_pushnil(L);
  return 1;
}

/* --------------------------------------------------------------- spawn */

enum { S_IGNORE, S_INHERIT, S_PIPE };

static int check_stdio(lua_State *L, int idx, int def, const char *fname,
                       const char *which) {
  const char *m;
  if (lua_isnoneornil(L, idx)) return def;
  m = lua_tostring(L, idx);
  if (lua_type(L, idx) == LUA_TSTRING) {
    if (strcmp(m, "pipe") == 0) return S_PIPE;
    if (strcmp(m, "inherit") == 0) return S_INHERIT;
    if (strcmp(m, "ignore") == 0) return S_IGNORE;
  }
  return luaL_error(L, "%s: option '%s' must be \"pipe\", \"inherit\" or "
                       "\"ignore\", got %s",
                    fname, which,
                    lua_type(L, idx) == LUA_TSTRING ? m : luaL_typename(L, idx));
}

/* a string without zero bytes at idx, or raises "fname: what ..." */
static const char *check_cstr(lua_State *L, int idx, const char *fname,
                              const char *what) {
  size_t len;
  const char *s;
  int ty = lua_type(L, idx);
  if (ty != LUA_TSTRING && ty != LUA_TNUMBER)
    luaL_error(L, "%s: %s must be a string, got %s", fname, what,
               luaL_typename(L, idx));
  s = lua_tolstring(L, idx, &len);
  if (strlen(s) != len) luaL_error(L, "%s: %s contains a zero byte", fname,
                                   what);
  return s;
}

/* The argv list at idx as a NULL-terminated array in a userdata pushed
** on the stack, above a table that anchors the strings. */
static char **build_argv(lua_State *L, int idx, const char *fname) {
  lua_Integer n, i;
  char **v;
  int anchors;
  if (lua_type(L, idx) != LUA_TTABLE)
    luaL_error(L, "%s: argv must be a list of strings (the program and its "
                  "arguments; there is no shell), got %s",
               fname, luaL_typename(L, idx));
  n = (lua_Integer)lua_rawlen(L, idx);
  if (n < 1) luaL_error(L, "%s: argv is empty (give at least the program)",
                        fname);
  if (n > 1 << 20) luaL_error(L, "%s: argv is too long", fname);
  lua_createtable(L, (int)n, 0);
  anchors = lua_gettop(L);
  v = (char **)lua_newuserdatauv(L, (size_t)(n + 1) * sizeof *v, 0);
  for (i = 1; i <= n; i++) {
    char what[32];
    lua_rawgeti(L, idx, i);
    snprintf(what, sizeof what, "argv[%d]", (int)i);
    v[i - 1] = (char *)check_cstr(L, -1, fname, what); /* (a number: its
                                                      string, on the stack) */
    lua_rawseti(L, anchors, i);
  }
  v[n] = NULL;
  return v;
}

/* The child's environment: the current one (unless clear) with the
** overrides of the table at idx (name -> string, or false to remove), as
** a NULL-terminated array in a userdata pushed on the stack; the strings
** are anchored in a table pushed below it. */
static char **build_env(lua_State *L, int idx, int clear, const char *fname) {
  int anchors, n = 0, cap = 0;
  char **v;
  lua_newtable(L);
  anchors = lua_gettop(L);
  if (!lua_isnil(L, idx)) { /* check the overrides */
    lua_pushnil(L);
    while (lua_next(L, idx)) {
      const char *k;
      if (lua_type(L, -2) != LUA_TSTRING)
        luaL_error(L, "%s: env names must be strings, got %s", fname,
                   luaL_typename(L, -2));
      k = lua_tostring(L, -2);
      if (*k == '\0' || strchr(k, '=') != NULL ||
          strlen(k) != lua_rawlen(L, -2))
        luaL_error(L, "%s: invalid environment variable name '%s'", fname,
                   k);
      if (!(lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1)))
        check_cstr(L, -1, fname, "an env value");
      lua_pop(L, 1);
      cap++;
    }
  }
  if (!clear)
    for (char **e = environ; *e; e++) cap++;
  v = (char **)lua_newuserdatauv(L, (size_t)(cap + 1) * sizeof *v, 0);
  if (!clear) {
    for (char **e = environ; *e; e++) {
      const char *eq = strchr(*e, '=');
      if (eq == NULL) continue;
      if (!lua_isnil(L, idx)) {
        lua_pushlstring(L, *e, (size_t)(eq - *e));
        if (lua_rawget(L, idx) != LUA_TNIL) { /* overridden */
          lua_pop(L, 1);
          continue;
        }
        lua_pop(L, 1);
      }
      v[n++] = *e;
    }
  }
  if (!lua_isnil(L, idx)) {
    lua_pushnil(L);
    while (lua_next(L, idx)) {
      if (lua_type(L, -1) != LUA_TBOOLEAN) {
        const char *kv = lua_pushfstring(L, "%s=%s", lua_tostring(L, -2),
                                         lua_tostring(L, -1));
        v[n++] = (char *)kv;
        lua_rawseti(L, anchors, n);
      }
      lua_pop(L, 1);
    }
  }
  v[n] = NULL;
  return v;
}

/*
** core._process_spawn(argv, cwd, env, clear_env, stdin, stdout, stderr,
**                     detach, kill_signal, read_buffer, fname)
**   -> child | nil, err
*/
static int l_spawn(lua_State *L) {
  static const char *const names[] = {"stdin", "stdout", "stderr"};
  const char *fname = luaL_optstring(L, 11, "tidal.process.spawn");
  uv_process_options_t opts;
  uv_stdio_container_t stdio[3];
  io_stream *pipes[3] = {NULL, NULL, NULL};
  int modes[3], sud[3] = {0, 0, 0}, ud, tbl, rc, i;
  io_child *c;
  io_worker *iw;
  char **argv, **env = NULL;
  const char *cwd = NULL;
  int kill_signal;
  lua_Integer rbuf;

  lua_settop(L, 11);
  argv = build_argv(L, 1, fname);
  if (!lua_isnil(L, 2)) cwd = check_cstr(L, 2, fname, "option 'cwd'");
  if (!lua_isnil(L, 3) && lua_type(L, 3) != LUA_TTABLE)
    return luaL_error(L, "%s: option 'env' must be a table, got %s", fname,
                      luaL_typename(L, 3));
  if (!lua_isnil(L, 3) || lua_toboolean(L, 4))
    env = build_env(L, 3, lua_toboolean(L, 4), fname);
  modes[0] = check_stdio(L, 5, S_INHERIT, fname, "stdin");
  modes[1] = check_stdio(L, 6, S_INHERIT, fname, "stdout");
  modes[2] = check_stdio(L, 7, S_INHERIT, fname, "stderr");
  kill_signal = lua_isnil(L, 9) ? SIGKILL : check_signal(L, 9, 0, fname);
  rbuf = luaL_optinteger(L, 10, 0);
  iw = io__worker_check(L, fname);

  /* everything that can raise, first: the userdata (closed), its tables */
  io__ud_new(L, TT_CHILD, 3);
  ud = lua_gettop(L);
  lua_createtable(L, 0, 3);
  tbl = lua_gettop(L);
  for (i = 0; i < 3; i++)
    if (modes[i] == S_PIPE) {
      sud[i] = io__stream_newud(L);
      lua_pushvalue(L, sud[i]);
      lua_setfield(L, tbl, names[i]);
    }
  lua_pushvalue(L, tbl);
  lua_setiuservalue(L, ud, 1);
  c = (io_child *)calloc(1, sizeof *c);
  if (c == NULL) return luaL_error(L, "%s: not enough memory", fname);

  /* from here on nothing raises until the child is attached */
  for (i = 0; i < 3; i++) {
    if (modes[i] == S_PIPE) {
      pipes[i] = io__stream_new(iw, IO_PIPE, i == 0 ? IO_W : IO_R);
      if (pipes[i] == NULL ||
          (rc = uv_pipe_init(iw->w->loop, (uv_pipe_t *)io__stream_uv(pipes[i]),
                             0)) != 0) {
        if (pipes[i] != NULL) io__stream_discard(pipes[i]);
        pipes[i] = NULL;
        rc = UV_ENOMEM;
        goto fail_pipes;
      }
      stdio[i].flags = (uv_stdio_flags)(UV_CREATE_PIPE |
                                        (i == 0 ? UV_READABLE_PIPE
                                                : UV_WRITABLE_PIPE));
      stdio[i].data.stream = io__stream_uv(pipes[i]);
    } else if (modes[i] == S_INHERIT) {
      stdio[i].flags = UV_INHERIT_FD;
      stdio[i].data.fd = i;
    } else {
      stdio[i].flags = UV_IGNORE;
    }
  }
  memset(&opts, 0, sizeof opts);
  opts.exit_cb = exit_cb;
  opts.file = argv[0];
  opts.args = argv;
  opts.env = env;
  opts.cwd = cwd;
  opts.flags = lua_toboolean(L, 8) ? UV_PROCESS_DETACHED : 0;
  opts.stdio_count = 3;
  opts.stdio = stdio;
  c->proc.data = c;
  c->obj.iw = iw;
  c->obj.shutdown = child_shutdown;
  c->detached = lua_toboolean(L, 8) ? 1 : 0;
  c->kill_signal = kill_signal;
  io__hold(iw); /* released by the handle's close callback */
  rc = uv_spawn(iw->w->loop, &c->proc, &opts);
  if (rc != 0) {
    if (c->proc.pid != 0) {
      /* libuv 1.44: exec'd, then a pipe failed to open; the handle is
      ** active: kill the child and let exit_cb reap and close it */
      c->pid = c->proc.pid;
      io__live_add(iw, &c->obj);
      uv_process_kill(&c->proc, SIGKILL);
    } else { /* not started (the child that failed to exec was reaped) */
      c->exited = 1;
      uv_close((uv_handle_t *)&c->proc, proc_close_cb);
    }
    goto fail_pipes;
  }
  c->pid = c->proc.pid;
  uv_unref((uv_handle_t *)&c->proc); /* referenced while waited on */
  io__live_add(iw, &c->obj);
  for (i = 0; i < 3; i++)
    if (pipes[i] != NULL) {
      io__stream_start(pipes[i], rbuf > 0 ? (size_t)rbuf : 0);
      io__stream_attach(L, sud[i], pipes[i]);
    }
  io__ud_attach((io_ud *)lua_touserdata(L, ud), &c->obj);
  lua_pushinteger(L, c->pid);
  lua_setiuservalue(L, ud, 3);
  lua_settop(L, ud);
  return 1;

fail_pipes:
  for (i = 0; i < 3; i++)
    if (pipes[i] != NULL) io__stream_close(pipes[i]);
  if (rc == UV_ENOMEM && c->obj.iw == NULL) child_free(c); /* never spawned */
  if (cwd != NULL && (rc == UV_ENOENT || rc == UV_ENOTDIR || rc == UV_EACCES))
    io__fail(L, rc, fname, "%s (in %s)", argv[0], cwd);
  else
    io__fail(L, rc, fname, "%s", argv[0]);
  io__error_field(L, "path", argv[0]);
  return 2;
}

/* -------------------------------------------------------- kill, pid */

/* core._process_kill(pid, sig) */
static int l_pkill(lua_State *L) {
  const char *fname = "tidal.process.kill";
  int isint;
  lua_Integer pid = lua_tointegerx(L, 1, &isint);
  int sig, rc;
  if (!isint || pid <= 0 || pid > INT32_MAX)
    return luaL_error(L, "%s: pid must be a positive integer, got %s",
                      fname, luaL_tolstring(L, 1, NULL));
  sig = lua_isnoneornil(L, 2) ? SIGTERM : check_signal(L, 2, 1, fname);
  rc = uv_kill((int)pid, sig);
  if (rc != 0) return io__fail(L, rc, fname, "pid %d", (int)pid);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_ppid(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)uv_os_getpid());
  return 1;
}

/* ---------------------------------------------------------------- open */

static const luaL_Reg meta[] = {{"__gc", l_gc},
                                {"__close", l_close},
                                {"__tostring", l_tostring},
                                {NULL, NULL}};

static const luaL_Reg methods[] = {
    {"wait", l_wait}, {"try_wait", l_try_wait}, {"kill", l_kill},
    {"pid", l_pid},   {"close", l_close},       {NULL, NULL}};

static const luaL_Reg funcs[] = {{"_process_spawn", l_spawn},
                                 {"_process_kill", l_pkill},
                                 {"_process_pid", l_ppid},
                                 {"_process_signal", l_signal},
                                 {NULL, NULL}};

/* stack: module, ctx */
void tidal__process_open(lua_State *L) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, -1);
  int fresh = ctx->aux.mt[TT_CHILD] == NULL;
  tidal__newtype(L, TT_CHILD, "tidal.Child", "Child", meta, methods);
  if (fresh) { /* __index: methods, then the pipes */
    lua_rawgeti(L, LUA_REGISTRYINDEX, ctx->aux.mt_ref[TT_CHILD]);
    lua_pushvalue(L, -2); /* ctx */
    lua_getfield(L, -2, "__index");
    lua_pushcclosure(L, l_index, 2);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
  }
  tidal__register(L, funcs);
}
