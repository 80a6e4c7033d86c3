-- Issue 9 item 4: semaphore(math.maxinteger) then add_permits(1) made
-- available() negative (signed overflow, reported by UBSan). A semaphore
-- holds at most math.maxinteger >> 3 permits in all, available or out (as
-- Tokio's MAX_PERMITS); asking for more is an argument error that names the
-- function, never an overflow.
local tidal = require("tidal")
local support = require("support")

local MAX = math.maxinteger >> 3

describe("issue 9 item 4: semaphore counts cannot overflow", function()
  it("refuses a count above the limit, naming the function and the value", function()
    local ok, err = pcall(tidal.semaphore, math.maxinteger)
    assert.is_false(ok)
    assert.matches("tidal.semaphore: the number of permits must be an integer >= 0 and <= "
      .. MAX .. ", got " .. math.maxinteger, err, nil, true)
    assert.is_true(pcall(tidal.semaphore, MAX))
  end)

  it("add_permits beyond the limit raises and leaves the count as it was", function()
    local s = tidal.semaphore(MAX)
    local ok, err = pcall(s.add_permits, s, 1)
    assert.is_false(ok)
    assert.matches("Semaphore:add_permits: a semaphore holds at most " .. MAX, err, nil, true)
    assert.are.equal(MAX, s:available())
    ok, err = pcall(s.add_permits, s, math.maxinteger)
    assert.is_false(ok)
    assert.matches("Semaphore:add_permits: the number of permits must be an integer >= 1 and <= "
      .. MAX .. ", got " .. math.maxinteger, err, nil, true)
    assert.are.equal(MAX, s:available())
  end)

  it("permits that are out count against the limit, and coming back never overflows", function()
    local s = tidal.semaphore(MAX - 10)
    local p = assert(s:try_acquire(1000))
    s:add_permits(10)
    assert.is_false(pcall(s.add_permits, s, 1))
    assert.are.equal(MAX - 1000, s:available())
    p:release()
    assert.are.equal(MAX, s:available())
    local h = support.run(function()
      local q = s:acquire(7)
      q:release()
      return s:available()
    end)
    assert.are.equal(MAX, h)
  end)

  it("a single acquire asks for at most 2^31 - 1 permits", function()
    local s = tidal.semaphore(MAX)
    local ok, err = pcall(s.try_acquire, s, 1 << 31)
    assert.is_false(ok)
    assert.matches("Semaphore:try_acquire: the number of permits must be an integer >= 1 and <= "
      .. 0x7fffffff .. ", got " .. (1 << 31), err, nil, true)
    local p = assert(s:try_acquire(0x7fffffff))
    assert.are.equal(MAX - 0x7fffffff, s:available())
    p:release()
    local msg = support.run(function()
      return select(2, pcall(s.acquire, s, math.maxinteger))
    end)
    assert.matches("Semaphore:acquire: the number of permits must be an integer >= 1", msg, nil, true)
  end)
end)
