/*
** tidal.h: the C interface of tidal, for programs that host Lua and drive a
** tidal runtime from their own main loop (a game's frame loop, an editor's
** event loop, a server's poll) or run it on their own libuv loop.
**
** It needs only <lua.h>: it compiles alone under -std=c11 -pedantic. Link
** with the installed library (pkg-config --cflags --libs tidal, or see the
** README's "Embedding in a C host"), which also needs liblua5.4, libuv and
** libcurl.
**
** Two ways to drive a runtime:
**
** 1. Its own loop, polled by the host (examples/host.c):
**
**      luaL_requiref(L, "tidal.core", luaopen_tidal_core, 0);
**      lua_pop(L, 1);
**      tidal_runtime *rt = tidal_runtime_new(L, NULL);  (pushes it)
**      int ref = luaL_ref(L, LUA_REGISTRYINDEX);        (keep it referenced)
**      push a function and its arguments, tidal_runtime_spawn(L, rt, n);
**      while (running) {
**        poll your own fds plus tidal_runtime_backend_fd(rt), waiting at
**        most tidal_runtime_next_timeout(rt) seconds;
**        tidal_runtime_step(L, rt, 0);
**      }
**      tidal_runtime_close(L, rt);
**      luaL_unref(L, LUA_REGISTRYINDEX, ref);
**
** 2. The host's libuv loop (examples/uv_host.c): tidal_runtime_new(L, loop)
**    with the host's uv_loop_t. The tasks then run from that loop's phases
**    (a check handle, plus an idle handle while tasks are ready) whenever
**    the host runs it with uv_run; no thread is added. While no task is
**    alive, tidal keeps no reference on the loop, so uv_run(loop,
**    UV_RUN_DEFAULT) returns once the host's own work and the tasks are
**    done. tidal_runtime_step, _backend_fd and _next_timeout are for the
**    first way only; deadlock is not detected there (uv_run just returns),
**    and tidal.spawn_blocking is not available.
**
** The Lua module "tidal" is Lua code: its files (tidal/init.lua,
** tidal/http.lua) must be on package.path. Worker threads (the "workers"
** option) load the tidal.core linked into the host, not one from
** package.cpath.
**
** Lifetime rules
** - The runtime is a Lua userdata (a "tidal.Runtime", the object that
**   tidal.runtime() returns in Lua) owned by the Lua state. The host must
**   keep it referenced (a registry reference, as above) for as long as it
**   uses the pointer: once it is collected, the pointer dangles. Collecting
**   a runtime that was not closed drops its tasks without running them.
** - tidal_runtime_close cancels every task and waits for them to unwind;
**   no callback of tidal runs after it returns. The pointer stays valid
**   while the userdata is referenced: the runtime is closed then (step
**   returns -1, backend_fd -1, next_timeout -1; close again does nothing).
** - On a host's loop, close never runs that loop (it may be called from the
**   loop's callbacks): a task whose cleanup still waits after cancellation
**   is closed where it waits. Its libuv handles are closed; as for any
**   closed handle, run the loop once more (uv_run returns at once) before
**   uv_loop_close. The loop must outlive the runtime.
** - lua_close(L) with the runtime open is allowed: it drops the tasks
**   without running them (nothing leaks, no callback runs afterwards).
** - Threads: a runtime belongs to the thread that drives its Lua state
**   (stock Lua states are not thread-safe): every function here must be
**   called on that thread. _new, _step and _close must not be called from
**   inside a task (from a C function a task calls): they return an error
**   then. Several runtimes in several Lua states may run at once, each on
**   its own thread. The report hook may be called from the runtime's
**   worker threads (the "workers" option): make it thread-safe then.
*/
#ifndef TIDAL_H
#define TIDAL_H

#include <lua.h>

#define TIDAL_VERSION_MAJOR 0
#define TIDAL_VERSION_MINOR 1
#define TIDAL_VERSION_PATCH 0
#define TIDAL_VERSION "0.1.0"
/* One number to compare: #if TIDAL_VERSION_NUM >= 100 (0.1.0) */
#define TIDAL_VERSION_NUM                                                      \
  (TIDAL_VERSION_MAJOR * 10000 + TIDAL_VERSION_MINOR * 100 +                   \
   TIDAL_VERSION_PATCH)

#ifndef TIDAL_API
#if defined(__GNUC__)
#define TIDAL_API extern __attribute__((visibility("default")))
#else
#define TIDAL_API extern
#endif
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* libuv's loop type (uv_loop_t is a typedef of it): declared here so that
** this header needs no uv.h. */
struct uv_loop_s;

typedef struct tidal_runtime tidal_runtime;

/* Opens the core module (require "tidal.core"). The public module "tidal"
** is Lua code on top of it: register this with luaL_requiref(L,
** "tidal.core", luaopen_tidal_core, 0) when tidal is linked into the host,
** and keep tidal's Lua files on package.path. */
TIDAL_API int luaopen_tidal_core(lua_State *L);

/* Creates a runtime and pushes it (a "tidal.Runtime" userdata) on L's
** stack. With loop == NULL it owns a libuv loop, driven by
** tidal_runtime_step; otherwise it runs on the host's loop (see above).
** Returns NULL and pushes an error message on failure. Requires tidal.core
** to be loaded in L. Not from inside a task. */
TIDAL_API tidal_runtime *tidal_runtime_new(lua_State *L,
                                           struct uv_loop_s *loop);

/* The runtime at stack index idx (a Runtime made in Lua too, e.g.
** require("tidal").runtime({workers = 2}) for options), or NULL when the
** value there is not one. */
TIDAL_API tidal_runtime *tidal_toruntime(lua_State *L, int idx);

/* Spawns a task: the function below nargs arguments on top of L's stack
** is popped with them, and the task's JoinHandle is pushed (call
** h:await() from another task, or keep it; a task whose error nobody
** observes is reported). Returns 0, or -1 with an error message pushed
** instead of the handle (not a function, closed runtime, out of memory).
** The task starts at the next step (or, on a host's loop, the next turn
** of that loop). */
TIDAL_API int tidal_runtime_spawn(lua_State *L, tidal_runtime *rt, int nargs);

/* Runs ready tasks and polls the loop once, waiting at most timeout seconds
** for timers or I/O when nothing is ready (0 or negative: do not wait; a
** timeout above a year counts as a year; NaN is misuse). Returns 1 while
** tasks remain alive, 0 when none is left, or -1 (error message pushed) on
** misuse: a closed runtime, a runtime on a host's loop, a call from inside
** a task. */
TIDAL_API int tidal_runtime_step(lua_State *L, tidal_runtime *rt,
                                 double timeout);

/* The fd to add to the host's poll set (readable when the runtime has I/O,
** timers or wakes to handle), or -1 (closed, or on a host's loop). */
TIDAL_API int tidal_runtime_backend_fd(tidal_runtime *rt);

/* Seconds until the runtime next needs a step: 0 when tasks are ready, a
** negative number when nothing is scheduled (wait for the fd alone), or
** when it is closed or on a host's loop. */
TIDAL_API double tidal_runtime_next_timeout(tidal_runtime *rt);

/* The number of tasks alive (0 once closed). */
TIDAL_API int tidal_runtime_tasks(tidal_runtime *rt);

/* Cancels the runtime's tasks, lets them unwind, and frees its resources;
** no callback runs after it returns. The userdata stays valid (closed;
** closing it again does nothing). Returns 0, or -1 with an error message
** pushed when called from inside one of the runtime's tasks. */
TIDAL_API int tidal_runtime_close(lua_State *L, tidal_runtime *rt);

/* What a report is about. */
typedef enum tidal_report_kind {
  TIDAL_REPORT_ERROR = 1, /* a task failed and nobody observed its error */
  TIDAL_REPORT_SLOW = 2,  /* a task ran long without waiting (slow_task) */
  TIDAL_REPORT_OTHER = 3  /* anything else tidal could not raise anywhere */
} tidal_report_kind;

/* Receives a report: message is one text (several lines, no final newline),
** valid during the call. It must not call into Lua or tidal. */
typedef void (*tidal_report_fn)(void *ud, tidal_report_kind kind,
                                const char *message);

/* Reports of this runtime (and of its worker threads) go to fn instead of
** stderr; fn == NULL puts stderr back. Set it right after
** tidal_runtime_new. */
TIDAL_API void tidal_runtime_set_report(tidal_runtime *rt, tidal_report_fn fn,
                                        void *ud);

#ifdef __cplusplus
}
#endif

#endif
