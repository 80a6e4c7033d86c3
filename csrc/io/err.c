/*
** err.c: error objects for io failures.
**
** An expected failure (a missing file, a refused connection) is returned
** as nil, err: err is a tidal.Error with
**   kind     what happened, from one table below (docs/errors.md lists it)
**   message  "<fname>: <subject>: <strerror> (<ERRNO>)", e.g.
**            "tidal.fs.open: /etc/shadow: permission denied (EACCES)"
**   errno    libuv's name of the code ("ENOENT", "EAI_NONAME"); nil for
**            errors that do not come from the system (too_long, closed)
** and the subject's fields (path; host and port) set by the caller.
*/
#include "io.h"

#include <stdarg.h>
#include <string.h>

static const struct {
  int code;
  const char *kind;
} kinds[] = {
    {UV_ENOENT, "not_found"},
    {UV_ESRCH, "not_found"},
    {UV_EACCES, "permission_denied"},
    {UV_EPERM, "permission_denied"},
    {UV_EEXIST, "already_exists"},
    {UV_ENOTDIR, "not_a_directory"},
    {UV_EISDIR, "is_a_directory"},
    {UV_ENOTEMPTY, "not_empty"},
    {UV_EBUSY, "busy"},
    {UV_EXDEV, "cross_device"},
    {UV_ENOSPC, "no_space"},
    {UV_EROFS, "read_only"},
    {UV_ENAMETOOLONG, "name_too_long"},
    {UV_ELOOP, "too_many_links"},
    {UV_EMFILE, "too_many_open_files"},
    {UV_ENFILE, "too_many_open_files"},
    {UV_EFBIG, "too_large"},
    {UV_E2BIG, "too_large"},
    {UV_EINVAL, "invalid_argument"},
    {UV_ECONNREFUSED, "connection_refused"},
    {UV_ECONNRESET, "connection_reset"},
    {UV_ECONNABORTED, "connection_aborted"},
    {UV_EPIPE, "broken_pipe"},
    {UV_ENOTCONN, "not_connected"},
    {UV_EADDRINUSE, "address_in_use"},
    {UV_EADDRNOTAVAIL, "address_not_available"},
    {UV_ENETUNREACH, "network_unreachable"},
    {UV_ENETDOWN, "network_unreachable"},
    {UV_EHOSTUNREACH, "host_unreachable"},
    {UV_EHOSTDOWN, "host_unreachable"},
    {UV_ETIMEDOUT, "timeout"},
    {UV_EMSGSIZE, "message_too_large"},
    {UV_ENOMEM, "out_of_memory"},
    {UV_ENOBUFS, "out_of_memory"},
    {UV_ENOSYS, "unsupported"},
    {UV_ENOTSUP, "unsupported"},
    {UV_EAFNOSUPPORT, "unsupported"},
    {UV_EPROTONOSUPPORT, "unsupported"},
    {UV_ECANCELED, "cancelled"},
};

const char *io__kind(int uverr) {
  for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
    if (kinds[i].code == uverr) return kinds[i].kind;
  if (strncmp(uv_err_name(uverr), "EAI_", 4) == 0) return "dns";
  return "io";
}

void io__error_field(lua_State *L, const char *name, const char *s) {
  lua_pushstring(L, s);
  lua_setfield(L, -2, name);
}

static void verror_push(lua_State *L, int uverr, const char *fname,
                        const char *fmt, va_list ap) {
  luaL_Buffer b;
  luaL_checkstack(L, 8, "tidal: io error");
  luaL_buffinit(L, &b);
  luaL_addstring(&b, fname);
  luaL_addstring(&b, ": ");
  if (fmt != NULL) {
    lua_pushvfstring(L, fmt, ap);
    luaL_addvalue(&b);
    luaL_addstring(&b, ": ");
  }
  luaL_addstring(&b, uv_strerror(uverr));
  luaL_addstring(&b, " (");
  luaL_addstring(&b, uv_err_name(uverr));
  luaL_addchar(&b, ')');
  luaL_pushresult(&b);
  tidal__error_push(L, io__kind(uverr), "%s", lua_tostring(L, -1));
  lua_remove(L, -2);
  io__error_field(L, "errno", uv_err_name(uverr));
}

void io__error_push(lua_State *L, int uverr, const char *fname,
                    const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  verror_push(L, uverr, fname, fmt, ap);
  va_end(ap);
}

int io__fail(lua_State *L, int uverr, const char *fname, const char *fmt,
             ...) {
  va_list ap;
  luaL_checkstack(L, 2, "tidal: io error");
  lua_pushnil(L);
  va_start(ap, fmt);
  verror_push(L, uverr, fname, fmt, ap);
  va_end(ap);
  return 2;
}

int io__fail_kind(lua_State *L, const char *kind, const char *fmt, ...) {
  va_list ap;
  luaL_checkstack(L, 4, "tidal: io error");
  lua_pushnil(L);
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  tidal__error_push(L, kind, "%s", lua_tostring(L, -1));
  lua_remove(L, -2);
  return 2;
}
