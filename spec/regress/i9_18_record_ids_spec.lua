-- Issue 9 item 18: a blocking job's h:id() became 0 once the job completed
-- ("task 0" in messages), and the job, target and observed fields of
-- blocking and parallel records were written without the record's lock
-- while other threads read them (make test-tsan runs this file).
local support = require("support")
local tidal = require("tidal")

describe("issue 9 item 18: parallel and blocking records", function()
  it("a blocking job keeps its id once done, in messages too", function()
    local ids, text, cancelled = support.run(function()
      local h = tidal.spawn_blocking(function() return "done" end)
      local before = h:id()
      h:await()
      local after = h:id()
      -- a cancelled job names itself
      local q = tidal.spawn_blocking(function() return 1 end)
      local qid = q:id()
      q:abort()
      local ok, err = q:join()
      if ok then err = { message = "task " .. qid .. " was cancelled" } end -- it ran first
      return { before, after, qid }, tostring(h), err.message
    end)
    assert.is_true(ids[1] > 0)
    assert.equal(ids[1], ids[2])
    assert.matches("task " .. ids[1] .. " ", text, 1, true)
    assert.equal("task " .. ids[3] .. " was cancelled", cancelled)
  end)

  it("ids and outcomes are read from other workers while jobs finish", function()
    local n = support.scaled(200)
    local bad = tidal.run({ workers = 2 }, function()
      local bad = 0
      for i = 1, n do
        local h = tidal.spawn_blocking(function() return i end)
        local id = h:id()
        -- two workers watch the same record while the job completes
        local a = tidal.spawn_parallel(function(job, job_id)
          local seen = 0
          while not job:is_finished() do
            if job:id() ~= job_id then seen = seen + 1 end
            tostring(job)
            tidal.yield()
          end
          return seen, job:await(), job:id() == job_id
        end, h, id)
        local b = tidal.spawn_parallel(function(job) return job:await() end, h)
        local seen, v, same = a:await()
        if seen ~= 0 or v ~= i or not same or b:await() ~= i or h:id() ~= id then
          bad = bad + 1
        end
      end
      return bad
    end)
    assert.equal(0, bad)
  end)
end)
