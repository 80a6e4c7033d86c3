/*
** wq.c: wait queues -- intrusive FIFOs of parked tasks (a task waits on
** one thing at a time, so its links live in the task and queuing never
** allocates), the unordered lists on the same links, and what becomes of
** a queue whose object is shared with other threads or freed.
*/
#include "kernel.h"

void tidal__wq_push(tidal_wq *q, tidal_task *t) {
  t->qnext = NULL;
  t->qprev = q->tail;
  if (q->tail)
    q->tail->qnext = t;
  else
    q->head = t;
  q->tail = t;
}

void tidal__wq_push_front(tidal_wq *q, tidal_task *t) {
  t->qprev = NULL;
  t->qnext = q->head;
  if (q->head)
    q->head->qprev = t;
  else
    q->tail = t;
  q->head = t;
}

void tidal__wq_remove(tidal_wq *q, tidal_task *t) {
  if (t->qprev)
    t->qprev->qnext = t->qnext;
  else
    q->head = t->qnext;
  if (t->qnext)
    t->qnext->qprev = t->qprev;
  else
    q->tail = t->qprev;
  t->qnext = t->qprev = NULL;
}

void tidal__list_push(tidal_task **head, tidal_task *t) {
  t->qprev = NULL;
  t->qnext = *head;
  if (*head) (*head)->qprev = t;
  *head = t;
}

void tidal__list_remove(tidal_task **head, tidal_task *t) {
  if (t->qprev)
    t->qprev->qnext = t->qnext;
  else
    *head = t->qnext;
  if (t->qnext) t->qnext->qprev = t->qprev;
  t->qnext = t->qprev = NULL;
}

/* The object q belongs to becomes shared with other threads (on its
** owning thread, before they can see it): a task already waiting on it can
** now be woken from another thread, so it counts as waiting on one (see
** tidal__external), as if it had parked with tidal__park_shared. */
void tidal__wq_shared(tidal_wq *q) {
  for (tidal_task *t = q->head; t != NULL; t = t->qnext) {
    if (!(t->flags & TF_XWAIT)) {
      t->flags |= TF_XWAIT;
      tidal__external(t->w, 1);
    }
  }
}

tidal_task *tidal__wq_pop(tidal_wq *q) {
  tidal_task *t = q->head;
  if (t) {
    q->head = t->qnext;
    if (q->head)
      q->head->qprev = NULL;
    else
      q->tail = NULL;
    t->qnext = NULL;
  }
  return t;
}

static int orphan_cancel(tidal_task *t) {
  (void)t;
  return 1; /* registered nowhere any more */
}

static const tidal_waitop orphan_op = {"(an object that was finalized)",
                                       orphan_cancel, NULL};

void tidal__wq_orphan(tidal_wq *q, tidal_worker *cur) {
  tidal_task *t;
  while ((t = tidal__wq_pop(q)) != NULL) {
    t->qprev = NULL;
    t->op = &orphan_op;
    t->wobj = NULL;
    if ((t->flags & TF_XWAIT) && t->w == cur) { /* no other thread wakes it */
      t->flags &= ~TF_XWAIT;
      tidal__external(cur, -1);
    }
  }
}

