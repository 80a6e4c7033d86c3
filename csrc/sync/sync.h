/*
** sync/sync.h: the synchronisation primitives -- channel, oneshot,
** broadcast, watch, mutex / rwlock (lock.c), semaphore, notify; the ones
** that cross workers share one cross-worker mode (shared.h).
**
** Files: channel.c, oneshot.c, broadcast.c, watch.c, lock.c (Mutex,
** RwLock, Guard), semaphore.c (Semaphore, Permit), notify.c; shared.c
** (+ shared.h, internal to sync) the cross-worker mode of channel,
** oneshot, lock and semaphore.
**
** Offers: their type ids and open functions.
** May use: flow (tidal__op_new only: their wait operations), kernel,
** auxlib, xfer (their handles cross states by reference). Knows nothing
** of parallel, http or lib.
*/
#ifndef TIDAL_SYNC_H
#define TIDAL_SYNC_H

#include "flow/flow.h"
#include "kernel/kernel.h"
#include "xfer/xfer.h"

/* Largest capacity of a channel or broadcast (a limit: the ring grows up
** to it as values arrive). */
#define TIDAL_CHANNEL_MAX (1 << 28)


enum {
  TT_SENDER = TIDAL_TT_SYNC, TT_RECEIVER, TT_ONESHOT_TX, TT_ONESHOT_RX,
  TT_BCAST_TX, TT_BCAST_RX, TT_WATCH_TX, TT_WATCH_RX, TT_MUTEX, TT_RWLOCK,
  TT_GUARD, TT_SEMAPHORE, TT_PERMIT, TT_NOTIFY, TT_SYNC_END
};
_Static_assert((int)TT_SYNC_END <= (int)TIDAL_TT_PARALLEL, "sync type ids");

/* channel.c */
void tidal__channel_open(lua_State *L);

/* lock.c, semaphore.c, notify.c, oneshot.c, broadcast.c, watch.c */
void tidal__lock_open(lua_State *L);
void tidal__semaphore_open(lua_State *L);
void tidal__notify_open(lua_State *L);
void tidal__oneshot_open(lua_State *L);
void tidal__broadcast_open(lua_State *L);
void tidal__watch_open(lua_State *L);

#endif
