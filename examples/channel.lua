-- channel.lua: the Tokio guide's mpsc example, in tidal.
-- Five producers each get a clone of the sender, send one message and
-- finish. Main closes its own sender and receives until the channel ends.
-- Nobody closes the clones by hand: when a producer's task ends its clone is
-- garbage, and when main is left waiting with nothing else to run, tidal
-- collects garbage first, which closes those clones and ends the stream.
local tidal = require("tidal")

tidal.run(function()
  -- a bounded channel with room for 100 messages
  local tx, rx = tidal.channel(100)

  for i = 0, 4 do
    local tx_clone = tx:clone()
    tidal.spawn(function()
      local msg = { id = i, payload = "Hello from task " .. i }
      -- send waits if the buffer is full
      local ok, err = tx_clone:send(msg)
      if not ok then io.stderr:write("Failed to send message: ", tostring(err), "\n") end
    end)
  end

  -- close main's own sender so that the receiver can see the end
  tx:close()

  -- receive until every sender is closed
  local got = {}
  for msg in rx do
    got[#got + 1] = msg
  end
  -- the producers ran concurrently; print in id order for a stable output
  table.sort(got, function(a, b) return a.id < b.id end)
  for _, msg in ipairs(got) do
    print(string.format("Received message %d: %s", msg.id, msg.payload))
  end
  print("channel closed after " .. #got .. " messages")
end)
