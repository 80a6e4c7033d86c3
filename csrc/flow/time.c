/*
** time.c: tidal.sleep, tidal.sleep_until, tidal.yield, tidal.now, and
** tidal.interval.
**
** Points in time are tidal.now() values: seconds on uv_hrtime()'s clock,
** which is what the timer heap keeps (in ns).
**
** An interval keeps its deadlines as integer nanoseconds on the grid
** start + k * period, so nothing accumulates rounding or timer lateness: it
** does not drift. Tasks waiting in tick() queue on the interval, and the
** interval's own timer (armed for the next deadline while, and only while,
** a task waits) wakes every one of them; the first to run takes the tick
** and the others queue again in their order. So the interval holds no
** timer when nobody waits, a cancelled tick() takes nothing (wake, then
** take: the next call gets that tick), and no wake can be lost to a task
** that never runs again.
*/
#include "flow.h"

#include <math.h>
#include <string.h>

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

/* tidal.sleep_until(deadline): a tidal.now() value; past: yields once;
** nil or math.huge: until cancelled */
static int l_sleep_until(lua_State *L) {
  tidal_task *t;
  double at;
  int ty = lua_type(L, 1);
  if (ty == LUA_TNONE || ty == LUA_TNIL) {
    at = HUGE_VAL;
  } else if (ty == LUA_TNUMBER) {
    at = lua_tonumber(L, 1);
    if (isnan(at))
      return luaL_error(L, "tidal.sleep_until: the deadline must be a number "
                           "(a tidal.now() value), got nan");
  } else {
    return luaL_error(L,
                      "tidal.sleep_until: the deadline must be a number (a "
                      "tidal.now() value), got %s",
                      luaL_typename(L, 1));
  }
  t = tidal__wait_begin(L, "tidal.sleep_until");
  if (!(at * 1e9 > (double)uv_hrtime())) return yield_now(L, t);
  if (at == HUGE_VAL) return tidal__park(L, t, &forever_op, NULL, sleep_k);
  if (tidal__timer_start(t->w, &t->timer, tidal__deadline_at(at)))
    return luaL_error(L, "tidal.sleep_until: not enough memory");
  return tidal__park(L, t, &sleep_op, NULL, sleep_k);
}

/* ------------------------------------------------------------- interval */

#define INTERVAL_MT "tidal.Interval"

/* A tick taken less than this late is on time (timers fire up to a
** millisecond late): the missed-tick policy is for real stalls. Tokio
** uses the same 5 ms. */
#define IV_TOLERANCE 5000000u
/* 100 years, in ns: the longest period, and the farthest start */
#define IV_MAX 3153600000000000000u

enum { MISS_SKIP, MISS_BURST, MISS_DELAY };
static const char *const miss_names[] = {"skip", "burst", "delay", NULL};

typedef struct interval {
  uint64_t period, next; /* ns; next: the deadline of the next tick */
  tidal_ctimer timer;    /* at next, while tickers wait */
  tidal_worker *w;       /* of the tickers (and the timer's heap) */
  tidal_wq tickers;      /* tasks waiting in tick() */
  uint8_t policy, closed;
} interval;

/* A tidal.now() value as a deadline in ns (not clamped to now: a start in
** the past is a grid that began then). */
static uint64_t at_ns(double at) {
  uint64_t now = uv_hrtime();
  double ns = at * 1e9;
  if (!(ns > 0)) return 0;
  if (ns > (double)now && ns - (double)now > (double)IV_MAX)
    return now + IV_MAX;
  return (uint64_t)ns;
}

static lua_Number ns_seconds(uint64_t ns) {
  return (lua_Number)ns / 1e9;
}

static interval *check_iv(lua_State *L, const char *fname) {
  return (interval *)tidal__checkud(L, 1, TT_INTERVAL, fname);
}

static void wake_tickers(interval *iv) {
  tidal_task *t;
  while ((t = tidal__wq_pop(&iv->tickers)) != NULL) tidal__wake(t, 0);
}

/* the timer reached iv->next: every ticker runs, the first takes the tick */
static void interval_fire(tidal_worker *w, tidal_ctimer *ct) {
  (void)w;
  wake_tickers(tidal__container_of(ct, interval, timer));
}

/* Takes the tick that is due (now >= next): pushes its deadline and the
** ticks skipped after it, and moves next on by the policy. */
static int take(lua_State *L, interval *iv, uint64_t now) {
  uint64_t d = iv->next, late = now - d, k = 0;
  if (late < IV_TOLERANCE || iv->policy == MISS_BURST) {
    iv->next = d + iv->period; /* burst: the missed ones come at once */
  } else if (iv->policy == MISS_SKIP) {
    k = late / iv->period;            /* grid points also past now */
    iv->next = d + (k + 1) * iv->period; /* the first one after now */
  } else {                            /* delay: a new grid from now */
    iv->next = now + iv->period;
  }
  lua_pushnumber(L, ns_seconds(d));
  lua_pushinteger(L, (lua_Integer)k);
  return 2;
}

static int tick_closed(lua_State *L) {
  lua_pushnil(L);
  tidal__error_push(L, "closed", "Interval:tick: the interval was closed");
  return 2;
}

static int tick_cancel(tidal_task *t) {
  interval *iv = (interval *)t->wobj;
  tidal__wq_remove(&iv->tickers, t);
  if (iv->tickers.head == NULL) tidal__timer_stop(t->w, &iv->timer.tm);
  return 1;
}

static const tidal_waitop tick_waitop = {"Interval:tick", tick_cancel, NULL};

static int tick_k(lua_State *L, int status, lua_KContext k);

/* stack: the interval alone */
static int tick_park(lua_State *L, tidal_task *t, interval *iv) {
  if (iv->tickers.head != NULL && iv->w != t->w)
    return luaL_error(L, "Interval:tick: this interval is being ticked by "
                         "another runtime's tasks");
  if (iv->timer.tm.id == 0) {
    if (tidal__ctimer_start(t->w, &iv->timer, iv->next, interval_fire))
      return luaL_error(L, "Interval:tick: not enough memory");
  }
  iv->w = t->w;
  tidal__wq_push(&iv->tickers, t);
  return tidal__park(L, t, &tick_waitop, iv, tick_k);
}

static int tick_k(lua_State *L, int status, lua_KContext k) {
  tidal_task *t = (tidal_task *)k;
  interval *iv = (interval *)lua_touserdata(L, 1);
  uint64_t now;
  (void)status;
  tidal__resumed(L, t);
  if (iv->closed) return tick_closed(L);
  now = uv_hrtime();
  /* the first woken ticker takes it; the others (or all, after a reset to
  ** a later deadline) wait for the next one */
  if (iv->tickers.head == NULL && now >= iv->next) return take(L, iv, now);
  return tick_park(L, t, iv);
}

static int l_tick(lua_State *L);
static const tidal_restart tick_again = {l_tick};

/* iv:tick() -> deadline, missed | nil, err (closed) */
static int l_tick(lua_State *L) {
  interval *iv = check_iv(L, "Interval:tick");
  tidal_task *t = tidal__wait_begin(L, "Interval:tick");
  uint64_t now;
  TIDAL_SPEND(L, t, &tick_again);
  lua_settop(L, 1);
  if (iv->closed) return tick_closed(L);
  now = uv_hrtime();
  if (iv->tickers.head == NULL && now >= iv->next) return take(L, iv, now);
  return tick_park(L, t, iv);
}

/* select's fast path for iv:tick_op(): the interval at base */
static int try_tick_op(lua_State *L, int base) {
  interval *iv = (interval *)lua_touserdata(L, base);
  uint64_t now;
  if (iv->closed) return tick_closed(L);
  now = uv_hrtime();
  if (iv->tickers.head == NULL && now >= iv->next) return take(L, iv, now);
  return -1;
}

static int l_tick_op(lua_State *L) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  check_iv(L, "Interval:tick_op");
  tidal__op_new(L, ctx, "Interval:tick", l_tick, try_tick_op, 1, 1);
  return 1;
}

/* iv:reset([deadline]): the next tick one period from now, or at deadline;
** the grid goes on from there */
static int l_reset(lua_State *L) {
  interval *iv = check_iv(L, "Interval:reset");
  uint64_t next;
  if (iv->closed) return tidal__closed_error(L, "Interval:reset", "interval");
  if (lua_isnoneornil(L, 2)) {
    next = uv_hrtime() + iv->period;
  } else {
    double at = lua_tonumber(L, 2);
    if (lua_type(L, 2) != LUA_TNUMBER || isnan(at))
      return luaL_error(L,
                        "Interval:reset: the deadline must be a number (a "
                        "tidal.now() value), got %s",
                        lua_type(L, 2) == LUA_TNUMBER ? "nan"
                                                      : luaL_typename(L, 2));
    next = at_ns(at);
  }
  iv->next = next;
  if (iv->timer.tm.id != 0) { /* tickers wait: for the new deadline */
    tidal__timer_stop(iv->w, &iv->timer.tm);
    if (tidal__ctimer_start(iv->w, &iv->timer, next, interval_fire)) {
      wake_tickers(iv); /* they arm it again themselves (or raise) */
      return luaL_error(L, "Interval:reset: not enough memory");
    }
  }
  return 0;
}

static int l_period(lua_State *L) {
  lua_pushnumber(L, ns_seconds(check_iv(L, "Interval:period")->period));
  return 1;
}

/* iv:close(): tickers waiting now, and every later tick(), get nil, err */
static int l_close(lua_State *L) {
  interval *iv = check_iv(L, "Interval:close");
  if (iv->closed) return 0;
  iv->closed = 1;
  if (iv->timer.tm.id != 0) tidal__timer_stop(iv->w, &iv->timer.tm);
  wake_tickers(iv);
  return 0;
}

/* Collected, nobody can be waiting: a ticker's stack holds the interval.
** Otherwise (__gc called by hand, or finalizers in any order at lua_close)
** the tickers stay parked, registered nowhere (tidal__wq_orphan), and it
** acts closed: its memory stays valid as long as anything can reach it. */
static int l_gc(lua_State *L) {
  interval *iv = check_iv(L, "Interval:__gc");
  iv->closed = 1;
  if (iv->timer.tm.id != 0) tidal__timer_stop(iv->w, &iv->timer.tm);
  tidal__wq_orphan(&iv->tickers, tidal__cur_worker(L));
  return 0;
}

static int l_tostring(lua_State *L) {
  interval *iv = check_iv(L, "Interval:__tostring");
  if (iv->closed)
    lua_pushliteral(L, "tidal.Interval (closed)");
  else
    lua_pushfstring(L, "tidal.Interval (every %f s, missed: %s)",
                    ns_seconds(iv->period), miss_names[iv->policy]);
  return 1;
}

/* tidal.interval(period [, opts]); opts: missed, start */
static int l_interval(lua_State *L) {
  tidal_ctx *ctx = (tidal_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  double period = lua_tonumber(L, 1);
  uint64_t pns, start = uv_hrtime();
  int policy = MISS_SKIP;
  interval *iv;
  if (lua_type(L, 1) != LUA_TNUMBER || !(period > 0) || period == HUGE_VAL)
    return luaL_error(L,
                      "tidal.interval: the period must be a number of "
                      "seconds > 0, got %s",
                      lua_type(L, 1) == LUA_TNUMBER
                          ? lua_pushfstring(L, "%f", (lua_Number)period)
                          : luaL_typename(L, 1));
  pns = period * 1e9 >= (double)IV_MAX ? IV_MAX : (uint64_t)(period * 1e9);
  if (pns == 0)
    return luaL_error(L, "tidal.interval: the period must be at least 1 ns");
  if (!lua_isnoneornil(L, 2)) {
    if (!lua_istable(L, 2))
      return luaL_error(L, "tidal.interval: options must be a table, got %s",
                        luaL_typename(L, 2));
    lua_pushnil(L);
    while (lua_next(L, 2)) {
      const char *key =
          lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
      if (key != NULL && strcmp(key, "missed") == 0) {
        const char *v = lua_tostring(L, -1);
        policy = -1;
        for (int i = 0; v != NULL && miss_names[i]; i++)
          if (lua_type(L, -1) == LUA_TSTRING && strcmp(v, miss_names[i]) == 0)
            policy = i;
        if (policy < 0)
          return luaL_error(L,
                            "tidal.interval: option 'missed' must be "
                            "\"skip\", \"burst\" or \"delay\", got %s",
                            lua_type(L, -1) == LUA_TSTRING
                                ? lua_pushfstring(L, "'%s'", v)
                                : luaL_typename(L, -1));
      } else if (key != NULL && strcmp(key, "start") == 0) {
        double at = lua_tonumber(L, -1);
        if (lua_type(L, -1) != LUA_TNUMBER || isnan(at))
          return luaL_error(L,
                            "tidal.interval: option 'start' must be a "
                            "number (a tidal.now() value), got %s",
                            lua_type(L, -1) == LUA_TNUMBER
                                ? "nan"
                                : luaL_typename(L, -1));
        start = at_ns(at);
      } else {
        return luaL_error(L,
                          "tidal.interval: unknown option %s (known: "
                          "missed, start)",
                          key ? lua_pushfstring(L, "'%s'", key)
                              : luaL_typename(L, -2));
      }
      lua_pop(L, 1);
    }
  }
  iv = (interval *)lua_newuserdatauv(L, sizeof *iv, 0);
  iv->period = pns;
  iv->next = start; /* the first tick completes at once (at start) */
  iv->timer.tm.id = 0;
  iv->w = NULL;
  iv->tickers.head = iv->tickers.tail = NULL;
  iv->policy = (uint8_t)policy;
  iv->closed = 0;
  tidal__setmt(L, &ctx->aux, TT_INTERVAL);
  return 1;
}

static const luaL_Reg iv_methods[] = {
    {"tick", l_tick},     {"tick_op", l_tick_op}, {"reset", l_reset},
    {"period", l_period}, {"close", l_close},     {NULL, NULL}};

static const luaL_Reg iv_meta[] = {{"__close", l_close},
                                   {"__gc", l_gc},
                                   {"__tostring", l_tostring},
                                   {NULL, NULL}};

static const luaL_Reg funcs[] = {{"sleep", l_sleep},
                                 {"sleep_until", l_sleep_until},
                                 {"yield", l_yield},
                                 {"now", l_now},
                                 {"sleep_op", l_sleep_op},
                                 {"interval", l_interval},
                                 {NULL, NULL}};

/* stack: module, ctx */
void tidal__time_open(lua_State *L) {
  tidal__newtype(L, TT_INTERVAL, INTERVAL_MT, "Interval", iv_meta,
                 iv_methods);
  tidal__register(L, funcs);
}
