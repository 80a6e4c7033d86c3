-- reuseport.lua: one port served by several workers.
--
--   lua5.4 examples/reuseport.lua            demo: two servers on two worker
--                                            threads share a free port; 40
--                                            connections; then stop
--   lua5.4 examples/reuseport.lua server [port [n]]
--                                            n servers (default 2) on port
--                                            (default 8080) until Ctrl-C
--
-- Each worker (tidal.run's `workers` option, tasks placed with
-- spawn_parallel) runs its own server with its own listening socket, all
-- bound to the same port with `reuseport = true` (SO_REUSEPORT): the kernel
-- spreads incoming connections over the sockets, so the accept loops and
-- the connections' tasks run on every worker's thread at once. Every
-- socket sharing the port must set the option; the first may take port 0
-- and tell the others which port it got.
local tidal = require("tidal")

-- Runs on a worker (a Lua state of its own: it requires what it uses).
-- Tells `ready` its port, then greets every connection with its id.
local function server(id, port, ready)
  local tidal = require("tidal")
  local l <close> = assert(tidal.net.listen("127.0.0.1", port, { reuseport = true }))
  ready:send(l:port())
  local conns <close> = tidal.group()
  while true do
    local s = l:accept()
    if not s then return end
    conns:spawn(function(conn)
      local c <close> = conn
      c:write("served by server ", id, "\n")
    end, s)
  end
end

-- Starts n servers on port (0: a free one, found by the first); returns
-- their handles and the port.
local function start(n, port)
  local tx, rx = tidal.channel()
  local servers = {}
  for id = 1, n do
    servers[id] = tidal.spawn_parallel(server, id, port, tx)
    port = rx:recv() -- the first one's port, for the others
  end
  return servers, port
end

local mode = arg and arg[1]

if mode == "server" then
  local n = tonumber(arg[3]) or 2
  tidal.run({ workers = n }, function()
    local servers, port = start(n, tonumber(arg[2]) or 8080)
    print(("%d servers on 127.0.0.1:%d (Ctrl-C stops them)"):format(n, port))
    tidal.signal.ctrl_c()
    for _, h in ipairs(servers) do h:abort() end
  end)
else -- the demo
  tidal.run({ workers = 2 }, function()
    local servers, port = start(2, 0)
    local seen, g = {}, tidal.group()
    for _ = 1, 40 do
      g:spawn(function()
        local s <close> = assert(tidal.net.connect("127.0.0.1", port))
        local who = assert(s:read_line())
        seen[who] = (seen[who] or 0) + 1
      end)
    end
    g:wait()
    local n, total = 0, 0
    for _, count in pairs(seen) do n, total = n + 1, total + count end
    -- the chance that one socket gets all 40 is 2^-39
    print(("%d connections, served by %d servers on 2 worker threads"):format(total, n))
    for _, h in ipairs(servers) do h:abort() end
    for _, h in ipairs(servers) do h:join() end
    print("servers stopped")
  end)
end
