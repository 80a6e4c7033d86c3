-- copy: copy a file in 1 MiB chunks with tidal.fs, with a progress line on
-- stderr. The copy goes to "<dest>.part" and is renamed to dest at the
-- end, so an interrupted copy (an error, Ctrl-C) never leaves a partial
-- file under the final name: the <close> handlers remove it.
--
-- Usage: lua5.4 examples/copy.lua SOURCE DEST
-- Without arguments it runs a demo: it makes an 8 MiB file, copies it and
-- checks the copy.
local tidal = require("tidal")
local fs = tidal.fs

local CHUNK = 1024 * 1024

local function mib(n)
  return ("%.1f MiB"):format(n / CHUNK)
end

-- Copies src to dst; returns the bytes copied.
local function copy(src, dst)
  local st = assert(fs.stat(src))
  local input <close> = assert(fs.open(src, "rb"))
  local part = dst .. ".part"
  local output = assert(fs.open(part, "wb"))
  local done = false
  local _ <close> = setmetatable({}, { __close = function()
    if not done then -- failed or cancelled: no half file stays behind
      output:close()
      os.remove(part)
    end
  end })
  local copied = 0
  while true do
    local chunk = input:read(CHUNK)
    if not chunk then break end
    assert(output:write(chunk))
    copied = copied + #chunk
    io.stderr:write(("\r%5.1f%%  %s of %s"):format(
      st.size > 0 and 100 * copied / st.size or 100, mib(copied), mib(st.size)))
  end
  io.stderr:write("\n")
  assert(output:close()) -- reports a write that failed late (disk full)
  assert(fs.rename(part, dst))
  done = true
  return copied
end

local args = arg or {}
if #args == 0 then -- the demo
  tidal.run(function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(fs.mkdir(dir))
    local src, dst = dir .. "/source", dir .. "/copy"
    -- 8 MiB of varied bytes
    local block = {}
    for i = 0, 1023 do block[#block + 1] = string.char(i % 251) end
    block = table.concat(block):rep(1024)
    local f = assert(fs.open(src, "wb"))
    for _ = 1, 8 do assert(f:write(block)) end
    assert(f:close())

    local t0 = tidal.now()
    local n = copy(src, dst)
    print(("copied %s in %.2f s"):format(mib(n), tidal.now() - t0))
    local a, b = assert(fs.read_file(src)), assert(fs.read_file(dst))
    print("sizes " .. #a .. " " .. #b .. ", identical: " .. tostring(a == b))
    print("left in the directory: " .. table.concat(assert(fs.readdir(dir)), " "))
    assert(fs.remove(dir, { recursive = true }))
  end)
  return
end

if #args ~= 2 then
  io.stderr:write("usage: lua5.4 copy.lua SOURCE DEST\n")
  os.exit(2)
end
tidal.run(function()
  local t0 = tidal.now()
  local n = copy(args[1], args[2])
  print(("copied %s in %.2f s"):format(mib(n), tidal.now() - t0))
end)
