-- Issue 13: an HTTP request cancelled while its connection was being made
-- left the socket's uv_poll handle behind. libcurl 7.88 closes a socket that
-- never connected without calling CURLOPT_CLOSESOCKETFUNCTION, which is how
-- tidal learned that a connection's socket was gone. So:
--  - cancelled in the batch of tasks that started it (the socket opened and
--    closed before the loop polled), the handle's pending epoll_ctl ADD met
--    a closed descriptor and libuv aborted the process (SIGABRT);
--  - cancelled later, the stale handle kept the descriptor number: the next
--    socket given that number (a tidal.net stream) had its events delivered
--    to the stale handle and waited forever.
-- Now a socket curl has not yet waited to read from (it has not connected)
-- loses its handle when curl says CURL_POLL_REMOVE.
local support = require("support")
local fixtures = require("fixtures.http")

if not support.can_spawn then
  describe("issue 13: HTTP request cancelled while connecting", function()
    pending("needs the fixture server and child processes")
  end)
  return
end

describe("issue 13: HTTP request cancelled while connecting", function()
  local srv

  setup(function()
    srv = fixtures.start_server()
  end)

  teardown(function()
    fixtures.stop_server(srv)
  end)

  -- a child script with tidal, http, BASE (the fixture server's URL), HOLE
  -- (a port whose connections hang) and roundtrip(l): a tidal.net connection to listener l that has to wait
  -- in the loop for its data; false when it does not arrive within 2 s
  local function child(body)
    return fixtures.child(([[
      local tidal = require("tidal")
      local http = tidal.http
      local BASE, HOLE = %q, %d
      local function roundtrip(l)
        return tidal.timeout(2, function()
          local srv = tidal.spawn(function()
            local a <close> = assert(l:accept())
            tidal.sleep(0.02)
            a:write("pong\n")
            return a:read_line()
          end)
          local s <close> = assert(tidal.net.connect("127.0.0.1", l:port()))
          assert(s:read_line() == "pong")
          s:write("ping\n")
          return srv:await()
        end)
      end
    ]]):format(srv.base, srv.hole) .. body, 30)
  end

  local function assert_clean(out, status)
    assert.is_falsy(out:find("AddressSanitizer", 1, true), out)
    assert.is_falsy(out:find("runtime error", 1, true), out) -- UBSan
    assert.are.equal(0, status, out)
  end

  it("cancelled in the batch of tasks that started them: no abort, the pool works", function()
    local out, status = child([[
      tidal.run(function()
        local c <close> = http.client()
        for round = 1, 3 do
          local hs = {}
          for i = 1, 20 do
            hs[i] = tidal.spawn(function()
              return c:get("http://127.0.0.1:" .. HOLE .. "/")
            end)
          end
          tidal.yield() -- they start their requests
          for i = 1, 20 do hs[i]:abort() end
          for i = 1, 20 do assert(not hs[i]:join()) end
        end
        local l <close> = assert(tidal.net.listen("127.0.0.1", 0))
        print("after:", roundtrip(l))
        print("pool:", assert(c:get(BASE .. "/hello")).body)
      end)
    ]])
    assert_clean(out, status)
    assert.are.equal("after:\ttrue\tping\npool:\thello\n", out)
  end)

  it("cancelled while connecting: the next socket given its descriptor number gets its events", function()
    local out, status = child([[
      tidal.run(function()
        local l <close> = assert(tidal.net.listen("127.0.0.1", 0))
        print("warm:", roundtrip(l)) -- (accept's spare descriptor is made)
        local c <close> = http.client()
        for round = 1, 3 do
          local h = tidal.spawn(function()
            return c:get("http://127.0.0.1:" .. HOLE .. "/")
          end)
          tidal.sleep(0.1) -- it is connecting: its socket is watched
          h:abort()
          local ok, err = h:join()
          print("aborted:", ok, err.kind)
          -- the lowest free descriptor is the one curl closed
          print("after:", roundtrip(l))
        end
      end)
    ]])
    assert_clean(out, status)
    assert.are.equal(("warm:\ttrue\tping\n" .. ("aborted:\tfalse\tcancelled\nafter:\ttrue\tping\n"):rep(3)),
      out)
  end)
end)
