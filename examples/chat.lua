-- chat.lua: a line-based chat server over TCP.
--
--   lua5.4 examples/chat.lua                 demo: a server on a free port,
--                                            three scripted users, then stop
--   lua5.4 examples/chat.lua server [port]   serve until Ctrl-C (default 7878);
--                                            chat with e.g. `nc 127.0.0.1 7878`
--
-- Protocol: a client's first line is its name; every later line is a
-- message for the others. The server says "* <name> joined" and
-- "* <name> left", and relays "<name>: <text>".
--
-- Shape (as Tokio's chat example): one broadcast channel for the room.
-- Each connection has two tasks: a reader (this connection's lines -> the
-- room) and a writer (the room -> this connection, skipping its own
-- messages). A writer that falls more than ROOM_BACKLOG messages behind (a
-- slow client) is told how many it missed, instead of holding the room
-- back: broadcast never waits for slow receivers.
local tidal = require("tidal")
local net = tidal.net

local ROOM_BACKLOG = 64

-- The room -> one client. Ends when the room closes or the client is gone.
local function writer(s, rx, me)
  while true do
    local msg, err = rx:recv()
    if msg == nil and err == nil then return end -- the room closed
    local line
    if msg == nil then -- err.kind == "lagged"
      line = ("* (you missed %d messages)"):format(err.skipped)
    elseif msg.from ~= me then
      line = msg.text
    end
    if line and not s:write(line, "\n") then return end
  end
end

-- One client: its name, then its messages, until it leaves.
local function session(conn, room, online)
  local s <close> = conn
  local name = s:read_line({ max = 64 })
  if not name or name == "" then return end
  local me = {} -- identifies this session's messages
  local rx = room:subscribe() -- before "joined": it sees what follows
  online.n = online.n + 1
  s:write(("* welcome %s (%d here)\n"):format(name, online.n))
  room:send({ from = me, text = "* " .. name .. " joined" })
  local w = tidal.spawn(writer, s, rx, me)
  for line in s:lines({ max = 4096 }) do -- ends at EOF (or raises on error)
    room:send({ from = me, text = name .. ": " .. line })
  end
  online.n = online.n - 1
  room:send({ from = me, text = "* " .. name .. " left" })
  w:abort() -- stop relaying to this client (rx is dropped with the task)
end

local function serve(listener)
  local room <close> = tidal.broadcast(ROOM_BACKLOG)
  local online = { n = 0 }
  local sessions <close> = tidal.group() -- cancelled when serve ends
  while true do
    local s, err = listener:accept()
    if not s then
      if err.kind == "closed" then return end
      io.stderr:write("accept: ", tostring(err), "\n")
    else
      -- a session that fails must not take the server down: join() in the
      -- group would collect the error; here it is printed and forgotten
      sessions:spawn(function()
        local ok, e = pcall(session, s, room, online)
        if not ok and not tidal.is_error(e, "cancelled") then
          io.stderr:write("session: ", tostring(e), "\n")
        end
      end)
    end
  end
end

local mode = arg and arg[1]

if mode == "server" then
  tidal.run(function()
    local l <close> = assert(net.listen("127.0.0.1", tonumber(arg[2]) or 7878))
    print("chat server on 127.0.0.1:" .. l:port() .. " (Ctrl-C stops it)")
    local server = tidal.spawn(serve, l)
    tidal.signal.ctrl_c()
    server:abort()
  end)
else -- the demo: each step waits for what the others must see
  tidal.run(function()
    local l <close> = assert(net.listen("127.0.0.1", 0))
    local server = tidal.spawn(serve, l)

    local users = {}
    local function join(name)
      local s = assert(net.connect("127.0.0.1", l:port()))
      users[name] = s
      s:write(name, "\n")
    end
    local function say(name, text) users[name]:write(text, "\n") end
    local function hears(name) -- the next line the user receives
      print(("%-5s <- %s"):format(name, assert(users[name]:read_line())))
    end
    local function leave(name) users[name]:close() end

    join("alice"); hears("alice")
    join("bob"); hears("bob"); hears("alice")
    say("alice", "hi bob"); hears("bob")
    join("carol"); hears("carol"); hears("alice"); hears("bob")
    say("bob", "hello both"); hears("alice"); hears("carol")
    leave("carol"); hears("alice"); hears("bob")
    say("alice", "bye"); hears("bob")
    leave("alice"); hears("bob")
    leave("bob")

    server:abort() -- closes the room; the sessions are cancelled
    server:join()
    print("server stopped")
  end)
end
