-- tidal.net.udp: datagrams, FIFO receivers, connected sockets, errors.
local tidal = require("tidal")
local support = require("support")

-- every test ends with the descriptors it began with, and no child
support.guard_io()
local net = tidal.net

local run_io = support.run_io

describe("tidal.net.udp", function()
  it("sends and receives datagrams with their sender", function()
    run_io(function()
      local a <close> = assert(net.udp("127.0.0.1", 0))
      local b <close> = assert(net.udp())
      assert.equal("tidal.UdpSocket (unbound)", tostring(b))
      local port = a:port()
      assert.equal(("tidal.UdpSocket (127.0.0.1:%d)"):format(port), tostring(a))
      assert.is_true(b:send_to("hello", "127.0.0.1", port))
      local d, host, from = a:recv_from()
      assert.equal("hello", d)
      assert.equal("127.0.0.1", host)
      assert.same({ "0.0.0.0", from }, { b:local_addr() })
      assert(a:send_to("", host, from)) -- an empty datagram is one too
      assert.equal("", (b:recv_from()))
      assert(b:send_to("truncated", "127.0.0.1", port))
      assert.equal("trunc", (a:recv_from(5)))
    end)
  end)

  it("serves waiting receivers in order, one datagram each", function()
    run_io(function()
      local a <close> = assert(net.udp("127.0.0.1", 0))
      local b <close> = assert(net.udp("127.0.0.1", 0))
      local hs = {}
      for i = 1, 5 do hs[i] = tidal.spawn(function() return (a:recv_from()) end) end
      tidal.sleep(0.01)
      for i = 1, 5 do assert(b:send_to("d" .. i, "127.0.0.1", a:port())) end
      for i = 1, 5 do assert.equal("d" .. i, hs[i]:await()) end
    end)
  end)

  it("a cancelled receive loses no datagram", function()
    run_io(function()
      local a <close> = assert(net.udp("127.0.0.1", 0))
      local b <close> = assert(net.udp("127.0.0.1", 0))
      local ok, err = tidal.timeout(0.01, a.recv_from, a)
      assert.is_false(ok)
      assert.equal("timeout", err.kind)
      assert(b:send_to("kept", "127.0.0.1", a:port()))
      assert.equal("kept", (a:recv_from()))
    end)
  end)

  it("talks to one peer once connected", function()
    run_io(function()
      local a <close> = assert(net.udp("127.0.0.1", 0))
      local b <close> = assert(net.udp("127.0.0.1", 0))
      assert.is_true(b:connect("127.0.0.1", a:port()))
      assert(b:send("hi"))
      local d, host, port = a:recv_from()
      assert.equal("hi", d)
      assert(a:send_to("back", host, port))
      assert.equal("back", b:recv())
      assert.has_error(function() b:send_to("x", "127.0.0.1", 1) end,
        "UdpSocket:send_to: the socket is connected (use send)")
      assert.has_error(function() a:send("x") end,
        "UdpSocket:send: the socket is not connected (use send_to, or connect it first)")
      -- nobody listens there: the kernel reports it on the connected socket
      local l <close> = assert(net.udp("127.0.0.1", 0))
      local dead = l:port()
      l:close()
      local c <close> = assert(net.udp())
      assert(c:connect("127.0.0.1", dead))
      assert(c:send("anyone?"))
      local ok, v, err = tidal.timeout(2, c.recv, c)
      assert.is_true(ok)
      assert.is_nil(v)
      assert.equal("connection_refused", err.kind)
    end)
  end)

  it("returns errors and raises on misuse", function()
    run_io(function()
      local a <close> = assert(net.udp("127.0.0.1", 0))
      local v, err = a:send_to(string.rep("x", 70000), "127.0.0.1", a:port())
      assert.is_nil(v)
      assert.equal("message_too_large", err.kind)
      local b, err2 = net.udp("127.0.0.1", a:port())
      assert.is_nil(b)
      assert.equal("address_in_use", err2.kind)
      assert.equal(a:port(), err2.port)
      local r1 <close> = assert(net.udp("127.0.0.1", 0, { reuseaddr = true }))
      local r2 <close> = assert(net.udp("127.0.0.1", r1:port(), { reuseaddr = true }))
      assert.has_error(function() a:send_to("x", "localhost", 1) end,
        "UdpSocket:send_to: 'localhost' is not an IP address (resolve names with " ..
        "tidal.net.resolve)")
      assert.has_error(function() net.udp("127.0.0.1", 0, { broadcst = true }) end,
        "tidal.net.udp: unknown option 'broadcst' (known: broadcast, family, reuseaddr)")
      a:close()
      assert.has_error(function() a:recv_from() end,
        "UdpSocket:recv_from: attempt to use a closed UDP socket")
    end)
  end)

  it("wakes a receiver whose socket another task closes", function()
    run_io(function()
      local a = assert(net.udp("127.0.0.1", 0))
      local h = tidal.spawn(function() return a:recv_from() end)
      tidal.sleep(0.01)
      a:close()
      local v, err = h:await()
      assert.is_nil(v)
      assert.equal("closed", err.kind)
    end)
  end)
end)
