-- Issue 9 item 26: two specs of spawn_blocking's abort could not fail:
-- "cancels a queued job (it never runs)" never checked that the job did not
-- run, and "discards the result of a running job" passed whether the job
-- was queued or running. These replace them (from spec/parallel_spec.lua):
-- the pool is filled with jobs that wait at a gate (in tidal.run, which
-- blocks their thread), so the job aborted is known to be queued; and the
-- running job says it runs before it is aborted.
local support = require("support")
local tidal = require("tidal")

-- A job that says it started, then waits (blocking its pool thread) until
-- the gate lets it go.
local function gated(started, gate, i)
  started:send(i)
  require("tidal").run(function() return gate:recv() end)
  return i
end

describe("issue 9 item 26: aborting spawn_blocking jobs", function()
  it("cancels a queued job when aborted (it never runs)", function()
    local r = support.run_within(60, function()
      local started_tx, started = tidal.channel()
      local gate, gate_rx = tidal.channel()
      -- take every pool thread: add gated jobs until one does not start
      local jobs, queued = {}, nil
      while not queued do
        local i = #jobs + 1
        assert(i <= 300, "the pool never filled up")
        jobs[i] = tidal.spawn_blocking(gated, started_tx, gate_rx, i)
        local ok, v = tidal.timeout(2, started.recv, started)
        if ok then
          assert(v == i)
        else
          queued = table.remove(jobs) -- every thread is held at the gate
        end
      end
      queued:abort()
      -- open the gate (once more for the aborted job, were it to run after
      -- all) and let the pool go on: it must not start
      for _ = 1, #jobs + 1 do gate:send(true) end
      for i = 1, #jobs do assert(jobs[i]:await() == i) end
      local ok, err = queued:join()
      started_tx:close()
      local late = {}
      for v in started do late[#late + 1] = v end
      return { ok = ok, kind = not ok and err.kind or nil, threads = #jobs, late = late }
    end)
    assert.is_false(r.ok)
    assert.equal("cancelled", r.kind)
    assert.is_true(r.threads >= 1)
    assert.same({}, r.late) -- it never started
  end)

  it("discards the result of a running job that is aborted", function()
    local r = support.run_within(60, function()
      local started_tx, started = tidal.channel()
      local gate, gate_rx = tidal.channel()
      local h = tidal.spawn_blocking(gated, started_tx, gate_rx, 1)
      started:recv() -- it runs now
      h:abort()
      gate:send(true) -- let it finish
      local ok, err = h:join()
      return { ok = ok, kind = not ok and err.kind or nil, result = ok and err or nil }
    end)
    assert.is_nil(r.result)
    assert.is_false(r.ok)
    assert.equal("cancelled", r.kind)
  end)
end)
