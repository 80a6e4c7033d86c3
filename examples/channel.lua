-- channel.lua: the Tokio guide's mpsc example, in tidal.
-- Five producers each get a clone of the sender, send one message and
-- finish. As in Tokio, where each task owns its clone and drops it when it
-- ends, each task here binds its clone to a <close> variable (Lua's Drop):
-- the clone closes when the task ends, however it ends. Main closes its own
-- sender (Tokio's drop(tx)), so the receiver sees the end as soon as the
-- last producer is done, whatever else is running: no garbage collection is
-- involved.
local tidal = require("tidal")

tidal.run(function()
  -- a bounded channel with room for 100 messages
  local tx, rx = tidal.channel(100)

  for i = 0, 4 do
    -- the clone is handed to the task as an argument (Rust's `move`)
    tidal.spawn(function(clone)
      local tx <close> = clone -- closed when this task ends
      local msg = { id = i, payload = "Hello from task " .. i }
      -- send waits if the buffer is full
      local ok, err = tx:send(msg)
      if not ok then io.stderr:write("Failed to send message: ", tostring(err), "\n") end
    end, tx:clone())
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
