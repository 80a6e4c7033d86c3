/*
** auxlib/auxlib.h: the auxiliary library of tidal.core -- what Lua's
** lauxlib is to its libraries. Every other layer but xfer builds on it.
**
** Offers:
**   - the per-state context, aux's part of it (tidal_actx): one userdata
**     per Lua state, in the registry and as upvalue 1 of every C function
**     of the module (the kernel's tidal_ctx embeds it as first member);
**   - tidal's userdata types: registration (tidal__newtype), checked
**     access (tidal__checkud, tidal__self and its TIDAL_HOT cache), type
**     ids by layer range (each layer numbers its own types in its range);
**   - checks and messages: callable, describe, unknown option names, use
**     after close;
**   - error objects (kind, message; "tidal.Error") and the traceback store
**     kept beside errors (type.c, error.c);
**   - the handle helper: the life of a userdata over a shared C core
**     (handle.c).
**
** May use: nothing of tidal (lua.h, lauxlib.h, libc; no uv). It never
** names a task, a worker, a channel or anything else above it.
*/
#ifndef TIDAL_AUXLIB_H
#define TIDAL_AUXLIB_H

/* POSIX types that uv.h needs under -std=c11 (in the layers above, which
** include this header first) */
#ifndef _DEFAULT_SOURCE
#define _DEFAULT_SOURCE
#endif

#include <stddef.h>
#include <stdint.h>

#include <lauxlib.h>
#include <lua.h>

#define tidal__container_of(p, T, m) ((T *)((char *)(p)-offsetof(T, m)))

/* ------------------------------------------------------------ type ids */

/* Each layer numbers its userdata types from its base, up to the next
** base (a _Static_assert in its header checks). The ids are compile-time
** constants: hot paths index the context's tables with them. */
enum {
  TIDAL_TT_KERNEL = 0,
  TIDAL_TT_FLOW = 4,
  TIDAL_TT_SYNC = 8,
  TIDAL_TT_PARALLEL = 24,
  TIDAL_TT_HTTP = 28,
  TIDAL_TT_IO = 32,
  TIDAL_TT_LIB = 44,
  TIDAL_TT_MAX = 48
};

/* ------------------------------------------------------------- context */

/* aux's part of the per-state context. */
typedef struct tidal_actx {
  size_t size;      /* bytes the context was created with */
  int error_mt_ref; /* "tidal.Error" (registry) */
  int tbs_ref;      /* weak table: error value -> traceback */
  int stbs_ref;     /* string error -> traceback, bounded */
  int nstbs;
  const void *mt[TIDAL_TT_MAX]; /* metatables of the types */
  int mt_ref[TIDAL_TT_MAX];
  const char *tname[TIDAL_TT_MAX]; /* "Sender", for messages */
  /* Recently verified userdata of each type (direct-mapped by address).
  ** A type using it clears its entry in __gc, before the memory can be
  ** reused, and never caches an object that was already finalized. */
  void *hot[TIDAL_TT_MAX][4];
} tidal_actx;

#define TIDAL_HOT(a, tt, p) ((a)->hot[tt][((uintptr_t)(p) >> 4) & 3])

/* Pushes the state's context (registry "tidal.ctx"), creating it with size
** bytes (at least sizeof(tidal_actx), which comes first) when the state
** has none; *created says which. Raises if the context was created
** smaller than size. */
tidal_actx *tidal__actx_push(lua_State *L, size_t size, int *created);
/* The state's context, or NULL (a state that never loaded tidal.core). */
tidal_actx *tidal__actx(lua_State *L);
/* The opener of tidal.core (luaopen_tidal_core), given by the opener
** itself when it runs (any thread), so that tidal__actx_need can load the
** module into a state that receives a handle but never loaded it. */
void tidal__actx_opener(lua_CFunction open);
/* The state's context, loading tidal.core into a state that has none. May
** raise. */
tidal_actx *tidal__actx_need(lua_State *L);

/* stack: module, ctx. The error metatable and the traceback tables, once
** per state. */
void tidal__aux_open(lua_State *L);

/* --------------------------------------------------------------- types */

void tidal__register(lua_State *L, const luaL_Reg *funcs); /* [t, ctx] */
/* stack: module, ctx. Registers type tt once: metatable named mtname (meta
** functions and methods get ctx as upvalue 1; methods become __index);
** tname is its name in messages ("Sender"). */
void tidal__newtype(lua_State *L, int tt, const char *mtname,
                    const char *tname, const luaL_Reg *meta,
                    const luaL_Reg *methods);
const char *tidal__typename(const tidal_actx *a, int tt);
void *tidal__toud(lua_State *L, const tidal_actx *a, int idx, int tt);
/* the userdata at idx if it is of type tt (ctx from upvalue 1), else raises
** "fname: expected a <Type> ..." */
void *tidal__checkud(lua_State *L, int idx, int tt, const char *fname);
/* Sets type tt's metatable on the top value; a NULL (a state that never
** loaded tidal.core) loads it first (tidal__actx_need), so no method ever
** runs without its context. */
void tidal__setmt(lua_State *L, tidal_actx *a, int tt);
/* userdata of type tt at index 1, checked once per object (see a->hot):
** the caller stores it with TIDAL_HOT(a, tt, p) = p when it may. */
static inline void *tidal__self(lua_State *L, tidal_actx *a, int tt,
                                const char *fname) {
  void *p = lua_touserdata(L, 1);
  if (p != NULL && TIDAL_HOT(a, tt, p) == p) return p;
  return tidal__checkud(L, 1, tt, fname);
}

/* -------------------------------------------------------- checks, text */

int tidal__is_callable(lua_State *L, int idx);
void tidal__check_callable(lua_State *L, int idx, const char *fname,
                           const char *what);
/* For messages: the value at idx as "no value", "nil", "-1", "2.5", "true",
** "string '10'" (quoted, shortened), or its type name. Pushes the text
** (kept alive there) and returns it; idx must not be a pseudo-index. */
const char *tidal__describe(lua_State *L, int idx);
/* Raises "fname: unknown option 'k' (known: a, b)" for a key of the table
** at idx that is not in known (NULL-terminated). Raw traversal: no
** metamethod runs. */
void tidal__check_option_names(lua_State *L, int idx, const char *fname,
                               const char *const known[]);
/* Raises "fname: attempt to use a closed <what>", liolib's words for a
** file used after close() or collection. Every method of a type checks its
** object this way before touching what its __gc frees: a finalizer may
** resurrect an object that was finalized earlier (or __gc may be called by
** hand), and at lua_close finalizers run in any order. */
int tidal__closed_error(lua_State *L, const char *fname, const char *what);

/* ------------------------------------------------------------- handles */

/* The life of a handle: a userdata over a C core that other handles may
** share (handle.c). tidal_handle is the userdata's first member; what is
** specific to the type is in its tidal_htype. A handle is made closed and
** empty (nothing to undo if what follows raises) and then attached; a
** method checks it is open (else "fname: attempt to use a closed <what>");
** close() / __close close it once; __gc closes it and drops its core once
** (core NULL: finalized, every method checks). */
typedef struct tidal_handle {
  void *core; /* NULL once finalized (or before it is attached) */
  uint8_t closed;
} tidal_handle;

typedef struct tidal_htype {
  int tt;           /* its type id */
  const char *what; /* for the use-after-close error: "sender" */
  /* closes an open handle (h->closed is already set): explicit from
  ** close() / __close, else from __gc; NULL: closing it does nothing but
  ** mark it (a broadcast receiver's __close) */
  void (*close)(lua_State *L, tidal_handle *h, int explicit);
  void (*unref)(lua_State *L, void *core); /* drops the handle's reference */
} tidal_htype;

/* Pushes a zeroed userdata of size bytes (tidal_handle first) with nuv
** uservalues and c's metatable, closed and without core. */
void *tidal__handle_new(lua_State *L, tidal_actx *a, const tidal_htype *c,
                        size_t size, int nuv);
/* The handle is open over core (the caller took its reference). */
static inline void tidal__handle_attach(tidal_handle *h, void *core) {
  h->core = core;
  h->closed = 0;
}
/* The handle at idx, of c's type (else raises); open, else raises the
** use-after-close error. */
tidal_handle *tidal__handle_check(lua_State *L, int idx, const tidal_htype *c,
                                  const char *fname);
/* close() and __close of the handle at 1: closes it unless it is closed or
** finalized. 0 results. */
int tidal__handle_close(lua_State *L, const tidal_htype *c,
                        const char *fname);
/* __gc of the handle at 1: forgets it in the TIDAL_HOT cache, closes it
** (if open) and drops its core, once. */
int tidal__handle_gc(lua_State *L, const tidal_htype *c, const char *fname);

/* -------------------------------------------------------------- errors */

/* Failures of an expected kind are tables {kind = "...", message = "..."}
** with this metatable (error.c). */
#define TIDAL_ERROR_MT "tidal.Error"

void tidal__error_push(lua_State *L, const char *kind, const char *fmt, ...);
const char *tidal__error_kind(lua_State *L, int idx); /* NULL if not ours */
void tidal__push_errstring(lua_State *L, int idx);    /* never raises */
/* The traceback of where an error was first raised, kept beside it. */
void tidal__traceback_set(lua_State *L, tidal_actx *a, int err, int tb);
int tidal__traceback_get(lua_State *L, tidal_actx *a, int err);

#endif
