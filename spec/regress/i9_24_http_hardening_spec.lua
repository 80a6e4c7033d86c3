-- Issue 9 item 24, three HTTP defects:
--  * userinfo (http://user:secret@host/) stayed in resp.url, err.url and
--    error messages, which end up in logs: now it is stripped everywhere
--    (libcurl still sends it as basic authentication);
--  * a 50 MB header line failed with kind "protocol", "Out of memory": now
--    oversized headers (one line, or all of them) are kind "too_large";
--  * child processes inherited libcurl's wake-up socketpair (and the
--    threaded resolver's): now every descriptor tidal creates is
--    close-on-exec.
local tidal = require("tidal")
local http = require("tidal.http")
local support = require("support")
local fixtures = require("fixtures.http")

if not support.can_spawn then
  describe("issue 9 item 24: HTTP userinfo, oversized headers, close-on-exec", function()
    pending("needs the fixture server (a child process)")
  end)
  return
end

describe("issue 9 item 24: HTTP userinfo, oversized headers, close-on-exec", function()
  local srv, url

  setup(function()
    srv = fixtures.start_server()
    url = srv.url
  end)

  teardown(function()
    fixtures.stop_server(srv)
  end)

  local function with_user(path, userinfo)
    return "http://" .. (userinfo or "user:secret") .. "@127.0.0.1:" .. srv.port .. path
  end

  local function no_secret(s)
    s = tostring(s)
    assert.is_falsy(s:find("secret", 1, true), "the password leaked: " .. s)
    assert.is_falsy(s:find("user", 1, true), "the user name leaked: " .. s)
  end

  describe("userinfo", function()
    it("is sent as basic authentication but kept out of resp.url", function()
      support.run(function()
        local r = assert(http.get(with_user("/echo")))
        assert.are.equal(url("/echo"), r.url)
        no_secret(r.url)
        no_secret(tostring(r))
        -- base64("user:secret")
        assert.are.equal("Basic dXNlcjpzZWNyZXQ=", r:json().headers.authorization)
        -- a user alone, encoded characters, any client
        local c = http.client()
        assert.are.equal(url("/hello"), assert(c:get(with_user("/hello", "user"))).url)
        assert.are.equal(url("/hello"),
          assert(c:get(with_user("/hello", "us%40er:se%3Acret"))).url)
        -- an '@' after the authority is not userinfo: the URL is left alone
        local plain = url("/echo?mail=a@b")
        assert.are.equal(plain, assert(c:get(plain)).url)
      end)
    end)

    it("is stripped from a redirect's URL", function()
      support.run(function()
        local target = with_user("/hello", "user2:secret2")
        local r = assert(http.get(url("/redirect-to?url=" .. http.urlencode(target))))
        assert.are.equal(200, r.status)
        assert.are.equal(url("/hello"), r.url)
      end)
    end)

    it("is kept out of err.url and every error message", function()
      support.run(function()
        local port = fixtures.free_port()
        local u = "http://user:secret@127.0.0.1:" .. port .. "/x"
        local r, err = http.get(u)
        assert.is_nil(r)
        assert.are.equal("connect", err.kind)
        assert.are.equal("http://127.0.0.1:" .. port .. "/x", err.url)
        no_secret(err)
        -- a timeout, a failure mid-body, an unsupported scheme
        r, err = http.get(with_user("/delay/2"), { timeout = 0.1 })
        assert.are.equal("timeout", err.kind)
        assert.are.equal(url("/delay/2"), err.url)
        no_secret(err)
        r, err = http.get(with_user("/truncated"))
        assert.are.equal("protocol", err.kind)
        no_secret(err)
        r, err = http.get("ftp://user:secret@127.0.0.1/")
        assert.are.equal("protocol", err.kind)
        no_secret(err)
        no_secret(err.url)
        -- a streamed body that breaks
        local s = assert(http.get(with_user("/reset"), { stream = true }))
        no_secret(s.url)
        local data
        repeat data, err = s:read() until data == nil
        assert.are.equal("protocol", err.kind)
        assert.are.equal(url("/reset"), err.url)
        no_secret(err)
        -- JSON that does not parse
        local _, jerr = assert(http.get(with_user("/bad-json"))):json()
        assert.are.equal("protocol", jerr.kind)
        no_secret(jerr)
        no_secret(jerr.url)
        -- misuse: a malformed URL is named without its password
        local ok, merr = pcall(http.get, "http://user:secret@127.0.0.1/a b")
        assert.is_false(ok)
        assert.is_truthy(tostring(merr):find("malformed URL 'http://127.0.0.1/a b'", 1, true),
          tostring(merr))
        ok, merr = pcall(http.get, "http://user:secret@[::1/")
        assert.is_false(ok)
        assert.is_truthy(tostring(merr):find("malformed URL", 1, true), tostring(merr))
        no_secret(merr)
      end)
    end)
  end)

  describe("oversized headers", function()
    it("a 50 MB header line is too_large, not an out-of-memory protocol error", function()
      support.run(function()
        local u = url("/huge-header?n=" .. 50 * 1024 * 1024)
        local r, err = http.get(u)
        assert.is_nil(r)
        assert.are.equal("too_large", err.kind, tostring(err))
        assert.is_truthy(tostring(err):find("headers are too large", 1, true), tostring(err))
        assert.is_falsy(tostring(err):find("Out of memory", 1, true), tostring(err))
        assert.are.equal(u, err.url)
        -- streamed: the request itself fails
        r, err = http.get(u, { stream = true })
        assert.is_nil(r)
        assert.are.equal("too_large", err.kind, tostring(err))
      end)
    end)

    it("too many header lines are too_large; a large but sane block is fine", function()
      support.run(function()
        local r, err = http.get(url("/many-headers?n=400&size=1000"))
        assert.is_nil(r)
        assert.are.equal("too_large", err.kind, tostring(err))
        assert.is_truthy(tostring(err):find("headers are too large", 1, true), tostring(err))
        r = assert(http.get(url("/many-headers?n=50&size=1000")))
        assert.are.equal("ok", r.body)
        assert.are.equal(1000, #r.headers["x-h49"])
        -- and the pool works afterwards
        assert.are.equal("hello", assert(http.get(url("/hello"))).body)
      end)
    end)
  end)

  describe("close-on-exec", function()
    it("a child process inherits no descriptor of tidal's, libcurl's or libuv's", function()
      local so, cleanup = fixtures.build_slow_dns()
      local out, status = fixtures.child(([[
        local tidal = require("tidal")
        local http = tidal.http
        local BASE, PORT = %q, %d
        -- the descriptors a child process (ls, through sh) starts with
        local function child_fds()
          local p = assert(io.popen("ls -l /proc/self/fd/"))
          local set = {}
          for line in p:lines() do
            local fd, target = line:match("(%%d+) %%-> (.*)$")
            if fd then set[tonumber(fd)] = target end
          end
          p:close()
          return set
        end
        local before = child_fds()
        tidal.run({ workers = 1 }, function()
          local c = http.client()
          assert(c:get(BASE .. "/hello")) -- an idle pooled connection
          local busy = tidal.spawn(function() return c:get(BASE .. "/delay/1") end)
          local dns = tidal.spawn(function()
            return http.get("http://slow.test:" .. PORT .. "/hello")
          end)
          local job = tidal.spawn_blocking(function()
            local t = os.time() + 1
            while os.time() < t do end
          end)
          local par = tidal.spawn_parallel(function(u)
            return require("tidal.http").get(u).status
          end, BASE .. "/hello")
          assert(par:await() == 200)
          tidal.sleep(0.3) -- the lookup of slow.test is under way
          local during = child_fds()
          local extra = {}
          for fd, target in pairs(during) do
            if before[fd] == nil then extra[#extra + 1] = fd .. " -> " .. target end
          end
          table.sort(extra)
          print("inherited: " .. (#extra == 0 and "none" or table.concat(extra, ", ")))
          assert(busy:await())
          assert(dns:await())
          job:await()
        end)
      ]]):format(srv.base, srv.port), 30, so)
      cleanup()
      assert.are.equal(0, status, out)
      assert.is_truthy(out:find("inherited: none", 1, true), out)
    end)
  end)
end)
