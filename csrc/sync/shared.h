/*
** sync/shared.h: the cross-worker mode of the sync primitives (internal
** to sync: channel, oneshot, lock, semaphore, notify).
**
** A primitive starts local: only its owning worker's thread touches it, no
** lock is taken and its waiters are woken directly. When one of its
** handles is first copied to another Lua state (xfer), it becomes shared,
** for good: from then on every operation takes its mutex, and waiters are
** woken through their own worker (tidal__wake_any), since the waker may run
** on another thread. The switch happens on the owning thread before any
** other thread can see the object, so reading `on` needs no lock.
*/
#ifndef TIDAL_SYNC_SHARED_H
#define TIDAL_SYNC_SHARED_H

#include "sync.h"

typedef struct tidal_shared {
  uint8_t on;    /* shared mode (set once, on the owning thread) */
  uv_mutex_t mu; /* valid once on */
} tidal_shared;

/* No-ops while local. */
static inline void tidal__sh_lock(tidal_shared *s) {
  if (s->on) uv_mutex_lock(&s->mu);
}
static inline void tidal__sh_unlock(tidal_shared *s) {
  if (s->on) uv_mutex_unlock(&s->mu);
}

/* Wake t (already out of its queue): directly while local, else through
** its worker when that is not cur (NULL: unknown). */
static inline void tidal__sh_wake(tidal_shared *s, tidal_task *t,
                                  tidal_worker *cur) {
  if (s->on)
    tidal__wake_any(cur, t);
  else
    tidal__wake(t, 0);
}

/* Local -> shared, on the owning thread, once the type has converted its
** own state (a channel's ring, a oneshot's value): the mutex is made and
** the waiters already parked in the nq queues become cross-thread waiters.
** 0, or a libuv error with nothing changed. Idempotent. */
int tidal__sh_enable(tidal_shared *s, tidal_wq *const *waitqs, int nq);
/* The object is being freed (last reference). */
void tidal__sh_destroy(tidal_shared *s);

/* Queues t on q (front: keeps its turn, e.g. a woken waiter that found
** nothing), then parks it on obj: locked on entry when shared, the lock
** is released before parking (tidal__park_shared). Inline: every wait of
** the four primitives goes through it. */
static inline int tidal__sh_park(lua_State *L, tidal_shared *s, tidal_task *t,
                                 tidal_wq *q, int front,
                                 const tidal_waitop *op, void *obj,
                                 lua_KFunction k) {
  if (front)
    tidal__wq_push_front(q, t);
  else
    tidal__wq_push(q, t);
  if (s->on) {
    uv_mutex_unlock(&s->mu);
    return tidal__park_shared(L, t, op, obj, k);
  }
  return tidal__park(L, t, op, obj, k);
}

/* A waitop's cancel: under the lock, takes t out of q unless a waker
** already did (tidal__wq_has), then runs after(obj, t's worker) -- still
** locked -- when given (a lock grants the next waiters, a semaphore serves
** them). 1: withdrawn; 0: the wake is on its way. */
int tidal__sh_withdraw(tidal_shared *s, tidal_wq *q, tidal_task *t,
                       void (*after)(void *obj, tidal_worker *cur),
                       void *obj);

#endif
