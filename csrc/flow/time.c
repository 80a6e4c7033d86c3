/*
** time.c: tidal.sleep, tidal.yield, tidal.now.
*/
#include "flow.h"

#include <math.h>

static int sleep_cancel(tidal_task *t) {
  tidal__timer_stop(t->w, &t->timer);
  return 1;
}

static int forever_cancel(tidal_task *t) {
  (void)t;
  return 1;
}

static const tidal_waitop sleep_op = {"tidal.sleep", sleep_cancel, NULL};
static const tidal_waitop forever_op = {"tidal.sleep(forever)",
                                        forever_cancel, NULL};

static int sleep_k(lua_State *L, int status, lua_KContext k) {
  (void)status;
  tidal__resumed(L, (tidal_task *)k);
  return 0;
}

static int yield_k(lua_State *L, int status, lua_KContext k) {
  tidal_task *t = (tidal_task *)k;
  (void)status;
  if (t->cancel | t->tmo) tidal__raise_cancel(L, t);
  return 0;
}

static int yield_now(lua_State *L, tidal_task *t) {
  return tidal__yield(L, t, yield_k);
}

/* tidal.sleep(seconds): nil or math.huge sleeps until cancelled */
static int l_sleep(lua_State *L) {
  tidal_task *t;
  double s;
  int ty = lua_type(L, 1);
  if (ty == LUA_TNONE || ty == LUA_TNIL) {
    s = HUGE_VAL;
  } else if (ty == LUA_TNUMBER) {
    s = lua_tonumber(L, 1);
    if (isnan(s))
      return luaL_error(L, "tidal.sleep: seconds must be a number, got nan");
  } else {
    return luaL_error(L, "tidal.sleep: seconds must be a number, got %s",
                      luaL_typename(L, 1));
  }
  t = tidal__wait_begin(L, "tidal.sleep");
  if (s <= 0) return yield_now(L, t);
  if (s == HUGE_VAL) return tidal__park(L, t, &forever_op, NULL, sleep_k);
  if (tidal__timer_start(t->w, &t->timer, tidal__deadline(s)))
    return luaL_error(L, "tidal.sleep: not enough memory");
  return tidal__park(L, t, &sleep_op, NULL, sleep_k);
}

/* select's fast path for tidal.sleep_op(s): done at once if s <= 0 */
static int try_sleep_op(lua_State *L, int base) {
  return lua_tonumber(L, base) <= 0 ? 0 : -1;
}

/* tidal.sleep_op(seconds): the wait as a value (a select branch) */
static int l_sleep_op(lua_State *L) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  if (lua_type(L, 1) != LUA_TNUMBER && !lua_isnoneornil(L, 1))
    return luaL_error(L, "tidal.sleep_op: seconds must be a number, got %s",
                      luaL_typename(L, 1));
  if (lua_isnoneornil(L, 1)) {
    lua_settop(L, 0);
    lua_pushnumber(L, HUGE_VAL);
  }
  if (isnan(lua_tonumber(L, 1)))
    return luaL_error(L, "tidal.sleep_op: seconds must be a number, got nan");
  tidal__op_new(L, ctx, "tidal.sleep", l_sleep, try_sleep_op, 1, 1);
  return 1;
}

static int l_yield(lua_State *L) {
  return yield_now(L, tidal__wait_begin(L, "tidal.yield"));
}

static int l_now(lua_State *L) {
  lua_pushnumber(L, (lua_Number)uv_hrtime() / 1e9);
  return 1;
}

static const luaL_Reg funcs[] = {
    {"sleep", l_sleep},       {"yield", l_yield}, {"now", l_now},
    {"sleep_op", l_sleep_op}, {NULL, NULL}};

/* stack: module, ctx */
void tidal__time_open(lua_State *L) {
  tidal__register(L, funcs);
}
