-- fetch_with_timeout: the Tokio guide's timeout example, in tidal.
-- tidal.timeout(s, fn, ...) runs fn in the current task with a deadline;
-- when it expires, the pending request is cancelled (libcurl drops the
-- transfer at once) and timeout returns false and an error of kind
-- "timeout". The connection pool is unharmed.
--
-- Usage: lua5.4 examples/fetch_with_timeout.lua [BASE_URL]
-- BASE_URL defaults to $TIDAL_EXAMPLE_URL, then http://127.0.0.1:8000; the
-- server must answer /delay/S after S seconds (spec/fixtures/server.py).
local tidal = require("tidal")
local http = tidal.http

local base = arg[1] or os.getenv("TIDAL_EXAMPLE_URL") or "http://127.0.0.1:8000"

-- seconds defaults to 5, as in the Rust version
local function fetch_with_timeout(url, seconds)
  seconds = seconds or 5
  local ok, resp, err = tidal.timeout(seconds, http.get, url)
  if not ok then
    -- the timeout expired before the request completed
    return nil, ("Request to %s timed out after %g seconds"):format(url, seconds)
  end
  if not resp then
    -- the request failed within the time
    return nil, "Request error: " .. tostring(err)
  end
  return resp.body
end

tidal.run(function()
  -- answers in 0.2 s: well within 5 s
  local body, err = fetch_with_timeout(base .. "/delay/0.2")
  print(body and ("Got %d bytes"):format(#body) or err)
  -- answers in 10 s: given 1 s, it times out after 1 s
  local t0 = tidal.now()
  body, err = fetch_with_timeout(base .. "/delay/10", 1)
  print(body and ("Got %d bytes"):format(#body) or err)
  print(("(gave up after %.1f s)"):format(tidal.now() - t0))
end)
