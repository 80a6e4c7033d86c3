-- Found by the full suite under ThreadSanitizer (this sitting): a worker
-- that had taken a spawn_parallel task counted as empty until the task was
-- spawned there (its `assigned` count dropped before its load rose), so a
-- second spawn_parallel made in that window went to the same worker,
-- beside a task that does not wait, while the other worker stayed idle.
-- Two tasks that never wait, on two workers, must both start at once.
local support = require("support")
local tidal = require("tidal")

describe("spawn_parallel placement (found under TSan)", function()
  it("two tasks that never wait start at once on two workers", function()
    local rounds = support.scaled(100)
    local late = tidal.run({ workers = 2 }, function()
      local late = 0
      for _ = 1, rounds do
        local started_tx, started_rx = tidal.channel(2)
        local stop_tx, stop_rx = tidal.channel(2)
        local hs = {}
        for i = 1, 2 do
          hs[i] = tidal.spawn_parallel(function(tx, stop)
            tx:send(true)
            local t0 = os.clock()
            -- spins without waiting until told to stop (or 2 s of CPU)
            while stop:try_recv() == nil and os.clock() - t0 < 2 do end
          end, started_tx, stop_rx)
        end
        started_tx:close()
        local ok = tidal.timeout(1, function()
          started_rx:recv()
          started_rx:recv()
        end)
        if not ok then late = late + 1 end
        stop_tx:send(true)
        stop_tx:send(true)
        hs[1]:await()
        hs[2]:await()
      end
      return late
    end)
    assert.equal(0, late, late .. " of " .. rounds .. " rounds started one task late")
  end)
end)
