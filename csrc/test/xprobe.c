/*
** xprobe.c: "tidal.XProbe", a test-only handle type for transfer.c, in the
** tidal.testhooks module and the fuzzer (never in tidal.core).
**
** The simplest shape of a handle shared between Lua states by reference: a
** C object with an atomic reference count, held by a userdata in each
** state (and by every encoded buffer that carries it). A probe has an
** integer value that any copy can read and set, and its count of
** references, so the by-reference path of transfer.c and its reference
** counting can be tested in isolation. tidal.testhooks exposes it as
** probe() and probe_live(). Unlike tidal's own types, it builds its
** metatable on demand in any state: the real types are tested with the
** real types.
*/
#include "test/xprobe.h"

#include <stdlib.h>

#define XPROBE_MT "tidal.XProbe"

typedef struct xprobe {
  atomic_long refs;
  atomic_llong value;
} xprobe;

/* The userdata: a pointer, NULL once closed (so __gc after __close, or a
** failed creation, releases nothing twice). */
typedef struct xprobe_box {
  xprobe *p;
} xprobe_box;

/* Probes alive in the process, for the specs' leak checks. Process-global
** on purpose: probes, like channels, outlive the state that made them. */
static atomic_long live;

long tidal__xprobe_live(void) {
  return atomic_load(&live);
}

static void probe_drop(void *obj) {
  xprobe *p = (xprobe *)obj;
  if (atomic_fetch_sub(&p->refs, 1) == 1) {
    free(p);
    atomic_fetch_sub(&live, 1);
  }
}

static xprobe *check_probe(lua_State *L) {
  xprobe_box *box = (xprobe_box *)luaL_checkudata(L, 1, XPROBE_MT);
  if (box->p == NULL) luaL_error(L, "tidal.XProbe: the probe is closed");
  return box->p;
}

static int l_get(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)atomic_load(&check_probe(L)->value));
  return 1;
}

static int l_set(lua_State *L) {
  xprobe *p = check_probe(L);
  atomic_store(&p->value, (long long)luaL_checkinteger(L, 2));
  return 0;
}

static int l_refs(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)atomic_load(&check_probe(L)->refs));
  return 1;
}

static int l_close(lua_State *L) {
  xprobe_box *box = (xprobe_box *)luaL_checkudata(L, 1, XPROBE_MT);
  if (box->p) {
    xprobe *p = box->p;
    box->p = NULL;
    probe_drop(p);
  }
  return 0;
}

static int l_tostring(lua_State *L) {
  xprobe_box *box = (xprobe_box *)luaL_checkudata(L, 1, XPROBE_MT);
  if (box->p)
    lua_pushfstring(L, "tidal.XProbe (%p)", (void *)box->p);
  else
    lua_pushliteral(L, "tidal.XProbe (closed)");
  return 1;
}

static const luaL_Reg methods[] = {{"get", l_get},
                                   {"set", l_set},
                                   {"refs", l_refs},
                                   {"close", l_close},
                                   {NULL, NULL}};

/* Pushes the metatable, creating it in a state that has none: a probe may
** arrive in a state that never loaded tidal.core. */
static void push_mt(lua_State *L) {
  if (luaL_newmetatable(L, XPROBE_MT)) {
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, l_close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, l_tostring);
    lua_setfield(L, -2, "__tostring");
  }
}

/* A closed box first: if anything raises, nothing is held yet. */
static xprobe_box *new_box(lua_State *L) {
  xprobe_box *box = (xprobe_box *)lua_newuserdatauv(L, sizeof *box, 0);
  box->p = NULL;
  push_mt(L);
  lua_setmetatable(L, -2);
  return box;
}

void tidal__xprobe_new(lua_State *L, lua_Integer value) {
  xprobe_box *box = new_box(L);
  xprobe *p = (xprobe *)malloc(sizeof *p);
  if (p == NULL) luaL_error(L, "not enough memory");
  atomic_init(&p->refs, 1);
  atomic_init(&p->value, (long long)value);
  atomic_fetch_add(&live, 1);
  box->p = p;
}

static void *probe_share(lua_State *L, int idx) {
  xprobe_box *box = (xprobe_box *)lua_touserdata(L, idx);
  if (box->p == NULL) return NULL;
  atomic_fetch_add(&box->p->refs, 1);
  return box->p;
}

static void probe_push(lua_State *L, void *obj) {
  xprobe_box *box = new_box(L);
  atomic_fetch_add(&((xprobe *)obj)->refs, 1);
  box->p = (xprobe *)obj;
}

const tidal_xtype tidal__xprobe_xtype = {XPROBE_MT, probe_share, probe_push,
                                         probe_drop};
