-- Issue 9 item 19: semaphore:close() set available() to 0. As in Tokio,
-- closing leaves the count alone: permits given back later still count,
-- but nothing can be acquired any more; a waiter already granted its
-- permits when close() came keeps them.
local tidal = require("tidal")
local support = require("support")

describe("issue 9 item 19: closing a semaphore leaves its count alone", function()
  it("available() keeps counting after close, and permits given back count", function()
    local s = tidal.semaphore(3)
    local p = assert(s:try_acquire(2))
    s:close()
    assert.are.equal(1, s:available())
    p:release()
    assert.are.equal(3, s:available())
    s:add_permits(2)
    assert.are.equal(5, s:available())
    assert.matches("closed", tostring(s))
  end)

  it("nothing can be acquired once closed, though permits are available", function()
    local s = tidal.semaphore(3)
    s:close()
    local p, err = s:try_acquire()
    assert.is_nil(p)
    assert.are.equal("closed", err.kind)
    local r = support.run(function()
      local q, e = s:acquire()
      return { q = q, kind = e and e.kind }
    end)
    assert.is_nil(r.q)
    assert.are.equal("closed", r.kind)
    assert.are.equal(3, s:available())
  end)

  it("waiters get nil, 'closed'; the count is what is left", function()
    local r = support.run(function()
      local s = tidal.semaphore(1)
      local hs = {}
      for i = 1, 3 do hs[i] = tidal.spawn(function() return table.pack(s:acquire(2)) end) end
      tidal.yield()
      s:close()
      local kinds = {}
      for i = 1, 3 do kinds[i] = hs[i]:await()[2].kind end
      return { kinds = kinds, avail = s:available() }
    end)
    assert.are.same({ "closed", "closed", "closed" }, r.kinds)
    assert.are.equal(1, r.avail)
  end)

  it("a waiter granted its permits before close() keeps them", function()
    local r = support.run(function()
      local s = tidal.semaphore(0)
      local h = tidal.spawn(function() return s:acquire(2) end)
      tidal.yield()           -- h waits
      s:add_permits(2)        -- granted to h, which has not run yet
      s:close()
      local p, err = h:await()
      local out = { count = p and p:count(), err = err, before = s:available() }
      p:release()
      out.after = s:available()
      return out
    end)
    assert.are.equal(2, r.count)
    assert.is_nil(r.err)
    assert.are.equal(0, r.before)
    assert.are.equal(2, r.after)
  end)

  it("across workers: waiters granted before close keep their permits, the others get 'closed'", function()
    local r = tidal.run({ workers = 1 }, function()
      local s = tidal.semaphore(0)
      local n = support.scaled(50)
      local outs = {}
      for round = 1, n do
        local hs = {}
        for i = 1, 4 do
          hs[i] = tidal.spawn_parallel(function(sem, k)
            local p, err = sem:acquire(k)
            if p then
              local c = p:count()
              p:release()
              return "granted " .. c
            end
            return err.kind
          end, s, 1)
        end
        -- let the worker park them (busy yields: the worker thread runs
        -- meanwhile)
        local t0 = tidal.now()
        while tidal.now() - t0 < 0.003 do tidal.yield() end
        if round % 3 > 0 then s:add_permits(round % 3) end
        s:close()
        for i = 1, 4 do outs[#outs + 1] = hs[i]:await() end
        s = tidal.semaphore(0)
      end
      local granted, closed = 0, 0
      for _, o in ipairs(outs) do
        if o == "granted 1" then granted = granted + 1 elseif o == "closed" then closed = closed + 1 end
      end
      return { granted = granted, closed = closed, total = #outs }
    end)
    assert.are.equal(r.total, r.granted + r.closed)
    assert.is_true(r.granted > 0)
    assert.is_true(r.closed > 0)
  end)
end)
