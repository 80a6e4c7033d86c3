rockspec_format = "3.0"
package = "tidal"
version = "0.1.0-1"
source = {
  url = "https://example.invalid/releases/tidal-0.1.0.tar.gz",
  dir = "tidal-0.1.0",
}
description = {
  summary = "An async runtime for Lua 5.4 on libuv and libcurl: tasks, timers, channels, HTTP",
  detailed = [[
tidal runs Lua coroutines as tasks on a libuv event loop, written in C.
Straight-line code: every call that would wait parks the current task and
lets the others run.
]],
  license = "MIT",
}
dependencies = {
  "lua >= 5.4, < 5.5",
}
external_dependencies = {
  LIBUV = { header = "uv.h", library = "uv" },
  -- no header check for curl: Debian keeps curl/curl.h under a multiarch
  -- folder that LuaRocks does not search.
  LIBCURL = { library = "curl" },
}
build = {
  -- LuaRocks runs the Makefile's rock-build and rock-install targets: they
  -- compile every csrc/<layer>/*.c (but csrc/test/) with hidden
  -- visibility, so tidal.core exports only luaopen_tidal_core and the
  -- tidal_* functions of tidal.h, and install, beside the modules, what a
  -- C host links: host/include/tidal.h, host/lib/libtidal.a and
  -- host/lib/pkgconfig/tidal.pc under the rock's directory
  -- (luarocks show --rock-dir tidal).
  type = "make",
  build_target = "rock-build",
  install_target = "rock-install",
  variables = {
    CC = "$(CC)",
    CFLAGS = "$(CFLAGS)",
    LIBFLAG = "$(LIBFLAG)",
    LUA_INCDIR = "$(LUA_INCDIR)",
    LIBUV_INCDIR = "$(LIBUV_INCDIR)",
    LIBUV_LIBDIR = "$(LIBUV_LIBDIR)",
    LIBCURL_LIBDIR = "$(LIBCURL_LIBDIR)",
  },
  install_variables = {
    INST_PREFIX = "$(PREFIX)",
    INST_LIBDIR = "$(LIBDIR)",
    INST_LUADIR = "$(LUADIR)",
  },
  copy_directories = { "docs", "examples" },
}
test = {
  -- from a checkout: builds the rock into ./lua_modules and runs the specs
  -- against that tree
  type = "command",
  command = "make test",
}
