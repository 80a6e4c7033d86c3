/*
** transfer_fuzz.c: libFuzzer target over the serialized form of transfer.c.
**
** Each input is decoded into a fresh lua_State: it must give values or an
** error, never a crash, a leak or a sanitizer report. Values that decode are
** encoded again and that buffer must decode too (the format's own output is
** always accepted). Then the input runs a second time with Lua's allocator
** failing at a point picked from the input, so the out-of-memory paths are
** fuzzed as well: they too must end in an error, not a panic or a leak.
**
** Built with TIDAL_XFER_FIXED_KEY (see `make fuzz`): the seed corpus, written
** by another process (seeds.c), then carries valid MACs, so the fuzzer gets
** past them and exercises the loading of well-formed bytecode.
*/
#include "test/xprobe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct limit {
  long n;       /* growing allocations so far */
  long fail_at; /* the one that fails and all after it, or -1 */
} limit;

/* Lua assumes that shrinking never fails: only growth is made to fail. */
static void *l_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  limit *lim = (limit *)ud;
  if (nsize == 0) {
    free(ptr);
    return NULL;
  }
  if (ptr == NULL || nsize > osize) {
    if (lim->fail_at >= 0 && lim->n >= lim->fail_at) return NULL;
    lim->n++;
  }
  return realloc(ptr, nsize);
}

static long once(const char *data, size_t size, long fail_at) {
  limit lim = {0, -1};
  lua_State *L = lua_newstate(l_alloc, &lim);
  int n;
  if (L == NULL) return 0;
  lim.n = 0;
  lim.fail_at = fail_at;
  n = tidal__xfer_decode(L, data, size);
  if (n >= 0 && lua_checkstack(L, 1)) { /* room for encode's message */
    tidal_buf b = {NULL, 0, 0};
    if (tidal__xfer_encode(L, -n, n, "fuzz", &b) == 0) {
      int m = tidal__xfer_decode(L, b.data, b.len);
      if (m != n && fail_at < 0) {
        fprintf(stderr, "re-encoded buffer does not decode: %s\n",
                m < 0 ? lua_tostring(L, -1) : "wrong count");
        abort();
      }
      tidal__xfer_discard(b.data, b.len);
    } else if (fail_at < 0 && !strstr(lua_tostring(L, -1), "too deeply")) {
      /* decoded values are all copyable; only the depth may differ, as
      ** the encoder may meet a shared table first on a longer path */
      fprintf(stderr, "decoded values do not encode: %s\n",
              lua_tostring(L, -1));
      abort();
    }
    free(b.data);
  }
  /* The walker too: no valid handle record can be forged (MAC), so this
  ** releases nothing, but it must survive any input. */
  tidal__xfer_discard(data, size);
  lua_close(L);
  return lim.n;
}

/* The value layer knows no handle type until one registers: the probe
** does, so handle records reach the MAC check and the type lookup. */
int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  if (tidal__xfer_register(&tidal__xprobe_xtype)) abort();
  return 0;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
  long allocs = once((const char *)data, size, -1);
  uint64_t h = 1469598103934665603u; /* FNV-1a picks the failure point */
  size_t i;
  for (i = 0; i < size; i++)
    h = (h ^ data[i]) * 1099511628211u;
  once((const char *)data, size, (long)(h % (uint64_t)(allocs + 1)));
  return 0;
}
