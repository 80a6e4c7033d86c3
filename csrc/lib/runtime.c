/*
** runtime.c: the Runtime object. tidal.run, tidal.runtime and its methods
** (block_on, spawn, step, close, backend_fd, next_timeout), shutdown, and
** deadlock detection. Also the host C API declared in tidal.h.
*/
#include "tidal_int.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tidal_runtime {
  tidal_worker w;
  int closed;
};

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

static void check_idle(lua_State *L, tidal_ctx *ctx, const char *fname) {
  if (ctx->cur != NULL)
    luaL_error(L,
               "%s: already inside a tidal task (use tidal.spawn to start "
               "more work, and h:await() to wait for it)",
               fname);
  if (ctx->w != NULL)
    luaL_error(L, "%s: a runtime is already running in this Lua state",
               fname);
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
    } else if (strcmp(k, "thread_name") == 0) {
      if (lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "%s: option 'thread_name' must be a string", fname);
    } else {
      luaL_error(L,
                 "%s: unknown option '%s' (known: workers, blocking_threads, "
                 "thread_name, slow_task)",
                 fname, lua_type(L, -2) == LUA_TSTRING ? k : luaL_typename(L, -2));
    }
    lua_pop(L, 1);
  }
}

/* Pushes a new runtime (options table at opts, or 0). */
static tidal_runtime *new_runtime(lua_State *L, tidal_ctx *ctx, int opts,
                                  const char *fname) {
  tidal_runtime *rt = (tidal_runtime *)lua_newuserdatauv(L, sizeof *rt, 0);
  memset(rt, 0, sizeof *rt);
  rt->closed = 1; /* harmless until the loop exists */
  tidal__setmt(L, &ctx->aux, TT_RUNTIME);
  int rc = tidal__worker_init(&rt->w, L, ctx, NULL);
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
  lua_settop(L, top); /* the runtime on top */
  return rt;
}

/* ------------------------------------------------------------- deadlock */

/* Nothing can run and nothing can wake anyone: fail the main task with an
** error that lists every parked task and where it waits. */
static void deadlock(lua_State *L, tidal_worker *w) {
  int n = 1;
  lua_pushliteral(L,
                  "deadlock: every task is waiting and nothing can wake them:");
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->anchors_ref);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    tidal_task *t = (tidal_task *)lua_touserdata(L, -1);
    if (t->state == TS_PARKED) {
      luaL_checkstack(L, 4, "tidal: deadlock report");
      lua_pushliteral(L, "\n  ");
      tidal__push_label(L, t, lua_gettop(L) - 1);
      lua_pushfstring(L, " waits in %s at ", t->op ? t->op->name : "?");
      tidal__push_where(L, t, lua_gettop(L) - 3);
      lua_concat(L, 4);
      lua_insert(L, -4); /* below anchors, key, value */
      n++;
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  lua_concat(L, n);
  lua_createtable(L, 0, 2);
  lua_pushliteral(L, "deadlock");
  lua_setfield(L, -2, "kind");
  lua_insert(L, -2);
  lua_setfield(L, -2, "message");
  luaL_setmetatable(L, TIDAL_ERROR_MT);
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->aux_ref);
  lua_insert(L, -2);
  lua_rawseti(L, -2, AUX_DEADLOCK);
  lua_pop(L, 1);
  tidal__cancel(w->main, CK_DEADLOCK);
}

/* ------------------------------------------------------------- the loops */

/* Ctrl-C: the main task is cancelled with kind "interrupted"; if it then
** runs on without waiting, its Lua code is interrupted (interrupt.c). */
static void interrupt_main(tidal_task *main) {
  tidal__cancel(main, CK_INTERRUPT);
  if (main->state != TS_DONE && main->co != NULL) tidal__irq_set(main->co);
}

static int block_on_loop(lua_State *L) {
  tidal_worker *w = (tidal_worker *)lua_touserdata(L, 1);
  tidal_task *main = w->main;
  for (;;) {
    tidal__run_batch(w, L, TIDAL_POLL_EVERY);
    if (main->state == TS_DONE) break;
    if (tidal__sigint_take(w)) {
      interrupt_main(main);
      continue;
    }
    if (w->rq_len) {
      tidal__poll(w, L, 0, 0);
    } else if (tidal__pending(w)) {
      uint64_t retry = w->external ? tidal__idle_gc(w, L) : 0;
      if (!w->rq_len) tidal__poll(w, L, 1, retry);
    } else {
      /* idle: let finalizers close what was dropped, then look again */
      lua_gc(L, LUA_GCCOLLECT);
      if (w->rq_len || tidal__pending(w)) continue;
      if (main->cancel == CK_DEADLOCK && main->state == TS_PARKED) {
        tidal__task_finish_forced(w, L, main); /* cannot be woken at all */
        break;
      }
      deadlock(L, w);
    }
  }
  return 0;
}

/* Cancels every task and lets them unwind. Blocking jobs are stopped, and
** a task that runs on without waiting (a loop that never reaches a wait)
** is interrupted (interrupt.c), so shutdown cannot wait forever on Lua
** code. */
static int shutdown_loop(lua_State *L) {
  tidal_worker *w = (tidal_worker *)lua_touserdata(L, 1);
  tidal__ext_shutdown(w); /* work in flight stops (blocking jobs) */
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->anchors_ref);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    tidal_task *t = (tidal_task *)lua_touserdata(L, -1);
    tidal__cancel(t, CK_SHUTDOWN);
    if (t->state != TS_DONE && t->co != NULL) tidal__irq_set(t->co);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  while (w->st.alive > 0 || w->rq_len > 0) {
    if (w->rq_len) {
      tidal__run_batch(w, L, INT_MAX);
      tidal__poll(w, L, 0, 0);
    } else if (w->timers.n || uv_loop_alive(w->loop)) {
      tidal__poll(w, L, 1, 0);
    } else { /* parked with nothing to wake them: close them as they are */
      lua_rawgeti(L, LUA_REGISTRYINDEX, w->anchors_ref);
      lua_pushnil(L);
      while (lua_next(L, -2)) {
        tidal_task *t = (tidal_task *)lua_touserdata(L, -1);
        lua_pop(L, 1);
        if (t->state == TS_PARKED) /* clears only the current key */
          tidal__task_finish_forced(w, L, t);
      }
      lua_pop(L, 1);
    }
  }
  tidal__report_unobserved(L, w);
  return 0;
}

static int step_loop(lua_State *L) {
  tidal_worker *w = (tidal_worker *)lua_touserdata(L, 1);
  double timeout = lua_tonumber(L, 2);
  if (w->rq_len == 0 && timeout > 0)
    tidal__poll(w, L, 1, (uint64_t)(timeout * 1e9) + 1);
  else
    tidal__poll(w, L, 0, 0);
  if (w->rq_len) tidal__run_batch(w, L, (int)w->rq_len);
  return 0;
}

/* Runs loop(w, extra) protected, with ctx->w set; rethrows its error. */
static void enter(lua_State *L, tidal_worker *w, lua_CFunction loop,
                  double extra) {
  tidal_ctx *ctx = w->ctx;
  int st;
  ctx->w = w;
  w->running = 1;
  tidal__blocking_enter(ctx, w); /* (in a spawn_blocking job) */
  lua_pushcfunction(L, loop);
  lua_pushlightuserdata(L, w);
  lua_pushnumber(L, extra);
  st = lua_pcall(L, 2, 0, 0);
  tidal__blocking_leave(ctx);
  ctx->w = NULL;
  ctx->cur = NULL;
  w->running = 0;
  if (st != LUA_OK) {
    tidal__sigint_stop(w);
    lua_error(L);
  }
}

/* Runs stack[first..top] as the main task until it is done; pushes its
** handle and returns it. Ctrl-C is watched from here on: the caller stops
** watching (tidal.run after shutting down). */
static tidal_task *block_on(lua_State *L, tidal_runtime *rt, int first) {
  tidal_worker *w = &rt->w;
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "main");
  lua_setfield(L, -2, "name");
  lua_insert(L, first);
  tidal_task *main = tidal__spawn(L, w, first);
  w->main = main;
  tidal__sigint_start(w);
  enter(L, w, block_on_loop, 0);
  tidal__sigint_take(w); /* too late for main: nothing left to act on */
  w->main = NULL;
  return main;
}

/* Worker 0's tasks unwind first, then every worker thread cancels its own
** and ends; no callback runs after this returns. */
static void rt_shutdown(lua_State *L, tidal_runtime *rt) {
  tidal_worker *w = &rt->w;
  if (rt->closed) return;
  w->closing = 1;
  enter(L, w, shutdown_loop, 0);
  rt->closed = 1;
  if (w->family) tidal__family_stop(w->family);
  tidal__worker_retire(w, L); /* late posts run (and finish as cancelled) */
  tidal__worker_close_handles(w); /* (stops watching Ctrl-C) */
  tidal__irq_quiesce(w);
  tidal__worker_free(w);
  if (w->family) tidal__family_free(w->family);
  w->family = NULL;
}

static int worker_loop(lua_State *L) {
  tidal_worker *w = (tidal_worker *)lua_touserdata(L, 1);
  while (!w->stop) {
    uint64_t retry = 0;
    tidal__run_batch(w, L, TIDAL_POLL_EVERY);
    if (!w->rq_len) retry = tidal__idle_gc(w, L);
    tidal__poll(w, L, w->rq_len == 0, retry);
  }
  return 0;
}

/* Runs loop protected; an error (out of memory) is reported, not fatal. */
static int run_reporting(lua_State *L, tidal_worker *w, lua_CFunction loop) {
  lua_pushcfunction(L, loop);
  lua_pushlightuserdata(L, w);
  w->ctx->w = w;
  w->running = 1;
  int st = lua_pcall(L, 1, 0, 0);
  w->ctx->w = NULL;
  w->ctx->cur = NULL;
  w->running = 0;
  if (st != LUA_OK) {
    fprintf(stderr, "tidal: worker %d: %s\n", w->index,
            lua_isstring(L, -1) ? lua_tostring(L, -1) : "error");
    lua_pop(L, 1);
  }
  return st;
}

/* A worker thread's scheduler: runs until the runtime stops it, then
** cancels its tasks and lets them unwind. */
void tidal__worker_run(lua_State *L, tidal_worker *w) {
  while (run_reporting(L, w, worker_loop) != LUA_OK && !w->stop) {
  }
  w->closing = 1;
  run_reporting(L, w, shutdown_loop);
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
  if (rt != NULL) rt_shutdown(L, rt);
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
  check_idle(L, ctx, "tidal.run");
  if (is_options(L, 1)) {
    check_options(L, 1, "tidal.run");
    first = 2;
  }
  tidal__check_callable(L, first, "tidal.run",
                        "a function to run as the main task");
  tidal_runtime *rt = new_runtime(L, ctx, first == 2 ? 1 : 0, "tidal.run");
  lua_insert(L, first); /* rt below the function: anchored during the run */
  tidal_task *main = block_on(L, rt, first + 1);
  return finish_main(L, main, lua_gettop(L), rt);
}

/* tidal.runtime([opts]) */
static int l_runtime(lua_State *L) {
  tidal_ctx *ctx = upctx(L);
  if (!lua_isnoneornil(L, 1)) {
    luaL_checktype(L, 1, LUA_TTABLE);
    check_options(L, 1, "tidal.runtime");
  }
  new_runtime(L, ctx, lua_istable(L, 1) ? 1 : 0, "tidal.runtime");
  return 1;
}

/* rt:block_on(fn, ...) */
static int l_block_on(lua_State *L) {
  tidal_runtime *rt = check_open_rt(L, "Runtime:block_on");
  check_idle(L, upctx(L), "Runtime:block_on");
  tidal_task *main = block_on(L, rt, 2);
  tidal__sigint_stop(&rt->w);
  return finish_main(L, main, lua_gettop(L), NULL);
}

/* rt:spawn([opts,] fn, ...) */
static int l_rt_spawn(lua_State *L) {
  tidal_runtime *rt = check_open_rt(L, "Runtime:spawn");
  tidal__spawn(L, &rt->w, 2);
  return 1;
}

/* rt:step([timeout]) -> whether tasks remain */
static int l_step(lua_State *L) {
  tidal_runtime *rt = check_open_rt(L, "Runtime:step");
  double timeout = luaL_optnumber(L, 2, 0);
  check_idle(L, upctx(L), "Runtime:step");
  if (isnan(timeout)) luaL_error(L, "Runtime:step: timeout must be a number");
  if (timeout > 3600.0 * 24 * 365) timeout = 3600.0 * 24 * 365;
  enter(L, &rt->w, step_loop, timeout);
  lua_pushboolean(L, rt->w.st.alive > 0);
  return 1;
}

static int l_close(lua_State *L) {
  tidal_runtime *rt = check_rt(L, "Runtime:close");
  if (rt->closed) return 0;
  if (rt->w.running)
    luaL_error(L, "Runtime:close: cannot close a runtime from inside it");
  check_idle(L, upctx(L), "Runtime:close");
  rt_shutdown(L, rt);
  return 0;
}

static double next_timeout(tidal_runtime *rt) {
  tidal_worker *w = &rt->w;
  if (rt->closed) return -1;
  if (w->rq_len) return 0;
  tidal_timer *top = tidal__heap_top(&w->timers);
  if (top != NULL) {
    uint64_t now = uv_hrtime();
    return top->due > now ? (double)(top->due - now) / 1e9 : 0;
  }
  if (!uv_loop_alive(w->loop)) return -1;
  int ms = uv_backend_timeout(w->loop);
  return ms < 0 ? -1 : ms / 1e3;
}

static int l_next_timeout(lua_State *L) {
  double s = next_timeout(check_open_rt(L, "Runtime:next_timeout"));
  if (s < 0)
    lua_pushnil(L);
  else
    lua_pushnumber(L, s);
  return 1;
}

static int l_backend_fd(lua_State *L) {
  tidal_runtime *rt = check_open_rt(L, "Runtime:backend_fd");
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
  tidal_worker *w = &rt->w;
  if (rt->closed) return 0;
  if (w->running) /* (called by hand: the collector cannot reach it now) */
    return luaL_error(L, "Runtime:__gc: cannot close a runtime from inside "
                         "it");
  rt->closed = 1;
  /* Withdraw the waits first, while every task is intact: a parked task is
  ** registered in the wait queue of its primitive, which may outlive this
  ** runtime (a channel or lock shared with other code); left there, a later
  ** send or release would wake a task that no longer exists. */
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->anchors_ref);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    tidal_task *t = (tidal_task *)lua_touserdata(L, -1);
    if (t->state == TS_PARKED && t->op != NULL && t->op->cancel != NULL) {
      t->op->cancel(t);
      t->state = TS_RUNNABLE; /* in no queue now; dropped below */
      t->op = NULL;
      t->wobj = NULL;
    }
    lua_pop(L, 1);
  }
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    tidal_task *t = (tidal_task *)lua_touserdata(L, -1);
    t->state = TS_DONE;
    t->flags |= TF_CANCELLED | TF_NOSTART;
    t->co = NULL;
    if (t->ext != NULL) {
      tidal_sub *sub; /* a copy of its handle elsewhere hears it now */
      while ((sub = t->ext->subs) != NULL) {
        t->ext->subs = sub->next;
        sub->next = NULL;
        sub->cls->release(sub, L, t, lua_gettop(L)); /* (cancelled) */
      }
      t->ext->joiners = (tidal_task *)w->free_exts; /* freed below */
      w->free_exts = t->ext;
      t->ext = NULL;
    }
    t->w = NULL;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  w->closing = 1;
  if (w->family) tidal__family_stop(w->family);
  tidal__worker_retire(w, L); /* runs no task code: see the posts there */
  tidal__worker_close_handles(w);
  tidal__irq_quiesce(w);
  tidal__worker_free(w);
  if (w->family) tidal__family_free(w->family);
  w->family = NULL;
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

/* ------------------------------------------------------------- host API */

static int host_new(lua_State *L) {
  new_runtime(L, tidal__ctx(L), 0, "tidal_runtime_new");
  return 1;
}

tidal_runtime *tidal_runtime_new(lua_State *L, uv_loop_t *loop) {
  if (tidal__ctx(L) == NULL) {
    lua_pushliteral(L, "tidal_runtime_new: load tidal.core first");
    return NULL;
  }
  if (loop != NULL) {
    lua_pushliteral(L, "tidal_runtime_new: running on a host's loop is not "
                       "supported yet; pass NULL");
    return NULL;
  }
  lua_pushcfunction(L, host_new);
  if (lua_pcall(L, 0, 1, 0) != LUA_OK) return NULL;
  return (tidal_runtime *)lua_touserdata(L, -1);
}

static int host_step(lua_State *L) {
  tidal_runtime *rt = (tidal_runtime *)lua_touserdata(L, 1);
  tidal_ctx *ctx = tidal__ctx(L);
  double timeout = lua_tonumber(L, 2);
  if (rt == NULL) luaL_error(L, "tidal_runtime_step: no runtime (NULL)");
  if (rt->closed) luaL_error(L, "tidal_runtime_step: the runtime is closed");
  if (ctx == NULL)
    luaL_error(L, "tidal_runtime_step: tidal.core is not loaded in this "
                  "Lua state");
  check_idle(L, ctx, "tidal_runtime_step");
  if (isnan(timeout))
    luaL_error(L, "tidal_runtime_step: timeout must be a number of seconds, "
                  "got nan");
  if (timeout > 3600.0 * 24 * 365) timeout = 3600.0 * 24 * 365; /* (a year) */
  enter(L, &rt->w, step_loop, timeout); /* (negative: do not wait) */
  return 0;
}

int tidal_runtime_step(lua_State *L, tidal_runtime *rt, double timeout) {
  lua_pushcfunction(L, host_step);
  lua_pushlightuserdata(L, rt);
  lua_pushnumber(L, timeout);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) return -1;
  return rt->w.st.alive > 0;
}

int tidal_runtime_backend_fd(tidal_runtime *rt) {
  return rt->closed ? -1 : uv_backend_fd(rt->w.loop);
}

double tidal_runtime_next_timeout(tidal_runtime *rt) {
  return next_timeout(rt);
}

static int host_close(lua_State *L) {
  tidal_runtime *rt = (tidal_runtime *)lua_touserdata(L, 1);
  rt_shutdown(L, rt);
  return 0;
}

void tidal_runtime_close(lua_State *L, tidal_runtime *rt) {
  lua_pushcfunction(L, host_close);
  lua_pushlightuserdata(L, rt);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) lua_pop(L, 1);
}
