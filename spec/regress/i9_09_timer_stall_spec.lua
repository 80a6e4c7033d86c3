-- Issue 9 item 9: a deadline that had already passed when the loop armed
-- its timer (after a busy task or an idle collection) fired in libuv's first
-- pass, and the poll then blocked with no timeout while an async handle kept
-- the loop alive (a task waiting on another thread, a worker's own loop):
-- sleeps returned seconds late, or never.
local support = require("support")

-- Runs code in a child lua5.4, killed after secs; returns output, status.
local function child(code, secs)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(code)
  f:close()
  local p = assert(io.popen(("timeout -k 2 %d lua5.4 %s 2>&1"):format(secs, path)))
  local out = p:read("a")
  local _, _, status = p:close()
  os.remove(path)
  return out, status
end

describe("issue 9 item 9: timers whose deadline passed before the poll", function()
  if not support.can_spawn then
    pending("needs child processes")
    return
  end

  it("fire on time beside a blocking job", function()
    local out, status = child([[
      local tidal = require("tidal")
      tidal.run(function()
        local job = tidal.spawn_blocking(function()
          local t = os.time()
          while os.time() - t < 3 do end
        end)
        local t0 = tidal.now()
        -- runs past main's deadline, then waits on the pool's thread
        local busy = tidal.spawn(function()
          local t = tidal.now()
          while tidal.now() - t < 0.05 do end
          job:await()
        end)
        tidal.sleep(0.01)
        print(("slept %.3f"):format(tidal.now() - t0))
        busy:await()
      end)
    ]], 30)
    assert.are.equal(0, status, out)
    local slept = tonumber(out:match("slept (%d+%.%d+)"))
    assert.is_truthy(slept, out)
    assert.is_true(slept < 1, out)
  end)

  it("fire on time beside a task that waits on another worker", function()
    local out, status = child([[
      local tidal = require("tidal")
      tidal.run({ workers = 1 }, function()
        local far = tidal.spawn_parallel(function() tidal.sleep(3) end)
        local t0 = tidal.now()
        local busy = tidal.spawn(function()
          local t = tidal.now()
          while tidal.now() - t < 0.05 do end
          far:await()
        end)
        tidal.sleep(0.01)
        print(("slept %.3f"):format(tidal.now() - t0))
        busy:await()
      end)
    ]], 30)
    assert.are.equal(0, status, out)
    local slept = tonumber(out:match("slept (%d+%.%d+)"))
    assert.is_truthy(slept, out)
    assert.is_true(slept < 1, out)
  end)

  it("let a worker task sleep many short times in a row", function()
    local n = support.scaled(500)
    local out, status = child(([[
      local tidal = require("tidal")
      tidal.run({ workers = 1 }, function()
        local h = tidal.spawn_parallel(function(n)
          for _ = 1, n do
            -- runs while the sleep below waits, past its deadline
            local busy = tidal.spawn(function()
              local t = tidal.now()
              while tidal.now() - t < 0.0005 do end
            end)
            tidal.sleep(0.0002)
            busy:await()
          end
          return n
        end, %d)
        print("slept", h:await())
      end)
    ]]):format(n), 20)
    assert.are.equal(0, status, out)
    assert.matches("slept\t" .. n, out)
  end)

  it("let main sleep many short times while a task waits on a worker", function()
    local n = support.scaled(500)
    local out, status = child(([[
      local tidal = require("tidal")
      tidal.run({ workers = 1 }, function()
        local far = tidal.spawn_parallel(function() tidal.sleep(30) end)
        local waiter = tidal.spawn(function() far:join() end)
        for _ = 1, %d do
          local busy = tidal.spawn(function() -- past the deadline below
            local t = tidal.now()
            while tidal.now() - t < 0.0005 do end
          end)
          tidal.sleep(0.0002)
          busy:await()
        end
        far:abort()
        waiter:await()
        print("done")
      end)
    ]]):format(n), 20)
    assert.are.equal(0, status, out)
    assert.matches("done", out)
  end)
end)
