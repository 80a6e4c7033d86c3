-- fetch_all: the Tokio guide's concurrent fetch, in tidal. Three requests
-- that take 1, 2 and 1 s run as three tasks at once: about 2 s in all,
-- not 4.
--
-- Usage: lua5.4 examples/fetch_all.lua [BASE_URL]
-- BASE_URL defaults to $TIDAL_EXAMPLE_URL, then http://127.0.0.1:8000; the
-- server must answer /delay/S after S seconds, as spec/fixtures/server.py
-- does.
local tidal = require("tidal")
local http = tidal.http

local base = arg[1] or os.getenv("TIDAL_EXAMPLE_URL") or "http://127.0.0.1:8000"

-- Each URL gets its own task (tokio::spawn); each task returns the body or
-- nil and a message. Then every handle is joined in order.
local function fetch_all(urls)
  local handles = {}
  for i, url in ipairs(urls) do
    handles[i] = tidal.spawn(function()
      local resp, err = http.get(url)
      if not resp then
        return nil, ("Request to %s failed: %s"):format(url, tostring(err))
      end
      return resp.body
    end)
  end
  local results = {}
  for i, h in ipairs(handles) do
    local ok, body, err = h:join()
    if not ok then -- the task itself raised (a panic, in Rust's terms)
      results[i] = { err = "Task failed: " .. tostring(body) }
    else
      results[i] = { body = body, err = err }
    end
  end
  return results
end

tidal.run(function()
  local urls = { base .. "/delay/1", base .. "/delay/2", base .. "/delay/1" }
  local t0 = tidal.now()
  -- all three requests run concurrently: the total is about the slowest one
  local results = fetch_all(urls)
  for i, r in ipairs(results) do
    if r.body then
      print(("URL %d: %d bytes"):format(i, #r.body))
    else
      print(("URL %d: %s"):format(i, r.err))
    end
  end
  print(("All three took %.1f s (one after another: 4 s)"):format(tidal.now() - t0))
end)
