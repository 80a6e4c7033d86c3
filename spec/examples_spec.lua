-- Every program under examples/ runs here and its output is checked.
local support = require("support")

local function run_example(name)
  local f = assert(io.open("examples/" .. name))
  local code = f:read("a")
  f:close()
  return support.lua(code)
end

describe("examples", function()
  it("demo.lua runs five downloads concurrently and cancels a slow task", function()
    local out, status = run_example("demo.lua")
    assert.are.equal(0, status, out)
    local expected = table.concat({
      "starting 5 downloads at once",
      "  alpha    done after 0.2 s",
      "  beta     done after 0.4 s",
      "  gamma    done after 0.6 s",
      "  delta    done after 0.8 s",
      "  epsilon  done after 1.0 s",
      "all done: 2600 bytes in 1.X s (one after another: 3.0 s)",
      "meanwhile the ticker ticked about 10 times",
      "  slow task cleaned up",
      "slow task:\tfalse\tcancelled",
      "",
    }, "\n")
    -- the elapsed time's decimal depends on the machine's load
    assert.are.equal(expected, (out:gsub("in 1%.%d s", "in 1.X s")))
  end)
end)
