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
const void *tidal__op_push(lua_State *L, tidal_ctx *ctx, int idx, int *nargs);
/* Is the value at idx an op? */
int tidal__op_is(lua_State *L, tidal_ctx *ctx, int idx);
int tidal__op_try(lua_State *L, const void *op, int base);

/* group.c */
void tidal__group_open(lua_State *L);

#endif
