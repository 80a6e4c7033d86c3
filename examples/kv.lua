-- kv.lua: a small key-value server over TCP and its client, in the shape
-- of Tokio's mini-redis tutorial.
--
--   lua5.4 examples/kv.lua                  demo: a server on a free port,
--                                           clients using it, then stop
--   lua5.4 examples/kv.lua server [port]    serve until Ctrl-C (default 6380)
--   lua5.4 examples/kv.lua get PORT KEY     one command as a client
--   lua5.4 examples/kv.lua set PORT KEY VALUE
--   lua5.4 examples/kv.lua del PORT KEY
--
-- The protocol is a line-based cousin of Redis's (values are binary-safe:
-- a length, then the bytes):
--   requests   GET <key>\n   DEL <key>\n   SET <key> <length>\n<bytes>\n
--   replies    +OK\n   $<length>\n<bytes>\n   $-1\n (no such key)
--              :<integer>\n   -ERR <message>\n
local tidal = require("tidal")
local net = tidal.net

local MAX_VALUE = 1024 * 1024

------------------------------------------------------------------ server

-- The database is a plain table shared by every connection's task. Tokio's
-- tutorial wraps its HashMap in Arc<Mutex<...>> because its tasks run on
-- several threads at once. Here every task of the server runs on one
-- worker, in one Lua state, and a task is never interrupted between two
-- statements that do not wait: a GET or SET below runs as a whole, so the
-- table needs no lock. (A server spread over workers with spawn_parallel
-- would give each worker its own state: shared data would then go through
-- a channel to one owner task, or one table per worker.)
local db = {}

local function reply_value(s, v)
  if v == nil then return s:write("$-1\n") end
  return s:write("$", #v, "\n", v, "\n")
end

-- Serves one connection until the client closes it or breaks the protocol.
local function session(conn)
  local s <close> = conn
  for line in s:lines({ max = 1024 }) do
    local cmd, key, rest = line:match("^(%S+)%s+(%S+)%s*(.*)$")
    cmd = cmd and cmd:upper()
    if cmd == "GET" and rest == "" then
      reply_value(s, db[key])
    elseif cmd == "DEL" and rest == "" then
      local had = db[key] ~= nil
      db[key] = nil
      s:write(":", had and 1 or 0, "\n")
    elseif cmd == "SET" and rest:match("^%d+$") and tonumber(rest) <= MAX_VALUE then
      local data = s:read_exactly(tonumber(rest) + 1) -- the bytes and "\n"
      if not data or data:sub(-1) ~= "\n" then
        s:write("-ERR bad value\n")
        return -- out of step with the client: hang up
      end
      db[key] = data:sub(1, -2)
      s:write("+OK\n")
    else
      s:write("-ERR unknown command '", line:sub(1, 40), "'\n")
    end
  end
end

local function serve(listener)
  local sessions <close> = tidal.group()
  while true do
    local s, err = listener:accept()
    if not s then
      if err.kind == "closed" then return end
      io.stderr:write("accept: ", tostring(err), "\n")
    else
      sessions:spawn(function()
        local ok, e = pcall(session, s) -- (lines() raises on a read error)
        if not ok and not tidal.is_error(e, "cancelled") then
          io.stderr:write("session: ", tostring(e), "\n")
        end
      end)
    end
  end
end

------------------------------------------------------------------ client

local Client = {}
Client.__index = Client

-- client.connect(host, port) -> client | nil, err
local function connect(host, port)
  local s, err = net.connect(host, port)
  if not s then return nil, err end
  return setmetatable({ s = s }, Client)
end

-- Reads one reply: the value (a string, "OK" for +OK, an integer), or
-- nil for "no such key", or nil, err.
function Client:reply()
  local line, err = self.s:read_line()
  if not line then return nil, err or tidal.error("closed", "kv: server closed the connection") end
  local kind, body = line:sub(1, 1), line:sub(2)
  if kind == "+" then return body end
  if kind == ":" then return math.tointeger(tonumber(body)) end
  if kind == "-" then return nil, tidal.error("kv", body) end
  if kind == "$" then
    local n = tonumber(body)
    if n == -1 then return nil end
    local data, rerr = self.s:read_exactly(n + 1)
    if not data then return nil, rerr end
    return data:sub(1, -2)
  end
  return nil, tidal.error("kv", "bad reply: " .. line)
end

function Client:get(key)
  local ok, err = self.s:write("GET ", key, "\n")
  if not ok then return nil, err end
  return self:reply()
end

function Client:set(key, value)
  local ok, err = self.s:write("SET ", key, " ", #value, "\n", value, "\n")
  if not ok then return nil, err end
  return self:reply()
end

function Client:del(key)
  local ok, err = self.s:write("DEL ", key, "\n")
  if not ok then return nil, err end
  return self:reply()
end

function Client:close() self.s:close() end
Client.__close = Client.close

-------------------------------------------------------------------- main

local mode = arg and arg[1]

if mode == "server" then
  tidal.run(function()
    local l <close> = assert(net.listen("127.0.0.1", tonumber(arg[2]) or 6380))
    print("kv server on 127.0.0.1:" .. l:port() .. " (Ctrl-C stops it)")
    local server = tidal.spawn(serve, l)
    tidal.signal.ctrl_c()
    server:abort()
  end)
elseif mode == "get" or mode == "set" or mode == "del" then
  tidal.run(function()
    local c <close> = assert(connect("127.0.0.1", assert(tonumber(arg[2]), "PORT?")))
    print(assert(c[mode](c, assert(arg[3], "KEY?"), arg[4])))
  end)
else -- the demo
  tidal.run(function()
    local l <close> = assert(net.listen("127.0.0.1", 0))
    local server = tidal.spawn(serve, l)
    local c <close> = assert(connect("127.0.0.1", l:port()))

    print("SET hello world ->", c:set("hello", "world"))
    print("GET hello       ->", c:get("hello"))
    print("GET missing     ->", c:get("missing"))
    local bin = {}
    for i = 0, 255 do bin[#bin + 1] = string.char(i) end
    bin = table.concat(bin)
    c:set("bin", bin)
    print("a binary value  ->", c:get("bin") == bin)
    print("DEL hello       ->", c:del("hello"))
    print("DEL hello       ->", c:del("hello"))
    c.s:write("FLY away\n") -- not a command
    local _, err = c:reply()
    print("FLY away        ->", err.message)

    -- ten clients at once, a hundred keys each
    local g = tidal.group()
    for i = 1, 10 do
      g:spawn(function()
        local ci <close> = assert(connect("127.0.0.1", l:port()))
        for k = 1, 100 do assert(ci:set(("c%d:k%d"):format(i, k), ("v%d"):format(i * k))) end
        for k = 1, 100 do assert(ci:get(("c%d:k%d"):format(i, k)) == ("v%d"):format(i * k)) end
      end)
    end
    g:wait()
    local n = 0
    for _ in pairs(db) do n = n + 1 end
    print("10 clients x 100 keys at once: " .. n - 1 .. " keys stored and read back")

    server:abort()
    server:join()
    print("server stopped")
  end)
end
