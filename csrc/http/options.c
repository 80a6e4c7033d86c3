/*
** options.c: the options of tidal.http -- one table-driven parser for the
** client's options and a request's, the checks of their values, and herr,
** the error that points at the user's code.
*/
#include "http.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* Raises "where: message" like luaL_error, but "where" is the first caller
** outside tidal/http.lua (the facade), i.e. the user's code. */
int http__err(lua_State *L, const char *fmt, ...) {
  lua_Debug ar;
  int level = 1;
  va_list ap;
  while (lua_getstack(L, level, &ar)) {
    lua_getinfo(L, "S", &ar);
    if (strstr(ar.source, "tidal/http.lua") == NULL) break;
    level++;
  }
  luaL_where(L, level);
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  lua_concat(L, 2);
  return lua_error(L);
}

/* ----------------------------------------------------------- the values */

long http__opt_ms(lua_State *L, int idx, const char *fname, const char *opt) {
  double s;
  if (lua_isnil(L, idx)) return 0;
  if (lua_type(L, idx) != LUA_TNUMBER)
    http__err(L, "%s: option '%s' must be a number of seconds, got %s", fname,
              opt, luaL_typename(L, idx));
  s = lua_tonumber(L, idx);
  if (isnan(s)) http__err(L, "%s: option '%s' is nan", fname, opt);
  if (s == HUGE_VAL) return 0; /* no limit */
  if (s <= 0) return 1;        /* a negative duration counts as 0 */
  s = ceil(s * 1000);
  return s >= (double)LONG_MAX ? 0 : (long)s;
}

long http__opt_count(lua_State *L, int idx, const char *fname,
                     const char *opt) {
  if (!lua_isinteger(L, idx) || lua_tointeger(L, idx) < 0)
    http__err(L, "%s: option '%s' must be a non-negative integer, got %s",
              fname, opt,
              lua_type(L, idx) == LUA_TNUMBER ? "a fraction or negative"
                                              : luaL_typename(L, idx));
  lua_Integer v = lua_tointeger(L, idx);
  return v > LONG_MAX ? LONG_MAX : (long)v;
}

int http__opt_bool(lua_State *L, int idx, const char *fname,
                   const char *opt) {
  if (!lua_isboolean(L, idx))
    http__err(L, "%s: option '%s' must be a boolean, got %s", fname, opt,
              luaL_typename(L, idx));
  return lua_toboolean(L, idx);
}

/* max_body: bytes, or false / math.huge for no limit */
curl_off_t http__opt_body(lua_State *L, int idx, const char *fname) {
  if (lua_type(L, idx) == LUA_TBOOLEAN && !lua_toboolean(L, idx)) return -1;
  if (lua_type(L, idx) == LUA_TNUMBER && lua_tonumber(L, idx) == HUGE_VAL)
    return -1;
  if (!lua_isinteger(L, idx) || lua_tointeger(L, idx) < 0)
    http__err(L,
              "%s: option 'max_body' must be a byte count (a non-negative "
              "integer), or false for no limit, got %s",
              fname, luaL_typename(L, idx));
  return (curl_off_t)lua_tointeger(L, idx);
}

char *http__opt_string(lua_State *L, int idx, const char *fname,
                       const char *opt) {
  size_t n;
  if (lua_type(L, idx) != LUA_TSTRING)
    http__err(L, "%s: option '%s' must be a string, got %s", fname, opt,
              luaL_typename(L, idx));
  const char *s = lua_tolstring(L, idx, &n);
  if (strlen(s) != n || strpbrk(s, "\r\n"))
    http__err(L, "%s: option '%s' has a NUL, CR or LF byte", fname, opt);
  char *d = (char *)malloc(n + 1);
  if (d == NULL) http__err(L, "%s: not enough memory", fname);
  memcpy(d, s, n + 1);
  return d;
}

/* ----------------------------------------------------------- the parser */

static int unknown(lua_State *L, const http_opt *opts, const char *fname,
                   int key) {
  const char *k = lua_type(L, key) == LUA_TSTRING ? lua_tostring(L, key)
                                                  : luaL_typename(L, key);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (const http_opt *o = opts; o->name != NULL; o++) {
    if (o != opts) luaL_addstring(&b, ", ");
    luaL_addstring(&b, o->name);
  }
  luaL_pushresult(&b);
  return http__err(L, "%s: unknown option '%s' (known: %s)", fname, k,
                   lua_tostring(L, -1));
}

void http__opts_parse(lua_State *L, int idx, const http_opt *opts,
                      void *target, const char *fname) {
  char *base = (char *)target;
  idx = lua_absindex(L, idx);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
    int v = lua_gettop(L);
    const http_opt *o = opts;
    while (o->name != NULL && strcmp(o->name, k) != 0) o++;
    switch (o->name == NULL ? -1 : o->kind) {
    case HO_MS:
      *(long *)(base + o->off) = http__opt_ms(L, v, fname, k);
      break;
    case HO_COUNT:
      *(long *)(base + o->off) = http__opt_count(L, v, fname, k);
      break;
    case HO_BOOL:
      *(int *)(base + o->off) = http__opt_bool(L, v, fname, k);
      break;
    case HO_BODY_LIMIT:
      *(curl_off_t *)(base + o->off) = http__opt_body(L, v, fname);
      break;
    case HO_STRING: {
      char **p = (char **)(base + o->off);
      free(*p);
      *p = NULL;
      *p = http__opt_string(L, v, fname, k);
      break;
    }
    case HO_CUSTOM:
      o->custom(L, v, target, fname);
      break;
    case HO_LUA: /* handled by the Lua side */
      break;
    default:
      unknown(L, opts, fname, v - 1);
    }
    lua_settop(L, v - 1);
  }
}
