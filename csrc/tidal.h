/*
** tidal.h: the C interface for programs that host Lua and want to drive a
** tidal runtime from their own main loop (a game's frame loop, an editor's
** event loop, a server's poll).
**
** A runtime lives in one Lua state and is driven from that state's thread.
** Typical host loop:
**
**   luaL_requiref(L, "tidal.core", luaopen_tidal_core, 0);
**   tidal_runtime *rt = tidal_runtime_new(L, NULL);  -- pushes the runtime
**   ... spawn tasks: call rt:spawn(fn) from Lua, or tidal_runtime_spawn ...
**   while (running) {
**     poll your own fds plus tidal_runtime_backend_fd(rt), waiting at most
**     tidal_runtime_next_timeout(rt) seconds;
**     tidal_runtime_step(L, rt, 0);
**   }
**   tidal_runtime_close(L, rt);
*/
#ifndef TIDAL_H
#define TIDAL_H

#include <lua.h>
#include <uv.h>

#define TIDAL_VERSION "0.1.0"

#ifndef TIDAL_API
#define TIDAL_API extern
#endif

typedef struct tidal_runtime tidal_runtime;

/* Opens the private core module (require "tidal.core"). The public module
** "tidal" is Lua code on top of it (lua/tidal/init.lua). */
TIDAL_API int luaopen_tidal_core(lua_State *L);

/* Creates a runtime and pushes its userdata (a "tidal.Runtime", the same
** object tidal.runtime() returns) on L's stack. With loop == NULL the
** runtime owns a libuv loop; otherwise it attaches to the host's loop, which
** must outlive the runtime, and tasks run from that loop's check phase
** whenever the host runs it (uv_run). Returns NULL and pushes an error
** message on failure. Requires tidal.core to be loaded in L. */
TIDAL_API tidal_runtime *tidal_runtime_new(lua_State *L, uv_loop_t *loop);

/* Runs ready tasks and polls the loop once, waiting at most timeout seconds
** for timers or I/O when nothing is ready (0 or negative: do not wait; a
** timeout above a year counts as a year; NaN is misuse). Returns 1 while
** tasks remain alive, 0 when none is left, or -1 (error message pushed) on
** misuse. Must not be called from inside a task. */
TIDAL_API int tidal_runtime_step(lua_State *L, tidal_runtime *rt,
                                 double timeout);

/* The libuv backend fd to add to the host's poll set (readable when the
** runtime has work), or -1. */
TIDAL_API int tidal_runtime_backend_fd(tidal_runtime *rt);

/* Seconds until the runtime next needs a step: 0 when tasks are ready, a
** negative number when nothing is scheduled. */
TIDAL_API double tidal_runtime_next_timeout(tidal_runtime *rt);

/* Cancels the runtime's tasks, lets them unwind, and frees its resources;
** no callback runs after it returns. The userdata stays valid (closed). */
TIDAL_API void tidal_runtime_close(lua_State *L, tidal_runtime *rt);

#endif
