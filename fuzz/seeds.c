/*
** seeds.c: writes the fuzzer's seed corpus, valid encodings of a range of
** values, one file each, into the folder given as argument. Built with the
** same fixed MAC key as the fuzzer. No handles: a handle record carries a
** pointer into the process that wrote it.
*/
#include "xfer/xfer.h"

#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>

/* Each chunk returns the values of one seed. */
static const char *const seeds[] = {
    "return nil",
    "return true, false",
    "return 0, 127, 128, -1, math.maxinteger, math.mininteger",
    "return 0.5, -0.0, 1/0, 0/0, 2^53",
    "return 'hello', '', ('x'):rep(64), 'a\\0b'",
    "return {}",
    "return {1, 2, 3, nil, 5}",
    "return {a = 1, b = 'two', [3.5] = true, [false] = {}}",
    "local t = {} t.self = t t[t] = t return t",
    "local s = {} return {s, s, {s}}, s",
    "local t = {} for i = 1, 200 do t['k' .. i] = i end return t",
    "local t = {} for i = 1, 40 do t = {t} end return t",
    "return function(x) return x + 1 end",
    "local up = {1} return function() return up end, up",
    "local n = 0 return function() n = n + 1 return n end, "
    "function() return n end",
    "local function f(n) return n < 1 and 0 or f(n - 1) end return f",
    "return function() return print, _ENV end",
    "return _G",
    "local a, b = {}, {} a.b, b.a = b, a return {a, b}, "
    "function() return a end",
};

int main(int argc, char **argv) {
  size_t i;
  if (argc != 2) {
    fprintf(stderr, "usage: %s folder\n", argv[0]);
    return 2;
  }
  for (i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
    lua_State *L = luaL_newstate();
    tidal_buf b = {NULL, 0, 0};
    char path[4096];
    FILE *f;
    luaL_openlibs(L);
    if (luaL_dostring(L, seeds[i]) != LUA_OK ||
        tidal__xfer_encode(L, 1, lua_gettop(L), "seed", &b) != 0) {
      fprintf(stderr, "seed %zu: %s\n", i, lua_tostring(L, -1));
      return 1;
    }
    snprintf(path, sizeof path, "%s/seed-%02zu", argv[1], i);
    f = fopen(path, "wb");
    if (f == NULL || fwrite(b.data, 1, b.len, f) != b.len || fclose(f)) {
      perror(path);
      return 1;
    }
    free(b.data);
    lua_close(L);
  }
  return 0;
}
