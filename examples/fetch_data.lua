-- fetch_data: the Tokio guide's first example, in tidal.
--
--     async fn fetch_data(url: &str) -> Result<String, reqwest::Error> {
--         let response = reqwest::get(url).await?;
--         response.text().await
--     }
--
-- Usage: lua5.4 examples/fetch_data.lua [BASE_URL]
-- BASE_URL defaults to $TIDAL_EXAMPLE_URL, then http://127.0.0.1:8000. A
-- local server to point it at: python3 spec/fixtures/server.py (it prints
-- its port first).
local tidal = require("tidal")
local http = tidal.http

local base = arg[1] or os.getenv("TIDAL_EXAMPLE_URL") or "http://127.0.0.1:8000"

-- An async function is an ordinary function: http.get parks this task
-- until the response is in, and other tasks run meanwhile. There is no
-- await; failures come back as nil, err (the `?` of the Rust version).
local function fetch_data(url)
  local resp, err = http.get(url)
  if not resp then return nil, err end
  return resp.body
end

-- tidal.run sets up the runtime and runs main as its first task
-- (#[tokio::main] in Rust).
tidal.run(function()
  local body, err = fetch_data(base .. "/json")
  if body then
    print(("Response length: %d bytes"):format(#body))
  else
    print("Request failed: " .. tostring(err))
  end
end)
