/*
** timer.c: a binary min-heap of deadlines. Each worker keeps one; the
** scheduler arms a single uv_timer_t for the earliest entry. Entries are
** embedded in their owners, so arming a timer allocates nothing but the
** heap's pointer array. Insert and remove are O(log n).
*/
#include "kernel.h"

#include <math.h>
#include <stdlib.h>
#include <time.h>

static void put(tidal_heap *h, uint32_t i, tidal_timer *tm) {
  h->v[i] = tm;
  tm->pos = i + 1;
}

static void sift_up(tidal_heap *h, uint32_t i, tidal_timer *tm) {
  while (i > 0) {
    uint32_t p = (i - 1) / 2;
    tidal_timer *pt = h->v[p];
    if (pt->due <= tm->due) break;
    put(h, i, pt);
    i = p;
  }
  put(h, i, tm);
}

static void sift_down(tidal_heap *h, uint32_t i, tidal_timer *tm) {
  for (;;) {
    uint32_t c = 2 * i + 1;
    if (c >= h->n) break;
    if (c + 1 < h->n && h->v[c + 1]->due < h->v[c]->due) c++;
    if (tm->due <= h->v[c]->due) break;
    put(h, i, h->v[c]);
    i = c;
  }
  put(h, i, tm);
}

int tidal__heap_push(tidal_heap *h, tidal_timer *tm) {
  if (h->n == h->cap) {
    uint32_t cap = h->cap ? h->cap * 2 : 64;
    tidal_timer **v = realloc(h->v, cap * sizeof *v);
    if (v == NULL) return UV_ENOMEM;
    h->v = v;
    h->cap = cap;
  }
  sift_up(h, h->n++, tm);
  return 0;
}

void tidal__heap_remove(tidal_heap *h, tidal_timer *tm) {
  uint32_t i = tm->pos - 1;
  tidal_timer *last = h->v[--h->n];
  tm->pos = 0;
  if (last == tm) return;
  if (i > 0 && h->v[(i - 1) / 2]->due > last->due)
    sift_up(h, i, last);
  else
    sift_down(h, i, last);
}

void tidal__heap_free(tidal_heap *h) {
  free(h->v);
  h->v = NULL;
  h->n = h->cap = 0;
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
  if (tm->pos) tidal__heap_remove(&w->timers, tm);
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
