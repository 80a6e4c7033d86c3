/*
** xfer/xfer.h: the value layer -- copying Lua values between Lua states.
**
** Offers: tidal_buf (a growable byte buffer: buf.c) and value transfer
** (transfer.c): tidal__xfer_encode / _decode / _discard, and the registry
** of shareable handle types (tidal_xtype, tidal__xfer_register).
**
** May use: nothing of tidal (lua.h, lauxlib.h, uv.h, libc). A leaf: the
** handle types of the layers above register themselves with it when
** tidal.core opens; it names none of them, so it links alone (the fuzzer,
** tidal.testhooks). Never include another layer's header here.
*/
#ifndef TIDAL_XFER_H
#define TIDAL_XFER_H

/* POSIX types that uv.h needs under -std=c11; include this header first */
#ifndef _DEFAULT_SOURCE
#define _DEFAULT_SOURCE
#endif

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <lauxlib.h>
#include <lua.h>
#include <uv.h>

/* The one metatable that crosses states with its tables: the registry's
** value at this key, set by whoever owns that metatable (tidal.core sets
** its error objects' one). A state without the entry decodes a plain
** table. */
#define TIDAL_XFER_KEEPMT "tidal.xfer.keepmt"

/*
** Values cross between Lua states (workers, the blocking pool) as bytes:
** tidal__xfer_encode serializes values of one state into a tidal_buf (plain
** malloc'd memory, owned by no state, safe to hand to another thread) and
** tidal__xfer_decode rebuilds them in another state. See transfer.c for the
** format and DESIGN.md section 5 for what can be copied.
**
** Tidal handles (channels, locks, ...) are not copied but shared: a buffer
** owns one counted reference to each handle it holds, from encode until
** tidal__xfer_discard. Decoding takes references of its own, so a buffer
** may be decoded any number of times (one message, many receivers) and is
** discarded exactly once, decoded or not.
*/

/* Nesting limit for tables and functions, on both sides. */
#define TIDAL_XFER_MAXDEPTH 1000

/* A growable byte buffer; all zero is an empty one. Reuse it across
** messages (set len = 0) to encode without allocating. */
typedef struct tidal_buf {
  char *data;
  size_t len, cap;
} tidal_buf;

void tidal__buf_free(tidal_buf *b); /* frees data; the buffer is empty again */
/* Makes room for need more bytes; 0, or -1 when out of memory. */
int tidal__buf_grow(tidal_buf *b, size_t need);
int tidal__buf_add(tidal_buf *b, const void *p, size_t n); /* 0 or -1 */

/* A shareable userdata type. The encoder recognises the type by its
** metatable (registry[mt], compared by identity, never by __name). */
typedef struct tidal_xtype {
  const char *mt; /* metatable name, e.g. "tidal.Channel" */
  /* The C object of the userdata at idx with one more reference, or NULL
  ** if it cannot be shared (e.g. closed). Must not raise. */
  void *(*share)(lua_State *L, int idx);
  /* Pushes a new userdata for obj that takes a reference of its own. The
  ** receiving state may never have loaded tidal.core (a pool state, any
  ** state a host made): push loads it there first if needed (its layer
  ** knows how). May raise (memory, loading), but only before it takes the
  ** reference. */
  void (*push)(lua_State *L, void *obj);
  /* Releases one reference. Any thread. */
  void (*drop)(void *obj);
} tidal_xtype;

/* Adds t to the process-wide registry of shareable types (once; again is
** a no-op). Each type registers itself when tidal.core opens, before any
** of its values can be encoded. The order of first registration fixes a
** type's index in buffers (which never leave the process). Any thread. 0,
** or -1 when full. */
int tidal__xfer_register(const tidal_xtype *t);

/* Optional hooks of a type whose values MOVE when shared (io's streams:
** share detaches the object from its userdata). */
typedef struct tidal_xhooks {
  /* share(L, idx) returned NULL: push why ("tidal.Stream that a task
  ** waits on") and return 1, or push nothing and return 0 (the refusal
  ** then says "closed <mt>"). Must not raise. */
  int (*refusal)(lua_State *L, int idx);
  /* The encode that shared obj failed: called instead of drop, on the
  ** encoding thread while the encoded values are still on L's stack, so
  ** the type can give the object back to its userdata. Must not raise. */
  void (*unshare)(lua_State *L, void *obj);
} tidal_xhooks;

/* tidal__xfer_register with hooks (h: static storage, or NULL). */
int tidal__xfer_register_hooks(const tidal_xtype *t, const tidal_xhooks *h);

/* Appends the n values at stack index first.. to out. Returns 0, or
** non-zero with an error message pushed (out->len and every reference are
** as before, and an empty buffer holds no memory again, so a caller that
** raises then leaks nothing): "cannot copy userdata at args[2].conn". root
** names the values
** in that path: "root" when n is 1, else "root[i]". Never raises. As with
** any push, the caller provides the free stack slot for the message. */
int tidal__xfer_encode(lua_State *L, int first, int n, const char *root,
                       tidal_buf *out);

/* Pushes the values encoded in data[0..len) and returns their count; or
** returns -1 with a message pushed if the buffer is malformed or memory
** runs out. Never raises; any input is safe. */
int tidal__xfer_decode(lua_State *L, const char *data, size_t len);

/* Releases the handle references held by an encoded buffer. */
void tidal__xfer_discard(const char *data, size_t len);

/* Whether an encoded buffer holds handles. */
int tidal__xfer_has_handles(const char *data, size_t len);

/* The functions above for a module built apart from tidal.core (the
** test-only tidal.testhooks): tidal.core exports no internal symbol, so it
** keeps a pointer to this table (a light userdata) in each state's
** registry under TIDAL_XFER_API_KEY. */
typedef struct tidal_xfer_api {
  int (*encode)(lua_State *L, int first, int n, const char *root,
                tidal_buf *out);
  int (*decode)(lua_State *L, const char *data, size_t len);
  void (*discard)(const char *data, size_t len);
  int (*reg)(const tidal_xtype *t);
} tidal_xfer_api;
#define TIDAL_XFER_API_KEY "tidal.xfer.api"
extern const tidal_xfer_api tidal__xfer_api;

#endif
