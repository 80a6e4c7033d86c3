/*
** net.c: tidal.net's opener. The module's functions are registered in
** tidal.core as core._net_* and wrapped by lua/tidal/net.lua (option
** checks, name resolution, timeouts); the types' methods are C.
*/
#include "net.h"

/* stack: module, ctx */
void tidal__net_open(lua_State *L) {
  io__stream_open(L);
  io__listener_open(L);
  io__connect_open(L);
  io__addr_open(L);
  io__udp_open(L);
  io__move_open(L);
}
