-- Issue 9, red team: a tidal error object (metatable tidal.Error) lost its
-- metatable when it crossed to another Lua state: the failure of a
-- spawn_parallel task or a spawn_blocking job (`assert(tx:send(v))` on a
-- closed channel), or an error sent through a channel. tidal.is_error said
-- false, tostring gave "table: 0x...", and one escaping tidal.run ended
-- the program with "(error object is a table value)". errors.md promises
-- the metatable and tostring(err) == err.message. Now an error object
-- crosses as one (other metatables still stay behind).
local tidal = require("tidal")

local function closed_tx()
  local tx, rx = tidal.channel()
  rx:close()
  return tx
end

local function check(e, kind, message)
  assert.is_true(tidal.is_error(e, kind))
  assert.are.equal(message, e.message)
  assert.are.equal(message, tostring(e))
  assert.are.equal(getmetatable(tidal.error("x", "y")), getmetatable(e))
end

describe("issue 9 red: an error object crossing to another state", function()
  it("keeps its kind and message from a spawn_parallel task", function()
    tidal.run({ workers = 1 }, function()
      local ok, e = tidal.spawn_parallel(function(tx)
        assert(tx:send(1))
      end, closed_tx()):join()
      assert.is_false(ok)
      check(e, "closed", "channel closed")
      -- await re-raises it, still an error object
      local ok2, e2 = pcall(function()
        return tidal.spawn_parallel(function()
          error(tidal.error("custom", "boom"))
        end):await()
      end)
      assert.is_false(ok2)
      check(e2, "custom", "boom")
    end)
  end)

  it("keeps its kind and message from a spawn_blocking job", function()
    tidal.run(function()
      local ok, e = tidal.spawn_blocking(function(tx)
        assert(tx:send(1))
      end, closed_tx()):join()
      assert.is_false(ok)
      check(e, "closed", "channel closed")
      -- an error made in the job and returned as a value
      local ok2, v = tidal.spawn_blocking(function()
        return tidal.error("custom", "made in a job")
      end):join()
      assert.is_true(ok2)
      check(v, "custom", "made in a job")
    end)
  end)

  it("keeps its metatable through a channel, shared references too",
     function()
    tidal.run({ workers = 1 }, function()
      local tx, rx = tidal.channel()
      tidal.spawn_parallel(function(out)
        local e = tidal.error("custom", "sent")
        out:send({ e, e, plain = setmetatable({}, { __index = {} }) })
        out:close()
      end, tx):await()
      tx:close()
      local m = rx:recv()
      check(m[1], "custom", "sent")
      assert.are.equal(m[1], m[2])
      -- other metatables do not cross (documented: an equal table)
      assert.is_nil(getmetatable(m.plain))
    end)
  end)

  it("ends the program with its message when it escapes tidal.run",
     function()
    local ok, e = pcall(tidal.run, { workers = 1 }, function()
      tidal.spawn_parallel(function(tx)
        assert(tx:send(1))
      end, closed_tx()):await()
    end)
    assert.is_false(ok)
    check(e, "closed", "channel closed")
  end)
end)
