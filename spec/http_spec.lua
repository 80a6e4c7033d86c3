-- tidal.http against servers started here on 127.0.0.1: the Python fixture
-- server (every kind of server fault) and nginx (TLS with a CA made at test
-- time, HTTP/2).
local tidal = require("tidal")
local http = require("tidal.http")
local support = require("support")
local fixtures = require("fixtures.http")
local cjson = require("cjson")

local function kind_of(err)
  return type(err) == "table" and err.kind or tostring(err)
end

-- asserts resp is nil and err an error object of the kind, naming the URL
local function assert_fails(kind, url, resp, err)
  assert.is_nil(resp, "expected a failure, got a response")
  assert.is_true(tidal.is_error(err), "err is not an error object: " .. tostring(err))
  assert.are.equal(kind, err.kind, tostring(err))
  assert.is_truthy(tostring(err):find(url, 1, true), "the message does not name the URL: " .. tostring(err))
  assert.are.equal(url, err.url)
end

if not support.can_spawn then
  -- the fixture servers are child processes, which TIDAL_NO_CHILD=1 rules
  -- out
  describe("tidal.http", function()
    pending("needs the fixture servers (child processes)")
  end)
  return
end

describe("tidal.http", function()
  local srv
  local url

  setup(function()
    srv = fixtures.start_server()
    url = srv.url
  end)

  teardown(function()
    fixtures.stop_server(srv)
  end)

  describe("requests", function()
    it("GET gives status, lower-case headers, body, url and version", function()
      support.run(function()
        local r, err = http.get(url("/hello"))
        assert.is_nil(err)
        assert.are.equal(200, r.status)
        assert.are.equal("hello", r.body)
        assert.are.equal("text/plain", r.headers["content-type"])
        assert.are.equal("5", r.headers["content-length"])
        assert.is_nil(r.headers["Content-Type"])
        assert.are.equal(url("/hello"), r.url)
        assert.are.equal("1.1", r.http_version)
        assert.are.equal("OK", r.reason)
        assert.are.equal("Not Found", assert(http.get(url("/status/404"))).reason)
        assert.is_truthy(tostring(r):find("200", 1, true))
      end)
    end)

    it("joins repeated headers (set-cookie with newlines)", function()
      support.run(function()
        local r = assert(http.get(url("/headers")))
        assert.are.equal("a, b", r.headers["x-dup"])
        assert.are.equal("a=1\nb=2, c", r.headers["set-cookie"])
        assert.are.equal("yes", r.headers["x-mixed-case"])
      end)
    end)

    it("a 404 or 500 is a response, not an error", function()
      support.run(function()
        local r = assert(http.get(url("/status/404")))
        assert.are.equal(404, r.status)
        assert.are.equal("status 404", r.body)
        r = assert(http.get(url("/status/503")))
        assert.are.equal(503, r.status)
      end)
    end)

    it("POST sends the body", function()
      support.run(function()
        local r = assert(http.post(url("/echo"), "a=1&b=2",
          { headers = { ["Content-Type"] = "application/x-www-form-urlencoded" } }))
        local doc = r:json()
        assert.are.equal("POST", doc.method)
        assert.are.equal("a=1&b=2", doc.body)
        assert.are.equal("application/x-www-form-urlencoded", doc.headers["content-type"])
        assert.are.equal("7", doc.headers["content-length"])
      end)
    end)

    it("request{} with every method, on one reused handle", function()
      support.run(function()
        local c = http.client()
        local seq = {
          { "HEAD" }, { "GET" }, { "POST", "p1" }, { "GET" }, { "PUT", "u1" },
          { "DELETE" }, { "PATCH", "x" }, { "OPTIONS" }, { "HEAD" }, { "POST" }, { "GET" },
        }
        for _, s in ipairs(seq) do
          local r = assert(c:request({ method = s[1], url = url("/echo"), body = s[2] }))
          assert.are.equal(200, r.status)
          if s[1] == "HEAD" then
            assert.are.equal("", r.body)
          else
            local doc = r:json()
            assert.are.equal(s[1], doc.method)
            assert.are.equal(s[2] or "", doc.body)
          end
        end
        -- a lower-case method is upper-cased; no method with a body is POST
        assert.are.equal("GET", c:request({ method = "get", url = url("/echo") }):json().method)
        assert.are.equal("POST", c:request({ url = url("/echo"), body = "b" }):json().method)
        c:close()
      end)
    end)

    it("sends headers: client defaults, per-request overrides, false drops one", function()
      support.run(function()
        local c = http.client({ headers = { ["X-Default"] = "d", ["X-Over"] = "client" },
          user_agent = "tidal-spec/1" })
        local doc = c:get(url("/echo"), { headers = { ["X-Over"] = "request", ["X-Num"] = 42,
          ["X-List"] = { "1", "2" }, Accept = false, ["X-Empty"] = "" } }):json()
        assert.are.equal("d", doc.headers["x-default"])
        assert.are.equal("request", doc.headers["x-over"])
        assert.are.equal("42", doc.headers["x-num"])
        assert.are.equal("tidal-spec/1", doc.headers["user-agent"])
        assert.is_nil(doc.headers["accept"])
        assert.are.equal("", doc.headers["x-empty"])
        local n = 0
        for _, kv in ipairs(doc.header_list) do
          if kv[1]:lower() == "x-list" then n = n + 1 end
        end
        assert.are.equal(2, n)
        -- defaults alone
        doc = c:get(url("/echo")):json()
        assert.are.equal("client", doc.headers["x-over"])
        -- the default client sends no User-Agent (docs/http.md)
        doc = http.get(url("/echo")):json()
        assert.is_nil(doc.headers["user-agent"])
      end)
    end)

    it("decompress = true asks for and decodes compressed bodies", function()
      support.run(function()
        local r = assert(http.get(url("/gzip")))
        assert.is_nil(r.headers["content-encoding"])
        assert.is_nil(http.get(url("/echo")):json().headers["accept-encoding"])
        local c = http.client({ decompress = true })
        r = assert(c:get(url("/gzip")))
        assert.are.equal("gzip", r.headers["content-encoding"])
        assert.are.equal(("compressed "):rep(100), r.body)
      end)
    end)

    it("proxy = false ignores the environment; a proxy URL is used", function()
      support.run(function()
        assert(http.client({ proxy = false }):get(url("/hello")))
        -- the fixture server as a (plain HTTP) proxy: it sees the full URL
        local c = http.client({ proxy = srv.base })
        local doc = assert(c:get("http://tidal-proxied.invalid/echo")):json()
        assert.are.equal("/echo", doc.path)
        assert.are.equal("tidal-proxied.invalid", doc.headers.host)
      end)
    end)

    it("encodes query tables and keeps what the URL already has", function()
      support.run(function()
        local doc = http.get(url("/echo"), { query = { q = "a b&c/é", n = 1,
          list = { "x", "y" }, flag = true, off = false } }):json()
        assert.are.equal("flag&list=x&list=y&n=1&q=a%20b%26c%2F%C3%A9", doc.query)
        doc = http.get(url("/echo?z=0"), { query = { a = "1" } }):json()
        assert.are.equal("z=0&a=1", doc.query)
        doc = http.get(url("/echo?"), { query = "raw=1" }):json()
        assert.are.equal("raw=1", doc.query)
        doc = http.get(url("/echo#frag"), { query = { a = "1" } }):json()
        assert.are.equal("a=1", doc.query)
        assert.are.equal("a%20b", http.urlencode("a b"))
      end)
    end)

    it("json = sends JSON; resp:json() decodes; bad JSON is a protocol error", function()
      support.run(function()
        local r = assert(http.request({ url = url("/echo"), json = { a = 1, list = { 1, 2 } } }))
        local doc = r:json()
        assert.are.equal("POST", doc.method)
        assert.are.equal("application/json", doc.headers["content-type"])
        assert.are.same({ a = 1, list = { 1, 2 } }, cjson.decode(doc.body))
        -- an explicit content type wins
        doc = http.post(url("/echo"), nil, { json = {}, headers = { ["content-type"] = "text/x-json" } }):json()
        assert.are.equal("text/x-json", doc.headers["content-type"])
        assert.are.same({ hello = "world", list = { 1, 2, 3 }, nested = { ok = true } },
          http.get(url("/json")):json())
        local v, err = http.get(url("/bad-json")):json()
        assert.is_nil(v)
        assert.are.equal("protocol", err.kind)
        assert.is_truthy(tostring(err):find(url("/bad-json"), 1, true), tostring(err) .. " vs " .. url("/bad-json"))
      end)
    end)

    it("reassembles chunked bodies and keeps large bodies intact", function()
      support.run(function()
        local r = assert(http.get(url("/chunked?n=4&size=3")))
        assert.are.equal("AAABBBCCCDDD", r.body)
        -- 3 MiB + 7 (smaller under valgrind: TIDAL_SPEC_SCALE)
        local n = math.max(100000, support.scaled(3 * 1024 * 1024)) + 7
        r = assert(http.get(url("/large?n=" .. n)))
        assert.are.equal(n, #r.body)
        assert.are.equal("0123456789", r.body:sub(1, 10))
        local last = (n - 7) % 10 -- byte i is i % 10
        local tail = {}
        for i = 0, 6 do tail[#tail + 1] = tostring((last + i) % 10) end
        assert.are.equal(table.concat(tail), r.body:sub(-7))
        r = assert(http.get(url("/large-chunked?n=" .. n)))
        assert.are.equal(n, #r.body)
      end)
    end)

    it("runs requests concurrently", function()
      support.run(function()
        local t0 = tidal.now()
        local hs = {}
        for i = 1, 4 do
          hs[i] = tidal.spawn(function() return assert(http.get(url("/delay/0.4"))).body end)
        end
        for i = 1, 4 do assert.are.equal("delayed 0.4", hs[i]:await()) end
        assert.is_true(tidal.now() - t0 < 1.2, "took " .. (tidal.now() - t0))
      end)
    end)

    it("reuses keep-alive connections; a client has its own pool", function()
      support.run(function()
        local a = assert(http.get(url("/conn"))).body
        local b = assert(http.get(url("/conn"))).body
        assert.are.equal(a, b)
        local c = http.client()
        local d = assert(c:get(url("/conn"))).body
        assert.are_not.equal(a, d)
        assert.are.equal(d, assert(c:get(url("/conn"))).body)
        c:close()
        assert.has_error(function() c:get(url("/conn")) end, "client:get: the client is closed")
      end)
    end)

    it("closing a client lets its requests in flight finish", function()
      support.run(function()
        local c = http.client()
        local h = tidal.spawn(function() return c:get(url("/delay/0.3")) end)
        tidal.sleep(0.1)
        c:close()
        local r = assert(h:await())
        assert.are.equal("delayed 0.3", r.body)
        assert.has_error(function() c:get(url("/hello")) end, "client:get: the client is closed")
      end)
    end)

    it("a streamed response may outlive its runtime", function()
      local r = tidal.run(function()
        return assert(http.get(url("/slow-body?n=5&size=10&delay=0.1"), { stream = true }))
      end)
      assert.are.equal(200, r.status)
      assert.has_error(function() r:read() end)  -- no runtime: not in a task
      r:close()
      local r2 = tidal.run(function()
        return assert(http.get(url("/slow-body?n=5&size=10&delay=0.1"), { stream = true }))
      end)
      r2 = nil -- never closed: the collector frees it
      collectgarbage()
      collectgarbage()
    end)

    it("works across runtimes (each tidal.run has its own pool)", function()
      for _ = 1, 3 do
        support.run(function()
          assert.are.equal("hello", assert(http.get(url("/hello"))).body)
        end)
      end
    end)

    it("works on other workers (each has its own pool)", function()
      local ok, res = pcall(tidal.run, { workers = 2 }, function()
        local hs = {}
        for i = 1, 4 do
          hs[i] = tidal.spawn_parallel(function(u)
            local h = require("tidal.http")
            local n = 0
            for _ = 1, 5 do n = n + #assert(h.get(u)).body end
            return n
          end, url("/hello"))
        end
        local total = assert(http.get(url("/hello"))).status
        for i = 1, 4 do total = total + hs[i]:await() end
        return total
      end)
      assert.is_true(ok, tostring(res))
      assert.are.equal(200 + 4 * 25, res)
    end)

    it("an idle pool does not keep the runtime alive or hide a deadlock", function()
      local ok, err = pcall(tidal.run, function()
        assert(http.get(url("/hello")))
        tidal.sleep() -- nothing can wake it: a deadlock, not a hang
      end)
      assert.is_false(ok)
      assert.are.equal("deadlock", kind_of(err))
    end)
  end)

  describe("redirects", function()
    it("follows them; resp.url is the final URL", function()
      support.run(function()
        local r = assert(http.get(url("/redirect/3")))
        assert.are.equal(200, r.status)
        assert.are.equal("redirected", r.body)
        assert.are.equal(url("/redirect/0"), r.url)
      end)
    end)

    it("follow_redirects = false returns the 3xx", function()
      support.run(function()
        local r = assert(http.get(url("/redirect/2"), { follow_redirects = false }))
        assert.are.equal(302, r.status)
        assert.are.equal("/redirect/1", r.headers.location)
      end)
    end)

    it("too many redirects is an error of its own kind", function()
      support.run(function()
        local u = url("/redirect/12")
        assert_fails("too_many_redirects", u, http.get(u))
        assert_fails("too_many_redirects", url("/redirect/3"),
          http.get(url("/redirect/3"), { max_redirects = 2 }))
        assert(http.get(url("/redirect/3"), { max_redirects = 3 }))
      end)
    end)

    it("refuses a redirect to file:// and any non-http(s) URL", function()
      support.run(function()
        local u = url("/redirect-file")
        local r, err = http.get(u)
        assert_fails("protocol", u, r, err)
        assert.is_truthy(tostring(err):find("only http and https", 1, true), tostring(err))
        u = url("/redirect-to?url=ftp://127.0.0.1/x")
        assert_fails("protocol", u, http.get(u))
        assert_fails("protocol", "file:///etc/passwd", http.get("file:///etc/passwd"))
        assert_fails("protocol", "gopher://127.0.0.1/", http.get("gopher://127.0.0.1/"))
      end)
    end)
  end)

  describe("failures", function()
    it("a closed port is a connect error", function()
      support.run(function()
        local u = "http://127.0.0.1:" .. fixtures.free_port() .. "/x"
        assert_fails("connect", u, http.get(u))
      end)
    end)

    it("an unknown host is a dns error", function()
      support.run(function()
        local u = "http://tidal-no-such-host.invalid/"
        assert_fails("dns", u, http.get(u, { timeout = 10 }))
      end)
    end)

    it("a slow DNS lookup never blocks the loop, nor does cancelling it", function()
      -- getaddrinfo takes 2 s for slow.test (spec/fixtures/slow_dns.c,
      -- preloaded into a child lua5.4): the threaded resolver runs it
      local dir = os.tmpname()
      os.remove(dir)
      assert(os.execute("mkdir -p " .. dir .. " && cc -shared -fPIC -o " .. dir
        .. "/slow_dns.so spec/fixtures/slow_dns.c -ldl"))
      local script = dir .. "/t.lua"
      local f = assert(io.open(script, "w"))
      f:write(([[
        local tidal = require("tidal")
        local http = tidal.http
        tidal.run(function()
          local ticks = 0
          local ticker = tidal.spawn(function()
            while true do tidal.sleep(0.05); ticks = ticks + 1 end
          end)
          local h = tidal.spawn(function() return http.get("http://slow.test:%d/hello") end)
          tidal.sleep(0.3)
          local t0 = tidal.now()
          h:abort()
          assert(not h:join())
          local abort_s = tidal.now() - t0
          local ticks0 = ticks
          t0 = tidal.now()
          local r = assert(http.get("http://slow.test:%d/hello"))
          print(("%%.3f %%d %%s %%.2f %%d"):format(abort_s, ticks0, r.body, tidal.now() - t0, ticks - ticks0))
          ticker:abort()
        end)
      ]]):format(srv.port, srv.port))
      f:close()
      local p = assert(io.popen("LD_PRELOAD=\"${LD_PRELOAD:+$LD_PRELOAD }" .. dir
        .. "/slow_dns.so\" lua5.4 " .. script .. " 2>&1"))
      local out = p:read("a")
      p:close()
      os.execute("rm -rf " .. dir)
      local abort_s, ticks0, body, lookup_s, ticks1 =
        out:match("^([%d.]+) (%d+) (%a+) ([%d.]+) (%d+)")
      assert.is_truthy(abort_s, out)
      assert.is_true(tonumber(abort_s) < 0.2, "abort waited for the lookup: " .. out)
      assert.is_true(tonumber(ticks0) >= 3, "the loop stalled during the lookup: " .. out)
      assert.are.equal("hello", body)
      assert.is_true(tonumber(lookup_s) >= 1.9, out)
      assert.is_true(tonumber(ticks1) >= 20, "the loop stalled during the lookup: " .. out)
    end)

    it("timeout limits the whole request", function()
      support.run(function()
        local u = url("/delay/3")
        local t0 = tidal.now()
        local r, err = http.get(u, { timeout = 0.3 })
        assert_fails("timeout", u, r, err)
        assert.is_true(tidal.now() - t0 < 2)
        -- and a client default
        local c = http.client({ timeout = 0.3 })
        assert_fails("timeout", u, c:get(u))
        assert(c:get(url("/hello")))
      end)
    end)

    it("connect_timeout limits connecting", function()
      support.run(function()
        local u = "http://127.0.0.1:" .. srv.hole .. "/"
        local t0 = tidal.now()
        assert_fails("timeout", u, http.get(u, { connect_timeout = 0.3 }))
        assert.is_true(tidal.now() - t0 < 2)
      end)
    end)

    it("a connection reset mid-body is a protocol error", function()
      support.run(function()
        local u = url("/reset")
        assert_fails("protocol", u, http.get(u))
      end)
    end)

    it("a stall after the headers ends in a timeout", function()
      support.run(function()
        local u = url("/stall")
        assert_fails("timeout", u, http.get(u, { timeout = 0.3 }))
        u = url("/stall-headers")
        assert_fails("timeout", u, http.get(u, { timeout = 0.3 }))
      end)
    end)

    it("a truncated body is a protocol error", function()
      support.run(function()
        local u = url("/truncated")
        assert_fails("protocol", u, http.get(u))
      end)
    end)

    it("a garbage response is a protocol error", function()
      support.run(function()
        local u = url("/garbage")
        local r, err = http.get(u)
        assert_fails("protocol", u, r, err)
        assert.is_falsy(tostring(err):find("only http and https", 1, true))
      end)
    end)

    it("max_body refuses larger bodies (announced or not)", function()
      support.run(function()
        local u = url("/large?n=5000")
        assert_fails("too_large", u, http.get(u, { max_body = 4999 }))
        assert.are.equal(5000, #assert(http.get(u, { max_body = 5000 })).body)
        u = url("/large-chunked?n=300000")
        assert_fails("too_large", u, http.get(u, { max_body = 100000 }))
        local c = http.client({ max_body = 1000 })
        assert_fails("too_large", url("/large?n=1001"), c:get(url("/large?n=1001")))
        assert(c:get(url("/large?n=2000"), { max_body = false }))
      end)
    end)

    it("the pool stays healthy after every kind of failure", function()
      support.run(function()
        local c = http.client()
        for _, p in ipairs({ "/reset", "/truncated", "/garbage", "/status/500" }) do
          c:get(url(p))
          assert.are.equal("hello", assert(c:get(url("/hello"))).body)
        end
        c:get(url("/stall"), { timeout = 0.2 })
        local a = assert(c:get(url("/conn"))).body
        assert.are.equal(a, assert(c:get(url("/conn"))).body)
      end)
    end)
  end)

  describe("misuse raises, naming the function", function()
    it("bad arguments and options", function()
      support.run(function()
        assert.has_error(function() http.get(42) end, "tidal.http.get: url must be a string, got number")
        assert.has_error(function() http.get(url("/hello"), { timout = 1 }) end)
        local ok, err = pcall(http.get, url("/hello"), { timout = 1 })
        assert.is_false(ok)
        assert.is_truthy(err:find("tidal.http.get: unknown option 'timout'", 1, true), err)
        ok, err = pcall(http.get, url("/hello"), { timeout = "1" })
        assert.is_truthy(err:find("option 'timeout' must be a number", 1, true), err)
        ok, err = pcall(http.get, url("/hello"), { max_redirects = -1 })
        assert.is_truthy(err:find("max_redirects", 1, true), err)
        ok, err = pcall(http.request, { method = "GET" })
        assert.is_truthy(err:find("tidal.http.request: option 'url' must be a string", 1, true), err)
        ok, err = pcall(http.post, url("/echo"), { a = 1 })
        assert.is_truthy(err:find("tidal.http.post: body must be a string", 1, true), err)
        ok, err = pcall(http.get, "not a url")
        assert.is_truthy(err:find("malformed URL", 1, true), err)
        ok, err = pcall(http.get, "http://[::1/")
        assert.is_truthy(err:find("tidal.http.get: malformed URL", 1, true), err)
        ok, err = pcall(http.client, { bogus = 1 })
        assert.is_truthy(err:find("tidal.http.client: unknown option 'bogus'", 1, true), err)
        ok, err = pcall(http.request, { url = url("/echo"), json = function() end })
        assert.is_truthy(err:find("cannot encode option 'json'", 1, true), err)
      end)
    end)

    it("CR or LF in a header name or value is refused", function()
      support.run(function()
        local ok, err = pcall(http.get, url("/echo"), { headers = { ["X-A"] = "a\r\nX-Injected: 1" } })
        assert.is_false(ok)
        assert.is_truthy(err:find("tidal.http.get: header 'X-A' has a CR or LF", 1, true), err)
        ok, err = pcall(http.get, url("/echo"), { headers = { ["X-A\nB"] = "a" } })
        assert.is_false(ok)
        assert.is_truthy(err:find("header name", 1, true), err)
        ok, err = pcall(http.client, { headers = { ["X"] = "a\nb" } })
        assert.is_truthy(err:find("tidal.http.client: header 'X' has a CR or LF", 1, true), err)
        ok, err = pcall(http.request, { url = url("/echo"), method = "GET\r\nX: y" })
        assert.is_truthy(err:find("method", 1, true), err)
        -- and the connection is fine afterwards
        assert(http.get(url("/hello")))
      end)
    end)

    it("outside a task", function()
      assert.has_error(function() http.get(url("/hello")) end,
        "tidal.http.get: not inside a tidal task (wrap the code in tidal.run)")
    end)
  end)

  describe("cancellation", function()
    it("aborting a waiting request withdraws it at once; the pool keeps working", function()
      support.run(function()
        local c = http.client()
        local h = tidal.spawn(function() return c:get(url("/delay/5")) end)
        tidal.sleep(0.2)
        local t0 = tidal.now()
        h:abort()
        local ok, err = h:join()
        assert.is_false(ok)
        assert.are.equal("cancelled", kind_of(err))
        assert.is_true(tidal.now() - t0 < 0.5)
        -- the aborted connection was closed; a new one is kept alive
        local a = assert(c:get(url("/conn"))).body
        assert.are.equal(a, assert(c:get(url("/conn"))).body)
        assert.are.equal("hello", assert(c:get(url("/hello"))).body)
      end)
    end)

    it("while connecting", function()
      support.run(function()
        local h = tidal.spawn(function() return http.get("http://127.0.0.1:" .. srv.hole .. "/") end)
        tidal.sleep(0.2)
        h:abort()
        local ok, err = h:join()
        assert.is_false(ok)
        assert.are.equal("cancelled", kind_of(err))
        assert(http.get(url("/hello")))
      end)
    end)

    it("while receiving the body", function()
      support.run(function()
        local h = tidal.spawn(function()
          return http.get(url("/slow-body?n=20&size=1000&delay=0.1"))
        end)
        tidal.sleep(0.35)
        h:abort()
        assert.are.equal("cancelled", kind_of(select(2, h:join())))
        local r = assert(http.get(url("/slow-body?n=2&size=10&delay=0")))
        assert.are.equal(20, #r.body)
      end)
    end)

    it("many cancelled requests leave nothing behind", function()
      support.run(function()
        local c = http.client()
        for round = 1, 3 do
          local hs = {}
          for i = 1, 20 do
            hs[i] = tidal.spawn(function() return c:get(url(i % 2 == 0 and "/delay/2" or "/stall")) end)
          end
          tidal.sleep(0.05 * round)
          for i = 1, 20 do hs[i]:abort() end
          for i = 1, 20 do assert.is_false((hs[i]:join())) end
          assert.are.equal("hello", assert(c:get(url("/hello"))).body)
        end
      end)
    end)

    it("tidal.timeout cancels an in-flight request; the pool works afterwards", function()
      support.run(function()
        local c = http.client()
        assert(c:get(url("/hello")))
        local t0 = tidal.now()
        local ok, err = tidal.timeout(0.3, c.get, c, url("/delay/5"))
        assert.is_false(ok)
        assert.are.equal("timeout", kind_of(err))
        assert.is_true(tidal.now() - t0 < 1)
        -- the pool: requests still work, and a kept connection is reused
        local a = assert(c:get(url("/conn"))).body
        assert.are.equal(a, assert(c:get(url("/conn"))).body)
        -- a timeout that does not expire leaves the response alone
        local ok2, r = tidal.timeout(5, c.get, c, url("/hello"))
        assert.is_true(ok2)
        assert.are.equal("hello", r.body)
        -- many expiring at once, mid-body and while waiting for headers
        for _ = 1, 3 do
          local hs = {}
          for i = 1, 10 do
            hs[i] = tidal.spawn(function()
              return tidal.timeout(0.05 * (i % 3 + 1), c.get, c,
                url(i % 2 == 0 and "/slow-body?n=10&size=100&delay=0.05" or "/stall"))
            end)
          end
          for i = 1, 10 do assert.is_false((hs[i]:await())) end
          assert.are.equal("hello", assert(c:get(url("/hello"))).body)
        end
      end)
    end)

    it("tidal.select cancels the losing request", function()
      support.run(function()
        local c = http.client()
        local t0 = tidal.now()
        local key, r = tidal.select({
          slow = function() return c:get(url("/delay/5")) end,
          fast = function() return c:get(url("/delay/0.1")) end,
        })
        assert.are.equal("fast", key)
        assert.are.equal("delayed 0.1", r.body)
        assert.is_true(tidal.now() - t0 < 2)
        assert.are.equal("hello", assert(c:get(url("/hello"))).body)
      end)
    end)

    it("a timeout around a streamed read closes the stream", function()
      support.run(function()
        local r = assert(http.get(url("/slow-body?n=10&size=100&delay=0.3"), { stream = true }))
        assert.is_truthy(r:read())
        local ok, err = tidal.timeout(0.1, r.read, r)
        assert.is_false(ok)
        assert.are.equal("timeout", kind_of(err))
        local data, e = r:read()
        assert.is_nil(data)
        assert.are.equal("cancelled", kind_of(e))
        assert(http.get(url("/hello")))
      end)
    end)

    it("a request in a task that is already cancelled raises at once", function()
      support.run(function()
        local c = http.client()
        local seen
        local h = tidal.spawn(function()
          local guard <close> = setmetatable({}, { __close = function()
            -- cleanup code that would wait: the cancellation is sticky
            local t0 = tidal.now()
            local ok, err = pcall(c.get, c, url("/delay/2"))
            seen = { ok, kind_of(err), tidal.now() - t0 }
          end })
          tidal.sleep(10)
        end)
        tidal.sleep(0.05)
        h:abort()
        h:join()
        assert.is_false(seen[1])
        assert.are.equal("cancelled", seen[2])
        assert.is_true(seen[3] < 0.5)
        assert.are.equal("hello", assert(c:get(url("/hello"))).body)
      end)
    end)

    it("in every waiting state, by abort, tidal.timeout and select", function()
      support.run(function()
        local c = http.client()
        local hole = "http://127.0.0.1:" .. srv.hole .. "/"
        -- what the task waits for: connecting, the headers (buffered and
        -- streamed), the body, a read of a streamed body
        local waits = {
          connect = function() return c:get(hole) end,
          headers = function() return c:get(url("/stall-headers")) end,
          stream_headers = function() return c:get(url("/stall-headers"), { stream = true }) end,
          body = function() return c:get(url("/stall")) end,
          read = function()
            local r <close> = assert(c:get(url("/stall"), { stream = true }))
            return r:read()
          end,
        }
        for name, fn in pairs(waits) do
          local h = tidal.spawn(fn)
          tidal.sleep(0.1)
          h:abort()
          local ok, err = h:join()
          assert.is_false(ok, name)
          assert.are.equal("cancelled", kind_of(err), name)
          local tok, terr = tidal.timeout(0.1, fn)
          assert.is_false(tok, name)
          assert.are.equal("timeout", kind_of(terr), name)
          local key = tidal.select({ wait = fn, sleep = function() tidal.sleep(0.1) end })
          assert.are.equal("sleep", key, name)
        end
        assert.are.equal("hello", assert(c:get(url("/hello"))).body)
        -- two requests racing: the loser is often woken by its response
        -- and cancelled before it runs (its response is dropped)
        for _ = 1, 30 do
          local key, r = tidal.select({
            a = function() return c:get(url("/hello")) end,
            b = function() return c:get(url("/hello")) end,
          })
          assert.is_truthy(key == "a" or key == "b")
          assert.are.equal("hello", r.body)
        end
        local a = assert(c:get(url("/conn"))).body
        assert.are.equal(a, assert(c:get(url("/conn"))).body)
      end)
    end)

    it("while resolving, by tidal.timeout and select (the lookup is not waited for)", function()
      local so, cleanup = fixtures.build_slow_dns()
      local out, status = fixtures.child(([[
        local tidal = require("tidal")
        local http = tidal.http
        tidal.run(function()
          local u = "http://slow.test:%d/hello"
          local t0 = tidal.now()
          local ok, err = tidal.timeout(0.2, http.get, u)
          print("timeout", ok, err.kind, tidal.now() - t0 < 1)
          t0 = tidal.now()
          local key = tidal.select({ a = function() return http.get(u) end,
                                     b = function() tidal.sleep(0.2) end })
          print("select", key, tidal.now() - t0 < 1)
          print("after", assert(http.get("http://127.0.0.1:%d/hello")).body)
        end)
      ]]):format(srv.port, srv.port), 30, so)
      cleanup()
      assert.are.equal(0, status, out)
      assert.is_truthy(out:find("timeout\tfalse\ttimeout\ttrue", 1, true), out)
      assert.is_truthy(out:find("select\tb\ttrue", 1, true), out)
      assert.is_truthy(out:find("after\thello", 1, true), out)
    end)

    it("a garbled chunked body, and a decoded body over max_body", function()
      support.run(function()
        local u = url("/chunked-garbage")
        assert_fails("protocol", u, http.get(u))
        local r = assert(http.get(u, { stream = true }))
        assert.are.equal("hello", r:read())
        local data, err = r:read()
        assert.is_nil(data)
        assert.are.equal("protocol", err.kind)
        -- a small compressed body that decodes to 3 MB
        local c = http.client({ decompress = true })
        u = url("/gzip-bomb?n=3000000")
        assert_fails("too_large", u, c:get(u, { max_body = 1000000 }))
        assert.are.equal(3000000, #assert(c:get(u)).body)
      end)
    end)

    it("when the runtime shuts down with a request in flight", function()
      local t0 = os.time()
      tidal.run(function()
        tidal.spawn(function() http.get(url("/delay/5")) end)
        tidal.sleep(0.1)
      end)
      assert.is_true(os.time() - t0 < 3)
    end)
  end)

  -- A request is written in the worker's idle phase, right before its
  -- next poll for I/O, together with the others its batch of tasks starts
  -- (glue.c: on_idle). These serve on a tidal.net listener of the same
  -- runtime, so they see when a connection opens and what is sent.
  describe("requests are written before the worker's next poll", function()
    -- answers every request on every connection with "ok" (keep-alive)
    local function serve(l, stats)
      while true do
        local s = l:accept()
        if not s then return end
        stats.conns = stats.conns + 1
        tidal.spawn(function()
          local conn <close> = s
          for line in conn:lines() do
            if line == "" then
              stats.requests = stats.requests + 1
              conn:write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            end
          end
        end)
      end
    end

    local function listen()
      local l = assert(tidal.net.listen("127.0.0.1", 0))
      return l, "http://127.0.0.1:" .. l:port() .. "/x"
    end

    it("a request cancelled before that poll is never sent; the pool keeps working", function()
      support.run(function()
        local l <close>, u = listen()
        local c <close> = http.client()
        local h = tidal.spawn(function() return c:get(u) end)
        tidal.yield() -- h starts its request and waits; no poll came between
        h:abort()
        local ok, err = h:join()
        assert.is_false(ok)
        assert.are.equal("cancelled", kind_of(err))
        -- not even a connection was opened
        assert.is_false((tidal.timeout(0.3, l.accept, l)))
        local stats = { conns = 0, requests = 0 }
        local server = tidal.spawn(serve, l, stats)
        assert.are.equal("ok", assert(c:get(u)).body)
        assert.are.equal("ok", assert(c:get(u)).body)
        assert.are.same({ conns = 1, requests = 2 }, stats)
        server:abort()
      end)
    end)

    it("of the requests one batch of tasks starts, the cancelled ones go and the others are answered", function()
      support.run(function()
        local l <close>, u = listen()
        local stats = { conns = 0, requests = 0 }
        local server = tidal.spawn(serve, l, stats)
        local c <close> = http.client()
        for round = 1, 3 do
          local hs = {}
          for i = 1, 20 do hs[i] = tidal.spawn(function() return c:get(u) end) end
          tidal.yield() -- they all start their requests
          for i = 2, 20, 2 do hs[i]:abort() end
          for i = 1, 20 do
            local ok, r = hs[i]:join()
            if i % 2 == 0 then
              assert.is_false(ok)
              assert.are.equal("cancelled", kind_of(r))
            else
              assert.is_true(ok, tostring(r))
              assert.are.equal("ok", r.body)
            end
          end
          assert.are.equal(10 * round, stats.requests)
        end
        -- the 10 connections of the first round were kept and reused
        assert.are.equal(10, stats.conns)
        server:abort()
      end)
    end)

    it("on a runtime that a host steps (Runtime:step)", function()
      local rt = tidal.runtime()
      local l, u
      local got = {}
      rt:spawn(function()
        l, u = listen()
        local stats = { conns = 0, requests = 0 }
        tidal.spawn(serve, l, stats)
        local hs = {}
        for i = 1, 5 do hs[i] = tidal.spawn(function() return http.get(u) end) end
        for i = 1, 5 do got[i] = assert(hs[i]:await()).body end
        got.requests = stats.requests
        l:close()
      end)
      local steps = 0
      while #got < 5 and steps < 1000 do
        rt:step(0.1)
        steps = steps + 1
      end
      rt:close()
      assert.are.same({ "ok", "ok", "ok", "ok", "ok", requests = 5 }, got)
    end)

    it("a host that waits on next_timeout steps again at once to write it", function()
      local rt = tidal.runtime()
      local started, body = false, nil
      rt:spawn(function()
        assert(http.get(url("/hello"))) -- (the pool has a connection now)
        tidal.sleep(0.05)
        started = true
        body = assert(http.get(url("/hello"))).body
      end)
      local steps = 0
      while not started do
        rt:step(rt:next_timeout() or 0.01)
        steps = steps + 1
        assert(steps < 1000)
      end
      -- the request waits to be written: the host must not wait (with its
      -- own poll of rt:backend_fd(), nothing would ever wake it)
      assert.are.equal(0, rt:next_timeout())
      while body == nil and steps < 1000 do
        rt:step(rt:next_timeout() or 1)
        steps = steps + 1
      end
      rt:close()
      assert.are.equal("hello", body)
    end)

    it("on luv's loop", function()
      if not pcall(require, "luv") then return pending("luv is not installed (lua-luv)") end
      local out, status = support.lua([[
        local uv = require("luv")
        local tidal = require("tidal")
        local http = require("tidal.http")
        local rt = tidal.runtime({ loop = uv })
        rt:spawn(function()
          local l <close> = assert(tidal.net.listen("127.0.0.1", 0))
          local u = "http://127.0.0.1:" .. l:port() .. "/x"
          local server = tidal.spawn(function()
            while true do
              local s = assert(l:accept())
              tidal.spawn(function()
                local conn <close> = s
                for line in conn:lines() do
                  if line == "" then
                    conn:write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                  end
                end
              end)
            end
          end)
          local c <close> = http.client() -- closed: the server sees EOF
          local hs = {}
          for i = 1, 3 do hs[i] = tidal.spawn(function() return c:get(u) end) end
          for i = 1, 3 do io.write(assert(hs[i]:await()).body, " ") end
          server:abort()
        end)
        uv.run()
        print("done")
      ]], 20)
      assert.are.equal(0, status, out)
      assert.are.equal("ok ok ok done\n", out)
    end)
  end)

  describe("streaming", function()
    it("stream = true returns at the headers; chunks() gives the body", function()
      support.run(function()
        local t0 = tidal.now()
        local r = assert(http.get(url("/headers-then-body?delay=0.5"), { stream = true }))
        assert.is_true(tidal.now() - t0 < 0.4, "waited for the body")
        assert.are.equal(200, r.status)
        assert.are.equal("4", r.headers["content-length"])
        assert.is_nil(r.body)
        local parts = {}
        for chunk in r:chunks() do parts[#parts + 1] = chunk end
        assert.are.equal("body", table.concat(parts))
        assert.is_nil(r:read())
        assert.has_error(function() r:json() end)
      end)
    end)

    it("streams a large body in pieces", function()
      support.run(function()
        local n = math.max(600000, support.scaled(2 * 1024 * 1024))
        local r = assert(http.get(url("/large?n=" .. n), { stream = true }))
        local got, pieces = 0, 0
        for chunk in r:chunks() do
          got = got + #chunk
          pieces = pieces + 1
          tidal.sleep(0) -- a slow reader: the transfer pauses and resumes
        end
        assert.are.equal(n, got)
        assert.is_true(pieces > 1)
      end)
    end)

    it("a broken stream raises from chunks() and fails read()", function()
      support.run(function()
        local r = assert(http.get(url("/reset"), { stream = true }))
        local ok, err = pcall(function() for _ in r:chunks() do end end)
        assert.is_false(ok)
        assert.are.equal("protocol", kind_of(err))
        r = assert(http.get(url("/truncated"), { stream = true }))
        local data, e
        repeat data, e = r:read() until data == nil
        assert.are.equal("protocol", kind_of(e))
      end)
    end)

    it("closing a stream early keeps the pool healthy", function()
      support.run(function()
        local c = http.client()
        do
          local r <close> = assert(c:get(url("/slow-body?n=10&size=100&delay=0.1"), { stream = true }))
          assert.is_truthy(r:read())
        end
        assert.are.equal("hello", assert(c:get(url("/hello"))).body)
        local r = assert(c:get(url("/slow-body?n=10&size=100&delay=0.1"), { stream = true }))
        r:close()
        local data, err = r:read()
        assert.is_nil(data)
        assert.are.equal("cancelled", err.kind)
      end)
    end)

    it("on_progress reports received and total", function()
      support.run(function()
        local calls = {}
        local r = assert(http.get(url("/slow-body?n=4&size=500&delay=0.05"), {
          on_progress = function(got, total) calls[#calls + 1] = { got, total } end,
        }))
        assert.are.equal(2000, #r.body)
        assert.is_true(#calls >= 2)
        assert.are.same({ 2000, 2000 }, calls[#calls])
        for i = 2, #calls do assert.is_true(calls[i][1] > calls[i - 1][1]) end
        -- it may raise: the request fails with its error, the pool is fine
        local ok, err = pcall(http.get, url("/slow-body?n=4&size=500&delay=0.05"),
          { on_progress = function() error("stop") end })
        assert.is_false(ok)
        assert.is_truthy(tostring(err):find("stop", 1, true))
        assert(http.get(url("/hello")))
      end)
    end)
  end)

  describe("HTTPS and HTTP/2 (nginx)", function()
    local nginx

    setup(function()
      nginx = fixtures.start_nginx()
    end)

    teardown(function()
      fixtures.stop_nginx(nginx)
    end)

    it("verifies certificates: fails without the CA", function()
      support.run(function()
        local u = nginx.url("/hello")
        local r, err = http.get(u)
        assert_fails("tls", u, r, err)
      end)
    end)

    it("succeeds with ca_file, over HTTP/2", function()
      support.run(function()
        local c = http.client({ ca_file = nginx.ca })
        local r = assert(c:get(nginx.url("/hello")))
        assert.are.equal(200, r.status)
        assert.are.equal("hello over tls\n", r.body)
        assert.are.equal("2", r.http_version)
        local c1 = http.client({ ca_file = nginx.ca, http2 = false })
        assert.are.equal("1.1", assert(c1:get(nginx.url("/hello"))).http_version)
      end)
    end)

    it("multiplexes concurrent requests on one connection", function()
      support.run(function()
        local c = http.client({ ca_file = nginx.ca })
        local hs = {}
        for i = 1, 6 do
          hs[i] = tidal.spawn(function() return assert(c:get(nginx.url("/big?m=" .. i))) end)
        end
        for i = 1, 6 do
          local r = hs[i]:await()
          assert.are.equal(100000, #r.body)
          assert.are.equal("2", r.http_version)
        end
      end)
      local conns = {}
      for line in nginx.log():gmatch("[^\n]+") do
        local id, proto, target = line:match("^(%d+) (%S+) GET (%S+)")
        if target and target:find("^/big%?m=") then
          assert.are.equal("HTTP/2.0", proto)
          conns[id] = true
        end
      end
      local n = 0
      for _ in pairs(conns) do n = n + 1 end
      assert.are.equal(1, n)
    end)

    it("a cancelled HTTP/2 stream leaves the connection usable", function()
      support.run(function()
        local c = http.client({ ca_file = nginx.ca })
        assert(c:get(nginx.url("/hello")))
        local h = tidal.spawn(function() return c:get(nginx.url("/big")) end)
        tidal.yield()
        h:abort()
        h:join()
        assert.are.equal("hello over tls\n", assert(c:get(nginx.url("/hello"))).body)
      end)
    end)
  end)
end)
