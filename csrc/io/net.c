/*
** net.c: tidal.net's bindings (placeholder), registered in tidal.core as
** core._net_* and wrapped by lua/tidal/net.lua.
*/
#include "io.h"

/* stack: module, ctx */
void tidal__net_open(lua_State *L) {
  (void)L;
}
