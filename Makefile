# tidal: build, test and bench entry points.
#
#   make test        install missing Debian packages, build, run every spec
#   make demo        install, build, run examples/demo.lua
#   make test-asan   the suite under AddressSanitizer + UBSan
#   make valgrind    the suite under valgrind memcheck (no definite leaks)
#   make test-tsan   the multi-threaded specs under ThreadSanitizer
#   make bench       the floor programs (bench/floor.lua), then tidal's own
#                    bench workloads (bench/run), one line each
#   make docs        the LDoc reference under docs/ref
#   make lint        luacheck over lua/, spec/, examples/, bench/
#   make layers      csrc/'s layer rules (tools/check_layers.py; also run
#                    by spec/build_spec.lua)
#   make fuzz        libFuzzer over transfer.c's serialized form for
#                    FUZZ_SECONDS (default 60); corpus in build/fuzz
#   make rock        the source rock of the versioned rockspec, in build/
#   make install-host PREFIX=/usr/local   tidal.h, libtidal.a, tidal.pc and
#                    the modules under PREFIX, for C hosts
#
# Builds install the rock into a project-local tree with luarocks, so what is
# tested is what `luarocks make` installs. The test trees also get
# tidal.testhooks (csrc/test/), a test-only module the rockspec never
# builds: tidal.core itself carries no test hooks.

LUA        ?= lua5.4
LUAROCKS   ?= luarocks --lua-version=5.4
TREE       ?= $(CURDIR)/lua_modules
ASAN_TREE  ?= $(CURDIR)/build/asan
TSAN_TREE  ?= $(CURDIR)/build/tsan
TSAN_SPECS ?= $(SPEC)
ROCKSPEC   := tidal-scm-1.rockspec
WARN       := -Wall -Wextra -Werror
CSTD       := -std=c11
DEV_CFLAGS := -O2 -g -fPIC $(CSTD) $(WARN)
ASAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer
SPEC       ?= spec

DEB_PACKAGES := lua5.4 liblua5.4-dev libuv1-dev libcurl4-openssl-dev \
                lua-busted lua-cjson luarocks nginx wrk python3 openssl \
                valgrind time build-essential pkg-config zip unzip \
                lua-luv lua-luv-dev

lua_env = LUA_PATH_5_4="$(1)/share/lua/5.4/?.lua;$(1)/share/lua/5.4/?/init.lua;;" \
          LUA_CPATH_5_4="$(1)/lib/lua/5.4/?.so;;"

C_SOURCES := $(wildcard csrc/*.h csrc/*/*.c csrc/*/*.h) Makefile
# the test-only module tidal.testhooks: csrc/test/, never in the rockspec
HOOKS_SRC := $(wildcard csrc/test/*.c)
HOOKS_SO   = $(1)/lib/lua/5.4/tidal/testhooks.so
LUA_CFLAGS := $(shell pkg-config --cflags lua5.4)
LUA_SOURCES := $(wildcard lua/tidal/*.lua)

.PHONY: all deps build test test-asan test-tsan valgrind demo bench docs lint layers clean \
        fuzz fuzz-deps rock rock-build rock-install modules-install install-host host-files

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

build: $(TREE)/.built $(call HOOKS_SO,$(TREE))

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

$(TSAN_TREE)/.built: $(C_SOURCES) $(LUA_SOURCES) $(ROCKSPEC)
	$(LUAROCKS) --tree=$(TSAN_TREE) make $(ROCKSPEC) \
	  CFLAGS="-O1 -g -fPIC $(CSTD) $(WARN) -fsanitize=thread" \
	  LIBFLAG="-shared -fsanitize=thread" >build-tsan.log 2>&1 \
	  || { cat build-tsan.log; exit 1; }
	@touch $@

# tidal.testhooks, built beside tidal.core in a test tree (flags: $(2))
define hooks_rule
$(call HOOKS_SO,$(1)): $(HOOKS_SRC) $(wildcard csrc/*.h csrc/xfer/*.h csrc/test/*.h) \
  $(1)/.built
	$$(CC) $(DEV_CFLAGS) $(2) -Icsrc $(LUA_CFLAGS) -shared -o $$@ \
	  $(HOOKS_SRC) -luv -ldl
endef
$(eval $(call hooks_rule,$(TREE),))
$(eval $(call hooks_rule,$(ASAN_TREE),$(ASAN_FLAGS)))
$(eval $(call hooks_rule,$(TSAN_TREE),-fsanitize=thread))

test: deps build
	@$(call lua_env,$(TREE)) bash spec/run.sh $(SPEC)

ASAN_RT = $(shell gcc -print-file-name=libasan.so) $(shell gcc -print-file-name=libubsan.so)

test-asan: deps $(ASAN_TREE)/.built $(call HOOKS_SO,$(ASAN_TREE))
	@$(call lua_env,$(ASAN_TREE)) LD_PRELOAD="$(ASAN_RT)" \
	  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  TIDAL_SPEC_SCALE=$${TIDAL_SPEC_SCALE:-0.2} \
	  bash spec/run.sh $(SPEC)

TSAN_RT = $(shell gcc -print-file-name=libtsan.so)
# Lua's errors and yields leave through __longjmp_chk, which TSan does not
# see, and shells do not survive libtsan: spec/tsan/longjmp_chk.c, and a
# lua5.4 first on PATH that preloads libtsan into Lua children
TSAN_LJC = $(TSAN_TREE)/longjmp_chk.so
TSAN_BIN = $(TSAN_TREE)/tsan-bin

$(TSAN_LJC): spec/tsan/longjmp_chk.c
	@mkdir -p $(TSAN_TREE)
	$(CC) -O1 -fPIC -shared -U_FORTIFY_SOURCE $(CSTD) $(WARN) -o $@ $<

$(TSAN_BIN)/lua5.4: spec/tsan/lua5.4
	@mkdir -p $(TSAN_BIN)
	cp $< $@ && chmod +x $@

test-tsan: deps $(TSAN_TREE)/.built $(call HOOKS_SO,$(TSAN_TREE)) $(TSAN_LJC) \
  $(TSAN_BIN)/lua5.4
	@$(call lua_env,$(TSAN_TREE)) TIDAL_TSAN_PRELOAD="$(TSAN_RT) $(TSAN_LJC)" \
	  PATH="$(TSAN_BIN):$$PATH" \
	  TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$(CURDIR)/spec/tsan/suppressions \
	  TIDAL_SPEC_SCALE=$${TIDAL_SPEC_SCALE:-0.5} \
	  bash spec/run.sh $(TSAN_SPECS)

valgrind: deps build
	@$(call lua_env,$(TREE)) TIDAL_SPEC_SCALE=$${TIDAL_SPEC_SCALE:-0.02} \
	  TIDAL_VALGRIND=1 bash spec/run.sh $(SPEC)

demo: deps build
	@$(call lua_env,$(TREE)) $(LUA) examples/demo.lua

BENCH_WORKLOADS ?= spawn timers chan chan_mp pingpong mutex timeout select cpu

bench: build
	@echo "# the floor: PUC Lua's own cost of the steps tidal cannot avoid"
	@$(LUA) bench/floor.lua
	@echo "# tidal (bench/run <workload>; ns per operation unless named)"
	@for w in $(BENCH_WORKLOADS); do ./bench/run $$w; done
	@BENCH_SELECT=fn ./bench/run select
	@BENCH_CHAN=parallel ./bench/run chan_mp
	@BENCH_CPU=parallel ./bench/run cpu

# Installs one Debian package when its command is missing ($(1): command,
# $(2): package).
define need_tool
	@command -v $(1) >/dev/null 2>&1 || { \
	  echo "installing $(2) (for $(1))"; \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) \
	  || { echo "cannot install $(2): install it (apt-get install $(2)) and retry"; exit 1; }; }
endef

docs:
	$(call need_tool,ldoc,lua-ldoc)
	ldoc -c config.ld .

lint:
	$(call need_tool,luacheck,lua-check)
	luacheck lua spec examples bench

layers:
	python3 tools/check_layers.py csrc

# ------------------------------------------------------------ the rock
#
# LuaRocks' make backend runs rock-build, then rock-install (see the
# rockspecs), with CC, CFLAGS, LIBFLAG, LUA_INCDIR, LIBUV_* and LIBCURL_LIBDIR
# from its configuration, and INST_PREFIX (the rock's directory),
# INST_LIBDIR and INST_LUADIR. Every C file of the core but csrc/test/ is
# compiled with hidden visibility: tidal.core exports luaopen_tidal_core
# and tidal.h's functions only. The objects go to a folder per set of flags
# (the test trees build with sanitizers from the same checkout).
CORE_SRC   := $(filter-out csrc/test/%,$(wildcard csrc/*/*.c))
C_HEADERS  := $(wildcard csrc/*.h csrc/*/*.h)
CFLAGS     ?= -O2 -fPIC
LIBFLAG    ?= -shared
LUA_INCDIR ?= $(patsubst -I%,%,$(firstword $(LUA_CFLAGS)))
ROCK_FLAVOR = $(shell printf '%s' '$(CC) $(CFLAGS) $(LIBFLAG)' | cksum | cut -d' ' -f1)
OBJDIR      = build/obj-$(ROCK_FLAVOR)
CORE_OBJ    = $(patsubst csrc/%.c,$(OBJDIR)/%.o,$(CORE_SRC))
# -fno-plt: calls into Lua's C API go through the GOT directly instead of a
# PLT stub each (an indirect jump less per call: about 8% off pingpong's
# round trip, see docs/performance.md); only where the compiler takes it.
# Probed once, when something is compiled (not by every make, e.g.
# bench/run's `make -s build`, whose peak RSS would then be the compiler's)
NOPLT = $(eval NOPLT := $$(shell $(CC) -fno-plt -Werror -x c -c /dev/null \
          -o /dev/null 2>/dev/null && echo -fno-plt))$(NOPLT)
ROCK_CFLAGS = $(CFLAGS) -std=c11 -fvisibility=hidden $(NOPLT) -Icsrc \
              $(if $(LUA_INCDIR),-I$(LUA_INCDIR)) $(if $(LIBUV_INCDIR),-I$(LIBUV_INCDIR))
ROCK_LIBS   = $(if $(LIBUV_LIBDIR),-L$(LIBUV_LIBDIR)) \
              $(if $(LIBCURL_LIBDIR),-L$(LIBCURL_LIBDIR)) -luv -lcurl -lm
VERSION    := $(shell sed -n 's/^\#define TIDAL_VERSION "\(.*\)"/\1/p' csrc/tidal.h)

rock-build: $(OBJDIR)/core.so $(OBJDIR)/libtidal.a

$(OBJDIR)/%.o: csrc/%.c $(C_HEADERS)
	@mkdir -p $(@D)
	$(CC) $(ROCK_CFLAGS) -c $< -o $@

$(OBJDIR)/core.so: $(CORE_OBJ)
	$(CC) $(LIBFLAG) -o $@ $(CORE_OBJ) $(ROCK_LIBS)

# the same objects, for hosts that link tidal in (tidal.h)
$(OBJDIR)/libtidal.a: $(CORE_OBJ)
	rm -f $@
	$(AR) rcs $@ $(CORE_OBJ)

rock-install: modules-install
	$(MAKE) --no-print-directory host-files HOST_PREFIX=$(INST_PREFIX)/host

modules-install:
	install -d $(INST_LIBDIR)/tidal $(INST_LUADIR)/tidal
	install -m 755 $(OBJDIR)/core.so $(INST_LIBDIR)/tidal/core.so
	install -m 644 $(LUA_SOURCES) $(INST_LUADIR)/tidal/

# tidal.h, libtidal.a and tidal.pc under HOST_PREFIX
host-files:
	install -d $(HOST_PREFIX)/include $(HOST_PREFIX)/lib/pkgconfig
	install -m 644 csrc/tidal.h $(HOST_PREFIX)/include/tidal.h
	install -m 644 $(OBJDIR)/libtidal.a $(HOST_PREFIX)/lib/libtidal.a
	sed -e 's|@PREFIX@|$(HOST_PREFIX)|' -e 's|@VERSION@|$(VERSION)|' \
	  tidal.pc.in >$(HOST_PREFIX)/lib/pkgconfig/tidal.pc

# For C hosts without LuaRocks: the library, header and pkg-config file,
# and the modules (PREFIX/lib/lua/5.4, PREFIX/share/lua/5.4) that the host's
# package.path / package.cpath must reach.
PREFIX ?= /usr/local
install-host: rock-build
	$(MAKE) --no-print-directory host-files HOST_PREFIX=$(DESTDIR)$(PREFIX)
	$(MAKE) --no-print-directory modules-install \
	  INST_LIBDIR=$(DESTDIR)$(PREFIX)/lib/lua/5.4 \
	  INST_LUADIR=$(DESTDIR)$(PREFIX)/share/lua/5.4

# The source rock of the versioned rockspec: the rockspec and a tarball of
# the files git tracks (committed or not), as LuaRocks packs them. Installs
# offline: luarocks --lua-version=5.4 install build/tidal-$(VERSION)-1.src.rock
ROCK_SPEC := tidal-$(VERSION)-1.rockspec
rock: build/tidal-$(VERSION)-1.src.rock

build/tidal-$(VERSION)-1.src.rock: $(ROCK_SPEC) $(shell git ls-files -co --exclude-standard 2>/dev/null)
	rm -rf build/rock-src && mkdir -p build/rock-src/tidal-$(VERSION)
	git ls-files -co --exclude-standard -z | xargs -0 tar -cf - | \
	  tar -xf - -C build/rock-src/tidal-$(VERSION)
	tar -czf build/rock-src/tidal-$(VERSION).tar.gz -C build/rock-src tidal-$(VERSION)
	cp $(ROCK_SPEC) build/rock-src/
	rm -f $@
	cd build/rock-src && zip -q ../tidal-$(VERSION)-1.src.rock $(ROCK_SPEC) tidal-$(VERSION).tar.gz
	@echo "built $@"

# The fuzzer links the value layer alone (transfer.c, buf.c: no handle type
# is known to it until one registers, here the test probe) with the
# system's static Lua; TIDAL_XFER_FIXED_KEY lets the seeds, written by
# another process, carry valid MACs. With LUA_SRC=<a Lua 5.4 source tree>
# it links a Lua built from it with the sanitizers, API checks
# (LUA_USE_APICHECK) and internal assertions (LUAI_ASSERT), so misuse of
# the C API aborts too.
FUZZ_SECONDS ?= 60
FUZZ_DIR     := build/fuzz
FUZZ_CC      ?= clang
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_SRC     := csrc/xfer/*.c csrc/test/xprobe.c
ifdef LUA_SRC
FUZZ_BIN     := $(FUZZ_DIR)/transfer_fuzz-checked
FUZZ_LUA     := $(FUZZ_DIR)/liblua-checked.a
FUZZ_CFLAGS  := -g -O1 -std=c11 -Wall -Wextra -Werror -DTIDAL_XFER_FIXED_KEY \
                -Icsrc -I$(LUA_SRC)
FUZZ_LIBS    := $(FUZZ_LUA) -luv -lm -ldl
else
FUZZ_BIN     := $(FUZZ_DIR)/transfer_fuzz
FUZZ_LUA     :=
FUZZ_CFLAGS  := -g -O1 -std=c11 -Wall -Wextra -Werror -DTIDAL_XFER_FIXED_KEY \
                -Icsrc $(shell pkg-config --cflags lua5.4)
FUZZ_LIBS    := -l:liblua5.4.a -luv -lm -ldl
endif

$(FUZZ_DIR)/liblua-checked.a:
	@mkdir -p $(FUZZ_DIR)/lua
	cd $(FUZZ_DIR)/lua && for f in $(filter-out %/lua.c %/luac.c %/ltests.c %/onelua.c,\
	  $(wildcard $(LUA_SRC)/l*.c)); do \
	  $(FUZZ_CC) -g -O1 -DLUA_USE_POSIX -DLUA_USE_APICHECK -DLUAI_ASSERT \
	    -fsanitize=fuzzer-no-link $(FUZZ_SAN) -c $$f || exit 1; done
	ar rcs $@ $(FUZZ_DIR)/lua/*.o

fuzz-deps:
	@missing=""; for p in clang libclang-rt-14-dev; do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(FUZZ_BIN): fuzz/transfer_fuzz.c $(FUZZ_SRC) $(wildcard csrc/*.h csrc/xfer/*.h csrc/test/*.h) \
  $(FUZZ_LUA)
	@mkdir -p $(FUZZ_DIR)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $(FUZZ_SAN) -o $@ \
	  fuzz/transfer_fuzz.c $(FUZZ_SRC) $(FUZZ_LIBS)

$(FUZZ_DIR)/seeds/.done: fuzz/seeds.c $(FUZZ_SRC) $(wildcard csrc/*.h csrc/xfer/*.h csrc/test/*.h) \
  $(FUZZ_LUA)
	@mkdir -p $(FUZZ_DIR)/seeds
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_SAN) -o $(FUZZ_DIR)/seeds-gen \
	  fuzz/seeds.c $(FUZZ_SRC) $(FUZZ_LIBS)
	$(FUZZ_DIR)/seeds-gen $(FUZZ_DIR)/seeds
	@touch $@

fuzz: deps fuzz-deps $(FUZZ_BIN) $(FUZZ_DIR)/seeds/.done
	@mkdir -p $(FUZZ_DIR)/corpus
	$(FUZZ_BIN) -max_total_time=$(FUZZ_SECONDS) -max_len=8192 \
	  -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
	  -artifact_prefix=$(FUZZ_DIR)/ $(FUZZ_DIR)/corpus $(FUZZ_DIR)/seeds

clean:
	rm -rf $(TREE) build tidal build.log build-asan.log build-tsan.log docs/ref
	find csrc -name '*.o' -delete
