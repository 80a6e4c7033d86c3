-- The io modules load, and the fd / child checks the io specs rely on see
-- what they must (a check that cannot fail would prove nothing).
local tidal = require("tidal")
local support = require("support")

describe("io modules", function()
  it("are reachable from tidal and by require", function()
    for _, m in ipairs({ "net", "fs", "process", "signal" }) do
      assert.is_table(tidal[m])
      assert.equal(tidal[m], require("tidal." .. m))
    end
  end)
end)

describe("support.fds / run_io", function()
  it("lists descriptors with their targets", function()
    local fds = support.fds()
    assert.is_string(fds[0] or fds[1] or fds[2])
    local f = assert(io.open("/dev/null"))
    local diff = support.fd_diff(fds, support.fds())
    f:close()
    assert.matches("/dev/null", diff)
    assert.is_nil(support.fd_diff(fds, support.fds()))
  end)

  it("fails a run that leaves a descriptor open", function()
    local f
    local ok, err = pcall(support.run_io, function()
      f = assert(io.open("/dev/null"))
    end)
    f:close()
    assert.is_false(ok)
    assert.matches("descriptors left open: %d+ %-> /dev/null", err)
    assert.equal(42, support.run_io(function() return 42 end))
  end)

  it("sees child processes and zombies", function()
    if not support.can_spawn then return end
    local p = io.popen("sleep 0.2")
    local kids = support.children()
    assert.is_true(#kids >= 1)
    p:close()
    assert.same({}, support.children())
    assert.same({}, support.zombies())
  end)

  it("io_leaks (guard_io's check after each test) reports descriptors and children", function()
    local before = support.fds()
    assert.is_nil(support.io_leaks(before))
    local f = assert(io.open("/dev/null"))
    assert.matches("descriptors left open: %d+ %-> /dev/null", support.io_leaks(before))
    f:close()
    assert.is_nil(support.io_leaks(before))
    if not support.can_spawn then return end
    local p = io.popen("sleep 0.2")
    local leaks = support.io_leaks(support.fds())
    assert.matches("child processes left: %d+", leaks)
    p:close()
    assert.is_nil(support.io_leaks(before))
  end)
end)
