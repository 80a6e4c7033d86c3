-- xargs: run a command once per input line, several at a time, and print
-- the outputs in input order (as `xargs -P n -n 1`, with the output of
-- GNU parallel -k). A semaphore bounds how many children run at once;
-- each line gets a task of its own.
--
-- Usage: lua5.4 examples/xargs.lua [-P n] [-a file] command [args...]
--   Each input line (from file, or from stdin) is appended to the command
--   as its last argument. There is no shell: the line is one argument as
--   it is. The exit status is 123 if any command failed, as xargs's.
-- Without arguments it runs a demo: 8 jobs that take 0.1 s each, 4 at a
-- time, in about 0.2 s.
local tidal = require("tidal")
local fs, process = tidal.fs, tidal.process

local function usage()
  io.stderr:write("usage: lua5.4 xargs.lua [-P n] [-a file] command [args...]\n")
  os.exit(2)
end

-- Runs command .. {item} for every item, at most `parallel` at a time.
-- Returns the results in item order: {res} or {err}.
local function xargs(command, items, parallel)
  local slots = tidal.semaphore(parallel)
  local handles = {}
  for i, item in ipairs(items) do
    handles[i] = tidal.spawn(function()
      local _ <close> = slots:acquire() -- the permit: given back when the task ends
      local argv = table.move(command, 1, #command, 1, {})
      argv[#argv + 1] = item
      return process.exec(argv, { stderr = "inherit" })
    end)
  end
  -- print each output as soon as it and every one before it are done
  local failed = 0
  for i, h in ipairs(handles) do
    local res, err = h:await()
    if not res then
      failed = failed + 1
      io.stderr:write(("xargs: %s: %s\n"):format(items[i], tostring(err)))
    else
      io.write(res.stdout)
      if not res.ok then
        failed = failed + 1
        io.stderr:write(("xargs: %s %s: %s\n"):format(command[1], items[i],
          res.status and ("exit " .. res.status) or ("signal " .. res.signal)))
      end
    end
  end
  return failed
end

local function read_lines(path)
  -- /dev/stdin is a pipe or a terminal as often as a file: tidal.fs reads
  -- it in order on the thread pool
  local f <close> = assert(fs.open(path or "/dev/stdin"))
  local items = {}
  for line in f:lines() do
    if line ~= "" then items[#items + 1] = line end
  end
  return items
end

local args = arg or {}
if #args == 0 then -- the demo
  tidal.run(function()
    local words = { "one", "two", "three", "four", "five", "six", "seven", "eight" }
    print(("running %d jobs, 4 at a time"):format(#words))
    local t0 = tidal.now()
    -- sh -c 'script' name: the item becomes $0
    local failed = xargs({ "sh", "-c", "sleep 0.1; echo $0" }, words, 4)
    print(("%d jobs in %.1f s (one at a time: %.1f s), %d failed")
      :format(#words, tidal.now() - t0, 0.1 * #words, failed))
  end)
  return
end

local parallel, input, i = 1, nil, 1
while args[i] and args[i]:sub(1, 1) == "-" do
  if args[i] == "-P" then
    parallel = tonumber(args[i + 1]) or usage()
  elseif args[i] == "-a" then
    input = args[i + 1] or usage()
  else
    usage()
  end
  i = i + 2
end
local command = table.move(args, i, #args, 1, {})
if #command == 0 then usage() end

local failed = tidal.run(function()
  return xargs(command, read_lines(input), math.max(1, math.floor(parallel)))
end)
os.exit(failed > 0 and 123 or 0)
