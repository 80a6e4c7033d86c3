/*
** buf.c: tidal_buf, the growable byte buffer shared by value transfer
** (encoded messages) and HTTP (response headers and bodies).
*/
#include "xfer/xfer.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int tidal__buf_grow(tidal_buf *b, size_t need) {
  size_t cap = b->cap ? b->cap : 64;
  char *p;
  if (b->cap - b->len >= need) return 0;
  if (need > (SIZE_MAX >> 2) - b->len) return -1;
  while (cap - b->len < need)
    cap *= 2;
  p = (char *)realloc(b->data, cap);
  if (p == NULL) return -1;
  b->data = p;
  b->cap = cap;
  return 0;
}

int tidal__buf_add(tidal_buf *b, const void *p, size_t n) {
  if (tidal__buf_grow(b, n)) return -1;
  memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

void tidal__buf_free(tidal_buf *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}
