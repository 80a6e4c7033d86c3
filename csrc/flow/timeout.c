/*
** timeout.c: tidal.timeout(seconds, fn, ...), a cancel scope with a
** deadline. No extra coroutine: fn runs under a protected call in the current
** task. When the deadline passes, the task's pending wait is withdrawn and a
** "timeout" error is raised where it waits -- and at every later wait while
** the task is still inside the scope (sticky). The scope catches only its own
** expiry, so nested timeouts work: an outer expiry unwinds through the inner
** scope to the outer one.
*/
#include "tidal_int.h"

#include <math.h>
#include <stdlib.h>

static tidal_scope *scope_new(tidal_worker *w) {
  tidal_scope *sc = w->free_scopes;
  if (sc != NULL)
    w->free_scopes = sc->next;
  else if ((sc = (tidal_scope *)malloc(sizeof *sc)) == NULL)
    return NULL;
  sc->prev = NULL;
  sc->next = w->scopes;
  if (w->scopes) w->scopes->prev = sc;
  w->scopes = sc;
  sc->timer.pos = 0;
  sc->timer.kind = TK_SCOPE;
  sc->expired = 0;
  sc->err_ref = LUA_NOREF;
  return sc;
}

/* Leaves the scope (unlinked, timer stopped, back on the free list). */
static void scope_end(tidal_worker *w, lua_State *L, tidal_scope *sc) {
  if (sc->prev)
    sc->prev->next = sc->next;
  else
    w->scopes = sc->next;
  if (sc->next) sc->next->prev = sc->prev;
  tidal__timer_stop(w, &sc->timer);
  if (sc->expired && sc->task->tmo) sc->task->tmo--;
  if (L != NULL) luaL_unref(L, LUA_REGISTRYINDEX, sc->err_ref);
  sc->next = w->free_scopes;
  w->free_scopes = sc;
}

static void expire(tidal_scope *sc) {
  sc->expired = 1;
  sc->task->tmo++;
  if (sc->task->cancel == CK_NONE) /* a new cancellation, to be raised */
    sc->task->flags &= ~TF_CSEEN;
}

void tidal__scope_fire(tidal_worker *w, tidal_scope *sc) {
  (void)w;
  expire(sc);
  tidal__interrupt(sc->task);
}

/* Pushes the timeout error of the outermost expired scope of t (so it
** unwinds to that scope), creating it on first use. Returns 0 if none. */
int tidal__scope_error(lua_State *L, tidal_task *t) {
  tidal_scope *found = NULL;
  if (t->tmo == 0 || t->w == NULL) return 0;
  for (tidal_scope *sc = t->w->scopes; sc != NULL; sc = sc->next)
    if (sc->task == t && sc->expired) found = sc;
  if (found == NULL) return 0;
  if (found->err_ref == LUA_NOREF) {
    tidal__error_push(L, "timeout", "tidal.timeout: timed out after %f s",
                      found->seconds);
    lua_pushvalue(L, -1);
    found->err_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  } else {
    lua_rawgeti(L, LUA_REGISTRYINDEX, found->err_ref);
  }
  return 1;
}

void tidal__scopes_drop(tidal_worker *w, tidal_task *t) {
  tidal_scope *sc = w->scopes, *next;
  for (; sc != NULL; sc = next) {
    next = sc->next;
    if (t == NULL || sc->task == t) scope_end(w, w->L, sc);
  }
  if (t == NULL) {
    while ((sc = w->free_scopes) != NULL) {
      w->free_scopes = sc->next;
      free(sc);
    }
  }
}

static int timeout_k(lua_State *L, int status, lua_KContext k) {
  tidal_scope *sc = (tidal_scope *)k;
  tidal_task *t = sc->task;
  int mine = 0;
  if (status != LUA_OK && status != LUA_YIELD && sc->err_ref != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, sc->err_ref);
    mine = lua_rawequal(L, -1, -2);
    lua_pop(L, 1);
  }
  scope_end(t->w, L, sc);
  if (status == LUA_OK || status == LUA_YIELD) {
    lua_pushboolean(L, 1);
    lua_replace(L, 1); /* true in place of the seconds */
    return lua_gettop(L);
  }
  if (!mine) return lua_error(L); /* fn's own error, or a cancellation */
  lua_pushboolean(L, 0);
  lua_insert(L, -2);
  return 2;
}

/* tidal.timeout(seconds, fn, ...) -> true, ... | false, err */
static int l_timeout(lua_State *L) {
  tidal_task *t = tidal__task_check(L, "tidal.timeout");
  double s = HUGE_VAL;
  int ty = lua_type(L, 1);
  if (ty == LUA_TNUMBER) {
    s = lua_tonumber(L, 1);
    if (isnan(s))
      return luaL_error(L, "tidal.timeout: seconds must be a number, got nan");
  } else if (ty != LUA_TNIL) {
    return luaL_error(L,
                      "tidal.timeout: seconds must be a number (or nil for "
                      "no limit), got %s",
                      luaL_typename(L, 1));
  }
  tidal__check_callable(L, 2, "tidal.timeout", "a function to run");
  tidal_scope *sc = scope_new(t->w);
  if (sc == NULL) return luaL_error(L, "tidal.timeout: not enough memory");
  sc->task = t;
  sc->seconds = s > 0 ? s : 0;
  if (s <= 0) {
    expire(sc); /* already past: fn's first wait raises */
  } else if (s != HUGE_VAL) {
    if (tidal__timer_start(t->w, &sc->timer, tidal__deadline(s))) {
      scope_end(t->w, L, sc);
      return luaL_error(L, "tidal.timeout: not enough memory");
    }
  }
  int status = lua_pcallk(L, lua_gettop(L) - 2, LUA_MULTRET, 0,
                          (lua_KContext)sc, timeout_k);
  return timeout_k(L, status, (lua_KContext)sc);
}

static const luaL_Reg funcs[] = {{"timeout", l_timeout}, {NULL, NULL}};

/* stack: module, ctx */
void tidal__timeout_open(lua_State *L) {
  tidal__register(L, funcs);
}
