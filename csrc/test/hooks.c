/*
** hooks.c: tidal.testhooks, a test-only C module over value transfer
** (transfer.c). The Makefile builds it into the test tree next to
** tidal.core; the rockspec never builds or installs it, so no user script
** can reach these hooks (a buffer discarded twice is a use-after-free).
**
**   copy(...)        copies the values into a fresh lua_State and back
**   run(fn, ...)     copies fn and its arguments into a fresh lua_State,
**                    calls it there and copies the results back (what
**                    spawn_blocking does on a pooled state)
**   encode(...)      -> the encoded bytes as a string
**   decode(s)        -> the values encoded in s
**   discard(s)       releases the handle references s holds
**   bench(n, ...)    -> ns per encode+decode+discard of the values, bytes
**   probe([v])       -> a new "tidal.XProbe" (see xprobe.c)
**   probe_live()     -> probes alive in the process
**   fds(), children() what the process holds (test/procs.c)
**
** A string from encode holds handle references like any buffer: decode it
** as often as you like, then discard it exactly once.
**
** The module links none of tidal.core: it finds the transfer functions of
** the tidal.core already loaded (their table, in the registry), so that
** there is one registry of handle types and one MAC key, and it registers
** its probe type there.
*/
#define _GNU_SOURCE /* dladdr */
#include "test/xprobe.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#include <lualib.h>

/* tidal.core's transfer functions */
static struct {
  int (*encode)(lua_State *L, int first, int n, const char *root,
                tidal_buf *out);
  int (*decode)(lua_State *L, const char *data, size_t len);
  void (*discard)(const char *data, size_t len);
  int (*reg)(const tidal_xtype *t);
} X;

static void buf_free(tidal_buf *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

#define SCRATCH_MT "tidal.XferScratch"

/* What a hook holds while it works (two buffers, a second state), in a
** userdata created first, so that an error anywhere (out of memory, a
** refusal) leaves it to __gc to release instead of leaking. */
typedef struct scratch {
  tidal_buf a, b;
  lua_State *L2;
  int own_a, own_b; /* the buffer still owns its handle references */
} scratch;

static void scratch_release(scratch *s) {
  if (s->L2) {
    lua_close(s->L2);
    s->L2 = NULL;
  }
  if (s->own_a) X.discard(s->a.data, s->a.len);
  if (s->own_b) X.discard(s->b.data, s->b.len);
  s->own_a = s->own_b = 0;
  buf_free(&s->a);
  buf_free(&s->b);
}

static int l_scratch_gc(lua_State *L) {
  scratch_release((scratch *)luaL_checkudata(L, 1, SCRATCH_MT));
  return 0;
}

static int l_scratch_tostring(lua_State *L) {
  lua_pushliteral(L, "tidal.XferScratch");
  return 1;
}

static scratch *new_scratch(lua_State *L) {
  scratch *s = (scratch *)lua_newuserdatauv(L, sizeof *s, 0);
  memset(s, 0, sizeof *s);
  if (luaL_newmetatable(L, SCRATCH_MT)) {
    lua_pushcfunction(L, l_scratch_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, l_scratch_gc);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, l_scratch_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_setmetatable(L, -2);
  return s;
}

/* Raises the message on top after releasing s (the message is a string
** of L, so it survives). */
static int fail(lua_State *L, scratch *s) {
  scratch_release(s);
  return lua_error(L);
}

/* Moves the error message of the fresh state to L. */
static void move_message(lua_State *L, scratch *s) {
  const char *msg = lua_tostring(s->L2, -1);
  lua_pushstring(L, msg ? msg : "(error object is not a string)");
}

static int openlibs(lua_State *L) {
  luaL_openlibs(L);
  return 0;
}

/* Opens a fresh state in s->L2 and decodes s->a into it: the count of
** values, or -1 with the message moved to L. */
static int into_fresh_state(lua_State *L, scratch *s) {
  int m;
  s->L2 = luaL_newstate();
  if (s->L2 == NULL) {
    lua_pushliteral(L, "cannot create a Lua state");
    return -1;
  }
  lua_pushcfunction(s->L2, openlibs);
  if (lua_pcall(s->L2, 0, 0, 0) != LUA_OK ||
      (m = X.decode(s->L2, s->a.data, s->a.len)) < 0) {
    move_message(L, s);
    return -1;
  }
  if (!lua_checkstack(s->L2, 1)) { /* room for encode's message */
    lua_pushliteral(L, "not enough memory");
    return -1;
  }
  return m;
}

/* _xcopy(...): L -> bytes -> a fresh state -> bytes -> L. Each leg is a
** real crossing between states: nothing but bytes (and handle
** references) passes. */
static int l_xcopy(lua_State *L) {
  int n = lua_gettop(L), m;
  scratch *s = new_scratch(L);
  if (X.encode(L, 1, n, "args", &s->a)) return fail(L, s);
  s->own_a = 1;
  if ((m = into_fresh_state(L, s)) < 0) return fail(L, s);
  if (X.encode(s->L2, -m, m, "args", &s->b) != 0) {
    move_message(L, s);
    return fail(L, s);
  }
  s->own_b = 1;
  lua_close(s->L2); /* its copies of the handles drop their references */
  s->L2 = NULL;
  X.discard(s->a.data, s->a.len);
  s->own_a = 0;
  m = X.decode(L, s->b.data, s->b.len);
  if (m < 0) return fail(L, s);
  scratch_release(s);
  return m;
}

static int l_xrun(lua_State *L) {
  int n = lua_gettop(L), m;
  scratch *s = new_scratch(L);
  luaL_checktype(L, 1, LUA_TFUNCTION);
  if (X.encode(L, 1, n, "args", &s->a)) return fail(L, s);
  s->own_a = 1;
  if ((m = into_fresh_state(L, s)) < 0) return fail(L, s);
  if (lua_pcall(s->L2, m - 1, LUA_MULTRET, 0) != LUA_OK) {
    move_message(L, s);
    return fail(L, s);
  }
  if (!lua_checkstack(s->L2, 1)) { /* room for encode's message */
    lua_pushliteral(L, "not enough memory");
    return fail(L, s);
  }
  if (X.encode(s->L2, 1, lua_gettop(s->L2), "results", &s->b)) {
    move_message(L, s);
    return fail(L, s);
  }
  s->own_b = 1;
  lua_close(s->L2);
  s->L2 = NULL;
  m = X.decode(L, s->b.data, s->b.len);
  if (m < 0) return fail(L, s);
  scratch_release(s);
  return m;
}

static int l_xencode(lua_State *L) {
  int n = lua_gettop(L);
  scratch *s = new_scratch(L);
  if (X.encode(L, 1, n, "args", &s->a)) return fail(L, s);
  s->own_a = 1;
  lua_pushlstring(L, s->a.data, s->a.len);
  s->own_a = 0; /* the string carries the references now */
  scratch_release(s);
  return 1;
}

static int l_xdecode(lua_State *L) {
  size_t len;
  const char *data = luaL_checklstring(L, 1, &len);
  int n = X.decode(L, data, len);
  if (n < 0) return lua_error(L);
  return n;
}

static int l_xdiscard(lua_State *L) {
  size_t len;
  const char *data = luaL_checklstring(L, 1, &len);
  X.discard(data, len);
  return 0;
}

/* _xbench(iterations, ...): the cost of one message through a reused
** buffer, as a channel will pay it. */
static int l_xbench(lua_State *L) {
  lua_Integer iters = luaL_checkinteger(L, 1), i;
  int n = lua_gettop(L) - 1, m;
  scratch *s = new_scratch(L);
  uint64_t t0 = uv_hrtime();
  for (i = 0; i < iters; i++) {
    s->a.len = 0;
    if (X.encode(L, 2, n, "args", &s->a)) return fail(L, s);
    s->own_a = 1;
    if ((m = X.decode(L, s->a.data, s->a.len)) < 0) return fail(L, s);
    lua_pop(L, m);
    X.discard(s->a.data, s->a.len);
    s->own_a = 0;
  }
  lua_pushnumber(L, iters > 0 ? (double)(uv_hrtime() - t0) / iters : 0);
  lua_pushinteger(L, (lua_Integer)s->a.len);
  scratch_release(s);
  return 2;
}

static int l_xprobe(lua_State *L) {
  tidal__xprobe_new(L, luaL_optinteger(L, 1, 0));
  return 1;
}

static int l_xprobe_live(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)tidal__xprobe_live());
  return 1;
}

/* foreign(size, nuv): a userdata of another library, as it would make
** one: no metatable, its memory as the allocator gave it (not cleared) */
static int l_foreign(lua_State *L) {
  lua_newuserdatauv(L, (size_t)luaL_checkinteger(L, 1),
                    (int)luaL_optinteger(L, 2, 0));
  return 1;
}

static const luaL_Reg funcs[] = {{"foreign", l_foreign},
                                 {"copy", l_xcopy},
                                 {"run", l_xrun},
                                 {"encode", l_xencode},
                                 {"decode", l_xdecode},
                                 {"discard", l_xdiscard},
                                 {"bench", l_xbench},
                                 {"probe", l_xprobe},
                                 {"probe_live", l_xprobe_live},
                                 {NULL, NULL}};

/* Finds the transfer functions of the tidal.core loaded in L (it keeps
** their table in the registry: it exports no internal symbol). */
static void bind_core(lua_State *L) {
  Dl_info info;
  const tidal_xfer_api *api;
  lua_getglobal(L, "require");
  lua_pushliteral(L, "tidal.core");
  lua_call(L, 1, 0);
  lua_getfield(L, LUA_REGISTRYINDEX, TIDAL_XFER_API_KEY);
  api = (const tidal_xfer_api *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (api == NULL)
    luaL_error(L, "tidal.testhooks: tidal.core lacks the transfer functions");
  X.encode = api->encode;
  X.decode = api->decode;
  X.discard = api->discard;
  X.reg = api->reg;
  /* tidal.core's registry will point at the probe type: never unload */
  if (dladdr((void *)bind_core, &info) && info.dli_fname != NULL)
    dlopen(info.dli_fname, RTLD_NOW | RTLD_NODELETE);
  X.reg(&tidal__xprobe_xtype);
}

void tidal__procs_hooks(lua_State *L); /* test/procs.c: fds, children */

int luaopen_tidal_testhooks(lua_State *L) {
  bind_core(L);
  luaL_newlib(L, funcs);
  tidal__procs_hooks(L);
  return 1;
}
