/*
** signal.c: tidal.signal's bindings (placeholder), registered in tidal.core as
** core._signal_* and wrapped by lua/tidal/signal.lua.
*/
#include "io.h"

/* stack: module, ctx */
void tidal__signal_open(lua_State *L) {
  (void)L;
}
