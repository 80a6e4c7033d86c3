-- CI of 2026-12-03 (stop 16): `make test-tsan` was killed (exit 137) with
-- its memory at tens of gigabytes. Debian's lua5.4 leaves every error and
-- every yield from a C function through glibc's __longjmp_chk, which
-- ThreadSanitizer does not intercept: its shadow stack kept the frames
-- jumped out of, and every allocation stored an ever deeper stack (3,000
-- file reads in one runtime: 3.7 GB). The TSan run now preloads
-- spec/tsan/longjmp_chk.c. This spec, in TSAN_SPECS, yields and raises
-- from C functions thousands of times and checks that the process does
-- not grow: before the fix it grew by gigabytes under TSan.
local support = require("support")
local tidal = require("tidal")
local fs = require("tidal.fs")

local rss_kb = support.rss_kb

local function churn(path, n)
  for _ = 1, n do
    tidal.sleep(0) -- a yield from a C function
    assert(not pcall(tidal.sleep, "soon")) -- an error from a C function
    tidal.spawn(function() return 1 end):await()
    local f = assert(fs.open(path, "rb")) -- a yield on the thread pool's job
    assert(f:read("a") == "line\n")
    f:close()
  end
end

describe("the TSan run (CI, stop 16)", function()
  local valgrind = os.getenv("TIDAL_VALGRIND") ~= nil
  it("does not grow while tasks yield and raise from C functions", function()
    if valgrind or not io.open("/proc/self/status") then return end
    local path = os.tmpname()
    local f = assert(io.open(path, "wb"))
    f:write("line\n")
    f:close()
    local grew = support.run(function()
      churn(path, 200) -- warm up: pools, caches, the depot's first stacks
      collectgarbage()
      local before = rss_kb()
      churn(path, 2000)
      collectgarbage()
      return rss_kb() - before
    end)
    os.remove(path)
    -- a few MB at most with the fix; gigabytes without it under TSan
    assert.is_true(grew < 64 * 1024, ("grew by %d kB"):format(grew))
  end)
end)
