/*
** process.c: tidal.process's bindings (placeholder), registered in tidal.core as
** core._process_* and wrapped by lua/tidal/process.lua.
*/
#include "io.h"

/* stack: module, ctx */
void tidal__process_open(lua_State *L) {
  (void)L;
}
