-- Issue 9 audit (HTTP, unchecked userdata): every method and metamethod of
-- the HTTP types (client, response, streamed body) and the private C
-- functions behind them, called on the wrong value, raises an error that
-- names the function; none crashes. Objects used after their finalizer ran
-- (resurrected by another finalizer) raise or report "closed". Before, the
-- response methods said "bad argument #1 to 'rawget'".
local tidal = require("tidal")
local http = require("tidal.http")
local core = require("tidal.core")
local support = require("support")
local fixtures = require("fixtures.http")

if not support.can_spawn then
  describe("issue 9 audit: HTTP types check their userdata", function()
    pending("needs the fixture server (a child process)")
  end)
  return
end

describe("issue 9 audit: HTTP types check their userdata", function()
  local srv, url

  setup(function()
    srv = fixtures.start_server()
    url = srv.url
  end)

  teardown(function()
    fixtures.stop_server(srv)
  end)

  it("each method and metamethod raises on a wrong self, in a child process", function()
    -- a child process: a crash fails this spec instead of killing busted
    local out, status = fixtures.child(([[
      local tidal = require("tidal")
      local http = tidal.http
      local BASE = %q
      tidal.run(function()
        local c = http.client()
        local resp = assert(c:get(BASE .. "/hello"))
        local sresp = assert(c:get(BASE .. "/slow-body?n=2&size=10&delay=0", { stream = true }))
        local body = rawget(sresp, "_b")
        local tx = tidal.channel()
        local wrong = { nil, 42, "s", {}, true, print, coroutine.create(print),
          io.stdout, tx, c, body, resp, setmetatable({}, {}) }
        local mts = {
          client = getmetatable(c), body = getmetatable(body),
          response = getmetatable(resp),
        }
        local n, raised = 0, 0
        for tname, mt in pairs(mts) do
          local fns = {}
          for k, v in pairs(mt) do if type(v) == "function" then fns[k] = v end end
          if type(mt.__index) == "table" then
            for k, v in pairs(mt.__index) do if type(v) == "function" then fns[k] = v end end
          end
          for name, fn in pairs(fns) do
            for i = 1, #wrong + 1 do
              local self = wrong[i]
              local own = (tname == "client" and self == c) or (tname == "body" and self == body)
                or (tname == "response" and (self == resp))
              if not own then
                n = n + 1
                local ok = pcall(fn, self, "x", "y")
                if ok and name ~= "__gc" then
                  print("no error: " .. tname .. "." .. name .. "(" .. type(self) .. ")")
                else
                  raised = raised + 1
                end
              end
            end
          end
        end
        print("calls", n, raised)
        sresp:close()
        c:close()
      end)
      print("done")
    ]]):format(srv.base))
    assert.are.equal(0, status, out)
    assert.is_falsy(out:find("no error:", 1, true), out)
    assert.is_truthy(out:find("done", 1, true), out)
  end)

  it("the messages name the function", function()
    support.run(function()
      local c = http.client()
      local resp = assert(c:get(url("/hello")))
      local s = assert(c:get(url("/slow-body?n=2&size=10&delay=0"), { stream = true }))
      local body = rawget(s, "_b")
      local function err_of(fn, ...)
        local ok, err = pcall(fn, ...)
        assert.is_false(ok)
        return tostring(err)
      end
      assert.is_truthy(err_of(c.get, 42, url("/hello")):find("client:get: expected an HTTP client", 1, true))
      assert.is_truthy(err_of(c.close, body):find("client:close: expected an HTTP client", 1, true))
      assert.is_truthy(err_of(resp.json, {}):find("resp:json: expected an HTTP response", 1, true))
      assert.is_truthy(err_of(resp.json, c):find("resp:json: expected an HTTP response", 1, true))
      assert.is_truthy(err_of(s.read, 42):find("resp:read: expected an HTTP response", 1, true))
      assert.is_truthy(err_of(s.chunks, "x"):find("resp:chunks: expected an HTTP response", 1, true))
      assert.is_truthy(err_of(s.close, 1):find("resp:close: expected an HTTP response", 1, true))
      assert.is_truthy(err_of(getmetatable(resp).__tostring, 1):find("expected an HTTP response", 1, true))
      assert.is_truthy(err_of(getmetatable(resp).__index, 1, "status"):find("expected an HTTP response", 1, true))
      assert.is_truthy(err_of(body.read, c):find("body:read: expected a streamed response body", 1, true))
      assert.is_truthy(err_of(core._http_send, {}, "x"):find("expected an HTTP client", 1, true))
      assert.is_false((pcall(core._http_json, {})))
      assert.is_false((pcall(core._http_headers, nil)))
      s:close()
    end)
  end)

  it("objects finalized and then resurrected raise or say closed", function()
    support.run(function()
      local c = http.client()
      local s = assert(c:get(url("/slow-body?n=5&size=10&delay=0.05"), { stream = true }))
      local body = rawget(s, "_b")
      -- what a finalizer does to them, then they are used again
      getmetatable(body).__gc(body)
      getmetatable(c).__gc(c)
      local data, err = s:read()
      assert.is_nil(data)
      assert.is_true(tidal.is_error(err, "cancelled"), tostring(err))
      assert.is_truthy(tostring(c):find("closed", 1, true))
      local ok, e = pcall(c.get, c, url("/hello"))
      assert.is_false(ok)
      assert.is_truthy(tostring(e):find("the client is closed", 1, true), tostring(e))
      c:close()
      getmetatable(c).__gc(c)
      getmetatable(body).__gc(body)
      -- a real resurrection, through another object's finalizer
      local kept
      local function drop() -- (its frame is gone before the collection)
        local c2 = http.client()
        local s2 = assert(c2:get(url("/slow-body?n=5&size=10&delay=0.05"), { stream = true }))
        setmetatable({}, { __gc = function() kept = { c2, s2 } end })
      end
      drop()
      collectgarbage()
      collectgarbage()
      assert.is_table(kept)
      local ok2, e2 = pcall(kept[1].get, kept[1], url("/hello"))
      assert.is_false(ok2)
      assert.is_truthy(tostring(e2):find("the client is closed", 1, true), tostring(e2))
      local d2, err2 = kept[2]:read()
      assert.is_nil(d2)
      assert.is_true(tidal.is_error(err2, "cancelled"), tostring(err2))
    end)
  end)
end)
