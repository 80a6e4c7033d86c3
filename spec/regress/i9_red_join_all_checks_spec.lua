-- Issue 9, red team: tidal.join_all given the calling task's own JoinHandle
-- waited for itself: a hidden member awaited the caller, which waited for
-- the member, so the program hung (or, with nothing else to run, failed
-- main with "deadlock"); h:await() on one's own handle raises instead. And
-- an element from another runtime was refused only after the elements
-- before it had started: join_all raised, yet those functions ran. Now
-- every element is checked before anything starts, and the own handle is
-- refused with an error that says why.
local support = require("support")
local tidal = require("tidal")

describe("issue 9 red: tidal.join_all checks its elements first", function()
  it("refuses the calling task's own handle", function()
    support.run(function()
      local h
      h = tidal.spawn(function()
        tidal.yield()
        return pcall(tidal.join_all, { function() return 1 end, h })
      end)
      local ok, jok, err = h:join()
      assert.is_true(ok)
      assert.is_false(jok)
      assert.matches("tidal.join_all: element 2 is the calling task's own "
                     .. "handle %(a task cannot wait for itself%)", err)
      -- (the runtime still runs: a timer fires)
      tidal.sleep(0.01)
    end)
  end)

  it("starts nothing when an element belongs to another runtime", function()
    local rt = tidal.runtime()
    local foreign = rt:spawn(function() tidal.sleep(10) end)
    rt:step(0)
    local ran = false
    support.run(function()
      local ok, err = pcall(tidal.join_all, {
        function() ran = true end, foreign,
      })
      assert.is_false(ok)
      assert.matches("element 2 belongs to another runtime", err)
      tidal.sleep(0.01)
    end)
    rt:close()
    assert.is_false(ran)
  end)

  it("still awaits handles of this runtime and finished ones", function()
    local rt = tidal.runtime()
    local done = rt:spawn(function() return "old" end)
    rt:step(0)
    rt:close()
    support.run(function()
      local h = tidal.spawn(function() return "new" end)
      local r = tidal.join_all({ h, done, function() return "fn" end })
      assert.are.same({ { n = 1, "new" }, { n = 1, "old" },
                        { n = 1, "fn" } }, r)
    end)
  end)
end)
