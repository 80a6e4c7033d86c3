/*
** fs.c: tidal.fs's bindings (placeholder), registered in tidal.core as
** core._fs_* and wrapped by lua/tidal/fs.lua.
*/
#include "io.h"

/* stack: module, ctx */
void tidal__fs_open(lua_State *L) {
  (void)L;
}
