-- Issue 9 audit (HTTP, cancellation while reading a stream): a reader
-- woken by data and cancelled before it ran ends the stream (as a
-- cancelled read does), but it cleared the registration of another task
-- that had parked on the same body meanwhile without waking it: that task
-- waited forever ("deadlock"). Found by a randomized stress of streamed
-- reads, closes and aborts. Now the other reader is woken and gets the
-- "cancelled" error.
local tidal = require("tidal")
local http = require("tidal.http")
local support = require("support")
local fixtures = require("fixtures.http")

if not support.can_spawn then
  describe("issue 9 audit: a cancelled stream reader wakes the next one", function()
    pending("needs the fixture server (a child process)")
  end)
  return
end

describe("issue 9 audit: a cancelled stream reader wakes the next one", function()
  local srv, url

  setup(function()
    srv = fixtures.start_server()
    url = srv.url
  end)

  teardown(function()
    fixtures.stop_server(srv)
  end)

  local function state_of(h)
    for _, t in ipairs(tidal.tasks()) do
      if t.id == h:id() then return t.state end
    end
    return "done"
  end

  it("a reader parked while the woken reader is cancelled gets an error", function()
    support.run(function()
      local r = assert(http.get(url("/slow-body?n=5&size=100&delay=0.3"), { stream = true }))
      assert.is_truthy(r:read()) -- the first piece
      local a = tidal.spawn(function() return r:read() end)
      tidal.sleep(0.05)
      assert.are.equal("parked", state_of(a))
      -- b spins (always runnable, so it runs before a once the next piece
      -- wakes a), takes that piece, cancels a (woken, not yet run: its
      -- read is withdrawn) and parks in a read of its own
      local b = tidal.spawn(function()
        while state_of(a) ~= "runnable" do tidal.yield() end
        local got = r:read()
        a:abort()
        local data, err = r:read()
        return got, data, err
      end)
      local ok, aerr = a:join()
      assert.is_false(ok)
      assert.is_true(tidal.is_error(aerr, "cancelled"))
      local tok, got, data, err = tidal.timeout(3, b.await, b)
      assert.is_true(tok, "the second reader was never woken")
      assert.are.equal(100, #got)
      assert.is_nil(data)
      assert.is_true(tidal.is_error(err, "cancelled"), tostring(err))
    end)
  end)
end)
