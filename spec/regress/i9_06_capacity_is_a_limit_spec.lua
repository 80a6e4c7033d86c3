-- Issue 9 item 6: tidal.channel(cap) allocated its whole ring at once
-- (channel(1 << 28), a capacity the API accepts, cost about 4 GiB before the
-- first send); broadcast(capacity) did the same. A capacity is a limit, not
-- an allocation: the ring starts small and doubles as values arrive, up to
-- the capacity (it does not shrink).
local tidal = require("tidal")
local support = require("support")

-- KiB the Lua heap grows while fn runs (after a full collection)
local function growth(fn)
  collectgarbage()
  collectgarbage()
  local before = collectgarbage("count")
  local keep = table.pack(fn())
  local after = collectgarbage("count")
  return after - before, keep
end

describe("issue 9 item 6: a capacity is a limit, not an allocation", function()
  it("a channel with a huge capacity costs what a small one does", function()
    local kib = growth(function() return tidal.channel(1 << 24) end)
    assert.is_true(kib < 64, "channel(1 << 24) took " .. kib .. " KiB")
    kib = growth(function() return tidal.broadcast(1 << 24) end)
    assert.is_true(kib < 64, "broadcast(1 << 24) took " .. kib .. " KiB")
  end)

  it("channel(1 << 28), the largest capacity, is cheap too", function()
    if not support.can_spawn then return end
    -- in a child with its address space limited to 1 GiB, so that the old
    -- behaviour fails fast instead of taking 4 GiB (not under a sanitizer,
    -- whose shadow memory needs far more address space)
    local limit = support.sanitizer and ""
      or "ulimit -v 1048576; "
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write([[
local tidal = require("tidal")
local tx, rx = tidal.channel(1 << 28)
local btx, brx = tidal.broadcast(1 << 28)
for i = 1, 1000 do tx:send(i); btx:send(i) end
local sum = 0
for _ = 1, 1000 do sum = sum + rx:try_recv() + brx:try_recv() end
print("ok", sum, collectgarbage("count") < 4096)
]])
    f:close()
    local p = assert(io.popen("sh -c '" .. limit .. "lua5.4 " .. path .. "' 2>&1"))
    local out = p:read("a")
    p:close()
    os.remove(path)
    assert.matches("ok\t1001000\ttrue", out)
  end)

  it("a bounded ring grows while wrapped and keeps FIFO order", function()
    local got = support.run(function()
      local tx, rx = tidal.channel(100)
      local out, n = {}, 0
      local function take(k)
        for _ = 1, k do out[#out + 1] = rx:try_recv() end
      end
      for i = 1, 10 do assert(tx:try_send(i)) end
      take(7) -- the head moves on: the ring wraps when it grows
      n = 10
      while tx:try_send(n + 1) do n = n + 1 end
      assert(n == 107, "capacity 100 holds 100 values, got " .. (n - 7))
      local v, err = tx:try_send("no room")
      assert(v == nil and err.kind == "full")
      take(100)
      return { out = out, n = n, len = #rx }
    end)
    for i = 1, 107 do assert.are.equal(i, got.out[i]) end
    assert.are.equal(0, got.len)
  end)

  it("a bounded channel still waits when full, and grows across workers", function()
    local r = support.run(function()
      local tx, rx = tidal.channel(64)
      local h = tidal.spawn_parallel(function(t)
        for i = 1, 1000 do t:send(i) end
        t:close()
      end, tx)
      tx:close()
      local sum, count = 0, 0
      for v in rx do sum, count = sum + v, count + 1 end
      h:await()
      return { sum = sum, count = count }
    end)
    assert.are.equal(1000, r.count)
    assert.are.equal(500500, r.sum)
  end)

  it("broadcast keeps the last `capacity` values as its ring grows", function()
    local tx, rx = tidal.broadcast(40)
    for i = 1, 100 do tx:send(i) end
    local v, err = rx:try_recv()
    assert.is_nil(v)
    assert.are.equal("lagged", err.kind)
    assert.are.equal(60, err.skipped)
    for i = 61, 100 do assert.are.equal(i, rx:try_recv()) end
    assert.are.equal("empty", select(2, rx:try_recv()).kind)
  end)
end)
