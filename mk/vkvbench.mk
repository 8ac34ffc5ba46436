# SPDX-License-Identifier: MIT
# vkvbench: benchmarks and the serving demo (tools/vkvbench/). Every .c in
# that directory is part of the program, so a new subcommand needs no edit
# here. Linked against the static libvkv so the binary runs from anywhere.

VKVBENCH_SRCS := $(sort $(wildcard tools/vkvbench/*.c))
VKVBENCH_OBJS := $(VKVBENCH_SRCS:%.c=$(BUILD)/obj/%.o)

BINS += vkvbench

$(VKVBENCH_OBJS): CFLAGS += -Itools/vkvbench

$(BUILD)/bin/vkvbench: $(VKVBENCH_OBJS) $(BUILD)/lib/libvkv.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $(VKVBENCH_OBJS) $(BUILD)/lib/libvkv.a \
		$(LDLIBS_VKV) $(LIB_LDLIBS) -lm

# Every subcommand with tiny sizes: JSON parsed and its keys checked,
# serve --verify bit-identical, bad command lines refused. Needs python3.
CHECK_TARGETS += check-vkvbench
.PHONY: check-vkvbench
check-vkvbench: $(BUILD)/bin/vkvbench
	tests/vkvbench/test_vkvbench.sh $(BUILD)/bin/vkvbench

# The demo's GPU path without a GPU: vkvbench serve/map/step --backend cuda
# against the CUDA driver test double, the kernels replaced by CPU stand-ins
# (tests/vkvbench/fake_attn.c, LD_PRELOADed). Plain builds only: a
# preloaded library cannot come before the sanitizer runtimes.
ifeq ($(KERN_BUILD)$(SAN),111)
VKVBENCH_FAKE_ATTN := $(BUILD)/tests/vkvbench/fake_attn.so

$(VKVBENCH_FAKE_ATTN): tests/vkvbench/fake_attn.c $(BUILD)/obj/runtime/attn_ref.o
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/cudadouble -shared -o $@ $^ $(LDFLAGS) -lm

CHECK_TARGETS += check-vkvbench-cuda
.PHONY: check-vkvbench-cuda
check-vkvbench-cuda: $(BUILD)/bin/vkvbench $(VKVBENCH_FAKE_ATTN) $(CUDADOUBLE)
	$(CUDADOUBLE_ENV) LD_PRELOAD=$(abspath $(VKVBENCH_FAKE_ATTN)) \
		tests/vkvbench/test_vkvbench.sh --cuda $(BUILD)/bin/vkvbench
endif

# The same commands under valgrind, small (memory errors, definite leaks).
VALGRIND_TARGETS += valgrind-vkvbench
.PHONY: valgrind-vkvbench
valgrind-vkvbench: $(BUILD)/bin/vkvbench
	$(VALGRIND) $(BUILD)/bin/vkvbench serve --backend host --trace alpaca \
		--max-context 160 --layers 1 --requests 3 --slots 2 --verify
	$(VALGRIND) $(BUILD)/bin/vkvbench map --backend host --page-size 4K --pages 16 --reps 2
	$(VALGRIND) $(BUILD)/bin/vkvbench step --requests 4 --slots 2 --compute-us 100 \
		--budget 8M --max-context 1024
	$(VALGRIND) $(BUILD)/bin/vkvbench tier --tier dram --backend host --size 64M --reps 1
	$(VALGRIND) $(BUILD)/bin/vkvbench tier --tier nvme --backend host --size 64M --reps 1 \
		--dir $(TIER_TEST_DIR)
