/*
** scope.c: cancel scopes -- a deadline around a protected call in the
** current task (tidal.timeout, flow/timeout.c, is built on it). No extra
** coroutine: when the deadline passes, the task's pending wait is
** withdrawn and the scope's timeout error is raised where it waits -- and
** at every later wait while the task is still inside the scope (sticky).
** The error is the outermost expired scope's, so an outer expiry unwinds
** through an inner scope to the outer one, and each scope's caller
** recognises only its own error (tidal__scope_owns).
*/
#include "kernel.h"

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
  sc->timer.tm.id = 0;
  sc->expired = 0;
  sc->at = 0;
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
  tidal__timer_stop(w, &sc->timer.tm);
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

/* The deadline passed (after the poll, no Lua). */
static void scope_fire(tidal_worker *w, tidal_ctimer *ct) {
  tidal_scope *sc = tidal__container_of(ct, tidal_scope, timer);
  (void)w;
  expire(sc);
  tidal__interrupt(sc->task);
}

tidal_scope *tidal__scope_open(tidal_task *t, double seconds,
                               const char *label) {
  tidal_scope *sc = scope_new(t->w);
  if (sc == NULL) return NULL;
  sc->task = t;
  sc->seconds = seconds > 0 ? seconds : 0;
  sc->label = label;
  if (seconds <= 0) {
    expire(sc); /* already past: the first wait raises */
  } else if (seconds != HUGE_VAL) {
    if (tidal__ctimer_start(t->w, &sc->timer, tidal__deadline(seconds),
                            scope_fire)) {
      scope_end(t->w, NULL, sc);
      return NULL;
    }
  }
  return sc;
}

tidal_scope *tidal__scope_open_at(tidal_task *t, double at,
                                  const char *label) {
  tidal_scope *sc = scope_new(t->w);
  if (sc == NULL) return NULL;
  sc->task = t;
  sc->seconds = at;
  sc->label = label;
  sc->at = 1;
  if (!(at * 1e9 > (double)uv_hrtime())) {
    expire(sc); /* already past: the first wait raises */
  } else if (at != HUGE_VAL) {
    if (tidal__ctimer_start(t->w, &sc->timer, tidal__deadline_at(at),
                            scope_fire)) {
      scope_end(t->w, NULL, sc);
      return NULL;
    }
  }
  return sc;
}

int tidal__scope_owns(lua_State *L, tidal_scope *sc, int idx) {
  int mine;
  if (sc->err_ref == LUA_NOREF) return 0;
  idx = lua_absindex(L, idx);
  lua_rawgeti(L, LUA_REGISTRYINDEX, sc->err_ref);
  mine = lua_rawequal(L, -1, idx);
  lua_pop(L, 1);
  return mine;
}

void tidal__scope_close(lua_State *L, tidal_scope *sc) {
  scope_end(sc->task->w, L, sc);
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
    if (found->at)
      tidal__error_push(L, "timeout", "%s: deadline passed", found->label);
    else
      tidal__error_push(L, "timeout", "%s: timed out after %f s",
                        found->label, found->seconds);
    lua_pushvalue(L, -1);
    found->err_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  } else {
    lua_rawgeti(L, LUA_REGISTRYINDEX, found->err_ref);
  }
  return 1;
}

/* The scopes of t (NULL: all, and the free list) go: their continuations
** will never run (t was closed, or the worker is freed). */
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
