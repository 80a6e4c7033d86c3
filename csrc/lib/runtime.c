/*
** runtime.c: the Runtime object. tidal.run, tidal.runtime and its methods
** (block_on, spawn, step, close, backend_fd, next_timeout), over the
** kernel's run loops (kernel/loop.c): a runtime is worker 0 of a family of
** workers, and whether it is closed. The host C API is in host.c.
*/
#include "lib.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static tidal_ctx *upctx(lua_State *L) {
  return (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
}

static tidal_runtime *check_rt(lua_State *L, const char *fname) {
  return (tidal_runtime *)tidal__checkud(L, 1, TT_RUNTIME, fname);
}

static tidal_runtime *check_open_rt(lua_State *L, const char *fname) {
  tidal_runtime *rt = check_rt(L, fname);
  if (rt->closed) luaL_error(L, "%s: the runtime is closed", fname);
  return rt;
}

void tidal__rt_check_own_loop(lua_State *L, tidal_runtime *rt,
                              const char *fname) {
  if (rt->w.hostloop)
    luaL_error(L,
               "%s: this runtime runs on a host's loop: its tasks run when "
               "that loop runs (uv.run() for luv's)",
               fname);
}

void tidal__rt_check_idle(lua_State *L, tidal_ctx *ctx, const char *fname) {
  if (ctx->cur != NULL)
    luaL_error(L,
               "%s: already inside a tidal task (use tidal.spawn to start "
               "more work, and h:await() to wait for it)",
               fname);
  if (ctx->w != NULL)
    luaL_error(L, "%s: a runtime is already running in this Lua state",
               fname);
}

/*
** luv's loop. luv keeps its per-state context in the registry under
** "luv_context": a userdata whose first member is the uv_loop_t pointer
** (luv_ctx_t in luv.h, luv 1.30 and later; spec/embed_spec.lua checks
** this against the installed luv.h). Reading it needs neither luv.h nor
** the luv library: tidal does not link luv.
*/
typedef struct luv_ctx_head {
  uv_loop_t *loop;
} luv_ctx_head;

/* The loop of the luv module at idx (which must be loaded in L). */
static uv_loop_t *luv_loop(lua_State *L, int idx, const char *fname) {
  uv_loop_t *loop = NULL;
  if (lua_type(L, idx) != LUA_TTABLE)
    luaL_error(L,
               "%s: option 'loop' must be the luv module (require 'luv'), "
               "got %s",
               fname, luaL_typename(L, idx));
  idx = lua_absindex(L, idx);
  if (lua_getfield(L, LUA_REGISTRYINDEX, "luv_context") == LUA_TUSERDATA &&
      lua_rawlen(L, -1) >= sizeof(luv_ctx_head))
    loop = ((luv_ctx_head *)lua_touserdata(L, -1))->loop;
  lua_pop(L, 1);
  if (lua_getfield(L, idx, "run") != LUA_TFUNCTION) loop = NULL;
  lua_pop(L, 1);
  if (loop == NULL)
    luaL_error(L,
               "%s: option 'loop' must be the luv module (require 'luv'), "
               "and luv must be loaded in this Lua state",
               fname);
  return loop;
}

static int is_options(lua_State *L, int idx) {
  return lua_type(L, idx) == LUA_TTABLE && !tidal__is_callable(L, idx);
}

/* Validates the options table at idx (0: none). */
static void check_options(lua_State *L, int idx, const char *fname) {
  if (idx == 0) return;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
    if (strcmp(k, "workers") == 0 || strcmp(k, "blocking_threads") == 0) {
      if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0)
        luaL_error(L, "%s: option '%s' must be a non-negative integer", fname,
                   k);
      if (lua_tointeger(L, -1) > 256)
        luaL_error(L, "%s: option '%s' must be at most 256", fname, k);
    } else if (strcmp(k, "slow_task") == 0) {
      if (lua_type(L, -1) != LUA_TBOOLEAN &&
          (lua_type(L, -1) != LUA_TNUMBER || !(lua_tonumber(L, -1) >= 0)))
        luaL_error(L,
                   "%s: option 'slow_task' must be a number of seconds >= 0 "
                   "or false",
                   fname);
    } else if (strcmp(k, "loop") == 0) {
      if (strcmp(fname, "tidal.runtime") != 0)
        luaL_error(L,
                   "%s: option 'loop' is for tidal.runtime (run luv's loop "
                   "with uv.run() instead)",
                   fname);
      luv_loop(L, -1, fname);
    } else if (strcmp(k, "thread_name") == 0) {
      if (lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "%s: option 'thread_name' must be a string", fname);
    } else {
      luaL_error(L,
                 "%s: unknown option '%s' (known: workers, blocking_threads, "
                 "thread_name, slow_task, loop)",
                 fname, lua_type(L, -2) == LUA_TSTRING ? k : luaL_typename(L, -2));
    }
    lua_pop(L, 1);
  }
}

/* Pushes a new runtime (options table at opts, or 0). */
tidal_runtime *tidal__rt_new(lua_State *L, tidal_ctx *ctx, int opts,
                             uv_loop_t *loop, const char *fname) {
  int luv = 0; /* stack index of the luv module */
  if (opts && lua_getfield(L, opts, "loop") != LUA_TNIL) {
    loop = luv_loop(L, -1, fname);
    luv = lua_gettop(L);
  } else if (opts) {
    lua_pop(L, 1);
  }
  tidal_runtime *rt = (tidal_runtime *)lua_newuserdatauv(L, sizeof *rt, 1);
  memset(rt, 0, sizeof *rt);
  rt->closed = 1; /* harmless until the loop exists */
  tidal__setmt(L, &ctx->aux, TT_RUNTIME);
  if (luv) { /* luv's loop outlives the runtime: it keeps the module */
    lua_pushvalue(L, luv);
    lua_setiuservalue(L, -2, 1);
  }
  int rc = tidal__worker_init(&rt->w, L, ctx, loop);
  if (rc)
    luaL_error(L, "%s: cannot create the event loop: %s", fname,
               uv_strerror(rc));
  int top = lua_gettop(L);
  rt->w.slow_ns = 1000000000u; /* report tasks that hog the thread for 1 s */
  int nthreads = 0;
  const char *thread_name = NULL;
  if (opts) {
    int ty = lua_getfield(L, opts, "slow_task");
    if (ty == LUA_TNUMBER) {
      double ns = lua_tonumber(L, -1) * 1e9;
      /* 0 is off; math.huge (or ~584 years, past uint64_t) never fires */
      rt->w.slow_ns = !(ns > 0) || ns >= 1.8e19 ? 0
                      : ns < 1                  ? 1
                                                : (uint64_t)ns;
    } else if (ty == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
      rt->w.slow_ns = 0; /* false: off; true: the default */
    }
    if (lua_getfield(L, opts, "workers") == LUA_TNUMBER)
      nthreads = (int)lua_tointeger(L, -1);
    if (lua_getfield(L, opts, "thread_name") == LUA_TSTRING)
      thread_name = lua_tostring(L, -1);
    if (lua_getfield(L, opts, "blocking_threads") == LUA_TNUMBER &&
        lua_tointeger(L, -1) > 0 && getenv("UV_THREADPOOL_SIZE") == NULL) {
      /* libuv sizes its (process-wide) pool once, at its first use */
      setenv("UV_THREADPOOL_SIZE", lua_tostring(L, -1), 0);
    }
  }
  lua_getglobal(L, "package");
  const char *path = "", *cpath = "";
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, "path");
    lua_getfield(L, -2, "cpath");
    path = lua_isstring(L, -2) ? lua_tostring(L, -2) : "";
    cpath = lua_isstring(L, -1) ? lua_tostring(L, -1) : "";
  }
  char err[300] = "";
  rt->w.family = NULL;
  tidal_family *f = tidal__family_new(&rt->w, nthreads, thread_name, path,
                                      cpath, err, sizeof err);
  if (f == NULL) {
    tidal__worker_close_handles(&rt->w);
    tidal__worker_free(&rt->w);
    luaL_error(L, "%s: cannot start the runtime: %s", fname, err);
  }
  rt->closed = 0;
  tidal__worker_list(&rt->w); /* (task.c finds tasks by coroutine) */
  lua_settop(L, top); /* the runtime on top */
  if (luv) lua_remove(L, luv);
  return rt;
}

/* Worker 0's tasks unwind first, then the runtime is closed and every
** worker thread cancels its own and ends; no callback runs after this
** returns. */
void tidal__rt_shutdown(lua_State *L, tidal_runtime *rt) {
  if (rt->closed) return;
  tidal__worker_unwind(L, &rt->w);
  rt->closed = 1;
  tidal__worker_close(L, &rt->w);
}

double tidal__rt_next_timeout(tidal_runtime *rt) {
  return rt->closed || rt->w.hostloop ? -1 : tidal__worker_next_timeout(&rt->w);
}

/* Leaves the main task's results on the stack and returns their count, or
** raises its error (a string error gets the failing task's traceback
** appended). The handle is at idx; with rt, the runtime is shut down after
** the outcome is taken. */
static int finish_main(lua_State *L, tidal_task *main, int idx,
                       tidal_runtime *rt) {
  int n = tidal__push_outcome(L, main, idx, 0);
  int ok = lua_toboolean(L, -n);
  lua_remove(L, -n);
  if (rt != NULL) tidal__rt_shutdown(L, rt);
  if (ok) return n - 1;
  if (lua_type(L, -1) == LUA_TSTRING &&
      tidal__traceback_get(L, tidal__actx(L), -1)) {
    lua_pushliteral(L, "\n");
    lua_insert(L, -2);
    lua_concat(L, 3);
  }
  return lua_error(L);
}

/* ------------------------------------------------------------ Lua API */

/* tidal.run([opts,] fn, ...) */
static int l_run(lua_State *L) {
  tidal_ctx *ctx = upctx(L);
  int first = 1;
  tidal__rt_check_idle(L, ctx, "tidal.run");
  if (is_options(L, 1)) {
    check_options(L, 1, "tidal.run");
    first = 2;
  }
  tidal__check_callable(L, first, "tidal.run",
                        "a function to run as the main task");
  tidal_runtime *rt =
      tidal__rt_new(L, ctx, first == 2 ? 1 : 0, NULL, "tidal.run");
  lua_insert(L, first); /* rt below the function: anchored during the run */
  tidal_task *main = tidal__block_on(L, &rt->w, first + 1);
  return finish_main(L, main, lua_gettop(L), rt);
}

/* tidal.runtime([opts]) */
static int l_runtime(lua_State *L) {
  tidal_ctx *ctx = upctx(L);
  if (!lua_isnoneornil(L, 1)) {
    luaL_checktype(L, 1, LUA_TTABLE);
    check_options(L, 1, "tidal.runtime");
  }
  tidal__rt_new(L, ctx, lua_istable(L, 1) ? 1 : 0, NULL, "tidal.runtime");
  return 1;
}

/* rt:block_on(fn, ...) */
static int l_block_on(lua_State *L) {
  tidal_runtime *rt = check_open_rt(L, "Runtime:block_on");
  tidal__rt_check_own_loop(L, rt, "Runtime:block_on");
  tidal__rt_check_idle(L, upctx(L), "Runtime:block_on");
  tidal_task *main = tidal__block_on(L, &rt->w, 2);
  tidal__sigint_stop(&rt->w);
  return finish_main(L, main, lua_gettop(L), NULL);
}

/* rt:spawn([opts,] fn, ...) */
static int l_rt_spawn(lua_State *L) {
  tidal_runtime *rt = check_open_rt(L, "Runtime:spawn");
  tidal__spawn(L, &rt->w, 2);
  return 1;
}

/* A loop of rt:step in a spawn_blocking job ends when the job is aborted
** or its runtime shuts down: step raises the job's cancellation (the count
** hook that interrupts a job's Lua code may not fire for a long time in a
** loop that mostly waits in step). */
static void job_stopped(lua_State *L) {
  if (tidal__blocking_stopped(upctx(L))) {
    tidal__error_push(L, "cancelled",
                      "tidal.spawn_blocking: the job was cancelled");
    lua_error(L);
  }
}

/* rt:step([timeout]) -> whether tasks remain */
static int l_step(lua_State *L) {
  tidal_runtime *rt = check_open_rt(L, "Runtime:step");
  double timeout = luaL_optnumber(L, 2, 0);
  tidal__rt_check_own_loop(L, rt, "Runtime:step");
  tidal__rt_check_idle(L, upctx(L), "Runtime:step");
  if (isnan(timeout)) luaL_error(L, "Runtime:step: timeout must be a number");
  if (timeout > 3600.0 * 24 * 365) timeout = 3600.0 * 24 * 365;
  job_stopped(L);
  tidal__worker_step(L, &rt->w, timeout);
  job_stopped(L);
  lua_pushboolean(L, rt->w.st.alive > 0);
  return 1;
}

static int l_close(lua_State *L) {
  tidal_runtime *rt = check_rt(L, "Runtime:close");
  if (rt->closed) return 0;
  if (rt->w.running)
    luaL_error(L, "Runtime:close: cannot close a runtime from inside it");
  tidal__rt_check_idle(L, upctx(L), "Runtime:close");
  tidal__rt_shutdown(L, rt);
  return 0;
}

static int l_next_timeout(lua_State *L) {
  double s = tidal__rt_next_timeout(check_open_rt(L, "Runtime:next_timeout"));
  if (s < 0)
    lua_pushnil(L);
  else
    lua_pushnumber(L, s);
  return 1;
}

static int l_backend_fd(lua_State *L) {
  tidal_runtime *rt = check_open_rt(L, "Runtime:backend_fd");
  if (rt->w.hostloop) {
    lua_pushnil(L);
    return 1;
  }
  lua_pushinteger(L, uv_backend_fd(rt->w.loop));
  return 1;
}

static int l_rt_tasks(lua_State *L) {
  return tidal__push_tasks(L, &check_open_rt(L, "Runtime:tasks")->w);
}

static int l_rt_stats(lua_State *L) {
  return tidal__push_stats(L, &check_open_rt(L, "Runtime:stats")->w);
}

static int l_rt_tostring(lua_State *L) {
  tidal_runtime *rt = check_rt(L, "Runtime:__tostring");
  lua_pushfstring(L, "tidal.Runtime (%s)", rt->closed ? "closed" : "open");
  return 1;
}

/* Collected without close(): free the loop without running any task code
** (a finalizer must not resume coroutines). Tasks are dropped as they are;
** call rt:close() to cancel them properly. */
static int l_rt_gc(lua_State *L) {
  tidal_runtime *rt = check_rt(L, "Runtime:__gc");
  if (rt->closed) return 0;
  if (rt->w.running) /* (called by hand: the collector cannot reach it now) */
    return luaL_error(L, "Runtime:__gc: cannot close a runtime from inside "
                         "it");
  rt->closed = 1;
  tidal__worker_drop(L, &rt->w);
  return 0;
}

static const luaL_Reg rt_methods[] = {
    {"block_on", l_block_on},         {"spawn", l_rt_spawn},
    {"step", l_step},                 {"close", l_close},
    {"next_timeout", l_next_timeout}, {"backend_fd", l_backend_fd},
    {"tasks", l_rt_tasks},            {"stats", l_rt_stats},
    {NULL, NULL}};

static const luaL_Reg rt_meta[] = {{"__tostring", l_rt_tostring},
                                   {"__gc", l_rt_gc},
                                   {"__close", l_close},
                                   {NULL, NULL}};

static const luaL_Reg funcs[] = {
    {"run", l_run}, {"runtime", l_runtime}, {NULL, NULL}};

/* stack: module, ctx */
void tidal__runtime_open(lua_State *L) {
  tidal__newtype(L, TT_RUNTIME, TIDAL_RUNTIME_MT, "Runtime", rt_meta,
                 rt_methods);
  tidal__register(L, funcs);
}
