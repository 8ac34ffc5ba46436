# SPDX-License-Identifier: MIT
# tier: eviction of slots to host DRAM (libnuma) and NVMe (liburing), the
# automatic policy, and their Check suite.
#
#   make check-tier        the suite, 2 MiB and 4 KiB pages (NVMe files in
#                          $(TIER_TEST_DIR))
#
# The NVMe tests need a directory on a real disk: tmpfs has no O_DIRECT
# (the tier then falls back to buffered I/O, which the suite also covers).

LIB_SRCS += runtime/tier.c runtime/tier_dram.c runtime/tier_nvme.c runtime/crc32c.c
LIB_LDLIBS += -lnuma -luring

TEST_TIER := $(BUILD)/tests/test_tier
TIER_TEST_DIR ?= /var/tmp

$(TEST_TIER): tests/test_tier.c $(BUILD)/lib/libvkv.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CHECK_CFLAGS) -Itests -rdynamic -o $@ $< $(BUILD)/lib/libvkv.a $(LDFLAGS) \
		$(CHECK_LIBS) $(LDLIBS_VKV) $(LIB_LDLIBS)

ALL_TARGETS += $(TEST_TIER)
TIER_ENV := VKV_LOG=quiet VKV_BACKEND=host VKV_TEST_DIR=$(TIER_TEST_DIR) \
	ASAN_OPTIONS=handle_segv=0:detect_leaks=1 TSAN_OPTIONS=handle_segv=0

.PHONY: check-tier
check-tier: $(TEST_TIER)
	$(TIER_ENV) VKV_TEST_PAGE=2097152 $(TEST_TIER)
	$(TIER_ENV) VKV_TEST_PAGE=4096 $(TEST_TIER)
CHECK_TARGETS += check-tier

# vkvbench tier (tiny, both tiers) and the demo's preemption by eviction:
# serve --verify at half the workload's peak evicts to DRAM and NVMe.
.PHONY: check-tier-demo
check-tier-demo: $(BUILD)/bin/vkvbench
	tests/tier/test_tier_demo.sh $(BUILD)/bin/vkvbench $(TIER_TEST_DIR)
CHECK_TARGETS += check-tier-demo

# The suite on the cuda backend against the CUDA driver test double: the
# NVMe writes through staging buffers, cuMemHostRegister'ed buffers, and a
# granularity that is not 2 MiB.
ifneq ($(CUDADOUBLE),)
.PHONY: check-tier-cuda
check-tier-cuda: $(TEST_TIER) $(CUDADOUBLE)
	$(CUDA_TEST_ENV) VKV_BACKEND=cuda VKV_TEST_DIR=$(TIER_TEST_DIR) $(TEST_TIER)
	$(CUDA_TEST_ENV) VKV_BACKEND=cuda VKV_FAKECUDA_GRANULARITY=64K \
		VKV_TEST_DIR=$(TIER_TEST_DIR) $(TEST_TIER)
	$(CUDA_TEST_ENV) VKV_BACKEND=cuda VKV_TIER_COPY=kernel \
		VKV_TEST_DIR=$(TIER_TEST_DIR) $(TEST_TIER)
CHECK_TARGETS += check-tier-cuda
endif
