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
end)
