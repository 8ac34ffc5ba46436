# SPDX-License-Identifier: MIT
# vkvstat: the memory-tier diagnostic tool (tools/vkvstat/), its reader's
# Check suite, its fuzz target and its shell tests (tests/vkvstat/).
#
# The tool reads other processes' stats segments and needs only three
# pieces of libvkv: the CUDA driver table (probe), errors and options. It
# links those objects directly rather than the whole library, so it builds
# and runs wherever they do.
#
#   make vkvstat-check        the reader's Check suite (part of `make check`)
#   make vkvstat-fuzz         build the libFuzzer target (clang)
#   make vkvstat-fuzz-run     fuzz the reader for VKVSTAT_FUZZ_SECONDS (30)

VKVSTAT_SRCS := $(sort $(wildcard tools/vkvstat/*.c))
VKVSTAT_OBJS := $(VKVSTAT_SRCS:%.c=$(BUILD)/obj/%.o)
VKVSTAT_RT_OBJS := $(BUILD)/obj/runtime/cuda_driver.o \
	$(BUILD)/obj/runtime/error.o $(BUILD)/obj/runtime/options.o
VKVSTAT_READER_OBJ := $(BUILD)/obj/tools/vkvstat/segment_reader.o

BINS += vkvstat
CHECK_TARGETS += vkvstat-check

$(VKVSTAT_OBJS): CFLAGS += -Itools/vkvstat

$(BUILD)/bin/vkvstat: $(VKVSTAT_OBJS) $(VKVSTAT_RT_OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ -luring -ldl -lm -pthread

$(BUILD)/tests/check_vkvstat_reader: tests/vkvstat/check_segment_reader.c \
		$(VKVSTAT_READER_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CHECK_CFLAGS) -Itools/vkvstat -o $@ $^ $(LDFLAGS) \
		$(CHECK_LIBS)

.PHONY: vkvstat-check vkvstat-fuzz vkvstat-fuzz-run
vkvstat-check: $(BUILD)/tests/check_vkvstat_reader
	$(BUILD)/tests/check_vkvstat_reader

# The fuzz target is always built by clang with libFuzzer, whatever CC is.
VKVSTAT_FUZZ := $(BUILD)/tests/fuzz_vkvstat_reader
VKVSTAT_FUZZ_SECONDS ?= 30
vkvstat-fuzz: $(VKVSTAT_FUZZ)
$(VKVSTAT_FUZZ): tests/vkvstat/fuzz_segment_reader.c tools/vkvstat/segment_reader.c \
		tools/vkvstat/segment_reader.h include/vkv_stats.h
	@mkdir -p $(dir $@)
	clang -std=gnu11 -g -O1 -D_GNU_SOURCE -Iinclude -Itools/vkvstat \
		-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
		-o $@ tests/vkvstat/fuzz_segment_reader.c tools/vkvstat/segment_reader.c
vkvstat-fuzz-run: $(VKVSTAT_FUZZ)
	@mkdir -p $(BUILD)/fuzz/vkvstat-corpus
	$(VKVSTAT_FUZZ) -max_total_time=$(VKVSTAT_FUZZ_SECONDS) -max_len=4096 \
		-timeout=10 $(BUILD)/fuzz/vkvstat-corpus
