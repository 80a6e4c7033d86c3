/*
** timer.c: a 4-ary min-heap of deadlines. Each worker keeps one; the
** scheduler arms a single uv_timer_t for the earliest entry. Timers are
** embedded in their owners, so arming one allocates nothing but room in
** the heap's arrays. Insert and remove are O(log n), with half the levels
** of a binary heap.
**
** With a million sleepers the timers are scattered over a gigabyte, and a
** heap that reads each timer's deadline, or writes its position into it,
** misses the cache at every level of every sift. So the heap's array holds
** (due, slot) pairs: a sift compares keys in the array, whose 4 children
** of a node share one 64-byte line (the array is aligned so that they do),
** and records each move in pos[slot], a dense array of 4 bytes per armed
** timer. Only arming, stopping and firing touch the timer itself.
*/
#include "kernel.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ARITY 4
/* v[1 + 4k .. 4 + 4k] (the children of node k) start a cache line: v is
** allocated 3 entries before a 64-byte boundary. */
#define HEAP_ALIGN 64
#define HEAP_PAD 3

static void put(tidal_heap *h, uint32_t i, tidal_hent e) {
  h->v[i] = e;
  h->pos[e.id] = i + 1;
}

static void sift_up(tidal_heap *h, uint32_t i, tidal_hent e) {
  while (i > 0) {
    uint32_t p = (i - 1) / ARITY;
    if (h->v[p].due <= e.due) break;
    put(h, i, h->v[p]);
    i = p;
  }
  put(h, i, e);
}

static void sift_down(tidal_heap *h, uint32_t i, tidal_hent e) {
  const tidal_hent *v = h->v;
  uint32_t n = h->n;
  for (;;) {
    uint32_t c = ARITY * i + 1, m = c;
    if (c >= n) break;
    if (c + ARITY <= n) { /* all four children: no bound checks */
      uint64_t d = v[c].due;
      if (v[c + 1].due < d) d = v[m = c + 1].due;
      if (v[c + 2].due < d) d = v[m = c + 2].due;
      if (v[c + 3].due < d) d = v[m = c + 3].due;
    } else {
      for (uint32_t k = c + 1; k < n; k++)
        if (v[k].due < v[m].due) m = k;
    }
    if (e.due <= v[m].due) break;
    put(h, i, v[m]);
    i = m;
  }
  put(h, i, e);
}

static int grow_heap(tidal_heap *h) {
  uint32_t cap = h->cap ? h->cap * 2 : 64;
  size_t bytes = ((size_t)cap + HEAP_PAD + 1) * sizeof(tidal_hent);
  tidal_hent *raw;
  if (cap <= h->cap) return UV_ENOMEM; /* (a wrap at 2^32 entries) */
  raw = aligned_alloc(HEAP_ALIGN, bytes); /* (a multiple of 64) */
  if (raw == NULL) return UV_ENOMEM;
  if (h->v != NULL) {
    memcpy(raw + HEAP_PAD, h->v, h->n * sizeof *h->v);
    free(h->v - HEAP_PAD);
  }
  h->v = raw + HEAP_PAD;
  h->cap = cap;
  return 0;
}

static int grow_slots(tidal_heap *h) {
  uint32_t cap = h->slot_cap ? h->slot_cap * 2 : 64;
  tidal_timer **tm;
  uint32_t *pos;
  if (cap <= h->slot_cap) return UV_ENOMEM;
  if ((tm = realloc(h->tm, cap * sizeof *tm)) == NULL) return UV_ENOMEM;
  h->tm = tm;
  if ((pos = realloc(h->pos, cap * sizeof *pos)) == NULL) return UV_ENOMEM;
  h->pos = pos;
  h->slot_cap = cap;
  return 0;
}

int tidal__heap_push(tidal_heap *h, tidal_timer *tm) {
  tidal_hent e;
  if (h->n == h->cap && grow_heap(h) != 0) return UV_ENOMEM;
  if (h->free_slot) { /* most recently freed first: still in the cache */
    e.id = h->free_slot;
    h->free_slot = h->pos[e.id];
  } else {
    if (h->nslot + 1 >= h->slot_cap && grow_slots(h) != 0) return UV_ENOMEM;
    e.id = ++h->nslot;
  }
  h->tm[e.id] = tm;
  tm->id = e.id;
  e.due = tm->due;
  sift_up(h, h->n++, e);
  return 0;
}

void tidal__heap_remove(tidal_heap *h, tidal_timer *tm) {
  uint32_t id = tm->id, i = h->pos[id] - 1;
  tidal_hent last = h->v[--h->n];
  tm->id = 0;
  h->pos[id] = h->free_slot;
  h->free_slot = id;
  if (last.id == id) return;
  if (i > 0 && h->v[(i - 1) / ARITY].due > last.due)
    sift_up(h, i, last);
  else
    sift_down(h, i, last);
}

void tidal__heap_free(tidal_heap *h) {
  if (h->v != NULL) free(h->v - HEAP_PAD);
  free(h->tm);
  free(h->pos);
  memset(h, 0, sizeof *h);
}

int tidal__timer_start(tidal_worker *w, tidal_timer *tm, uint64_t due) {
  tm->due = due;
  tm->call = 0;
  return tidal__heap_push(&w->timers, tm);
}

int tidal__ctimer_start(tidal_worker *w, tidal_ctimer *ct, uint64_t due,
                        tidal_timer_fn fire) {
  ct->tm.due = due;
  ct->tm.call = 1;
  ct->fire = fire;
  return tidal__heap_push(&w->timers, &ct->tm);
}

void tidal__timer_stop(tidal_worker *w, tidal_timer *tm) {
  if (tm->id) tidal__heap_remove(&w->timers, tm);
}

uint64_t tidal__coarse_ns(void) {
#ifdef CLOCK_MONOTONIC_COARSE
  struct timespec ts;
  if (clock_gettime(CLOCK_MONOTONIC_COARSE, &ts) == 0)
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
#endif
  return uv_hrtime();
}

uint64_t tidal__deadline(double seconds) {
  uint64_t now = uv_hrtime();
  /* 100 years: far enough to mean "never", small enough not to overflow */
  const double max = 100.0 * 365 * 24 * 3600;
  if (!(seconds > 0)) return now;
  if (seconds > max) seconds = max;
  return now + (uint64_t)(seconds * 1e9);
}

uint64_t tidal__deadline_at(double at) {
  uint64_t now = uv_hrtime();
  const double max = 100.0 * 365 * 24 * 3600 * 1e9; /* as above, in ns */
  double ns = at * 1e9;
  if (!(ns > (double)now)) return now;
  if (ns - (double)now > max) return now + (uint64_t)max;
  return (uint64_t)ns;
}
