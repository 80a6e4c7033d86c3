/*
** flow/flow.h: the flow layer -- control flow over tasks: sleeping and
** yielding (time.c), deadlines around code (timeout.c, over the kernel's
** cancel scopes), wait operations as values (op.c), and tasks started
** together: select, join_all, tidal.group (group.c).
**
** Offers: the open functions, wait operations (tidal__op_new is what sync
** uses to make its ops), the type ids of groups and ops.
** May use: kernel, auxlib. Knows nothing of sync, parallel, http or lib.
*/
#ifndef TIDAL_FLOW_H
#define TIDAL_FLOW_H

#include "kernel/kernel.h"

typedef struct tidal_group tidal_group;

/* TT_OPHOT: an op used more than once (see op.c): the same type as TT_OP
** to Lua code, with a finalizer so that its checks can be cached */
enum { TT_GROUP = TIDAL_TT_FLOW, TT_OP, TT_OPHOT, TT_INTERVAL, TT_FLOW_END };
_Static_assert((int)TT_FLOW_END <= (int)TIDAL_TT_SYNC, "flow type ids");

/* time.c */
void tidal__time_open(lua_State *L);

/* flow/timeout.c */
void tidal__timeout_open(lua_State *L);

/* op.c: wait operations as values. A try function gets the op's target at
** stack index base and its arguments above; it either completes the
** operation without waiting (pushes its results, returns their count) or
** returns -1 (not ready; nothing changed). */
typedef int (*tidal_try_fn)(lua_State *L, int base);
void tidal__op_open(lua_State *L);
void tidal__op_new(lua_State *L, tidal_ctx *ctx, const char *name,
                   lua_CFunction run, tidal_try_fn try, int first, int nargs);
/* An op on its target alone may also have a fast try, given the target's
** memory (the op keeps the target alive): it pushes its results and returns
** their count, -1 when not ready, or -2 when only the try can tell. Set it
** on the new op (top) with tidal__op_fast. */
typedef int (*tidal_tryfast_fn)(lua_State *L, void *target);
void tidal__op_fast(lua_State *L, tidal_tryfast_fn fast);
/* The op at idx (absolute), or NULL when the value is none. */
const void *tidal__op_get(lua_State *L, tidal_ctx *ctx, int idx);
/* op's fast try: -2 when it has none */
int tidal__op_try_fast(lua_State *L, const void *op);
/* If the value at idx is an op: pushes its target and arguments and returns
** the op (the caller then calls tidal__op_try with their base). */
const void *tidal__op_push(lua_State *L, tidal_ctx *ctx, int idx, int *nargs);
/* Is the value at idx an op? */
int tidal__op_is(lua_State *L, tidal_ctx *ctx, int idx);
int tidal__op_try(lua_State *L, const void *op, int base);

/* group.c */
void tidal__group_open(lua_State *L);

#endif
