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
        -- xfer/: values between Lua states (a leaf)
        "csrc/xfer/buf.c",
        "csrc/xfer/transfer.c",
        -- auxlib/: the auxiliary library: context, types, errors, handles
        "csrc/auxlib/error.c",
        "csrc/auxlib/handle.c",
        "csrc/auxlib/type.c",
        -- kernel/: tasks, workers, park/wake/cancel, timers, loops
        "csrc/kernel/ctx.c",
        "csrc/kernel/family.c",
        "csrc/kernel/interrupt.c",
        "csrc/kernel/loop.c",
        "csrc/kernel/poll.c",
        "csrc/kernel/sched.c",
        "csrc/kernel/scope.c",
        "csrc/kernel/task.c",
        "csrc/kernel/timer.c",
        "csrc/kernel/worker.c",
        "csrc/kernel/wq.c",
        -- flow/: timeout, select, join_all, groups, wait operations, sleep
        "csrc/flow/group.c",
        "csrc/flow/op.c",
        "csrc/flow/time.c",
        "csrc/flow/timeout.c",
        -- sync/: channels, locks, semaphores, notify, shared mode
        "csrc/sync/broadcast.c",
        "csrc/sync/channel.c",
        "csrc/sync/lock.c",
        "csrc/sync/notify.c",
        "csrc/sync/oneshot.c",
        "csrc/sync/semaphore.c",
        "csrc/sync/shared.c",
        "csrc/sync/watch.c",
        -- parallel/: records, spawn_parallel, spawn_blocking
        "csrc/parallel/blocking.c",
        "csrc/parallel/record.c",
        "csrc/parallel/rhandle.c",
        "csrc/parallel/spawn.c",
        -- http/: tidal.http's C core
        "csrc/http/client.c",
        "csrc/http/easy.c",
        "csrc/http/glue.c",
        "csrc/http/json.c",
        "csrc/http/options.c",
        -- io/: sockets, files, processes, signals (tidal.net, fs, process, signal)
        "csrc/io/addr.c",
        "csrc/io/connect.c",
        "csrc/io/err.c",
        "csrc/io/file.c",
        "csrc/io/fs.c",
        "csrc/io/fsreq.c",
        "csrc/io/listener.c",
        "csrc/io/move.c",
        "csrc/io/net.c",
        "csrc/io/process.c",
        "csrc/io/signal.c",
        "csrc/io/stream.c",
        "csrc/io/udp.c",
        "csrc/io/worker.c",
        -- lib/: Runtime and JoinHandle bindings, host API, the opener
        "csrc/lib/errors.c",
        "csrc/lib/handle.c",
        "csrc/lib/host.c",
        "csrc/lib/init.c",
        "csrc/lib/introspect.c",
        "csrc/lib/runtime.c",
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
