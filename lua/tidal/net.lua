--- Sockets: TCP, Unix-domain sockets, UDP and name resolution, on the
-- worker's libuv loop. Every function that waits parks the calling task
-- only; see docs/net.md for the guide.
--
--     local tidal = require("tidal")
--     tidal.run(function()
--       local l = assert(tidal.net.listen("127.0.0.1", 0))
--       tidal.spawn(function()
--         local s <close> = assert(l:accept())
--         s:write(s:read_line(), "\n")
--       end)
--       local c <close> = assert(tidal.net.connect("127.0.0.1", l:port()))
--       c:write("hello\n")
--       print(c:read_line()) --> hello
--     end)
--
-- Expected failures return `nil, err` (`err.kind`, `err.errno`,
-- `err.host`, `err.port`; docs/errors.md); misuse raises.
-- @module tidal.net

local core = require("tidal.core")

local M = {}

local c_connect, c_listen = core._net_connect, core._net_listen
local c_connect_unix, c_listen_unix = core._net_connect_unix, core._net_listen_unix
local c_resolve, c_udp = core._net_resolve, core._net_udp
local timeout, new_error = core.timeout, core.error
local type, pairs, ipairs, error, tostring = type, pairs, ipairs, error, tostring
local fmt = string.format

-- option checkers: each raises "<fname>: opts.<k> ..." on a bad value
local function boolean(fname, k, v)
  if type(v) ~= "boolean" then
    error(fmt("%s: opts.%s must be a boolean, got %s", fname, k, type(v)), 4)
  end
end

local function seconds(fname, k, v)
  if type(v) ~= "number" or v ~= v or v < 0 then
    error(fmt("%s: opts.%s must be a duration in seconds (>= 0), got %s",
      fname, k, tostring(v)), 4)
  end
end

local function count(fname, k, v)
  if math.type(v) ~= "integer" or v < 1 then
    error(fmt("%s: opts.%s must be a positive integer, got %s", fname, k,
      tostring(v)), 4)
  end
end

local function mode(fname, k, v)
  if math.type(v) ~= "integer" or v < 0 or v > 4095 then
    error(fmt("%s: opts.%s must be permission bits (e.g. 384 = 0600), got %s",
      fname, k, tostring(v)), 4)
  end
end

local function keepalive(fname, k, v)
  if v ~= false and (type(v) ~= "number" or v < 1) then
    error(fmt("%s: opts.%s must be false or a delay in seconds (>= 1), got %s",
      fname, k, tostring(v)), 4)
  end
end

local families = { inet = 4, inet6 = 6 }
local function family(fname, k, v)
  if families[v] == nil then
    error(fmt("%s: opts.%s must be \"inet\" or \"inet6\", got %s", fname, k,
      tostring(v)), 4)
  end
end

-- Checks opts against known (name -> checker); returns opts or {}.
local function check(fname, opts, known)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error(fmt("%s: expected an options table, got %s", fname, type(opts)), 3)
  end
  for k, v in pairs(opts) do
    local chk = known[k]
    if chk == nil then
      local names = {}
      for name in pairs(known) do names[#names + 1] = name end
      table.sort(names)
      error(fmt("%s: unknown option '%s' (known: %s)", fname, tostring(k),
        table.concat(names, ", ")), 3)
    end
    chk(fname, k, v)
  end
  return opts
end

local function check_host(fname, host)
  if type(host) ~= "string" then
    error(fmt("%s: expected a host name or IP address (a string), got %s",
      fname, type(host)), 3)
  end
end

local function label(host, port)
  if host:find(":", 1, true) and host:sub(1, 1) ~= "[" then
    return fmt("[%s]:%d", host, port)
  end
  return fmt("%s:%d", host, port)
end

-- Runs fn(...) within opts.timeout (if any); on expiry nil, err (kind
-- "timeout") naming what timed out.
local function within(fname, opts, what, fields, fn, ...)
  local limit = opts.timeout
  if limit == nil then return fn(...) end
  local ok, r, err = timeout(limit, fn, ...)
  if ok then return r, err end
  if r.kind ~= "timeout" then error(r, 0) end
  local e = new_error("timeout", fmt("%s: %s: timed out after %g s", fname,
    what, limit))
  for k, v in pairs(fields) do e[k] = v end
  return nil, e
end

local connect_opts = {
  timeout = seconds, nodelay = boolean, keepalive = keepalive,
  read_buffer = count, family = family,
}

local function connect_any(host, port, opts)
  local nodelay, ka, rbuf = opts.nodelay, opts.keepalive, opts.read_buffer
  ka = ka and math.floor(ka) or nil
  local s, err = c_connect(host, port, nodelay, ka, rbuf)
  if s ~= false then return s, err end
  local addrs, rerr = c_resolve(host, families[opts.family] or 0,
    "tidal.net.connect")
  if not addrs then
    rerr.port = port
    return nil, rerr
  end
  for _, addr in ipairs(addrs) do
    s, err = c_connect(addr, port, nodelay, ka, rbuf, host)
    if s then return s end
  end
  if #addrs > 1 then
    err.message = fmt("%s (tried %d addresses)", err.message, #addrs)
  end
  return nil, err
end

--- Connect to a TCP server.
-- `host` is a name (resolved on the thread pool; each address is tried in
-- order) or an IP address (no DNS); IPv6 may be bracketed.
-- @tparam string host
-- @tparam integer port 1 to 65535
-- @tparam[opt] table opts `timeout` (seconds, DNS and connect together;
--   kind "timeout"), `nodelay` (default true), `keepalive` (false or the
--   idle delay in seconds), `read_buffer` (bytes buffered before reading
--   pauses, default 65536), `family` ("inet" or "inet6", for names)
-- @return a `tidal.Stream`, or nil, err
function M.connect(host, port, opts)
  if opts == nil then
    local s, err = c_connect(host, port)
    if s ~= false then return s, err end
    check_host("tidal.net.connect", host)
    return connect_any(host, port, {})
  end
  check_host("tidal.net.connect", host)
  opts = check("tidal.net.connect", opts, connect_opts)
  return within("tidal.net.connect", opts, label(host, port),
    { host = host, port = port }, connect_any, host, port, opts)
end

local listen_opts = {
  backlog = count, reuseaddr = boolean, reuseport = boolean, v6only = boolean,
  nodelay = boolean, keepalive = keepalive, read_buffer = count,
  family = family,
}

--- Listen for TCP connections.
-- A name is resolved and its first address used; port 0 picks a free
-- port (see `l:port()`).
-- @tparam string host e.g. "127.0.0.1", "::", "0.0.0.0", "localhost"
-- @tparam integer port 0 to 65535
-- @tparam[opt] table opts `backlog` (default 1024), `reuseaddr` (default
--   true), `reuseport` (default false; set it on every socket sharing the
--   port), `v6only` (default false), and for accepted streams `nodelay`
--   (default true), `keepalive`, `read_buffer`
-- @return a `tidal.Listener`, or nil, err
function M.listen(host, port, opts)
  check_host("tidal.net.listen", host)
  opts = check("tidal.net.listen", opts, listen_opts)
  local ka = opts.keepalive and math.floor(opts.keepalive) or nil
  local l, err = c_listen(host, port, opts.backlog, opts.reuseaddr,
    opts.reuseport, opts.v6only, opts.nodelay, ka, opts.read_buffer)
  if l ~= false then return l, err end
  local addrs, rerr = c_resolve(host, families[opts.family] or 0,
    "tidal.net.listen")
  if not addrs then
    rerr.port = port
    return nil, rerr
  end
  return c_listen(addrs[1], port, opts.backlog, opts.reuseaddr,
    opts.reuseport, opts.v6only, opts.nodelay, ka, opts.read_buffer, host)
end

local function check_path(fname, path)
  if type(path) ~= "string" then
    error(fmt("%s: expected a socket path (a string), got %s", fname,
      type(path)), 3)
  end
end

local connect_unix_opts = { timeout = seconds, read_buffer = count }

--- Connect to a Unix-domain socket.
-- @tparam string path shorter than 108 bytes (kind "name_too_long")
-- @tparam[opt] table opts `timeout`, `read_buffer`
-- @return a `tidal.Stream`, or nil, err
function M.connect_unix(path, opts)
  check_path("tidal.net.connect_unix", path)
  opts = check("tidal.net.connect_unix", opts, connect_unix_opts)
  return within("tidal.net.connect_unix", opts, path, { path = path },
    c_connect_unix, path, opts.read_buffer)
end

local listen_unix_opts = { backlog = count, mode = mode, unlink = boolean }

--- Listen on a Unix-domain socket. The listener removes the socket file
-- when it is closed.
-- @tparam string path
-- @tparam[opt] table opts `backlog`, `mode` (permission bits, applied
--   after bind), `unlink` (remove an existing socket file at path first;
--   default false)
-- @return a `tidal.Listener`, or nil, err
function M.listen_unix(path, opts)
  check_path("tidal.net.listen_unix", path)
  opts = check("tidal.net.listen_unix", opts, listen_unix_opts)
  return c_listen_unix(path, opts.backlog, opts.mode, opts.unlink)
end

local udp_opts = { reuseaddr = boolean, broadcast = boolean, family = family }

--- A UDP socket, bound to host and port when given (port 0: any free
-- port), else unbound until its first send.
-- Methods: `u:send_to(data, ip, port)`, `u:recv_from([max])` → data, ip,
-- port; `u:connect(ip, port)`, then `u:send(data)`, `u:recv([max])`;
-- `u:port()`, `u:local_addr()`, `u:close()`.
-- @tparam[opt] string host an IP address or a name (its first address)
-- @tparam[opt] integer port 0 to 65535
-- @tparam[opt] table opts `reuseaddr`, `broadcast`, `family` ("inet" or
--   "inet6": the family of an unbound socket)
-- @return a `tidal.UdpSocket`, or nil, err
function M.udp(host, port, opts)
  if type(host) == "table" and port == nil and opts == nil then
    host, opts = nil, host
  end
  if host ~= nil then check_host("tidal.net.udp", host) end
  opts = check("tidal.net.udp", opts, udp_opts)
  local fam = families[opts.family] or 0
  if host == nil then
    return c_udp(nil, 0, fam, opts.reuseaddr, opts.broadcast)
  end
  local u, err = c_udp(host, port, fam, opts.reuseaddr, opts.broadcast)
  if u ~= false then return u, err end
  local addrs, rerr = c_resolve(host, fam, "tidal.net.udp")
  if not addrs then
    rerr.port = port
    return nil, rerr
  end
  return c_udp(addrs[1], port, fam, opts.reuseaddr, opts.broadcast)
end

local resolve_opts = { family = family }

--- Resolve a host name to its addresses (on the thread pool).
-- @tparam string host
-- @tparam[opt] table opts `family` ("inet" or "inet6")
-- @return a list of unique address strings in resolver order, or nil, err
--   (kind "dns")
function M.resolve(host, opts)
  check_host("tidal.net.resolve", host)
  opts = check("tidal.net.resolve", opts, resolve_opts)
  return c_resolve(host, families[opts.family] or 0, "tidal.net.resolve")
end

return M
