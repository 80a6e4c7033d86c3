-- The HTTP examples (examples/fetch_*.lua), ports of the Tokio guide's,
-- run against the local fixture server and their output checked.
local support = require("support")
local fixtures = require("fixtures.http")

local function run_example(name, base)
  local f = assert(io.open("examples/" .. name))
  local code = f:read("a")
  f:close()
  -- the example reads its base URL from arg[1]
  return support.lua("arg = { " .. ("%q"):format(base) .. " }\n" .. code)
end

if not support.can_spawn then
  -- the fixture servers are child processes, which TIDAL_NO_CHILD=1 rules
  -- out
  describe("HTTP examples", function()
    pending("needs the fixture servers (child processes)")
  end)
  return
end

describe("HTTP examples", function()
  local srv

  setup(function() srv = fixtures.start_server() end)
  teardown(function() fixtures.stop_server(srv) end)

  it("fetch_data.lua prints the length of the body", function()
    local out, status = run_example("fetch_data.lua", srv.base)
    assert.are.equal(0, status, out)
    assert.are.equal("Response length: 61 bytes\n", out)
  end)

  it("fetch_data.lua reports a failed request", function()
    local base = "http://127.0.0.1:" .. fixtures.free_port()
    local out, status = run_example("fetch_data.lua", base)
    assert.are.equal(0, status, out)
    assert.is_truthy(out:find("^Request failed: tidal.http: GET " .. base:gsub("%p", "%%%0")
      .. "/json failed %(connect%)"), out)
  end)

  it("fetch_all.lua runs the three requests at once: about 2 s, not 4", function()
    local out, status = run_example("fetch_all.lua", srv.base)
    assert.are.equal(0, status, out)
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.are.same({ "URL 1: 9 bytes", "URL 2: 9 bytes", "URL 3: 9 bytes" },
      { lines[1], lines[2], lines[3] })
    local took = tonumber(lines[4]:match("^All three took ([%d.]+) s"))
    assert.is_truthy(took, out)
    assert.is_true(took >= 1.9 and took < 3.0, "took " .. took .. " s")
  end)

  it("fetch_with_timeout.lua gets a fast answer and gives up on a slow one", function()
    local out, status = run_example("fetch_with_timeout.lua", srv.base)
    assert.are.equal(0, status, out)
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.are.equal("Got 11 bytes", lines[1])
    assert.are.equal("Request to " .. srv.base .. "/delay/10 timed out after 1 seconds", lines[2])
    local took = tonumber(lines[3]:match("gave up after ([%d.]+) s"))
    assert.is_true(took >= 0.9 and took < 2.0, out)
  end)
end)
