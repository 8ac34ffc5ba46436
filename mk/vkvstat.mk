# SPDX-License-Identifier: MIT
# vkvstat: the memory-tier diagnostic tool (tools/vkvstat/), its reader's
# Check suite, its fuzz target and its shell tests (tests/vkvstat/).
#
# The tool reads other processes' stats segments and needs only four
# pieces of libvkv: the CUDA driver table (probe), errors, options and the
# removal of dead segments (shared with libvkv's sweep). It links those
# objects directly rather than the whole library, so it builds and runs
# wherever they do.
#
#   make vkvstat-check        the reader's Check suite (part of `make check`)
#   make vkvstat-fuzz         build the libFuzzer target (clang)
#   make vkvstat-fuzz-run     fuzz the reader for VKVSTAT_FUZZ_SECONDS (30)
#   make vkvstat-test-cli     the tool end to end (tmux, promtool, probe)
#   make vkvstat-test-serve   the tool against `vkvbench serve` (77: skip)

VKVSTAT_SRCS := $(sort $(wildcard tools/vkvstat/*.c))
VKVSTAT_OBJS := $(VKVSTAT_SRCS:%.c=$(BUILD)/obj/%.o)
VKVSTAT_REMOVE_OBJ := $(BUILD)/obj/runtime/stats_remove.o
VKVSTAT_RT_OBJS := $(BUILD)/obj/runtime/cuda_driver.o \
	$(BUILD)/obj/runtime/error.o $(BUILD)/obj/runtime/options.o \
	$(VKVSTAT_REMOVE_OBJ)
VKVSTAT_READER_OBJ := $(BUILD)/obj/tools/vkvstat/segment_reader.o

BINS += vkvstat
CHECK_TARGETS += vkvstat-check

$(VKVSTAT_OBJS): CFLAGS += -Itools/vkvstat

$(BUILD)/bin/vkvstat: $(VKVSTAT_OBJS) $(VKVSTAT_RT_OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ -luring -ldl -lm -pthread

# The suite interposes on the reader's file system calls (--wrap) to make
# another process take a segment's name at the worst moment, every time.
VKVSTAT_CHECK_WRAP := -Wl,--wrap=renameat,--wrap=unlinkat
$(BUILD)/tests/check_vkvstat_reader: tests/vkvstat/check_segment_reader.c \
		$(VKVSTAT_READER_OBJ) $(VKVSTAT_REMOVE_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CHECK_CFLAGS) -Itools/vkvstat -o $@ $^ $(LDFLAGS) \
		$(VKVSTAT_CHECK_WRAP) $(CHECK_LIBS)

.PHONY: vkvstat-check vkvstat-fuzz vkvstat-fuzz-run
vkvstat-check: $(BUILD)/tests/check_vkvstat_reader
	$(BUILD)/tests/check_vkvstat_reader

# valgrind cannot follow the forked children Check uses, and the SIGBUS
# guard's deliberate truncation race is noise there: plain cases only.
VALGRIND_TARGETS += vkvstat-valgrind
.PHONY: vkvstat-valgrind
vkvstat-valgrind: $(BUILD)/tests/check_vkvstat_reader
	CK_FORK=no CK_EXCLUDE_TAGS=race valgrind --error-exitcode=99 \
		--leak-check=full --errors-for-leak-kinds=definite -q \
		$(BUILD)/tests/check_vkvstat_reader

# The fuzz target is always built by clang with libFuzzer, whatever CC is.
VKVSTAT_FUZZ := $(BUILD)/tests/fuzz_vkvstat_reader
VKVSTAT_FUZZ_SECONDS ?= 30
vkvstat-fuzz: $(VKVSTAT_FUZZ)
$(VKVSTAT_FUZZ): tests/vkvstat/fuzz_segment_reader.c tools/vkvstat/segment_reader.c \
		tools/vkvstat/segment_reader.h include/vkv_stats.h runtime/stats_remove.c
	@mkdir -p $(dir $@)
	clang -std=gnu11 -g -O1 -D_GNU_SOURCE -Iinclude -Iruntime -Itools/vkvstat \
		-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
		-o $@ tests/vkvstat/fuzz_segment_reader.c tools/vkvstat/segment_reader.c \
		runtime/stats_remove.c
vkvstat-fuzz-run: $(VKVSTAT_FUZZ)
	@mkdir -p $(BUILD)/fuzz/vkvstat-corpus
	$(VKVSTAT_FUZZ) -max_total_time=$(VKVSTAT_FUZZ_SECONDS) -max_len=4096 \
		-timeout=10 -artifact_prefix=$(BUILD)/fuzz/ $(BUILD)/fuzz/vkvstat-corpus

# Shell tests (tools/run-tests.sh runs them; they need the plain build).
VKVSTAT_WORKLOAD := $(BUILD)/tests/vkvstat_workload
ALL_TARGETS += $(VKVSTAT_WORKLOAD)
$(VKVSTAT_WORKLOAD): tests/vkvstat/stats_workload.c $(BUILD)/lib/libvkv.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/lib/libvkv.a $(LDFLAGS) $(LDLIBS_VKV) \
		$(LIB_LDLIBS)

.PHONY: vkvstat-test-cli vkvstat-test-serve
VKVSTAT_FAKE_NVML := $(BUILD)/tests/fakenvml/libnvidia-ml.so.1
ALL_TARGETS += $(VKVSTAT_FAKE_NVML)
$(VKVSTAT_FAKE_NVML): tests/vkvstat/fake_nvml.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -shared -Wl,-soname,libnvidia-ml.so.1 -o $@ $< $(LDFLAGS)

vkvstat-test-cli: $(BUILD)/bin/vkvstat $(VKVSTAT_WORKLOAD) $(CUDADOUBLE) \
		$(VKVSTAT_FAKE_NVML)
	BUILD=$(BUILD) tests/vkvstat/test_cli.sh
# 77 (vkvbench serve not there) is a skip, reported in the output.
vkvstat-test-serve: $(BUILD)/bin/vkvstat $(filter %/vkvbench,$(BINS:%=$(BUILD)/bin/%))
	BUILD=$(BUILD) tests/vkvstat/test_serve.sh || [ $$? -eq 77 ]
