/*
** init.c: luaopen_tidal_core, the only place that lists every layer's
** open function -- as Lua's linit.c lists its libraries. Each open
** function registers its functions in the module table and its types in
** the state's context (stack: module, ctx).
*/
#include "lib.h"

int luaopen_tidal_core(lua_State *L) {
  tidal__actx_opener(luaopen_tidal_core); /* for states that get handles */
  lua_newtable(L);
  tidal__ctx_open(L);
  tidal__aux_open(L);
  /* error objects cross states as error objects (the value layer keeps
  ** this one metatable with its tables) */
  luaL_getmetatable(L, TIDAL_ERROR_MT);
  lua_setfield(L, LUA_REGISTRYINDEX, TIDAL_XFER_KEEPMT);
  tidal__errors_open(L);
  tidal__kernel_open(L);
  tidal__handle_open(L);
  tidal__runtime_open(L);
  tidal__time_open(L);
  tidal__timeout_open(L);
  tidal__group_open(L);
  tidal__channel_open(L);
  tidal__oneshot_open(L);
  tidal__broadcast_open(L);
  tidal__watch_open(L);
  tidal__lock_open(L);
  tidal__semaphore_open(L);
  tidal__notify_open(L);
  tidal__op_open(L);
  tidal__rhandle_open(L);
  tidal__parallel_open(L);
  tidal__blocking_open(L);
  tidal__introspect_open(L);
  tidal__http_open(L);
  tidal__net_open(L);
  tidal__fs_open(L);
  tidal__process_open(L);
  tidal__signal_open(L);
  lua_pop(L, 1);
  /* (for tidal.testhooks, which links none of tidal.core) */
  lua_pushlightuserdata(L, (void *)&tidal__xfer_api);
  lua_setfield(L, LUA_REGISTRYINDEX, TIDAL_XFER_API_KEY);
  lua_pushliteral(L, TIDAL_VERSION);
  lua_setfield(L, -2, "_VERSION");
  return 1;
}
