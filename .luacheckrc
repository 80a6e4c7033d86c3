std = "lua54"
max_line_length = 120
-- `local x <close> = ...` is used for its __close only
ignore = { "211/guard", "211/conn", "211/file", "211/g", "211/a", "211/b" }
files["spec/"] = { std = "+busted", ignore = { "211", "311", "212", "213", "231" } }
-- functions given to spawn_parallel name their parameters like the caller's
-- values they receive copies of
files["spec/parallel_spec.lua"] = { std = "+busted", ignore = { "211", "311", "212", "213", "231", "43" } }
files["spec/notify_shared_spec.lua"] = { std = "+busted", ignore = { "211", "311", "212", "213", "231", "43" } }
exclude_files = { "lua_modules/", "build/" }
-- a task's own sender clone (`local tx <close> = clone`) is named like the
-- sender it was cloned from
files["examples/"] = { ignore = { "431" } }
