/*
** transfer.c: serialize Lua values into a self-contained byte buffer and
** rebuild them in another lua_State.
**
** Stock Lua states are not thread-safe, so whatever crosses between workers
** or into the blocking pool is copied: encoded here in the sender's state
** into a malloc'd buffer (no Lua memory, so it can outlive the state and
** cross threads) and decoded in the receiver's state. Tidal handles are the
** exception: their C objects are shared by reference, and the buffer holds a
** counted reference to each until tidal__xfer_discard.
**
** Format (native byte order: a buffer never leaves the process):
**
**   buffer  := magic(0xA0 | 1 if it holds handles) varint(n) value*n
**   value   := 0x00 nil | 0x01 false | 0x02 true
**            | 0x80+v        integer 0..127
**            | 0x03 zigzag-varint      other integers
**            | 0x04 8 bytes            float (lua_Number)
**            | 0x40+len bytes          string shorter than 64 bytes
**            | 0x05 varint(len) bytes  longer string
**            | 0x06 varint(narr) varint(nhash) value*narr (key value)*nhash
**            | 0x07 nups u32(len) mac8 bytecode[len] upval*nups
**            | 0x08 type ptr8 mac8     handle (type = index in xtypes)
**            | 0x09 varint(i)          the i-th table/function/handle again
**            | 0x0A                    the receiving state's globals
**            | 0x0C varint(len) name mac8         a loaded module, by name
**            | 0x0D varint(len) "mod\0field" mac8  a field of a loaded module
**            | 0x0E varint(narr) varint(nhash) ...  a table with the
**                                    metatable tidal.Error (an error object)
**   upval   := value | 0x0B varint(i) n   shares upvalue n of function i
**
** Loaded modules cross by name: a function whose upvalue is a module table
** (local tidal = require("tidal")) or one of its C functions (local insert
** = table.insert) gets the receiving state's own module, required there.
**
** Tables, functions and handles are numbered in the order they first
** appear; a second path to one of them is a back reference, which keeps
** shared references and cycles. Upvalue cells shared between closures are
** tracked with lua_upvalueid and rebuilt with lua_upvaluejoin.
**
** Lua 5.4 does not verify bytecode, and a handle record carries a raw
** pointer: loading either from a corrupted buffer could crash. So both carry
** a MAC (SipHash-2-4) keyed by a random per-process key, and everything
** else is checked structurally (tags, lengths, back references, depth), so
** that malformed input gives an error, never a crash.
*/
#include "xfer/xfer.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

enum {
  XT_NIL,
  XT_FALSE,
  XT_TRUE,
  XT_INT,
  XT_FLT,
  XT_STR,
  XT_TABLE,
  XT_FUNC,
  XT_HANDLE,
  XT_REF,
  XT_GLOBALS,
  XT_UPREF, /* only where an upvalue is expected */
  XT_MODULE,
  XT_MODFIELD,
  XT_ERROR /* a table, then the receiver's tidal.Error metatable is set */
};
#define XT_SSTR 0x40   /* 0x40..0x7f: short string, length in low 6 bits */
#define XT_FIXINT 0x80 /* 0x80..0xff: integer in low 7 bits */

#define X_MAGIC 0xA0
#define X_HANDLES 0x01 /* in the magic byte: the buffer holds references */

/* ------------------------------------------------------ type registry */

/* The shareable userdata types, in the order they registered; a handle
** record names its type by its index here. The types register themselves
** (tidal__xfer_register, when tidal.core opens), so this layer knows none
** of them and links alone (the fuzzer links it with only a test type).
** Process-wide: a buffer may cross between any two states. Entries are
** written once, before the count that publishes them. */
#define MAXXTYPES 32
static const tidal_xtype *xtypes[MAXXTYPES];
static const tidal_xhooks *xhooks[MAXXTYPES]; /* optional, or NULL */
static atomic_int nxtypes;
static uv_mutex_t xtypes_mu;
static uv_once_t xtypes_once = UV_ONCE_INIT;

static void xtypes_init(void) {
  if (uv_mutex_init(&xtypes_mu)) abort();
}

int tidal__xfer_register(const tidal_xtype *t) {
  return tidal__xfer_register_hooks(t, NULL);
}

int tidal__xfer_register_hooks(const tidal_xtype *t, const tidal_xhooks *h) {
  int i, n;
  uv_once(&xtypes_once, xtypes_init);
  uv_mutex_lock(&xtypes_mu);
  n = atomic_load_explicit(&nxtypes, memory_order_relaxed);
  for (i = 0; i < n && xtypes[i] != t; i++) {
  }
  if (i == n) {
    if (n == MAXXTYPES) {
      uv_mutex_unlock(&xtypes_mu);
      return -1;
    }
    xtypes[n] = t;
    xhooks[n] = h;
    atomic_store_explicit(&nxtypes, n + 1, memory_order_release);
  }
  uv_mutex_unlock(&xtypes_mu);
  return 0;
}

static int xtypes_count(void) {
  return atomic_load_explicit(&nxtypes, memory_order_acquire);
}

/* ------------------------------------------------------------------- MAC */

static uint64_t mac_key[2];
static uv_once_t mac_once = UV_ONCE_INIT;

/* The key is made once per process. The fuzzer's build fixes it, so that
** the seed corpus (written by another process) carries valid MACs. */
static void mac_init(void) {
#ifdef TIDAL_XFER_FIXED_KEY
  mac_key[0] = 0x0706050403020100u;
  mac_key[1] = 0x0f0e0d0c0b0a0908u;
#else
  if (uv_random(NULL, NULL, mac_key, sizeof mac_key, 0, NULL) != 0) {
    /* no entropy source: still unpredictable enough for accidental
    ** corruption, which is what the MAC is mostly about */
    mac_key[0] = uv_hrtime() ^ (uint64_t)(uintptr_t)&mac_key;
    mac_key[1] = ((uint64_t)uv_os_getpid() << 32) ^ uv_hrtime();
  }
#endif
}

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                               \
  (v0 += v1, v1 = ROTL(v1, 13), v1 ^= v0, v0 = ROTL(v0, 32), v2 += v3,         \
   v3 = ROTL(v3, 16), v3 ^= v2, v0 += v3, v3 = ROTL(v3, 21), v3 ^= v0,         \
   v2 += v1, v1 = ROTL(v1, 17), v1 ^= v2, v2 = ROTL(v2, 32))

/* SipHash-2-4 of p[0..len) under the process key. */
static uint64_t xmac(const void *p, size_t len) {
  const unsigned char *in = (const unsigned char *)p;
  uint64_t v0, v1, v2, v3, m = 0;
  size_t i;
  uv_once(&mac_once, mac_init);
  v0 = 0x736f6d6570736575u ^ mac_key[0];
  v1 = 0x646f72616e646f6du ^ mac_key[1];
  v2 = 0x6c7967656e657261u ^ mac_key[0];
  v3 = 0x7465646279746573u ^ mac_key[1];
  for (i = 0; i + 8 <= len; i += 8) {
    memcpy(&m, in + i, 8);
    v3 ^= m, SIPROUND, SIPROUND, v0 ^= m;
  }
  m = (uint64_t)len << 56;
  for (; i < len; i++)
    m |= (uint64_t)in[i] << (8 * (i & 7));
  v3 ^= m, SIPROUND, SIPROUND, v0 ^= m;
  v2 ^= 0xff;
  SIPROUND, SIPROUND, SIPROUND, SIPROUND;
  return v0 ^ v1 ^ v2 ^ v3;
}

/* Reads a varint at *pp (not past end); 1, or 0 when malformed. */
static int rd_varint(const unsigned char **pp, const unsigned char *end,
                     uint64_t *out) {
  const unsigned char *p = *pp;
  uint64_t v = 0;
  int shift;
  for (shift = 0; p < end && shift <= 63; shift += 7) {
    unsigned c = *p++;
    if (shift == 63 && c > 1) return 0;
    v |= (uint64_t)(c & 0x7f) << shift;
    if (!(c & 0x80)) {
      *pp = p;
      *out = v;
      return 1;
    }
  }
  return 0;
}

/* ---------------------------------------------------------------- buffer */


static size_t varint(unsigned char *p, uint64_t v) {
  size_t n = 0;
  while (v >= 0x80) {
    p[n++] = (unsigned char)(v | 0x80);
    v >>= 7;
  }
  p[n++] = (unsigned char)v;
  return n;
}

static int put1(tidal_buf *b, unsigned char c) {
  if (b->len == b->cap && tidal__buf_grow(b, 1)) return -1;
  b->data[b->len++] = (char)c;
  return 0;
}

static int put_tagvar(tidal_buf *b, unsigned char tag, uint64_t v) {
  if (tidal__buf_grow(b, 11)) return -1;
  b->data[b->len++] = (char)tag;
  b->len += varint((unsigned char *)b->data + b->len, v);
  return 0;
}

static int put_bytes(tidal_buf *b, const void *p, size_t n) {
  if (tidal__buf_grow(b, n)) return -1;
  if (n) memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

/* nil, boolean, number or string at idx, whose lua_type is type: 0, or -1
** when out of memory. */
static int put_scalar(tidal_buf *b, lua_State *L, int idx, int type) {
  switch (type) {
  case LUA_TBOOLEAN:
    return put1(b, lua_toboolean(L, idx) ? XT_TRUE : XT_FALSE);
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx)) {
      uint64_t u = (uint64_t)lua_tointeger(L, idx);
      if (u < 0x80) return put1(b, (unsigned char)(XT_FIXINT | u));
      return put_tagvar(b, XT_INT, (u << 1) ^ (0 - (u >> 63))); /* zigzag */
    } else {
      lua_Number d = lua_tonumber(L, idx);
      if (tidal__buf_grow(b, 1 + sizeof d)) return -1;
      b->data[b->len++] = XT_FLT;
      memcpy(b->data + b->len, &d, sizeof d);
      b->len += sizeof d;
      return 0;
    }
  case LUA_TSTRING: {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    if (len < 64) {
      if (tidal__buf_grow(b, 1 + len)) return -1;
      b->data[b->len++] = (char)(XT_SSTR | len);
    } else if (put_tagvar(b, XT_STR, len)) {
      return -1;
    }
    return put_bytes(b, s, len);
  }
  default:
    return put1(b, XT_NIL);
  }
}

/* --------------------------------------------------------------- encoder */

/* How the encoder got to the value at a given depth, kept so that a refusal
** can name the path without costing anything when nothing is refused. */
enum { P_ARG, P_INDEX, P_KEY, P_KEYOF, P_UPVAL };
typedef struct xpath {
  unsigned char kind;
  int idx;       /* P_KEY: stack index of the key; P_UPVAL: the function */
  lua_Integer n; /* P_ARG, P_INDEX: the index; P_UPVAL: upvalue number */
} xpath;

typedef struct xheld {
  const tidal_xtype *t;
  void *obj;
  size_t ti; /* t's index (its hooks) */
} xheld;

typedef struct xenc {
  lua_State *L;
  tidal_buf *b;
  size_t base;      /* b->len before this encoding: where it starts */
  const char *root; /* the caller's name for the values ("args", ...) */
  int nvals;
  int mapslot; /* stack slot of the seen-map (object -> index) */
  int havemap;
  int firstslot; /* stack slot of the first object (a top-level value) */
  const void *first;
  const void *globals;
  lua_Integer nobj;
  xheld *held; /* handle references taken so far, dropped on failure */
  size_t nheld, heldcap;
  int modslot; /* stack slot of the module map (value -> name) */
  int havemod;
  xpath *path; /* path[d]: how depth d was reached */
  int pathcap;
  xpath path0[48]; /* enough for most values; deeper ones grow path */
} xenc;

static void enc_value(xenc *e, int idx, int depth);

static int enc_oom(xenc *e) {
  lua_pushliteral(e->L, "not enough memory");
  return lua_error(e->L);
}

#define ENC(e, call)                                                           \
  do {                                                                         \
    if ((call) != 0) enc_oom(e);                                               \
  } while (0)

static int is_ident(const char *s, size_t len) {
  static const char *const reserved[] = {
      "and",      "break",  "do",   "else", "elseif", "end",   "false", "for",
      "function", "goto",   "if",   "in",   "local",  "nil",   "not",   "or",
      "repeat",   "return", "then", "true", "until",  "while", NULL};
  size_t i;
  if (len == 0 || len > 40 || (s[0] >= '0' && s[0] <= '9')) return 0;
  for (i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (!(c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9')))
      return 0;
  }
  for (i = 0; reserved[i]; i++)
    if (strcmp(s, reserved[i]) == 0) return 0;
  return 1;
}

/* Adds the path segment for the key at k: .name, ["a b"], [1], [<table>] */
static void add_key(lua_State *L, luaL_Buffer *B, int k) {
  switch (lua_type(L, k)) {
  case LUA_TSTRING: {
    size_t len, i;
    const char *s = lua_tolstring(L, k, &len);
    if (is_ident(s, len)) {
      luaL_addchar(B, '.');
      luaL_addlstring(B, s, len);
      return;
    }
    luaL_addstring(B, "[\"");
    for (i = 0; i < len && i < 40; i++) {
      unsigned char c = (unsigned char)s[i];
      if (c == '"' || c == '\\') {
        luaL_addchar(B, '\\');
        luaL_addchar(B, (char)c);
      } else if (c == '\n') {
        luaL_addstring(B, "\\n");
      } else if (c < 0x20 || c == 0x7f) {
        lua_pushfstring(L, "\\%d", (int)c);
        luaL_addvalue(B);
      } else {
        luaL_addchar(B, (char)c);
      }
    }
    luaL_addstring(B, i < len ? "...\"]" : "\"]");
    return;
  }
  case LUA_TNUMBER:
    if (lua_isinteger(L, k))
      lua_pushfstring(L, "[%I]", lua_tointeger(L, k));
    else
      lua_pushfstring(L, "[%f]", lua_tonumber(L, k));
    break;
  case LUA_TBOOLEAN:
    lua_pushstring(L, lua_toboolean(L, k) ? "[true]" : "[false]");
    break;
  default:
    lua_pushfstring(L, "[<%s>]", luaL_typename(L, k));
  }
  luaL_addvalue(B);
}

static void add_segment(xenc *e, luaL_Buffer *B, const xpath *f) {
  lua_State *L = e->L;
  const char *name;
  switch (f->kind) {
  case P_ARG:
    luaL_addstring(B, e->root);
    if (e->nvals != 1) {
      lua_pushfstring(L, "[%I]", f->n);
      luaL_addvalue(B);
    }
    break;
  case P_INDEX:
    lua_pushfstring(L, "[%I]", f->n);
    luaL_addvalue(B);
    break;
  case P_KEY:
    add_key(L, B, f->idx);
    break;
  case P_KEYOF:
    luaL_addstring(B, "<key>");
    break;
  case P_UPVAL:
    name = lua_getupvalue(L, f->idx, (int)f->n);
    lua_pop(L, 1); /* the name lives in the function's prototype */
    lua_pushfstring(L, "<upvalue %s>", name ? name : "?");
    luaL_addvalue(B);
    break;
  }
}

/* Raises "cannot copy <what> at <path><why>". Paths deeper than 20
** segments keep their first and last 10. */
static void refuse(xenc *e, int depth, const char *what, const char *why) {
  lua_State *L = e->L;
  luaL_Buffer B;
  int d;
  luaL_checkstack(L, 4, NULL);
  luaL_buffinit(L, &B);
  luaL_addstring(&B, "cannot copy ");
  luaL_addstring(&B, what);
  luaL_addstring(&B, " at ");
  for (d = 0; d <= depth; d++) {
    if (depth > 20 && d == 10) {
      luaL_addstring(&B, "...");
      d = depth - 10;
    }
    add_segment(e, &B, &e->path[d]);
  }
  luaL_addstring(&B, why);
  luaL_pushresult(&B);
  lua_error(L);
}

static void ensure_map(xenc *e) {
  lua_State *L = e->L;
  if (e->havemap) return;
  lua_createtable(L, 0, 4);
  lua_pushvalue(L, e->firstslot);
  lua_pushinteger(L, 0);
  lua_rawset(L, -3);
  lua_replace(L, e->mapslot);
  e->havemap = 1;
}

/* The index of the object at idx if it was met before, else registers it
** and returns -1. The first object is always a top-level value (others are
** reached through it), so a message with one table needs no map. */
static lua_Integer enc_seen(xenc *e, int idx) {
  lua_State *L = e->L;
  const void *p = lua_topointer(L, idx);
  if (e->nobj == 0) {
    e->first = p;
    e->firstslot = idx;
    e->nobj = 1;
    return -1;
  }
  if (p == e->first) return 0;
  ensure_map(e);
  lua_pushvalue(L, idx);
  if (lua_rawget(L, e->mapslot) == LUA_TNUMBER) {
    lua_Integer i = lua_tointeger(L, -1);
    lua_pop(L, 1);
    return i;
  }
  lua_pop(L, 1);
  lua_pushvalue(L, idx);
  lua_pushinteger(L, e->nobj++);
  lua_rawset(L, e->mapslot);
  return -1;
}

/* The map from loaded modules (and the C functions in their fields) to
** their names: "mod", or "mod\0field". Built from package.loaded and cached
** in the registry until package.loaded changes: the cache is stamped with
** a hash of its entries (names and values by identity), so that a module
** unloaded and another loaded, or one reloaded, are seen. */
#define MODMAP_KEY "tidal.xfer.modmap"

static void ensure_modmap(xenc *e) {
  lua_State *L = e->L;
  uint64_t stamp = 14695981039346656037u;
  if (e->havemod) return;
  e->havemod = 1;
  if (lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE) != LUA_TTABLE) {
    lua_pop(L, 1); /* a state without the package library: no modules */
    lua_newtable(L);
  }
  int loaded = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, loaded)) {
    stamp = (stamp ^ (uintptr_t)lua_topointer(L, -2)) * 1099511628211u;
    stamp = (stamp ^ (uintptr_t)lua_topointer(L, -1)) * 1099511628211u;
    lua_pop(L, 1);
  }
  if (lua_getfield(L, LUA_REGISTRYINDEX, MODMAP_KEY) == LUA_TTABLE) {
    lua_getfield(L, -1, "\1stamp");
    if (lua_tointeger(L, -1) == (lua_Integer)stamp) {
      lua_pop(L, 1);
      lua_replace(L, e->modslot);
      lua_pop(L, 1); /* package.loaded */
      return;
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  lua_createtable(L, 0, 64);
  int map = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, loaded)) {
    if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TTABLE) {
      int mod = lua_gettop(L);
      if (lua_topointer(L, mod) != e->globals) { /* _G stays XT_GLOBALS */
        lua_pushvalue(L, mod);
        lua_pushvalue(L, mod - 1);
        lua_rawset(L, map);
      }
      lua_pushnil(L);
      while (lua_next(L, mod)) {
        if (lua_type(L, -2) == LUA_TSTRING && lua_iscfunction(L, -1)) {
          lua_pushvalue(L, -1);
          lua_pushvalue(L, mod - 1);
          lua_pushlstring(L, "", 1); /* a NUL between module and field */
          lua_pushvalue(L, -5);
          lua_concat(L, 3);
          lua_rawset(L, map);
        }
        lua_pop(L, 1);
      }
    }
    lua_pop(L, 1);
  }
  lua_pushinteger(L, (lua_Integer)stamp);
  lua_setfield(L, map, "\1stamp");
  lua_pushvalue(L, map);
  lua_setfield(L, LUA_REGISTRYINDEX, MODMAP_KEY);
  lua_replace(L, e->modslot);
  lua_pop(L, 1); /* package.loaded */
}

/* If the value at idx is a loaded module (or one of its C functions),
** writes its reference and returns 1. */
static int enc_module(xenc *e, int idx, unsigned char tag) {
  lua_State *L = e->L;
  size_t len;
  uint64_t mac;
  ensure_modmap(e);
  lua_pushvalue(L, idx);
  if (lua_rawget(L, e->modslot) != LUA_TSTRING) {
    lua_pop(L, 1);
    return 0;
  }
  const char *name = lua_tolstring(L, -1, &len);
  mac = xmac(name, len);
  ENC(e, put_tagvar(e->b, tag, len));
  ENC(e, put_bytes(e->b, name, len));
  ENC(e, put_bytes(e->b, &mac, 8));
  lua_pop(L, 1);
  return 1;
}

/* Entering a table or function at depth: check the limits, make room for
** the path frame of its contents. */
static void enc_enter(xenc *e, int depth, const char *what) {
  if (depth >= TIDAL_XFER_MAXDEPTH)
    refuse(e, depth, what, " (nested too deeply)");
  if (!lua_checkstack(e->L, 8)) refuse(e, depth, what, " (stack overflow)");
  if (depth + 1 >= e->pathcap) {
    int cap = 2 * e->pathcap;
    xpath *p = (xpath *)malloc((size_t)cap * sizeof *p);
    if (p == NULL) enc_oom(e);
    memcpy(p, e->path, (size_t)e->pathcap * sizeof *p);
    if (e->path != e->path0) free(e->path);
    e->path = p;
    e->pathcap = cap;
  }
}

/* One pass of lua_next. It yields the array part first, in order, so the
** leading run of keys 1, 2, 3... becomes the array section (no key bytes)
** and everything after it the pairs; a table built out of order is only
** less compact. Both counts are known at the end: their bytes are
** reserved and patched (a count of 128 or more moves the contents up). */
/* Is t's metatable the one that crosses (TIDAL_XFER_KEEPMT: error
** objects)? The other metatables stay behind. */
static int is_error_mt(lua_State *L, int t) {
  int is;
  if (!lua_getmetatable(L, t)) return 0;
  luaL_getmetatable(L, TIDAL_XFER_KEEPMT);
  is = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return is;
}

static void enc_table(xenc *e, int t, int depth) {
  lua_State *L = e->L;
  tidal_buf *b = e->b;
  lua_Integer narr = 0, ref;
  uint64_t nhash = 0;
  unsigned char tmp[20];
  size_t at, k;
  int key, inarray = 1;
  if (lua_topointer(L, t) == e->globals) {
    ENC(e, put1(b, XT_GLOBALS));
    return;
  }
  /* a module reached through a function's upvalue crosses by name */
  if (depth > 0 && e->path[depth].kind == P_UPVAL &&
      enc_module(e, t, XT_MODULE))
    return;
  if ((ref = enc_seen(e, t)) >= 0) {
    ENC(e, put_tagvar(b, XT_REF, (uint64_t)ref));
    return;
  }
  enc_enter(e, depth, "table");
  ENC(e, put1(b, is_error_mt(L, t) ? XT_ERROR : XT_TABLE));
  at = b->len;
  ENC(e, tidal__buf_grow(b, 2));
  b->len += 2;
  key = lua_gettop(L) + 1; /* the key, then the value, sit here */
  lua_pushnil(L);
  while (lua_next(L, t)) {
    if (inarray) {
      if (lua_isinteger(L, key) && lua_tointeger(L, key) == narr + 1) {
        e->path[depth + 1].kind = P_INDEX;
        e->path[depth + 1].n = ++narr;
        enc_value(e, key + 1, depth + 1);
        lua_settop(L, key);
        continue;
      }
      inarray = 0;
    }
    e->path[depth + 1].kind = P_KEYOF;
    enc_value(e, key, depth + 1);
    e->path[depth + 1].kind = P_KEY;
    e->path[depth + 1].idx = key;
    enc_value(e, key + 1, depth + 1);
    lua_settop(L, key);
    nhash++;
  }
  k = varint(tmp, (uint64_t)narr);
  k += varint(tmp + k, nhash);
  if (k > 2) {
    ENC(e, tidal__buf_grow(b, k - 2));
    memmove(b->data + at + k, b->data + at + 2, b->len - at - 2);
    b->len += k - 2;
  }
  memcpy(b->data + at, tmp, k);
}

static int dump_writer(lua_State *L, const void *p, size_t sz, void *ud) {
  (void)L;
  return put_bytes((tidal_buf *)ud, p, sz) ? 1 : 0;
}

static void enc_function(xenc *e, int f, int depth) {
  lua_State *L = e->L;
  tidal_buf *b = e->b;
  lua_Debug ar;
  lua_Integer self, ref;
  size_t at;
  uint64_t mac;
  uint32_t len32;
  int n;
  if (lua_iscfunction(L, f)) {
    if (enc_module(e, f, XT_MODFIELD)) return;
    refuse(e, depth, "C function", " (only C functions of loaded modules can be copied)");
  }
  if ((ref = enc_seen(e, f)) >= 0) {
    ENC(e, put_tagvar(b, XT_REF, (uint64_t)ref));
    return;
  }
  self = e->nobj - 1;
  enc_enter(e, depth, "function");
  lua_pushvalue(L, f);
  lua_getinfo(L, ">u", &ar);
  ENC(e, put1(b, XT_FUNC));
  ENC(e, put1(b, ar.nups));
  at = b->len;
  ENC(e, tidal__buf_grow(b, 4 + 8));
  b->len += 4 + 8; /* length and MAC, filled in after the dump */
  lua_pushvalue(L, f);
  if (lua_dump(L, dump_writer, b, 0) != 0) enc_oom(e);
  lua_pop(L, 1);
  if (b->len - at - 12 > UINT32_MAX)
    refuse(e, depth, "function", " (bytecode larger than 4 GB)");
  len32 = (uint32_t)(b->len - at - 12);
  mac = xmac(b->data + at + 12, len32);
  memcpy(b->data + at, &len32, 4);
  memcpy(b->data + at + 4, &mac, 8);
  e->path[depth + 1].kind = P_UPVAL;
  e->path[depth + 1].idx = f;
  for (n = 1; n <= ar.nups; n++) {
    const char *name;
    void *id = lua_upvalueid(L, f, n);
    e->path[depth + 1].n = n;
    ensure_map(e);
    lua_pushlightuserdata(L, id);
    if (lua_rawget(L, e->mapslot) == LUA_TNUMBER) { /* a shared cell */
      lua_Integer v = lua_tointeger(L, -1);
      lua_pop(L, 1);
      ENC(e, put_tagvar(b, XT_UPREF, (uint64_t)(v >> 8)));
      ENC(e, put1(b, (unsigned char)((v & 0xff) + 1)));
      continue;
    }
    lua_pop(L, 1);
    lua_pushlightuserdata(L, id);
    lua_pushinteger(L, self * 256 + (n - 1));
    lua_rawset(L, e->mapslot);
    name = lua_getupvalue(L, f, n);
    if (name && strcmp(name, "_ENV") == 0)
      ENC(e, put1(b, XT_GLOBALS)); /* the receiver's own globals */
    else
      enc_value(e, lua_gettop(L), depth + 1);
    lua_pop(L, 1);
  }
}

/* A userdata: one of the shareable types, or refused. */
static void enc_userdata(xenc *e, int u, int depth) {
  lua_State *L = e->L;
  tidal_buf *b = e->b;
  const tidal_xtype *t = NULL;
  unsigned char rec[1 + 8]; /* type index, pointer: what the MAC covers */
  lua_Integer ref;
  size_t i, ti = 0;
  void *obj;
  uint64_t mac;
  if (lua_getmetatable(L, u)) {
    size_t ntypes = (size_t)xtypes_count();
    for (i = 0; i < ntypes && t == NULL; i++) {
      luaL_getmetatable(L, xtypes[i]->mt);
      if (lua_rawequal(L, -1, -2)) t = xtypes[ti = i];
      lua_pop(L, 1);
    }
    if (t == NULL) { /* say what it is when it has a name */
      lua_pushliteral(L, "__name");
      if (lua_rawget(L, -2) == LUA_TSTRING) {
        lua_pushfstring(L, "userdata (%s)", lua_tostring(L, -1));
        refuse(e, depth, lua_tostring(L, -1), "");
      }
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  if (t == NULL) refuse(e, depth, "userdata", "");
  if ((ref = enc_seen(e, u)) >= 0) {
    ENC(e, put_tagvar(b, XT_REF, (uint64_t)ref));
    return;
  }
  if (e->nheld == e->heldcap) { /* room first: a reference is never lost */
    size_t cap = e->heldcap ? 2 * e->heldcap : 4;
    xheld *h = (xheld *)realloc(e->held, cap * sizeof *h);
    if (h == NULL) enc_oom(e);
    e->held = h;
    e->heldcap = cap;
  }
  obj = t->share(L, u);
  if (obj == NULL) {
    if (xhooks[ti] == NULL || xhooks[ti]->refusal == NULL ||
        !xhooks[ti]->refusal(L, u))
      lua_pushfstring(L, "closed %s", t->mt);
    refuse(e, depth, lua_tostring(L, -1), "");
  }
  e->held[e->nheld].ti = ti;
  e->held[e->nheld].t = t;
  e->held[e->nheld++].obj = obj;
  rec[0] = (unsigned char)ti;
  memset(rec + 1, 0, 8);
  memcpy(rec + 1, &obj, sizeof obj < 8 ? sizeof obj : 8);
  mac = xmac(rec, sizeof rec);
  ENC(e, put1(b, XT_HANDLE));
  ENC(e, put_bytes(b, rec, sizeof rec));
  ENC(e, put_bytes(b, &mac, 8));
  b->data[e->base] |= X_HANDLES;
}

static void enc_value(xenc *e, int idx, int depth) {
  lua_State *L = e->L;
  int type = lua_type(L, idx);
  switch (type) {
  case LUA_TTABLE:
    enc_table(e, idx, depth);
    break;
  case LUA_TFUNCTION:
    enc_function(e, idx, depth);
    break;
  case LUA_TUSERDATA:
    enc_userdata(e, idx, depth);
    break;
  case LUA_TLIGHTUSERDATA:
    refuse(e, depth, "light userdata", "");
    break;
  case LUA_TTHREAD:
    refuse(e, depth, "coroutine", "");
    break;
  default:
    ENC(e, put_scalar(e->b, L, idx, type));
  }
}

/* Runs under lua_pcall: [xenc*, values...]. */
static int enc_protected(lua_State *L) {
  xenc *e = (xenc *)lua_touserdata(L, 1);
  int i;
  lua_pushnil(L); /* the seen-map's slot, filled when needed */
  e->mapslot = lua_gettop(L);
  lua_pushnil(L); /* the module map's slot, likewise */
  e->modslot = lua_gettop(L);
  e->havemod = 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
  e->globals = lua_topointer(L, -1); /* anchored by the registry */
  lua_pop(L, 1);
  for (i = 1; i <= e->nvals; i++) {
    e->path[0].kind = P_ARG;
    e->path[0].n = i;
    enc_value(e, i + 1, 0);
  }
  return 0;
}

int tidal__xfer_encode(lua_State *L, int first, int n, const char *root,
                       tidal_buf *out) {
  size_t base = out->len, header;
  int i, status, fresh = out->data == NULL; /* (freed again on failure) */
  xenc enc, *e;
  first = lua_absindex(L, first);
  if (put_tagvar(out, X_MAGIC, (uint64_t)n)) goto oom;
  header = out->len;
  for (i = 0; i < n; i++) { /* only scalars: nothing can fail but memory */
    int t = lua_type(L, first + i);
    if (t != LUA_TNIL && t != LUA_TBOOLEAN && t != LUA_TNUMBER &&
        t != LUA_TSTRING)
      break;
    if (put_scalar(out, L, first + i, t)) goto oom;
  }
  if (i == n) return 0;
  /* Tables, functions, userdata: a protected call contains the memory
  ** errors and the refusals, after which nothing is left behind. */
  out->len = header;
  e = &enc;
  e->path = e->path0;
  e->pathcap = (int)(sizeof e->path0 / sizeof e->path0[0]);
  e->L = L;
  e->b = out;
  e->base = base;
  e->root = root ? root : "value";
  e->nvals = n;
  e->havemap = 0;
  e->firstslot = 0;
  e->first = NULL;
  e->nobj = 0;
  e->held = NULL;
  e->nheld = e->heldcap = 0;
  if (!lua_checkstack(L, n + 4)) { /* the preallocated message: see below */
    out->len = base;
    if (fresh) tidal__buf_free(out);
    lua_pushliteral(L, "not enough memory");
    return LUA_ERRMEM;
  }
  lua_pushcfunction(L, enc_protected);
  lua_pushlightuserdata(L, e);
  for (i = 0; i < n; i++)
    lua_pushvalue(L, first + i);
  status = lua_pcall(L, n + 1, 0, 0);
  if (status != LUA_OK) { /* give back the references taken so far */
    size_t j;
    for (j = 0; j < e->nheld; j++) {
      const tidal_xhooks *h = xhooks[e->held[j].ti];
      if (h != NULL && h->unshare != NULL)
        h->unshare(L, e->held[j].obj);
      else
        e->held[j].t->drop(e->held[j].obj);
    }
    out->len = base;
    if (fresh) tidal__buf_free(out); /* as before: no memory held */
  }
  free(e->held);
  if (e->path != e->path0) free(e->path);
  return status;
oom: /* Lua keeps this message preallocated: pushing it cannot raise */
  out->len = base;
  if (fresh) tidal__buf_free(out);
  lua_pushliteral(L, "not enough memory");
  return LUA_ERRMEM;
}

/* --------------------------------------------------------------- decoder */

typedef struct xdec {
  lua_State *L;
  const unsigned char *start, *p, *end;
  int handles; /* the magic byte allows handle records */
  int objslot; /* stack slot of the objects table (index + 1 -> object) */
  int haveobjs;
  int firstslot; /* stack slot of object 0 (a top-level value) */
  lua_Integer nobj;
} xdec;

static int dec_fail(xdec *d, const char *what) {
  return luaL_error(d->L, "malformed transfer buffer: %s at byte %d", what,
                    (int)(d->p - d->start));
}

static uint64_t dec_varint(xdec *d) {
  uint64_t v = 0;
  if (!rd_varint(&d->p, d->end, &v)) dec_fail(d, "bad varint");
  return v;
}

static void dec_need(xdec *d, uint64_t n) {
  if (n > (uint64_t)(d->end - d->p)) dec_fail(d, "truncated");
}

static void dec_register(xdec *d, int idx) {
  lua_State *L = d->L;
  if (d->nobj > 0) {
    if (!d->haveobjs) {
      lua_createtable(L, 4, 0);
      lua_pushvalue(L, d->firstslot);
      lua_rawseti(L, -2, 1);
      lua_replace(L, d->objslot);
      d->haveobjs = 1;
    }
    lua_pushvalue(L, idx);
    lua_rawseti(L, d->objslot, d->nobj + 1);
  } else {
    d->firstslot = lua_absindex(L, idx);
  }
  d->nobj++;
}

static void dec_object(xdec *d, uint64_t i) {
  if (i >= (uint64_t)d->nobj) dec_fail(d, "bad back reference");
  if (i == 0)
    lua_pushvalue(d->L, d->firstslot);
  else
    lua_rawgeti(d->L, d->objslot, (lua_Integer)i + 1);
}

static void dec_value(xdec *d, int depth);

static void dec_enter(xdec *d, int depth) {
  if (depth >= TIDAL_XFER_MAXDEPTH) dec_fail(d, "nested too deeply");
  luaL_checkstack(d->L, 8, "transfer buffer nested too deeply");
}

static void dec_table(xdec *d, int depth) {
  lua_State *L = d->L;
  uint64_t narr, nhash, i;
  int t;
  dec_enter(d, depth);
  narr = dec_varint(d);
  nhash = dec_varint(d);
  /* every value takes at least a byte: this bounds the sizes asked for */
  dec_need(d, narr);
  dec_need(d, nhash > UINT64_MAX / 2 ? UINT64_MAX : nhash * 2);
  lua_createtable(L, (int)(narr < INT_MAX ? narr : INT_MAX),
                  (int)(nhash < INT_MAX ? nhash : INT_MAX));
  t = lua_gettop(L);
  dec_register(d, t);
  for (i = 1; i <= narr; i++) {
    dec_value(d, depth + 1);
    lua_rawseti(L, t, (lua_Integer)i);
  }
  for (i = 0; i < nhash; i++) {
    dec_value(d, depth + 1);
    if (lua_isnil(L, -1)) dec_fail(d, "nil table key");
    if (lua_type(L, -1) == LUA_TNUMBER && !lua_isinteger(L, -1) &&
        lua_tonumber(L, -1) != lua_tonumber(L, -1))
      dec_fail(d, "NaN table key");
    dec_value(d, depth + 1);
    lua_rawset(L, t);
  }
}

typedef struct xreader {
  const char *p;
  size_t n;
} xreader;

static const char *dec_reader(lua_State *L, void *ud, size_t *size) {
  xreader *r = (xreader *)ud;
  (void)L;
  *size = r->n;
  r->n = 0;
  return *size ? r->p : NULL;
}

static void dec_function(xdec *d, int depth) {
  lua_State *L = d->L;
  lua_Debug ar;
  xreader rd;
  uint32_t len;
  uint64_t mac;
  int nups, f, n;
  dec_enter(d, depth);
  dec_need(d, 1 + 4 + 8);
  nups = *d->p++;
  memcpy(&len, d->p, 4);
  memcpy(&mac, d->p + 4, 8);
  d->p += 12;
  dec_need(d, len);
  if (xmac(d->p, len) != mac) dec_fail(d, "function bytecode fails its MAC");
  rd.p = (const char *)d->p;
  rd.n = len;
  if (lua_load(L, dec_reader, &rd, "=(transfer)", "b") != LUA_OK)
    dec_fail(d, lua_tostring(L, -1));
  d->p += len;
  f = lua_gettop(L);
  lua_pushvalue(L, f);
  lua_getinfo(L, ">u", &ar);
  if (ar.nups != nups) dec_fail(d, "wrong upvalue count");
  dec_register(d, f);
  for (n = 1; n <= nups; n++) {
    if (d->p < d->end && *d->p == XT_UPREF) {
      uint64_t i;
      int m;
      d->p++;
      i = dec_varint(d);
      dec_need(d, 1);
      m = *d->p++;
      dec_object(d, i);
      if (lua_type(L, -1) != LUA_TFUNCTION || m < 1)
        dec_fail(d, "bad shared upvalue");
      lua_pushvalue(L, -1);
      lua_getinfo(L, ">u", &ar);
      if (m > ar.nups) dec_fail(d, "bad shared upvalue");
      lua_upvaluejoin(L, f, n, -1, m);
      lua_pop(L, 1);
    } else {
      dec_value(d, depth + 1);
      lua_setupvalue(L, f, n);
    }
  }
}

static void dec_handle(xdec *d) {
  const unsigned char *rec;
  uint64_t mac;
  void *obj = NULL;
  dec_need(d, 1 + 8 + 8);
  rec = d->p;
  if (!d->handles) dec_fail(d, "unexpected handle");
  if (*rec >= xtypes_count()) dec_fail(d, "bad handle type");
  memcpy(&mac, rec + 9, 8);
  if (xmac(rec, 9) != mac) dec_fail(d, "handle fails its MAC");
  memcpy(&obj, rec + 1, sizeof obj < 8 ? sizeof obj : 8);
  d->p += 17;
  xtypes[*rec]->push(d->L, obj);
  dec_register(d, lua_gettop(d->L));
}

/* A loaded module (or a field of one), by name: the receiving state's own,
** required if it is not loaded yet. */
static void dec_module(xdec *d, int field) {
  lua_State *L = d->L;
  uint64_t len = dec_varint(d), mac;
  const char *name, *dot;
  dec_need(d, len);
  dec_need(d, len + 8);
  name = (const char *)d->p;
  memcpy(&mac, d->p + len, 8);
  if (xmac(name, (size_t)len) != mac) dec_fail(d, "module name fails its MAC");
  d->p += len + 8;
  dot = field ? (const char *)memchr(name, 0, (size_t)len) : NULL;
  if (field && dot == NULL) dec_fail(d, "bad module field");
  size_t modlen = dot ? (size_t)(dot - name) : (size_t)len;
  if (lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE) != LUA_TTABLE) {
    lua_pop(L, 1); /* no package library: nothing is loaded */
    lua_newtable(L);
  }
  lua_pushlstring(L, name, modlen);
  if (lua_rawget(L, -2) == LUA_TNIL) {
    lua_pop(L, 1);
    lua_getglobal(L, "require");
    lua_pushlstring(L, name, modlen);
    lua_call(L, 1, 1);
  }
  lua_remove(L, -2);
  if (field) {
    lua_pushlstring(L, dot + 1, (size_t)len - modlen - 1);
    lua_gettable(L, -2);
    lua_remove(L, -2);
  }
}

static void dec_value(xdec *d, int depth) {
  lua_State *L = d->L;
  unsigned tag;
  if (d->p >= d->end) dec_fail(d, "truncated");
  tag = *d->p++;
  if (tag >= XT_FIXINT) {
    lua_pushinteger(L, (lua_Integer)(tag & 0x7f));
    return;
  }
  if (tag >= XT_SSTR) {
    dec_need(d, tag & 0x3f);
    lua_pushlstring(L, (const char *)d->p, tag & 0x3f);
    d->p += tag & 0x3f;
    return;
  }
  switch (tag) {
  case XT_NIL:
    lua_pushnil(L);
    break;
  case XT_FALSE:
  case XT_TRUE:
    lua_pushboolean(L, tag == XT_TRUE);
    break;
  case XT_INT: {
    uint64_t z = dec_varint(d);
    lua_pushinteger(L, (lua_Integer)((z >> 1) ^ (0 - (z & 1))));
    break;
  }
  case XT_FLT: {
    lua_Number x;
    dec_need(d, sizeof x);
    memcpy(&x, d->p, sizeof x);
    d->p += sizeof x;
    lua_pushnumber(L, x);
    break;
  }
  case XT_STR: {
    uint64_t len = dec_varint(d);
    dec_need(d, len);
    lua_pushlstring(L, (const char *)d->p, (size_t)len);
    d->p += len;
    break;
  }
  case XT_TABLE:
    dec_table(d, depth);
    break;
  case XT_ERROR: /* (a state without the entry keeps a plain table) */
    dec_table(d, depth);
    if (luaL_getmetatable(L, TIDAL_XFER_KEEPMT) == LUA_TTABLE)
      lua_setmetatable(L, -2);
    else
      lua_pop(L, 1);
    break;
  case XT_FUNC:
    dec_function(d, depth);
    break;
  case XT_HANDLE:
    dec_handle(d);
    break;
  case XT_REF:
    dec_object(d, dec_varint(d));
    break;
  case XT_GLOBALS:
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
    break;
  case XT_MODULE:
  case XT_MODFIELD:
    dec_module(d, tag == XT_MODFIELD);
    break;
  default:
    d->p--;
    dec_fail(d, "bad tag");
  }
}

/* Runs under lua_pcall: [xdec*] -> the values. */
static int dec_protected(lua_State *L) {
  xdec *d = (xdec *)lua_touserdata(L, 1);
  uint64_t n, i;
  d->L = L;
  if (d->p == d->end || (*d->p & ~X_HANDLES) != X_MAGIC)
    return luaL_error(L, "malformed transfer buffer: bad header");
  d->handles = (*d->p++ & X_HANDLES) != 0;
  n = dec_varint(d);
  dec_need(d, n);
  luaL_checkstack(L, (int)(n < INT_MAX - 8 ? n : INT_MAX - 8) + 2,
                  "too many values in transfer buffer");
  lua_pushnil(L); /* the objects table's slot, filled when needed */
  d->objslot = lua_gettop(L);
  for (i = 0; i < n; i++)
    dec_value(d, 0);
  if (d->p != d->end) dec_fail(d, "trailing bytes");
  return (int)n;
}

/* The common small message (nil, booleans, numbers) allocates nothing, so
** it needs no protected call: returns the count pushed, or -1 (nothing
** pushed) to send the buffer down the general path. */
static int dec_fast(lua_State *L, const unsigned char *p,
                    const unsigned char *end) {
  uint64_t n, i;
  if (!rd_varint(&p, end, &n) || n > (uint64_t)(end - p) || n > 64 ||
      !lua_checkstack(L, (int)n))
    return -1;
  for (i = 0; i < n; i++) {
    unsigned tag;
    if (p >= end) break;
    tag = *p++;
    if (tag >= XT_FIXINT) {
      lua_pushinteger(L, (lua_Integer)(tag & 0x7f));
    } else if (tag == XT_NIL) {
      lua_pushnil(L);
    } else if (tag == XT_FALSE || tag == XT_TRUE) {
      lua_pushboolean(L, tag == XT_TRUE);
    } else if (tag == XT_INT) {
      uint64_t z;
      if (!rd_varint(&p, end, &z)) break;
      lua_pushinteger(L, (lua_Integer)((z >> 1) ^ (0 - (z & 1))));
    } else if (tag == XT_FLT && end - p >= (ptrdiff_t)sizeof(lua_Number)) {
      lua_Number x;
      memcpy(&x, p, sizeof x);
      p += sizeof x;
      lua_pushnumber(L, x);
    } else {
      break;
    }
  }
  if (i == n && p == end) return (int)n;
  lua_pop(L, (int)i);
  return -1;
}

int tidal__xfer_decode(lua_State *L, const char *data, size_t len) {
  const unsigned char *p = (const unsigned char *)data;
  int top = lua_gettop(L), n;
  xdec d;
  if (len > 0 && (*p & ~X_HANDLES) == X_MAGIC &&
      (n = dec_fast(L, p + 1, p + len)) >= 0)
    return n;
  d.start = d.p = p;
  d.end = p + len;
  d.haveobjs = 0;
  d.firstslot = 0;
  d.nobj = 0;
  /* Out here nothing may allocate (it could raise): this message is the
  ** state's preallocated one. */
  if (!lua_checkstack(L, 3)) {
    lua_pushliteral(L, "not enough memory");
    return -1;
  }
  lua_pushcfunction(L, dec_protected);
  lua_pushlightuserdata(L, &d);
  if (lua_pcall(L, 1, LUA_MULTRET, 0) != LUA_OK) return -1; /* message */
  return lua_gettop(L) - top;
}

/* --------------------------------------------------------------- discard */

typedef struct xwalk {
  const unsigned char *p, *end;
} xwalk;

static int walk_skip(xwalk *w, uint64_t n) {
  if (n > (uint64_t)(w->end - w->p)) return -1;
  w->p += n;
  return 0;
}

/* Skips one value of a buffer this process encoded, dropping the handle
** references it holds; 0, or -1 on anything malformed (then stops). */
static int walk_value(xwalk *w, int depth, int upval) {
  uint64_t a, b, i;
  unsigned tag;
  if (w->p >= w->end || depth > TIDAL_XFER_MAXDEPTH) return -1;
  tag = *w->p++;
  if (tag >= XT_FIXINT) return 0;
  if (tag >= XT_SSTR) return walk_skip(w, tag & 0x3f);
  switch (tag) {
  case XT_NIL:
  case XT_FALSE:
  case XT_TRUE:
  case XT_GLOBALS:
    return 0;
  case XT_INT:
  case XT_REF:
    return rd_varint(&w->p, w->end, &a) ? 0 : -1;
  case XT_FLT:
    return walk_skip(w, sizeof(lua_Number));
  case XT_STR:
    return rd_varint(&w->p, w->end, &a) ? walk_skip(w, a) : -1;
  case XT_MODULE:
  case XT_MODFIELD:
    return rd_varint(&w->p, w->end, &a) && a < UINT64_MAX - 8
               ? walk_skip(w, a + 8)
               : -1;
  case XT_UPREF:
    if (!upval || !rd_varint(&w->p, w->end, &a)) return -1;
    return walk_skip(w, 1);
  case XT_TABLE:
  case XT_ERROR:
    if (!rd_varint(&w->p, w->end, &a) || !rd_varint(&w->p, w->end, &b) ||
        a > (uint64_t)(w->end - w->p) || b > (uint64_t)(w->end - w->p) / 2)
      return -1;
    for (i = 0; i < a + 2 * b; i++)
      if (walk_value(w, depth + 1, 0)) return -1;
    return 0;
  case XT_FUNC: {
    uint32_t len;
    unsigned nups;
    if (w->end - w->p < 13) return -1;
    nups = *w->p;
    memcpy(&len, w->p + 1, 4);
    w->p += 13;
    if (walk_skip(w, len)) return -1;
    for (i = 0; i < nups; i++)
      if (walk_value(w, depth + 1, 1)) return -1;
    return 0;
  }
  case XT_HANDLE: {
    uint64_t m;
    void *obj = NULL;
    if (w->end - w->p < 17 || *w->p >= xtypes_count()) return -1;
    memcpy(&m, w->p + 9, 8);
    if (xmac(w->p, 9) != m) return -1;
    memcpy(&obj, w->p + 1, sizeof obj < 8 ? sizeof obj : 8);
    xtypes[*w->p]->drop(obj);
    w->p += 17;
    return 0;
  }
  default:
    return -1;
  }
}

int tidal__xfer_has_handles(const char *data, size_t len) {
  return len > 0 && (unsigned char)data[0] == (X_MAGIC | X_HANDLES);
}

void tidal__xfer_discard(const char *data, size_t len) {
  xwalk w;
  uint64_t n, i;
  /* only a buffer that holds handles has anything to release */
  if (len == 0 || (unsigned char)data[0] != (X_MAGIC | X_HANDLES)) return;
  w.p = (const unsigned char *)data + 1;
  w.end = (const unsigned char *)data + len;
  if (!rd_varint(&w.p, w.end, &n)) return;
  for (i = 0; i < n; i++)
    if (walk_value(&w, 0, 0)) return;
}

const tidal_xfer_api tidal__xfer_api = {tidal__xfer_encode, tidal__xfer_decode,
                                        tidal__xfer_discard,
                                        tidal__xfer_register};
