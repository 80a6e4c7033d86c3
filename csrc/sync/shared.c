/*
** shared.c: the cross-worker mode of the sync primitives (see shared.h).
*/
#include "shared.h"

int tidal__sh_enable(tidal_shared *s, tidal_wq *const *waitqs, int nq) {
  int rc;
  if (s->on) return 0;
  if ((rc = uv_mutex_init(&s->mu)) != 0) return rc;
  s->on = 1;
  for (int i = 0; i < nq; i++) tidal__wq_shared(waitqs[i]);
  return 0;
}

void tidal__sh_destroy(tidal_shared *s) {
  if (s->on) uv_mutex_destroy(&s->mu);
}

int tidal__sh_withdraw(tidal_shared *s, tidal_wq *q, tidal_task *t,
                       void (*after)(void *obj, tidal_worker *cur),
                       void *obj) {
  int in;
  tidal__sh_lock(s);
  if ((in = tidal__wq_has(q, t)) != 0) {
    tidal__wq_remove(q, t);
    if (after != NULL) after(obj, t->w);
  }
  tidal__sh_unlock(s);
  return in;
}
