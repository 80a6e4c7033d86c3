-- Issue 9 item 23: messages a user meets.
--   * tidal.channel('10') said "got 10": a message says what the value was
--     (a string is quoted and named);
--   * tidal.semaphore(-1) did not say the value;
--   * an unknown option to spawn (and rt:spawn, g:spawn, spawn_parallel)
--     was silently ignored: it raises and lists the valid ones, as run,
--     runtime and http do;
--   * errors raised through tidal/http.lua (and tidal.tasks in init.lua)
--     pointed at the library's line instead of the caller's;
--   * docs/errors.md lacked the kinds closed, full, empty, lagged,
--     no_permits, interrupted and the timeout of tidal.timeout.
local tidal = require("tidal")
local support = require("support")

local function err_of(f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok)
  return err
end

describe("issue 9 item 23: messages say what was wrong and where", function()
  it("capacities and counts: the value, and its type when it matters", function()
    local cases = {
      { tidal.channel, "10", "got string '10'" },
      { tidal.channel, 0, "got 0" },
      { tidal.channel, 1.5, "got 1.5" },
      { tidal.channel, {}, "got table" },
      { tidal.channel, 1 << 29, "got " .. (1 << 29) },
      { tidal.broadcast, "x", "got string 'x'" },
      { tidal.broadcast, nil, "got nil" },
      { tidal.semaphore, -1, "got -1" },
      { tidal.semaphore, "3", "got string '3'" },
      { tidal.semaphore, 2.5, "got 2.5" },
    }
    for _, c in ipairs(cases) do
      local msg = err_of(c[1], c[2])
      assert.matches(c[3], msg, nil, true)
    end
    local long = string.rep("y", 100)
    assert.matches("got string 'yyyy", err_of(tidal.channel, long), nil, true)
    assert.is_true(#err_of(tidal.channel, long) < 200)
    local s = tidal.semaphore(1)
    assert.matches("Semaphore:try_acquire: the number of permits must be an integer >= 1 and <= "
      .. 0x7fffffff .. ", got 0", err_of(s.try_acquire, s, 0), nil, true)
  end)

  it("unknown options to spawn, rt:spawn, g:spawn and spawn_parallel raise, listing the known ones", function()
    local r = support.run(function()
      local out = {}
      out[1] = err_of(tidal.spawn, { nmae = "x" }, function() end)
      local g = tidal.group()
      out[2] = err_of(g.spawn, g, { name = "a", priority = 1 }, function() end)
      out[3] = err_of(tidal.spawn_parallel, { nmae = "x" }, function() end)
      out[4] = err_of(tidal.spawn, { [1] = "x" }, function() end)
      g:close()
      return out
    end)
    assert.matches("tidal.spawn: unknown option 'nmae' (known: name)", r[1], nil, true)
    assert.matches("tidal.spawn: unknown option 'priority' (known: name)", r[2], nil, true)
    assert.matches("tidal.spawn_parallel: unknown option 'nmae' (known: name)", r[3], nil, true)
    assert.matches("tidal.spawn: unknown option 1 (known: name)", r[4], nil, true)
    local rt = tidal.runtime()
    assert.matches("tidal.spawn: unknown option 'nmae' (known: name)",
      err_of(rt.spawn, rt, { nmae = "x" }, function() end), nil, true)
    rt:close()
    assert.matches("tidal.run: unknown option 'worker'",
      err_of(tidal.run, { worker = 2 }, function() end), nil, true)
    assert.matches("tidal.runtime: unknown option 'worker'",
      err_of(tidal.runtime, { worker = 2 }), nil, true)
  end)

  it("errors raised through tidal.http point at the caller's line", function()
    local here = debug.getinfo(1, "S").short_src
    local line = debug.getinfo(1, "l").currentline + 1
    local ok, err = pcall(function() local r = tidal.http.get("http://127.0.0.1:1/") return r end)
    assert.is_false(ok)
    assert.matches("^" .. here:gsub("%p", "%%%0") .. ":" .. line .. ": tidal.http.get: not inside a tidal task", err)
    local msg = support.run(function()
      local co = coroutine.wrap(function()
        local r = tidal.http.get("http://127.0.0.1:1/")
        return r
      end)
      return select(2, pcall(co))
    end)
    assert.is_nil(msg:match("tidal/http.lua"), msg)
    assert.matches(here .. ":%d+: tidal.http.get: called from a plain coroutine", msg)
  end)

  it("errors raised through lua/tidal/init.lua point at the caller's line", function()
    local here = debug.getinfo(1, "S").short_src
    local line = debug.getinfo(1, "l").currentline + 1
    local ok, err = pcall(function() local l = tidal.tasks() return l end)
    assert.is_false(ok)
    assert.are.equal(here .. ":" .. line .. ": tidal.tasks: no runtime is running (call it "
      .. "inside tidal.run, or use rt:tasks() on a runtime)", err)
  end)

  it("docs/errors.md lists every kind the runtime uses", function()
    local f = assert(io.open("docs/errors.md"))
    local doc = f:read("a")
    f:close()
    for _, kind in ipairs({ "cancelled", "deadlock", "timeout", "interrupted", "closed", "full",
      "empty", "lagged", "no_permits" }) do
      assert.matches("| `" .. kind .. "` |", doc, nil, true)
    end
    assert.matches("tidal.timeout", doc, nil, true)
    assert.matches("attempt to use a closed", doc, nil, true)
  end)
end)
