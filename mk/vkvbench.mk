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
