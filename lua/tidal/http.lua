--- HTTP client for tidal tasks: libcurl's multi interface driven by the
-- worker's libuv loop. A request parks the calling task until the response
-- is in; other tasks run meanwhile.
--
--     local http = require("tidal.http")    -- also tidal.http
--     tidal.run(function()
--       local resp, err = http.get("https://example.org/")
--       if not resp then error(err) end
--       print(resp.status, resp.headers["content-type"], #resp.body)
--     end)
--
-- Failures of the network or the server return `nil, err`, where
-- `err.kind` is one of "timeout", "dns", "connect", "tls", "protocol",
-- "too_large", "too_many_redirects" (and "cancelled" for a closed stream);
-- `err.message` names the method and URL, `err.url` is the URL. Misuse (a
-- bad option, a header with CR/LF, a call outside a task) raises an error
-- naming the function. A cancelled request (abort, timeout, select) is
-- withdrawn from libcurl at once and its task unwinds.
--
-- Defaults (per client; the module functions use a shared default client):
-- TLS certificates are verified (`ca_file` adds a private CA); only http and
-- https are allowed, also on redirects; redirects are followed, at most 10
-- (`max_redirects`); a buffered body may be at most 64 MiB (`max_body`; a
-- streamed body has no limit unless given); the connect timeout is 30 s and
-- there is no total timeout unless `timeout` is given; connections are kept
-- alive and reused, HTTP/2 is negotiated over TLS and multiplexed. The full
-- reference is docs/http.md.
-- @module tidal.http

local core = require("tidal.core")

local send = core._http_send
local parse_headers = core._http_headers
local json_decode = core._http_json
local new_client = core._http_client
local make_error = core.error
local client_mt, response_mt, body_mt = core._http_metatables()

local type, tostring, tonumber, pairs, ipairs, error, getmetatable =
  type, tostring, tonumber, pairs, ipairs, error, getmetatable
local concat, sort = table.concat, table.sort

local M = {}

local BUFFER, STREAM, PROGRESS = 0, 1, 2

-- misuse: raise at the first caller outside tidal's files (the user's code)
local argcheck = require("tidal.argcheck")
argcheck.own()
local argerror = argcheck.argerror

-- lua-cjson, loaded on first use to encode the json option (an instance of
-- our own: other users' settings do not leak in); resp:json() decodes with
-- core._http_json, which keeps integers
local cjson
local function json_lib(fname)
  if cjson == nil then
    local ok, mod = pcall(require, "cjson")
    if not ok then
      argerror(fname, "option 'json' needs lua-cjson (Debian: apt-get "
        .. "install lua-cjson; or luarocks install lua-cjson)")
    end
    cjson = mod.new()
  end
  return cjson
end

-- RFC 3986 percent-encoding of everything but the unreserved characters
local function pct(c)
  return ("%%%02X"):format(c:byte())
end
local function encode(v)
  return (tostring(v):gsub("[^%w%-%._~]", pct))
end

--- Percent-encode a string for use in a URL (all but `A-Z a-z 0-9 - . _ ~`).
-- @function urlencode
-- @usage print(http.urlencode("a b&c"))  --> a%20b%26c
-- @tparam string s
-- @treturn string
M.urlencode = function(s)
  if type(s) ~= "string" and type(s) ~= "number" then
    argerror("tidal.http.urlencode", "expected a string, got " .. type(s))
  end
  return encode(s)
end

local function query_value(fname, k, v)
  local t = type(v)
  if t ~= "string" and t ~= "number" and t ~= "boolean" then
    argerror(fname, "query value for '" .. tostring(k) .. "' must be a "
      .. "string, number, boolean or a list of them, got " .. t)
  end
  if v == true then return encode(k) end
  return encode(k) .. "=" .. encode(v)
end

-- url with the query table (or string) q appended
local function add_query(url, q, fname)
  local qs
  if type(q) == "string" then
    qs = q
  elseif type(q) == "table" then
    local keys = {}
    for k in pairs(q) do
      if type(k) ~= "string" and type(k) ~= "number" then
        argerror(fname, "query keys must be strings, got " .. type(k))
      end
      keys[#keys + 1] = k
    end
    sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    local parts = {}
    for _, k in ipairs(keys) do
      local v = q[k]
      if type(v) == "table" then
        for _, e in ipairs(v) do parts[#parts + 1] = query_value(fname, k, e) end
      elseif v ~= false then
        parts[#parts + 1] = query_value(fname, k, v)
      end
    end
    qs = concat(parts, "&")
  else
    argerror(fname, "option 'query' must be a table or a string, got " .. type(q))
  end
  if qs == "" then return url end
  local base, frag = url:match("^([^#]*)(.*)$")
  local last = base:sub(-1)
  local sep = not base:find("?", 1, true) and "?"
    or ((last == "?" or last == "&") and "" or "&")
  return base .. sep .. qs .. frag
end

-- the common path of every request
local function request(c, fname, method, url, opts, body)
  local mode, ctype, progress = BUFFER, nil, nil
  if opts ~= nil then
    if type(opts) ~= "table" then
      argerror(fname, "options must be a table, got " .. type(opts))
    end
    local q = opts.query
    if q ~= nil then
      if type(url) ~= "string" then argerror(fname, "url must be a string, got " .. type(url)) end
      url = add_query(url, q, fname)
    end
    local j = opts.json
    if j ~= nil then
      if body ~= nil or opts.body ~= nil then
        argerror(fname, "give either a body or json, not both")
      end
      local ok, s = pcall(json_lib(fname).encode, j)
      if not ok then argerror(fname, "cannot encode option 'json': " .. tostring(s)) end
      body, ctype = s, "application/json"
    elseif body == nil then
      body = opts.body
    end
    local st = opts.stream
    if st ~= nil and st ~= false then
      if st ~= true then argerror(fname, "option 'stream' must be a boolean, got " .. type(st)) end
      mode = STREAM
    end
    progress = opts.on_progress
    if progress ~= nil then
      if type(progress) ~= "function" and not (getmetatable(progress) or {}).__call then
        argerror(fname, "option 'on_progress' must be a function, got " .. type(progress))
      end
      if mode == BUFFER then mode = PROGRESS end
    end
  end
  if mode == BUFFER then
    return send(c, fname, method, url, opts, body, BUFFER, ctype)
  end
  local resp, err = send(c, fname, method, url, opts, body, mode, ctype)
  if not resp or not progress then return resp, err end
  local h = resp.headers
  local total = (h["content-encoding"] == nil) and tonumber(h["content-length"]) or nil
  if mode == STREAM then
    resp._progress, resp._got, resp._total = progress, 0, total
    return resp
  end
  -- buffered, with progress reports: read it piece by piece
  local b <close> = resp._b
  local parts, n, got = {}, 0, 0
  while true do
    local chunk, rerr = b:read(fname)
    if not chunk then
      if rerr then return nil, rerr end
      break
    end
    n = n + 1
    parts[n] = chunk
    got = got + #chunk
    progress(got, total)
  end
  resp._b = nil
  resp.body = concat(parts)
  return resp
end

--- Clients
-- @section clients

local default
local function default_client()
  local c = default
  if c == nil then
    c = new_client()
    default = c
  end
  return c
end

--- A client: its own connection pool (per worker), default headers,
-- timeouts and limits. Options (all optional):
--
-- - `headers`: default headers, `{name = value}`; a request's own headers
--   override them by name (a value `false` drops one)
-- - `timeout`: total time for a request, seconds (default: none)
-- - `connect_timeout`: seconds (default 30)
-- - `follow_redirects` (default true), `max_redirects` (default 10)
-- - `max_body`: bytes a buffered body may have (default 64 MiB; `false`:
--   no limit); applies to streamed bodies only when given
-- - `ca_file`: PEM file of the CAs to trust (default: the system's)
-- - `user_agent` (default: none is sent)
-- - `max_connections`, `max_host_connections`: limits (default none);
--   requests beyond them wait for a free connection
-- - `pool_size`: connections kept open, in use or idle (default 256)
-- - `http2`: negotiate HTTP/2 over TLS (default true)
-- - `decompress`: ask for and decode gzip/deflate/br/zstd (default false)
-- - `proxy`: a proxy URL, or false for none (default: the environment's
--   http_proxy, https_proxy, all_proxy, no_proxy)
--
-- Methods: `c:get(url [, opts])`, `c:post(url, body [, opts])`,
-- `c:request(opts)` (as the module functions), and `c:close()` (also
-- `<close>`: no new requests; requests in flight and streamed bodies run to
-- their end, then its connections close). A client is not collected while a
-- request or a streamed body uses it.
-- @function client
-- @usage local c <close> = http.client({ timeout = 10 })
-- @tparam[opt] table opts
-- @return a client
M.client = function(opts)
  return new_client(opts)
end

local Client = {}

--- Requests
-- @section requests

--- GET `url`. opts as for `request`.
-- @function get
-- @usage local resp, err = http.get("http://127.0.0.1:8080/")
-- @tparam string url
-- @tparam[opt] table opts
-- @return response, or nil and an error object
function M.get(url, opts)
  if opts == nil then -- the common case, straight to C
    return send(default or default_client(), "tidal.http.get", "GET", url)
  end
  return request(default_client(), "tidal.http.get", "GET", url, opts)
end

--- POST `body` (a string, or nil) to `url`; opts as for `request` (use
-- `opts.json` to send a table as JSON).
-- @function post
-- @usage local resp = http.post(url, "body", { headers = { ["content-type"] = "text/plain" } })
-- @tparam string url
-- @tparam[opt] string body
-- @tparam[opt] table opts
-- @return response, or nil and an error object
function M.post(url, body, opts)
  if body ~= nil and type(body) ~= "string" then
    argerror("tidal.http.post", "body must be a string or nil, got "
      .. type(body) .. " (send a table with opts.json)")
  end
  return request(default_client(), "tidal.http.post", "POST", url, opts, body)
end

local function request_opts(c, fname, opts)
  if type(opts) ~= "table" then
    argerror(fname, "expected an options table {url = ..., method = ...}, got " .. type(opts))
  end
  local method = opts.method
  if method == nil then
    method = (opts.body ~= nil or opts.json ~= nil) and "POST" or "GET"
  elseif type(method) ~= "string" then
    argerror(fname, "option 'method' must be a string, got " .. type(method))
  else
    method = method:upper()
  end
  local url = opts.url
  if type(url) ~= "string" then
    argerror(fname, "option 'url' must be a string, got " .. type(url))
  end
  return request(c, fname, method, url, opts)
end

--- A request. opts:
--
-- - `url` (required), `method` (default GET, or POST with a body)
-- - `headers`: `{name = value}` (a list value sends the header several
--   times; `false` drops a default one); CR or LF in a name or value is
--   refused
-- - `body`: a string; or `json`: a value sent as JSON (sets Content-Type)
-- - `query`: a table appended to the URL, percent-encoded, keys sorted
--   (a list value repeats the key; `true` gives the bare key)
-- - `timeout`, `connect_timeout`, `follow_redirects`, `max_redirects`,
--   `max_body`: override the client's
-- - `on_progress(received, total)`: called in the task after each piece of
--   the body (`total` is the announced Content-Length, or nil)
-- - `stream = true`: return once the headers are in; the body is read with
--   `resp:chunks()` or `resp:read()`
--
-- The response: `status` (integer), `headers` (lower-case names; repeated
-- headers joined with ", "), `body` (string; nil when streamed), `url` (the
-- final URL, after redirects), `http_version` ("1.1", "2", ...), `reason`
-- (the status line's phrase, "" for HTTP/2),
-- `resp:json()`.
-- @function request
-- @usage local resp = http.request({ url = url, method = "PUT", json = { id = 1 } })
-- @tparam table opts
-- @return response, or nil and an error object
function M.request(opts)
  return request_opts(default_client(), "tidal.http.request", opts)
end

--- Close the client: no new requests; requests in flight and streamed
-- bodies run to their end, then its connections close. Also `__close`.
-- @function Client:close
-- @usage c:close()

--- GET `url` with this client's settings (as `get`).
-- @function Client:get
-- @tparam string url
-- @tparam[opt] table opts as for `request`
-- @return response, or nil and an error object
-- @usage local resp, err = c:get("http://127.0.0.1:8080/")
function Client:get(url, opts)
  if opts == nil then return send(self, "client:get", "GET", url) end
  return request(self, "client:get", "GET", url, opts)
end

--- POST `body` to `url` with this client's settings (as `post`).
-- @function Client:post
-- @tparam string url
-- @tparam[opt] string body
-- @tparam[opt] table opts as for `request`
-- @return response, or nil and an error object
-- @usage local resp = c:post(url, "data")
function Client:post(url, body, opts)
  if body ~= nil and type(body) ~= "string" then
    argerror("client:post", "body must be a string or nil, got "
      .. type(body) .. " (send a table with opts.json)")
  end
  return request(self, "client:post", "POST", url, opts, body)
end

--- A request with this client's settings (opts as for `request`).
-- @function Client:request
-- @tparam table opts
-- @return response, or nil and an error object
-- @usage local resp = c:request({ url = url, method = "DELETE" })
function Client:request(opts)
  return request_opts(self, "client:request", opts)
end

Client.close = client_mt.close
client_mt.__index = Client

--- Responses
-- @section responses

local Response = {}

-- self must be a response (a table with the response metatable): a method
-- taken from the metatable and called on something else raises
local function check_response(self, fname)
  if getmetatable(self) ~= response_mt then
    argerror(fname, "expected an HTTP response, got " .. type(self)
      .. " (call it with ':')")
  end
end

--- The body decoded as JSON, or nil and an error of kind "protocol" if it
-- is not valid JSON. A number written without a fraction or an exponent
-- is an integer when it fits in 64 bits (`{"id": 1}` gives `id == 1`, an
-- integer); any other number is a float (`1.0`, `1e3`, `2^63` and beyond).
-- Objects and arrays are tables; JSON null is `http.null` (the light
-- userdata NULL, equal to lua-cjson's `cjson.null`).
-- @function Response:json
-- @usage local data = resp:json()
function Response:json()
  check_response(self, "resp:json")
  local body = rawget(self, "body")
  if body == nil then
    argerror("resp:json", "the response was streamed (stream = true); read "
      .. "it with resp:chunks() or resp:read()")
  end
  local v, msg = json_decode(body)
  if msg == nil then return v end
  local err = make_error("protocol", "tidal.http: the body of "
    .. tostring(self.url) .. " is not valid JSON: " .. msg)
  err.url = self.url
  return nil, err
end

local function stream_body(self, fname)
  check_response(self, fname)
  local b = rawget(self, "_b")
  if b == nil then
    argerror(fname, "the response is not streamed (pass stream = true to "
      .. "the request); its body is resp.body")
  end
  return b
end

local function read(self, fname)
  local chunk, err = stream_body(self, fname):read(fname)
  local progress = rawget(self, "_progress")
  if chunk and progress then
    local got = self._got + #chunk
    self._got = got
    progress(got, self._total)
  end
  return chunk, err
end

--- Streamed responses: the next piece of the body, or nil at its end, or
-- nil and an error object if the transfer failed. One task at a time may
-- read a body: a read while another task waits in one raises.
-- @function Response:read
-- @usage local r = http.get(url, { stream = true }); print(#r:read())
function Response:read()
  return read(self, "resp:read")
end

--- Streamed responses: an iterator over the pieces of the body,
-- `for chunk in resp:chunks() do ... end`. Like `io.lines`, it raises the
-- error object if the transfer fails midway (a loop must not mistake a
-- broken body for a complete one).
-- @function Response:chunks
-- @usage for chunk in resp:chunks() do io.write(chunk) end
function Response:chunks()
  stream_body(self, "resp:chunks")
  return function()
    local chunk, err = read(self, "resp:chunks")
    if chunk == nil and err ~= nil then error(err, 2) end
    return chunk
  end
end

--- Streamed responses: stop receiving (the connection is closed unless the
-- body was complete). Also `<close>` and garbage collection.
-- @function Response:close
-- @usage resp:close()
function Response:close()
  check_response(self, "resp:close")
  local b = rawget(self, "_b")
  if b ~= nil then b:close() end
end

-- the status line leads the raw header block: "HTTP/1.1 200 OK"
local function status_line(self)
  return (rawget(self, "_h") or ""):match("^HTTP/(%S+) %d+ ?([^\r\n]*)")
end

function response_mt.__index(self, k)
  check_response(self, "resp:__index")
  local m = Response[k]
  if m ~= nil then return m end
  if k == "headers" then
    local h = parse_headers(rawget(self, "_h") or "")
    rawset(self, "headers", h)
    return h
  elseif k == "http_version" then
    local v = status_line(self) or ""
    if v == "2.0" then v = "2" elseif v == "3.0" then v = "3" end
    rawset(self, "http_version", v)
    return v
  elseif k == "reason" then
    local _, reason = status_line(self)
    rawset(self, "reason", reason or "")
    return reason or ""
  end
  return nil
end

response_mt.__close = Response.close

function response_mt.__tostring(self)
  check_response(self, "resp:__tostring")
  return ("tidal.http.Response (%s %s)"):format(tostring(rawget(self, "status")),
    tostring(rawget(self, "url")))
end

body_mt.__name = "tidal.http.Body"

--- JSON null as `resp:json()` decodes it: the light userdata NULL, equal
-- to lua-cjson's `cjson.null`.
M.null = json_decode("null")

--- libcurl's version and features: `version, {async_dns, http2, tls,
-- tls_version}`.
-- @function curl_version
-- @usage print(http.curl_version())
M.curl_version = core._http_curl_version

return M
