# tidal: build, test and bench entry points.
#
#   make test        install missing Debian packages, build, run every spec
#   make demo        install, build, run examples/demo.lua
#   make test-asan   the suite under AddressSanitizer + UBSan
#   make valgrind    the suite under valgrind memcheck (no definite leaks)
#   make bench       tidal's own bench workloads (bench/run)
#   make docs        the LDoc reference under docs/ref
#   make lint        luacheck over lua/, spec/, examples/, bench/
#
# Builds install the rock into a project-local tree with luarocks, so what is
# tested is what `luarocks make` installs.

LUA        ?= lua5.4
LUAROCKS   ?= luarocks --lua-version=5.4
TREE       ?= $(CURDIR)/lua_modules
ASAN_TREE  ?= $(CURDIR)/build/asan
ROCKSPEC   := tidal-scm-1.rockspec
WARN       := -Wall -Wextra -Werror
CSTD       := -std=c11
DEV_CFLAGS := -O2 -g -fPIC $(CSTD) $(WARN)
ASAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer
SPEC       ?= spec

DEB_PACKAGES := lua5.4 liblua5.4-dev libuv1-dev libcurl4-openssl-dev \
                lua-busted lua-cjson luarocks nginx wrk python3 openssl \
                valgrind time build-essential

lua_env = LUA_PATH_5_4="$(1)/share/lua/5.4/?.lua;$(1)/share/lua/5.4/?/init.lua;;" \
          LUA_CPATH_5_4="$(1)/lib/lua/5.4/?.so;;"

C_SOURCES := $(wildcard csrc/*.c csrc/*.h)
LUA_SOURCES := $(wildcard lua/tidal/*.lua)

.PHONY: all deps build test test-asan valgrind demo bench docs lint clean

all: build

# Install what is missing (skipped when every package is present).
deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

build: $(TREE)/.built

$(TREE)/.built: $(C_SOURCES) $(LUA_SOURCES) $(ROCKSPEC)
	$(LUAROCKS) --tree=$(TREE) make $(ROCKSPEC) CFLAGS="$(DEV_CFLAGS)" >build.log 2>&1 \
	  || { cat build.log; exit 1; }
	@touch $@

$(ASAN_TREE)/.built: $(C_SOURCES) $(LUA_SOURCES) $(ROCKSPEC)
	$(LUAROCKS) --tree=$(ASAN_TREE) make $(ROCKSPEC) \
	  CFLAGS="$(DEV_CFLAGS) $(ASAN_FLAGS)" \
	  LIBFLAG="-shared $(ASAN_FLAGS)" >build-asan.log 2>&1 \
	  || { cat build-asan.log; exit 1; }
	@touch $@

test: deps build
	@$(call lua_env,$(TREE)) bash spec/run.sh $(SPEC)

ASAN_RT = $(shell gcc -print-file-name=libasan.so) $(shell gcc -print-file-name=libubsan.so)

test-asan: deps $(ASAN_TREE)/.built
	@$(call lua_env,$(ASAN_TREE)) LD_PRELOAD="$(ASAN_RT)" \
	  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  TIDAL_SPEC_SCALE=$${TIDAL_SPEC_SCALE:-0.2} \
	  bash spec/run.sh $(SPEC)

valgrind: deps build
	@$(call lua_env,$(TREE)) TIDAL_SPEC_SCALE=$${TIDAL_SPEC_SCALE:-0.02} \
	  TIDAL_VALGRIND=1 bash spec/run.sh $(SPEC)

demo: deps build
	@$(call lua_env,$(TREE)) $(LUA) examples/demo.lua

BENCH_WORKLOADS ?= spawn timers chan chan_mp pingpong mutex timeout select

bench: build
	@for w in $(BENCH_WORKLOADS); do ./bench/run $$w; done

docs:
	ldoc -d docs/ref lua/tidal

lint:
	luacheck lua spec examples bench

clean:
	rm -rf $(TREE) build csrc/*.o tidal build.log build-asan.log
