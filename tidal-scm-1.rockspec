rockspec_format = "3.0"
package = "tidal"
version = "scm-1"
source = {
  url = "git+https://example.invalid/tidal.git",
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
  type = "builtin",
  modules = {
    ["tidal.core"] = {
      sources = {
        "csrc/blocking.c",
        "csrc/broadcast.c",
        "csrc/channel.c",
        "csrc/core.c",
        "csrc/error.c",
        "csrc/http.c",
        "csrc/http_glue.c",
        "csrc/http_json.c",
        "csrc/http_xfer.c",
        "csrc/family.c",
        "csrc/group.c",
        "csrc/interrupt.c",
        "csrc/introspect.c",
        "csrc/lock.c",
        "csrc/notify.c",
        "csrc/oneshot.c",
        "csrc/op.c",
        "csrc/parallel.c",
        "csrc/runtime.c",
        "csrc/sched.c",
        "csrc/semaphore.c",
        "csrc/task.c",
        "csrc/time.c",
        "csrc/timeout.c",
        "csrc/timer.c",
        "csrc/transfer.c",
        "csrc/buf.c",
        "csrc/watch.c",
        "csrc/io/addr.c",
        "csrc/io/connect.c",
        "csrc/io/err.c",
        "csrc/io/file.c",
        "csrc/io/fs.c",
        "csrc/io/fsreq.c",
        "csrc/io/net.c",
        "csrc/io/process.c",
        "csrc/io/signal.c",
        "csrc/io/stream.c",
        "csrc/io/listener.c",
        "csrc/io/move.c",
        "csrc/io/udp.c",
        "csrc/io/worker.c",
      },
      libraries = { "uv", "curl" },
      incdirs = { "$(LIBUV_INCDIR)", "csrc" },
      libdirs = { "$(LIBUV_LIBDIR)", "$(LIBCURL_LIBDIR)" },
    },
    ["tidal"] = "lua/tidal/init.lua",
    ["tidal.http"] = "lua/tidal/http.lua",
    ["tidal.net"] = "lua/tidal/net.lua",
    ["tidal.fs"] = "lua/tidal/fs.lua",
    ["tidal.process"] = "lua/tidal/process.lua",
    ["tidal.signal"] = "lua/tidal/signal.lua",
  },
  copy_directories = { "docs", "examples" },
}
test = {
  type = "command",
  command = "busted --lua=lua5.4",
}
