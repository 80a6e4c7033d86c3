/*
** handle.c: the life of a handle -- a userdata over a C core that other
** handles may share (see auxlib.h): made closed and empty, attached,
** checked before use (use after close raises liolib's words), closed once,
** finalized once.
*/
#include "auxlib/auxlib.h"

#include <string.h>

void *tidal__handle_new(lua_State *L, tidal_actx *a, const tidal_htype *c,
                        size_t size, int nuv) {
  tidal_handle *h = (tidal_handle *)lua_newuserdatauv(L, size, nuv);
  memset(h, 0, size);
  h->closed = 1;
  tidal__setmt(L, a, c->tt);
  return h;
}

tidal_handle *tidal__handle_check(lua_State *L, int idx, const tidal_htype *c,
                                  const char *fname) {
  tidal_handle *h = (tidal_handle *)tidal__checkud(L, idx, c->tt, fname);
  if (h->closed) tidal__closed_error(L, fname, c->what);
  return h;
}

static void close_once(lua_State *L, tidal_handle *h, const tidal_htype *c,
                       int explicit) {
  if (h->closed || c->close == NULL) return;
  h->closed = 1;
  c->close(L, h, explicit);
}

int tidal__handle_close(lua_State *L, const tidal_htype *c,
                        const char *fname) {
  tidal_handle *h = (tidal_handle *)tidal__checkud(L, 1, c->tt, fname);
  if (h->core != NULL) close_once(L, h, c, 1);
  return 0;
}

int tidal__handle_gc(lua_State *L, const tidal_htype *c, const char *fname) {
  tidal_actx *a = (tidal_actx *)lua_touserdata(L, lua_upvalueindex(1));
  tidal_handle *h = (tidal_handle *)tidal__checkud(L, 1, c->tt, fname);
  void *core = h->core;
  if (a != NULL && TIDAL_HOT(a, c->tt, h) == h) TIDAL_HOT(a, c->tt, h) = NULL;
  if (core == NULL) return 0;
  close_once(L, h, c, 0);
  h->closed = 1;
  h->core = NULL;
  c->unref(L, core);
  return 0;
}
