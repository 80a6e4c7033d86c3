-- CI of this sitting: with the whole suite under ThreadSanitizer, the run
-- stopped at a report in csrc/http/glue.c's close-on-exec probe (it looks
-- at descriptors other threads may be making at that moment; see
-- spec/tsan/suppressions for why that report is the probe's design). Here
-- several workers make their HTTP connection pools at once, repeatedly:
-- every request fails to connect as it should, and under make test-tsan
-- the run halted here before the suppression.
local support = require("support")
local tidal = require("tidal")

describe("HTTP pools made on several workers at once (CI)", function()
  it("each worker's first request makes its pool; all of them fail to connect", function()
    local kinds = {}
    for _ = 1, math.max(5, support.scaled(20)) do
      tidal.run({ workers = 2 }, function()
        local http = require("tidal.http")
        local hs = {}
        for i = 1, 2 do
          hs[i] = tidal.spawn_parallel(function()
            local ok, err = require("tidal.http").get("http://127.0.0.1:1/")
            return ok == nil and err.kind or "no error"
          end)
        end
        local ok, err = http.get("http://127.0.0.1:1/")
        kinds[#kinds + 1] = ok == nil and err.kind or "no error"
        for i = 1, 2 do kinds[#kinds + 1] = hs[i]:await() end
      end)
    end
    for _, k in ipairs(kinds) do assert.equal("connect", k) end
  end)
end)
