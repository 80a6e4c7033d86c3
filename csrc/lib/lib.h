/*
** lib/lib.h: the top of tidal.core -- what users and hosts see: the
** opener listing every *_open (init.c, as Lua's linit.c), the Runtime
** object (runtime.c), the host C API of tidal.h (host.c), JoinHandle and
** tidal.spawn (handle.c), tidal.Error's bindings (errors.c), tasks() and
** stats() (introspect.c).
**
** May use: every layer. Nothing includes this header but lib itself.
*/
#ifndef TIDAL_LIB_H
#define TIDAL_LIB_H

#include "kernel/kernel.h"
#include "flow/flow.h"
#include "sync/sync.h"
#include "parallel/parallel.h"
#include "http/http.h"
#include "io/io.h"

#define TIDAL_RUNTIME_MT "tidal.Runtime"

enum { TT_RUNTIME = TIDAL_TT_LIB, TT_LIB_END };
_Static_assert((int)TT_LIB_END <= (int)TIDAL_TT_MAX, "lib type ids");

/* lib/runtime.c, lib/host.c: the Runtime object over worker 0 */
struct tidal_runtime {
  tidal_worker w;
  int closed;
};
void tidal__runtime_open(lua_State *L);
void tidal__handle_open(lua_State *L); /* lib/handle.c: JoinHandle, spawn */
/* Pushes a new runtime (options table at opts, or 0), on the host's loop
** when loop != NULL. */
tidal_runtime *tidal__rt_new(lua_State *L, tidal_ctx *ctx, int opts,
                             uv_loop_t *loop, const char *fname);
/* Raises "<fname>: ..." when rt runs on a host's loop. */
void tidal__rt_check_own_loop(lua_State *L, tidal_runtime *rt,
                              const char *fname);
void tidal__rt_check_idle(lua_State *L, tidal_ctx *ctx, const char *fname);
void tidal__rt_shutdown(lua_State *L, tidal_runtime *rt);
double tidal__rt_next_timeout(tidal_runtime *rt);

/* lib/errors.c, lib/init.c */
void tidal__errors_open(lua_State *L);

/* lib/introspect.c */
void tidal__introspect_open(lua_State *L);
int tidal__push_tasks(lua_State *L, tidal_worker *w);
int tidal__push_stats(lua_State *L, tidal_worker *w);

#endif
