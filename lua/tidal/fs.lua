--- Files and directories for tidal tasks, on libuv's thread pool: a call
-- parks the calling task while a pool thread does the work, so the loop
-- never blocks and the other tasks run meanwhile.
--
--     local fs = require("tidal.fs")    -- also tidal.fs
--     tidal.run(function()
--       assert(fs.write_file("/tmp/greeting", "hello\n", {atomic = true}))
--       print(fs.read_file("/tmp/greeting"))       --> hello
--       local f = assert(fs.open("/tmp/greeting"))
--       for line in f:lines() do print(line) end
--       f:close()
--     end)
--
-- Failures of the file system return `nil, err`: `err.kind` is one of
-- "not_found", "permission_denied", "already_exists", "not_a_directory",
-- "is_a_directory", "not_empty", "busy", "cross_device", "no_space",
-- "read_only", "name_too_long", "too_many_links", "too_many_open_files",
-- "too_large", "invalid_argument", "io" (the table is in docs/errors.md);
-- `err.errno` is libuv's name of the code ("ENOENT"), `err.path` the path,
-- and the message names the function and the path:
-- "tidal.fs.open: /etc/shadow: permission denied (EACCES)". Misuse (a bad
-- argument, an unknown option, a call outside a task) raises.
--
-- A call cancelled while it waits (abort, timeout, select) leaks no file
-- descriptor and no request: a job that has not started never runs, and
-- one that is running finishes in the background and cleans up after
-- itself. The full reference is docs/fs.md.
-- @module tidal.fs

local core = require("tidal.core")

local type, tostring, math_type = type, tostring, math.type

local c_read_file, c_write_file = core._fs_read_file, core._fs_write_file
local c_stat, c_lstat = core._fs_stat, core._fs_lstat
local c_mkdir, c_readdir = core._fs_mkdir, core._fs_readdir
local c_remove, c_rename, c_open = core._fs_remove, core._fs_rename,
  core._fs_open

local M = {}

-- misuse: raise at the first caller outside tidal's files (the user's code)
local argcheck = require("tidal.argcheck")
argcheck.own()
local argerror = argcheck.argerror

-- option checkers: name -> function(fname, name, value) raising on misuse
local boolean = argcheck.boolean
local function mode_bits(fname, k, v)
  if math_type(v) ~= "integer" or v < 0 or v > 4095 then
    argerror(fname, "option '" .. k .. "' must be permission bits (an "
      .. "integer from 0 to 0xFFF, e.g. tonumber(\"644\", 8)), got "
      .. tostring(v))
  end
end
local size = argcheck.size

local options = argcheck.options

local function path_arg(fname, p, what)
  if type(p) ~= "string" then
    argerror(fname, (what or "path") .. " must be a string, got " .. type(p))
  end
end

--- Read a whole file.
-- @function read_file
-- @tparam string path
-- @tparam[opt] table opts `max` (bytes): a larger file is an error of kind
-- "too_large" (and nothing more is read)
-- @treturn string the contents, or `nil, err`
local read_file_opts = { max = size }
function M.read_file(path, opts)
  path_arg("tidal.fs.read_file", path)
  opts = options("tidal.fs.read_file", opts, read_file_opts)
  return c_read_file(path, opts.max)
end

--- Write a whole file (create it, or replace what it holds).
-- @function write_file
-- @tparam string path
-- @tparam string data
-- @tparam[opt] table opts `atomic` (write a temporary file in the same
-- directory, flush it to disk, then rename it over `path`: readers see the
-- old contents or the new, never a part; the temporary file is removed on
-- any failure), `append` (add to the end instead), `mode` (permission
-- bits of a new file, default `0666`, less the umask), `sync` (flush to
-- disk before returning; default: `atomic`)
-- @treturn boolean `true`, or `nil, err`
local write_file_opts = {
  atomic = boolean, append = boolean, mode = mode_bits, sync = boolean,
}
function M.write_file(path, data, opts)
  local fname = "tidal.fs.write_file"
  path_arg(fname, path)
  if type(data) ~= "string" then
    if type(data) ~= "number" then
      argerror(fname, "data must be a string, got " .. type(data))
    end
    data = tostring(data)
  end
  opts = options(fname, opts, write_file_opts)
  if opts.atomic and opts.append then
    argerror(fname, "options 'atomic' and 'append' cannot be combined")
  end
  local sync = opts.sync
  if sync == nil then sync = opts.atomic or false end
  return c_write_file(path, data, opts.atomic, opts.append, opts.mode, sync)
end

--- Open a file. The modes are io.open's: "r" (the default), "w", "a",
-- "r+", "w+", "a+", each with an optional "b" (no effect), and "x" after
-- w (fail with kind "already_exists" if the file exists, as C11's fopen).
-- The File's methods take the same arguments and give the same results as
-- io's files: `f:read(...)`, `f:write(...)`, `f:lines(...)`,
-- `f:seek([whence [, offset]])`, `f:flush()`, `f:setvbuf(mode [, size])`,
-- `f:close()`, and `f:stat()`; failures are `nil, err` with an error
-- object. Leaving a `<close>` scope normally closes it as `close()` does
-- (waiting for the data to be written; a failure raises).
-- @function open
-- @tparam string path
-- @tparam[opt="r"] string mode
-- @return a `tidal.File`, or `nil, err`
function M.open(path, mode)
  path_arg("tidal.fs.open", path)
  if mode ~= nil and type(mode) ~= "string" then
    argerror("tidal.fs.open", "mode must be a string, got " .. type(mode))
  end
  return c_open(path, mode)
end

--- Information about a file (following symbolic links).
-- @function stat
-- @tparam string path
-- @treturn table `{type, size, mode, mtime, atime, ctime, nlink, uid, gid,
-- ino, dev, blocks}`: `type` is "file", "directory", "link", "fifo",
-- "socket", "char", "block" or "unknown"; `mode` the permission bits;
-- times are seconds since the epoch (floats). Or `nil, err`.
function M.stat(path)
  path_arg("tidal.fs.stat", path)
  return c_stat(path)
end

--- As `stat`, but about a symbolic link itself, not what it points to.
-- @function lstat
-- @tparam string path
function M.lstat(path)
  path_arg("tidal.fs.lstat", path)
  return c_lstat(path)
end

--- Create a directory.
-- @function mkdir
-- @tparam string path
-- @tparam[opt] table opts `parents` (create the missing parents too, as
-- `mkdir -p`; a directory that exists already is fine), `mode` (default
-- `0777`, less the umask)
-- @treturn boolean `true`, or `nil, err`
local mkdir_opts = { parents = boolean, mode = mode_bits }
function M.mkdir(path, opts)
  path_arg("tidal.fs.mkdir", path)
  opts = options("tidal.fs.mkdir", opts, mkdir_opts)
  return c_mkdir(path, opts.parents, opts.mode)
end

--- The names in a directory, sorted bytewise, without "." and "..".
-- @function readdir
-- @tparam string path
-- @tparam[opt] table opts `types = true`: a list of `{name =, type =}`
-- instead (type as in `stat`; a link is "link")
-- @treturn table the list, or `nil, err`
local readdir_opts = { types = boolean }
function M.readdir(path, opts)
  path_arg("tidal.fs.readdir", path)
  opts = options("tidal.fs.readdir", opts, readdir_opts)
  return c_readdir(path, opts.types)
end

--- Remove a file, a symbolic link or an empty directory.
-- @function remove
-- @tparam string path
-- @tparam[opt] table opts `recursive = true`: a directory and everything
-- in it, as `rm -r` (symbolic links are removed, never followed)
-- @treturn boolean `true`, or `nil, err`
local remove_opts = { recursive = boolean }
function M.remove(path, opts)
  path_arg("tidal.fs.remove", path)
  opts = options("tidal.fs.remove", opts, remove_opts)
  return c_remove(path, opts.recursive)
end

--- Rename (move) a file or directory, replacing `to` if it exists (as
-- rename(2)). Across file systems it fails with kind "cross_device".
-- @function rename
-- @tparam string from
-- @tparam string to
-- @treturn boolean `true`, or `nil, err` (with `err.path` = from and
-- `err.to` = to)
function M.rename(from, to)
  path_arg("tidal.fs.rename", from, "from")
  path_arg("tidal.fs.rename", to, "to")
  return c_rename(from, to)
end

return M
