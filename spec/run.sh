#!/usr/bin/env bash
# Runs the busted suite under Lua 5.4 and ends with "N passed, N failed".
# LUA_PATH_5_4 / LUA_CPATH_5_4 must point at the built tree (the Makefile sets
# them). TIDAL_VALGRIND=1 runs it under valgrind memcheck instead.
set -u
busted_bin=$(command -v busted || echo /usr/bin/busted)
if [ -n "${TIDAL_VALGRIND:-}" ]; then
  # --fair-sched: a thread that burns CPU must not starve the others
  cmd=(valgrind --quiet --fair-sched=yes --leak-check=full
       --errors-for-leak-kinds=definite --show-leak-kinds=definite
       --error-exitcode=97 lua5.4 "$busted_bin")
else
  cmd=(lua5.4 "$busted_bin")
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"${cmd[@]}" "$@" 2>&1 | tee "$out"
rc=${PIPESTATUS[0]}
line=$(grep -E '[0-9]+ success(es)? / [0-9]+ failures? / [0-9]+ errors?' "$out" | tail -1)
if [ -z "$line" ]; then
  echo "0 passed, 1 failed (busted did not finish: exit $rc)"
  exit 1
fi
passed=$(echo "$line" | grep -oE '[0-9]+ success' | grep -oE '[0-9]+')
failures=$(echo "$line" | grep -oE '[0-9]+ failure' | grep -oE '[0-9]+')
errors=$(echo "$line" | grep -oE '[0-9]+ error' | grep -oE '[0-9]+')
failed=$((failures + errors))
if [ "$rc" = 97 ]; then
  echo "valgrind reported memory errors or definite leaks"
  failed=$((failed + 1))
fi
echo "$passed passed, $failed failed"
[ "$failed" = 0 ] && [ "$rc" = 0 ]
