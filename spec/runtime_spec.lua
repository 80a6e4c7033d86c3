local tidal = require("tidal")

describe("tidal.runtime", function()
  it("block_on runs a main task; other tasks keep running afterwards", function()
    local rt = tidal.runtime()
    local log = {}
    local bg
    local r = rt:block_on(function()
      bg = tidal.spawn(function()
        for i = 1, 3 do tidal.sleep(0.01); log[#log + 1] = i end
        return "bg done"
      end)
      return "first"
    end)
    assert.are.equal("first", r)
    assert.is_false(bg:is_finished())
    local r2 = rt:block_on(function() return bg:await() end)
    assert.are.equal("bg done", r2)
    assert.are.same({ 1, 2, 3 }, log)
    rt:close()
  end)

  it("block_on raises the main task's error", function()
    local rt = tidal.runtime()
    local ok, err = pcall(rt.block_on, rt, function() error("bad", 0) end)
    assert.is_false(ok)
    assert.matches("^bad", err)
    rt:close()
  end)

  it("spawn and step drive tasks from a host loop", function()
    local rt = tidal.runtime()
    local log = {}
    local h = rt:spawn(function(x)
      log[#log + 1] = "start " .. x
      tidal.sleep(0.02)
      log[#log + 1] = "end"
      return x
    end, "a")
    assert.are.same({}, log)
    assert.is_true(rt:step())
    assert.are.same({ "start a" }, log)
    local t = rt:next_timeout()
    assert.is_number(t)
    assert.is_true(t > 0 and t <= 0.02)
    local steps = 0
    while rt:step(0.1) do steps = steps + 1; assert(steps < 100) end
    assert.are.same({ "start a", "end" }, log)
    assert.are.equal("a", h:await())
    assert.is_nil(rt:next_timeout())
    assert.is_number(rt:backend_fd())
    rt:close()
  end)

  it("step with a timeout waits no longer than asked when nothing is due", function()
    local rt = tidal.runtime()
    rt:spawn(tidal.sleep, 10)
    rt:step()
    local t0 = tidal.now()
    assert.is_true(rt:step(0.05))
    local dt = tidal.now() - t0
    assert.is_true(dt >= 0.04 and dt < 2, "waited " .. dt)
    rt:close()
  end)

  it("close cancels live tasks and runs their <close> variables", function()
    local rt = tidal.runtime()
    local closed = 0
    local h = rt:spawn(function()
      local g <close> = setmetatable({}, { __close = function() closed = closed + 1 end })
      tidal.sleep(60)
    end)
    rt:step()
    local never = rt:spawn(function() closed = closed + 100 end)
    never:abort()
    rt:close()
    assert.are.equal(1, closed)
    local ok, err = h:join()
    assert.is_false(ok)
    assert.are.equal("cancelled", err.kind)
    rt:close() -- twice is fine
    assert.matches("closed", tostring(rt))
    local ok2, err2 = pcall(rt.step, rt)
    assert.is_false(ok2)
    assert.matches("Runtime:step: the runtime is closed", err2)
  end)

  it("is a to-be-closed value", function()
    local closed = false
    do
      local rt <close> = tidal.runtime()
      rt:spawn(function()
        local g <close> = setmetatable({}, { __close = function() closed = true end })
        tidal.sleep(60)
      end)
      rt:step()
    end
    assert.is_true(closed)
  end)

  it("refuses to be driven from inside a task", function()
    local rt = tidal.runtime()
    local err = tidal.run(function()
      local ok, e = pcall(rt.step, rt)
      assert.is_false(ok)
      return e
    end)
    assert.matches("Runtime:step: already inside a tidal task", err)
    rt:close()
  end)

  it("refuses bad arguments and options", function()
    assert.matches("tidal.runtime: unknown option 'x'", select(2, pcall(tidal.runtime, { x = 1 })))
    local rt = tidal.runtime()
    assert.matches("Runtime:step: expected a Runtime", select(2, pcall(rt.step, 5)))
    assert.matches("tidal.spawn: expected a function", select(2, pcall(rt.spawn, rt, 5)))
    rt:close()
  end)

  it("two runtimes in one state keep their tasks apart", function()
    local a, b = tidal.runtime(), tidal.runtime()
    local ha = a:spawn(function() tidal.sleep(0.01); return "a" end)
    local hb = b:spawn(function() return "b" end)
    b:step()
    assert.is_true(hb:is_finished())
    assert.is_false(ha:is_finished())
    local err = b:block_on(function()
      local ok, e = pcall(ha.await, ha)
      return e
    end)
    assert.matches("belongs to another runtime", err)
    assert.are.equal("a", a:block_on(function() return ha:await() end))
    a:close(); b:close()
  end)
end)
