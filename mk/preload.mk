# SPDX-License-Identifier: MIT
# preload: libvkv_preload.so, the LD_PRELOAD shim that serves an unmodified
# program's CUDA allocations from vkv arenas (runtime/preload/), and its
# tests against the CUDA driver test double (tests/preload/).
#
# The arena allocator (runtime/preload/arena.c) knows nothing of CUDA and
# is part of libvkv, so that `vkvbench preload` can replay traces on it.
# The shim links it and the few other libvkv objects it needs (options,
# errors, stats) statically, with hidden visibility; its version script
# exports the interposed entry points and nothing else. It never links a
# CUDA library: the driver is found at run time.
#
#   make preload                the shim, $(BUILD)/lib/libvkv_preload.so
#   make check-preload          its tests (part of `make check`)
#   make check-preload-bench    vkvbench preload on a small trace (ditto)
#   make check-arena            the arena allocator's Check suite (ditto;
#                               also under SAN= and `make valgrind`)

LIB_SRCS += runtime/preload/arena.c

# The fragmentation benchmark on a small model (seconds, no GPU): the
# arena must stay within its target on both traces.
.PHONY: check-preload-bench
check-preload-bench: $(BUILD)/bin/vkvbench
	$(BUILD)/bin/vkvbench preload --json --layers 4 --hidden 512 \
		--vocab 8000 --steps 6 > $(BUILD)/preload-bench.json
	grep -q '"pass":true}$$' $(BUILD)/preload-bench.json

CHECK_TARGETS += check-preload-bench

# The arena allocator alone, with a test double for the mapping calls:
# plain, sanitizers, valgrind.
TEST_ARENA := $(BUILD)/tests/preload/test_arena

$(TEST_ARENA): tests/preload/test_arena.c $(BUILD)/obj/runtime/preload/arena.o
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CHECK_CFLAGS) -o $@ $^ $(LDFLAGS) $(CHECK_LIBS)

.PHONY: check-arena valgrind-arena
check-arena: $(TEST_ARENA)
	$(TEST_ARENA)
valgrind-arena: $(TEST_ARENA)
	CK_FORK=no $(VALGRIND) $(TEST_ARENA)

ALL_TARGETS += $(TEST_ARENA)
CHECK_TARGETS += check-arena
valgrind: valgrind-arena

ifeq ($(HAVE_CUDA_H),1)

PRELOAD_SO := $(BUILD)/lib/libvkv_preload.so
PRELOAD_SRCS := runtime/preload/preload.c runtime/preload/real.c \
	runtime/preload/interpose.c runtime/preload/serve.c
PRELOAD_OBJS := $(PRELOAD_SRCS:%.c=$(BUILD)/obj/%.o)
PRELOAD_VKV_OBJS := $(addprefix $(BUILD)/obj/runtime/,preload/arena.o \
	options.o error.o stats.o stats_remove.o)

$(PRELOAD_OBJS): CFLAGS += -fvisibility=hidden -Iruntime/preload

$(PRELOAD_SO): $(PRELOAD_OBJS) $(PRELOAD_VKV_OBJS) runtime/preload/preload.map
	@mkdir -p $(dir $@)
	$(CC) -shared -Wl,--version-script=runtime/preload/preload.map \
		-Wl,-Bsymbolic -Wl,-z,defs -Wl,-soname,libvkv_preload.so \
		-o $@ $(PRELOAD_OBJS) $(PRELOAD_VKV_OBJS) $(LDFLAGS) -ldl -pthread

PRELOAD_TEST := $(BUILD)/tests/preload/preload_test

$(PRELOAD_TEST): tests/preload/preload_test.c tests/cudadouble/fakecuda_alloc.h \
		tests/cudadouble/fakecuda.h $(CUDADOUBLE)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/cudadouble -o $@ $< $(LDFLAGS) \
		-L$(CUDADOUBLE_DIR) -l:libcuda.so.1 -ldl -pthread

.PHONY: preload check-preload
preload: $(PRELOAD_SO)
ALL_TARGETS += $(PRELOAD_SO) $(PRELOAD_TEST)

# 77 (all skipped: the sanitizer builds) is reported by the script, not
# an error.
check-preload: $(PRELOAD_SO) $(PRELOAD_TEST) $(CUDADOUBLE)
	BUILD=$(BUILD) SAN=$(SAN) tests/preload/run.sh || [ $$? -eq 77 ]

# `make install` puts the shim beside libvkv.
.PHONY: install-preload
install: install-preload
install-preload: $(PRELOAD_SO)
	install -d $(DESTDIR)$(PREFIX)/lib
	install -m 0755 $(PRELOAD_SO) $(DESTDIR)$(PREFIX)/lib/libvkv_preload.so

CHECK_TARGETS += check-preload

endif
