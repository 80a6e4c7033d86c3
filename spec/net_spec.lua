-- tidal.net: TCP and unix streams and listeners, resolve; every test
-- checks that no descriptor is left open (support.run_io).
local tidal = require("tidal")
local support = require("support")

-- every test ends with the descriptors it began with, and no child
support.guard_io()
local net = tidal.net

local run_io = support.run_io

-- A to-be-closed value closing each of its arguments.
local function closing(...)
  local objs = { ... }
  return setmetatable({}, { __close = function()
    for _, o in ipairs(objs) do o:close() end
  end })
end

-- A listener on 127.0.0.1 and a connected pair: client, server stream.
local function pair(opts)
  local l = assert(net.listen("127.0.0.1", 0, opts))
  local c = assert(net.connect("127.0.0.1", l:port()))
  local s = assert(l:accept())
  l:close()
  return c, s
end

describe("tidal.net TCP", function()
  it("connects, accepts, and exchanges lines both ways", function()
    run_io(function()
      local l <close> = assert(net.listen("127.0.0.1", 0))
      local port = l:port()
      assert.is_true(math.type(port) == "integer" and port > 0)
      assert.same({ "127.0.0.1", port }, { l:local_addr() })
      local server = tidal.spawn(function()
        local s <close>, host, peer_port = assert(l:accept())
        assert.equal("127.0.0.1", host)
        assert.same({ host, peer_port }, { s:peer() })
        local n = 0
        for line in s:lines() do
          n = n + 1
          assert(s:write(line:upper(), "\n"))
        end
        return n
      end)
      local c <close> = assert(net.connect("127.0.0.1", port))
      assert.same({ "127.0.0.1", port }, { c:peer() })
      local _, cport = c:local_addr()
      assert.is_true(cport > 0)
      assert.is_true(c:write("hello\n", "world\r\n"))
      assert.equal("HELLO", c:read_line())
      assert.equal("WORLD", c:read_line())
      assert.is_true(c:shutdown())
      assert.is_nil(c:read())
      assert.equal(2, server:await())
    end)
  end)

  it("reads what is there, exactly n, lines, and everything", function()
    run_io(function()
      local c, s = pair()
      local _ <close> = closing(c, s)
      assert(s:write("abcdef"))
      assert.equal("abc", c:read_exactly(3))
      assert.equal("de", c:read(2))
      assert.equal("f", c:read())
      assert(s:write("x"))
      assert.equal("", c:read(0))
      assert.equal(1, c:buffered())
      assert.equal("x", c:read(100))
      assert(s:write("one\r\ntwo\nthree"))
      assert.equal("one", c:read_line())
      assert.equal("two\n", c:read_line({ keep = true }))
      assert(s:write(" and more"))
      s:shutdown()
      assert.equal("three and more", c:read_line()) -- the last, unterminated
      assert.is_nil(c:read_line())
      assert.is_nil(c:read())
      assert.is_nil(c:read(0))
      assert.equal("", c:read_all())
    end)
  end)

  it("read_exactly meeting the end keeps the bytes for read", function()
    run_io(function()
      local c, s = pair()
      local _ <close> = closing(c, s)
      assert(s:write("12345"))
      s:close()
      local v, err = c:read_exactly(10)
      assert.is_nil(v)
      assert.equal("unexpected_eof", err.kind)
      assert.matches("Stream:read_exactly: the stream ended after 5 of 10 bytes",
        err.message, 1, true)
      assert.equal("12345", c:read())
      assert.is_nil(c:read())
    end)
  end)

  it("read_line gives too_long without consuming, read_all too_large", function()
    run_io(function()
      local c, s = pair()
      local _ <close> = closing(c, s)
      assert(s:write(string.rep("a", 20), "\nrest"))
      local v, err = c:read_line({ max = 10 })
      assert.is_nil(v)
      assert.equal("too_long", err.kind)
      assert.equal(25, c:buffered())
      assert.equal(string.rep("a", 20), c:read_line({ max = 20 }))
      s:shutdown()
      v, err = c:read_all(2)
      assert.is_nil(v)
      assert.equal("too_large", err.kind)
      assert.equal("rest", c:read_all(4))
    end)
  end)

  it("writes many arguments in one call, numbers as io.write writes them", function()
    run_io(function()
      local c, s = pair()
      local _ <close> = closing(c, s)
      local parts, expect = {}, {}
      for i = 1, 40 do
        parts[i] = i
        expect[i] = tostring(i)
      end
      assert(c:write(table.unpack(parts)))
      assert(c:write(1.5, " ", 2 ^ 63, " ", -0.0, "|"))
      c:shutdown()
      local f = io.tmpfile()
      f:write(1.5, " ", 2 ^ 63, " ", -0.0, "|")
      f:seek("set")
      assert.equal(table.concat(expect) .. f:read("a"), s:read_all())
      f:close()
    end)
  end)

  it("moves megabytes in order while the reader is slower", function()
    run_io(function()
      local c, s = pair()
      local _ <close> = closing(c, s)
      local chunk = {}
      for i = 1, 1000 do chunk[i] = string.format("%07d\n", i) end
      chunk = table.concat(chunk) -- 8000 bytes
      local chunks = support.scaled(500) -- 4 MB
      local writer = tidal.spawn(function()
        for _ = 1, chunks do assert(c:write(chunk)) end
        assert(c:shutdown())
      end)
      local total, lines = 0, 0
      while true do
        local line = s:read_line()
        if not line then break end
        lines = lines + 1
        if line ~= string.format("%07d", (lines - 1) % 1000 + 1) then
          error("line " .. lines .. " is " .. line)
        end
        total = total + #line + 1
        if lines % 5000 == 0 then tidal.sleep(0.001) end
      end
      writer:await()
      assert.equal(chunks * 8000, total)
    end)
  end)

  it("returns nil, err with kind, errno, host and port", function()
    run_io(function()
      local l = assert(net.listen("127.0.0.1", 0))
      local port = l:port()
      l:close()
      local s, err = net.connect("127.0.0.1", port)
      assert.is_nil(s)
      assert.equal("connection_refused", err.kind)
      assert.equal("ECONNREFUSED", err.errno)
      assert.equal("127.0.0.1", err.host)
      assert.equal(port, err.port)
      assert.equal(("tidal.net.connect: 127.0.0.1:%d: connection refused (ECONNREFUSED)")
        :format(port), tostring(err))
      assert.is_true(tidal.is_error(err, "connection_refused"))
    end)
  end)

  it("reports a port in use, and shares one with reuseport", function()
    run_io(function()
      local a <close> = assert(net.listen("127.0.0.1", 0))
      local b, err = net.listen("127.0.0.1", a:port())
      assert.is_nil(b)
      assert.equal("address_in_use", err.kind)
      assert.equal("EADDRINUSE", err.errno)
      local r1 <close> = assert(net.listen("127.0.0.1", 0, { reuseport = true }))
      local r2 <close> = assert(net.listen("127.0.0.1", r1:port(), { reuseport = true }))
      assert.equal(r1:port(), r2:port())
    end)
  end)

  it("raises on misuse, naming the function and the fix", function()
    run_io(function()
      assert.has_error(function() net.connect("127.0.0.1", 0) end,
        "tidal.net.connect: the port must be an integer from 1 to 65535, got 0")
      assert.has_error(function() net.connect("127.0.0.1", "x") end,
        "tidal.net.connect: the port must be an integer from 1 to 65535, got string")
      assert.has_error(function() net.connect(nil, 80) end,
        "tidal.net.connect: expected a host name or IP address (a string), got nil")
      assert.has_error(function() net.connect("127.0.0.1", 80, { nodelai = true }) end,
        "tidal.net.connect: unknown option 'nodelai' (known: family, keepalive, " ..
        "nodelay, read_buffer, timeout)")
      assert.has_error(function() net.listen("127.0.0.1", 0, { backlog = -1 }) end,
        "tidal.net.listen: opts.backlog must be a positive integer, got -1")
      local c, s = pair()
      local _ <close> = closing(c, s)
      assert.has_error(function() c:read(-1) end,
        "Stream:read: the byte count must not be negative, got -1")
      assert.has_error(function() c:read_exactly() end,
        "Stream:read_exactly: expected a byte count (an integer), got no value")
      assert.has_error(function() c:read_line({ max = 0 }) end,
        "Stream:read_line: opts.max must be a positive integer")
      assert.has_error(function() c:write({}) end,
        "Stream:write: argument #1 must be a string or a number, got table")
      assert.has_error(function() c.read(s.read) end)
      s:shutdown()
      assert.has_error(function() s:write("x") end,
        "Stream:write: the stream was shut down for writing")
    end)
  end)

  it("refuses a closed stream or listener; close is idempotent", function()
    run_io(function()
      local c, s = pair()
      c:close()
      c:close()
      assert.equal("tidal.Stream (closed)", tostring(c))
      assert.has_error(function() c:read() end,
        "Stream:read: attempt to use a closed stream")
      assert.has_error(function() c:write("x") end,
        "Stream:write: attempt to use a closed stream")
      assert.is_nil(s:read()) -- the peer's close is EOF here
      s:close()
      local l = assert(net.listen("127.0.0.1", 0))
      l:close()
      assert.has_error(function() l:accept() end,
        "Listener:accept: attempt to use a closed listener")
      assert.equal("tidal.Listener (closed)", tostring(l))
    end)
  end)

  it("wakes tasks parked on a stream or listener that another task closes", function()
    run_io(function()
      local c, s = pair()
      local l = assert(net.listen("127.0.0.1", 0))
      local r = tidal.spawn(function() return c:read() end)
      local a = tidal.spawn(function() return l:accept() end)
      tidal.sleep(0.01)
      c:close()
      l:close()
      local v, err = r:await()
      assert.is_nil(v)
      assert.equal("closed", err.kind)
      v, err = a:await()
      assert.is_nil(v)
      assert.equal("closed", err.kind)
      s:close()
    end)
  end)

  it("closes what a runtime left open when it ends", function()
    run_io(function()
      local l = assert(net.listen("127.0.0.1", 0))
      local c = assert(net.connect("127.0.0.1", l:port()))
      local s = assert(l:accept())
      _G.leftover = { l, c, s }
    end)
    local l, c = table.unpack(_G.leftover)
    _G.leftover = nil
    assert.equal("tidal.Listener (closed)", tostring(l))
    assert.has_error(function() c:peer() end, "Stream:peer: attempt to use a closed stream")
  end)

  it("collects unreachable streams", function()
    run_io(function()
      local l <close> = assert(net.listen("127.0.0.1", 0))
      -- (the loop's first stream opens libuv's reserve descriptor for good)
      local c0 = assert(net.connect("127.0.0.1", l:port()))
      c0:close()
      assert(l:accept()):close()
      local before = support.fds()
      do
        local _ = assert(net.connect("127.0.0.1", l:port()))
        local _ = assert(l:accept())
      end
      collectgarbage()
      collectgarbage()
      tidal.sleep(0.01) -- close callbacks
      assert.is_nil(support.fd_diff(before, support.fds()))
    end)
  end)

  it("refuses a stream of another runtime", function()
    local c, s
    local rt = tidal.runtime()
    rt:block_on(function() c, s = pair() end)
    run_io(function()
      assert.has_error(function() c:peer() end,
        "Stream:peer: this stream belongs to another runtime")
    end)
    rt:close()
    assert.equal("tidal.Stream (closed)", tostring(s))
  end)

  it("connects by name, and resolves names and literals", function()
    run_io(function()
      local addrs = assert(net.resolve("localhost"))
      local has4 = false
      for _, a in ipairs(addrs) do has4 = has4 or a == "127.0.0.1" end
      assert.is_true(has4)
      assert.same({ "127.0.0.1" }, net.resolve("localhost", { family = "inet" }))
      assert.same({ "::1" }, net.resolve("[::1]"))
      local r, err = net.resolve("no-such-host.invalid")
      assert.is_nil(r)
      assert.equal("dns", err.kind)
      assert.equal("no-such-host.invalid", err.host)
      assert.matches("^tidal.net.resolve: no%-such%-host.invalid: ", err.message)
      local l <close> = assert(net.listen("localhost", 0, { family = "inet" }))
      local c <close> = assert(net.connect("localhost", l:port(), { family = "inet" }))
      local s <close> = assert(l:accept())
      assert(c:write("ok"))
      assert.equal("ok", s:read())
      local _, err2 = net.connect("no-such-host.invalid", 80)
      assert.equal("dns", err2.kind)
      assert.equal(80, err2.port)
    end)
  end)

  it("speaks IPv6 on ::1 (when the host has it)", function()
    run_io(function()
      local l, err = net.listen("::1", 0)
      if not l then
        assert.equal("address_not_available", err.kind)
        return
      end
      local c <close> = assert(net.connect("[::1]", l:port()))
      local s <close>, host = assert(l:accept())
      assert.equal("::1", host)
      assert.equal(("tidal.Stream (tcp, peer [::1]:%d)"):format(l:port()), tostring(c))
      l:close()
    end)
  end)

  it("gives up a connect at its timeout, leaving nothing open", function()
    run_io(function()
      local l <close> = assert(net.listen("127.0.0.1", 0))
      local s, err = net.connect("127.0.0.1", l:port(), { timeout = 0 })
      assert.is_nil(s)
      assert.equal("timeout", err.kind)
      assert.equal(("tidal.net.connect: 127.0.0.1:%d: timed out after 0 s"):format(l:port()),
        err.message)
      assert.equal(l:port(), err.port)
    end)
  end)

  it("sets socket options", function()
    run_io(function()
      local c, s = pair({ nodelay = false, keepalive = 30 })
      local _ <close> = closing(c, s)
      assert.is_true(c:set_nodelay(false))
      assert.is_true(c:set_keepalive(10))
      assert.is_true(c:set_keepalive(false))
      assert.is_true(s:set_linger(false))
      assert.has_error(function() c:set_keepalive(0) end,
        "Stream:set_keepalive: expected false or a delay in seconds (>= 1), got number")
    end)
  end)

  it("applies nodelay and keepalive: connect's defaults and options, listen's for accepted streams", function()
    local hooks = require("tidal.testhooks")
    local function opts_of(st)
      local _, port = st:local_addr()
      return assert(hooks.tcp_options(port))
    end
    run_io(function()
      local l <close> = assert(net.listen("127.0.0.1", 0))
      local c <close> = assert(net.connect("127.0.0.1", l:port()))
      local o = opts_of(c)
      assert.is_false(o.nodelay) -- set at the first write (only sending needs it)
      assert.is_false(o.keepalive)
      assert(c:write("x"))
      o = opts_of(c)
      assert.is_true(o.nodelay) -- the default
      assert.is_false(o.keepalive)
      local c2 <close> = assert(net.connect("127.0.0.1", l:port(),
        { nodelay = false, keepalive = 30 }))
      o = opts_of(c2)
      assert.is_false(o.nodelay)
      assert.is_true(o.keepalive)
      assert.equal(30, o.keepidle)
      c:set_nodelay(false)
      c:set_keepalive(12)
      o = opts_of(c)
      assert.is_false(o.nodelay)
      assert.is_true(o.keepalive)
      assert.equal(12, o.keepidle)
      c:set_keepalive(false)
      assert.is_false(opts_of(c).keepalive)
      -- accepted streams: the listener's options (default nodelay)
      local l2 <close> = assert(net.listen("127.0.0.1", 0, { nodelay = false, keepalive = 20 }))
      local c3 <close> = assert(net.connect("127.0.0.1", l2:port()))
      local s3 <close> = assert(l2:accept())
      local _, port3 = c3:local_addr()
      local _, sport = s3:peer()
      assert.equal(port3, sport)
      o = assert(hooks.tcp_options(l2:port()))
      assert.is_false(o.nodelay)
      assert.is_true(o.keepalive)
      assert.equal(20, o.keepidle)
      local streams = {}
      for _ = 1, 2 do streams[#streams + 1] = assert(l:accept()) end
      o = assert(hooks.tcp_options(l:port())) -- (one of them)
      assert.is_true(o.nodelay)
      assert.is_false(o.keepalive)
      for _, st in ipairs(streams) do st:close() end
    end)
  end)

  -- An accepted stream holds a bare fd until it needs the loop (a read
  -- that waits, a write that would block, shutdown, keepalive): every
  -- method works on it before and after, and closing it closes the fd.
  it("serves accepted streams before and after they need the loop", function()
    run_io(function()
      local l <close> = assert(net.listen("127.0.0.1", 0))
      -- write at once, then close: the peer reads it and EOF
      local c1 <close> = assert(net.connect("127.0.0.1", l:port()))
      local s1 = assert(l:accept())
      local _, lport = s1:local_addr()
      assert.equal(l:port(), lport)
      assert.is_true(s1:set_nodelay(false))
      assert.is_true(s1:set_linger(false))
      assert.is_true(s1:write("x"))
      s1:close()
      assert.equal("x", c1:read_all())
      -- shutdown first, then a read that waits
      local c2 <close> = assert(net.connect("127.0.0.1", l:port()))
      local s2 <close> = assert(l:accept())
      assert.is_true(s2:shutdown())
      assert.is_nil(c2:read())
      assert.is_true(c2:write("ping\n"))
      assert.equal("ping", s2:read_line())
      -- keepalive, then a write larger than the socket takes
      local c3 <close> = assert(net.connect("127.0.0.1", l:port()))
      local s3 <close> = assert(l:accept())
      assert.is_true(s3:set_keepalive(15))
      local big = string.rep("y", 4 * 1024 * 1024)
      local reader = tidal.spawn(function() return #c3:read_exactly(#big) end)
      assert.is_true(s3:write(big))
      assert.equal(#big, reader:await())
      -- a big write first (the handle comes with the queued bytes)
      local c4 <close> = assert(net.connect("127.0.0.1", l:port()))
      local s4 <close> = assert(l:accept())
      reader = tidal.spawn(function() return #c4:read_exactly(#big) end)
      assert.is_true(s4:write(big))
      assert.equal(#big, reader:await())
      -- left open: the runtime's end closes it (run_io checks the fds)
      local c5 = assert(net.connect("127.0.0.1", l:port()))
      local _s5 = assert(l:accept())
      c5:close()
    end)
  end)

  it("gives IPv4 addresses in dotted form (every digit count)", function()
    run_io(function()
      for _, ip in ipairs({ "0.0.0.0", "127.0.0.1", "127.10.200.5", "127.255.1.99",
        "127.100.0.9" }) do
        local l <close> = assert(net.listen(ip, 0))
        local host, port = l:local_addr()
        assert.equal(ip, host)
        assert.equal(l:port(), port)
        if ip ~= "0.0.0.0" then
          local c <close> = assert(net.connect(ip, port))
          local s <close>, peer = assert(l:accept())
          assert.equal(ip, (s:local_addr()))
          assert.equal("127.0.0.1", peer) -- (the client's source address)
          assert.equal(ip, (c:peer()))
        end
      end
    end)
  end)

  it("shows what a task waits in", function()
    run_io(function()
      local c, s = pair()
      local _ <close> = closing(c, s)
      local h = tidal.spawn(function() return c:read() end)
      tidal.sleep(0.01)
      local where
      for _, t in ipairs(tidal.tasks()) do
        if t.id == h:id() then where = t.waiting end
      end
      assert.equal("Stream:read", where)
      s:write("x")
      assert.equal("x", h:await())
    end)
  end)

  it("leaves deadlock detection working while streams are open", function()
    support.warm_io()
    local before = support.fds()
    local ok, err = pcall(tidal.run, function()
      local c, s = pair()
      local _ <close> = closing(c, s)
      local _, rx = tidal.channel()
      rx:recv()
    end)
    assert.is_false(ok)
    assert.equal("deadlock", err.kind)
    assert.is_nil(support.fd_diff(before, support.fds()))
  end)
end)

describe("tidal.net.connect with a name of several addresses", function()
  -- getaddrinfo preloaded from spec/fixtures/gai_shim.c in a child lua5.4:
  -- two.tidal-test is 127.0.0.2 then 127.0.0.1, three.tidal-test is
  -- 127.0.0.2, 127.0.0.3, 127.0.0.1 (nothing listens on .2 and .3)
  local it_child = support.can_spawn and it or pending
  it_child("tries every address in order, and the last error says how many", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir .. " && cc -shared -fPIC -o " .. dir
      .. "/gai.so spec/fixtures/gai_shim.c -ldl"))
    local script = dir .. "/t.lua"
    local f = assert(io.open(script, "w"))
    f:write([[
      local tidal = require("tidal")
      local net = tidal.net
      tidal.run(function()
        print("resolve " .. table.concat(assert(net.resolve("three.tidal-test")), " "))
        local l = assert(net.listen("127.0.0.1", 0))
        local port = l:port()
        -- the first address refuses, the second is the listener
        local c = assert(net.connect("two.tidal-test", port))
        local s, peer = assert(l:accept())
        c:write("hi")
        print("two " .. s:read_exactly(2) .. " " .. peer .. " " .. select(1, c:peer()))
        s:close()
        c:close()
        c = assert(net.connect("three.tidal-test", port, { timeout = 5 }))
        s = assert(l:accept())
        print("three " .. select(1, c:peer()))
        s:close()
        c:close()
        l:close()
        -- nothing listens on any: the last error, how many were tried
        local none, err = net.connect("three.tidal-test", port)
        print("none " .. tostring(none) .. " " .. err.kind .. " " .. err.host
          .. " " .. err.port)
        print(err.message)
      end)
    ]])
    f:close()
    local p = assert(io.popen("LD_PRELOAD=\"${LD_PRELOAD:+$LD_PRELOAD }" .. dir
      .. "/gai.so\" timeout 30 lua5.4 " .. script .. " 2>&1"))
    local out = p:read("a")
    p:close()
    os.execute("rm -rf " .. dir)
    local want = {
      "resolve 127.0.0.2 127.0.0.3 127.0.0.1",
      "two hi 127.0.0.1 127.0.0.1",
      "three 127.0.0.1",
      "none nil connection_refused three%.tidal%-test %d+",
      "tidal%.net%.connect: three%.tidal%-test:%d+: connection refused %(ECONNREFUSED%) %(tried 3 addresses%)",
    }
    local i = 0
    for line in out:gmatch("[^\n]+") do
      i = i + 1
      assert.matches("^" .. want[i] .. "$", line, 1, false, out)
    end
    assert.equal(#want, i, out)
  end)
end)

describe("tidal.net unix sockets", function()
  local dir
  setup(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir))
  end)
  teardown(function() os.execute("rm -rf " .. dir) end)

  it("listens, connects and removes its socket file", function()
    run_io(function()
      local path = dir .. "/a.sock"
      local l = assert(net.listen_unix(path, { mode = tonumber("600", 8) }))
      assert.equal(nil, l:port())
      assert.equal(path, (l:local_addr()))
      local c <close> = assert(net.connect_unix(path))
      local s <close>, peer = assert(l:accept())
      assert.equal("", peer)
      assert.equal(path, (c:peer()))
      assert.equal(path, (s:local_addr()))
      assert(c:write("ping\n"))
      assert.equal("ping", s:read_line())
      local f = assert(io.popen("stat -c %a " .. path))
      assert.equal("600", f:read("l"))
      f:close()
      local again, err = net.listen_unix(path)
      assert.is_nil(again)
      assert.equal("address_in_use", err.kind)
      assert.equal(path, err.path)
      l:close()
      tidal.sleep(0.01)
      assert.is_nil(io.open(path))
    end)
  end)

  it("replaces a stale socket file with unlink = true, nothing else", function()
    run_io(function()
      local path = dir .. "/b.sock"
      local l = assert(net.listen_unix(path))
      _G.stale = l -- kept open: its file stays
      local l2 = assert(net.listen_unix(path, { unlink = true }))
      l2:close()
      local plain = dir .. "/plain"
      io.open(plain, "w"):close()
      local l3, err = net.listen_unix(plain, { unlink = true })
      assert.is_nil(l3)
      assert.equal("address_in_use", err.kind)
      assert.is_not_nil(io.open(plain)):close()
      _G.stale:close()
      _G.stale = nil
    end)
  end)

  it("rejects a path of 108 bytes or more, and reports a missing one", function()
    run_io(function()
      local long = dir .. "/" .. string.rep("x", 120)
      local s, err = net.connect_unix(long)
      assert.is_nil(s)
      assert.equal("name_too_long", err.kind)
      s, err = net.listen_unix(long)
      assert.is_nil(s)
      assert.equal("name_too_long", err.kind)
      s, err = net.connect_unix(dir .. "/missing.sock")
      assert.is_nil(s)
      assert.equal("not_found", err.kind)
      assert.equal(dir .. "/missing.sock", err.path)
    end)
  end)
end)
