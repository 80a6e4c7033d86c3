-- echo.lua: a TCP echo server and its client.
--
--   lua5.4 examples/echo.lua                 demo: a server on a free port
--                                            and three clients, then stop
--   lua5.4 examples/echo.lua server [port]   serve until Ctrl-C (default 7777)
--   lua5.4 examples/echo.lua client port     send stdin's lines, print replies
--
-- The server is Tokio's echo server: an accept loop, and a task per
-- connection that writes back whatever arrives. A connection's task ends
-- when the peer closes (read returns nil) or the connection fails; its
-- stream is a <close> variable, so it is closed however the task ends
-- (also when the server is stopped and the task is cancelled).
local tidal = require("tidal")
local net = tidal.net

-- One connection: echo until the peer is done.
local function echo(conn)
  local s <close> = conn
  while true do
    local data = s:read() -- what has arrived (up to 64 KiB), nil at EOF
    if not data or not s:write(data) then return end
  end
end

-- Accepts connections until the listener is closed (accept then returns
-- nil, err of kind "closed") or the task is cancelled.
local function serve(listener)
  -- the connection tasks, cancelled (and waited for) when serve ends
  local conns <close> = tidal.group()
  while true do
    local s, err = listener:accept()
    if not s then
      if err.kind == "closed" then return end
      -- e.g. too_many_open_files: accept again (it backs off by itself)
      io.stderr:write("accept: ", tostring(err), "\n")
    else
      conns:spawn(echo, s)
    end
  end
end

-- A client: sends each line and reads the echo back, line by line.
local function client(port, lines, on_reply)
  local s <close> = assert(net.connect("127.0.0.1", port))
  for _, line in ipairs(lines) do
    assert(s:write(line, "\n"))
    on_reply(assert(s:read_line()))
  end
end

local mode = arg and arg[1]

if mode == "server" then
  tidal.run(function()
    local l <close> = assert(net.listen("127.0.0.1", tonumber(arg[2]) or 7777))
    print("echo server on 127.0.0.1:" .. l:port() .. " (Ctrl-C stops it)")
    local server = tidal.spawn(serve, l)
    tidal.signal.ctrl_c()
    print("stopping")
    server:abort()
  end)
elseif mode == "client" then
  tidal.run(function()
    local lines = {}
    for line in io.lines() do lines[#lines + 1] = line end
    client(assert(tonumber(arg[2]), "usage: echo.lua client PORT"), lines, print)
  end)
else -- the demo
  tidal.run(function()
    local l <close> = assert(net.listen("127.0.0.1", 0)) -- port 0: any free port
    local server = tidal.spawn(serve, l)
    local replies = {}
    local words = {
      alpha = { "hello", "how are you?" },
      beta = { "ping", "pong", "" },
      gamma = { string.rep("x", 50000) }, -- more than one read on each side
    }
    local g = tidal.group()
    for _, name in ipairs({ "alpha", "beta", "gamma" }) do
      replies[name] = {}
      g:spawn(client, l:port(), words[name], function(line)
        local r = replies[name]
        r[#r + 1] = #line > 20 and ("%d bytes"):format(#line) or ("%q"):format(line)
      end)
    end
    g:wait() -- the three clients ran at once
    for _, name in ipairs({ "alpha", "beta", "gamma" }) do
      print(name .. ": " .. table.concat(replies[name], " | "))
    end
    server:abort() -- stops accepting; its connection tasks are cancelled
    server:join()
    print("server stopped")
  end)
end
