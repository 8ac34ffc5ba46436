# SPDX-License-Identifier: MIT
# cuda: the CUDA driver loader (runtime/cuda_driver.c), the cuda backend
# (runtime/backend_cuda.c), the CUDA driver test double
# (tests/cudadouble/, our own libcuda.so.1) and the cuda backend's suite.
#
# Both sources are always part of libvkv: without cuda.h the loader compiles
# to nothing and the backend's ops are NULL, so VKV_BACKEND=auto picks host.
#
# Other parts that want their tests to run against the double use
#   $(CUDADOUBLE)       the library (a prerequisite of the test target)
#   $(CUDADOUBLE_ENV)   the environment that makes the loader find it
#
#   make check-cuda            the suite against the double
#   make check-core-cuda       the core suite with VKV_BACKEND=cuda
#   make valgrind-cuda         the suite under valgrind (no fork)

LIB_SRCS += runtime/cuda_driver.c runtime/backend_cuda.c

ifeq ($(HAVE_CUDA_H),1)

CUDADOUBLE_DIR := $(BUILD)/tests/cudadouble
CUDADOUBLE := $(CUDADOUBLE_DIR)/libcuda.so.1
CUDADOUBLE_ENV := LD_LIBRARY_PATH=$(CUDADOUBLE_DIR)$${LD_LIBRARY_PATH:+:$$LD_LIBRARY_PATH}

# The double is test code: default visibility, no version script; it is
# built with the same sanitizer as the program that loads it. alloc.c (the
# classic allocation calls, for the LD_PRELOAD shim's tests) puts its own
# cuGetProcAddress_v2 in front of fakecuda.c's, which is renamed for that.
# -Bsymbolic: as in the real driver, the double's own calls and the
# pointers its cuGetProcAddress hands out are its functions, even when an
# LD_PRELOAD object (the shim) defines the same names.
$(CUDADOUBLE): tests/cudadouble/fakecuda.c tests/cudadouble/fakecuda.h \
		tests/cudadouble/alloc.c tests/cudadouble/fakecuda_alloc.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/cudadouble \
		-DcuGetProcAddress_v2=vkv_fakecuda_getproc_core \
		-shared -Wl,-soname,libcuda.so.1 -Wl,-Bsymbolic \
		-o $@ $(filter %.c,$^) $(LDFLAGS) -ldl -pthread

# The driver table against cudaTypedefs.h: entry points whose cuda.h
# declaration is older than their newest ABI must be pinned.
.PHONY: check-cuda-abi
check-cuda-abi:
	tests/check_cuda_abi.sh $(CUDA_HOME)
CHECK_TARGETS += check-cuda-abi

TEST_CUDA := $(BUILD)/tests/test_cuda

$(TEST_CUDA): tests/test_cuda.c tests/cudadouble/fakecuda.h $(BUILD)/lib/libvkv.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CHECK_CFLAGS) -Itests/cudadouble -o $@ $< \
		$(BUILD)/lib/libvkv.a $(LDFLAGS) $(CHECK_LIBS) $(LDLIBS_VKV) \
		$(LIB_LDLIBS)

ALL_TARGETS += $(CUDADOUBLE) $(TEST_CUDA)

CUDA_TEST_ENV := $(CUDADOUBLE_ENV) VKV_LOG=quiet \
	ASAN_OPTIONS=handle_segv=0:detect_leaks=1 TSAN_OPTIONS=handle_segv=0

.PHONY: check-cuda check-core-cuda valgrind-cuda
check-cuda: $(TEST_CUDA) $(CUDADOUBLE)
	$(CUDA_TEST_ENV) $(TEST_CUDA)

# The core suite (mk/core.mk, read after this file: hence the literal path)
# on the cuda backend, against the double: with today's 2 MiB granularity
# and with 64 KiB, so that nothing above the backend assumes 2 MiB. (Not
# 4 KiB: zero mode maps the zero page once per page, which runs the double
# into vm.max_map_count; no GPU has a granularity that small.)
check-core-cuda: $(BUILD)/tests/test_core $(CUDADOUBLE)
	$(CUDA_TEST_ENV) VKV_BACKEND=cuda $(BUILD)/tests/test_core
	$(CUDA_TEST_ENV) VKV_BACKEND=cuda VKV_FAKECUDA_GRANULARITY=64K \
		$(BUILD)/tests/test_core

CHECK_TARGETS += check-cuda check-core-cuda

valgrind-cuda: $(TEST_CUDA) $(CUDADOUBLE)
	CK_FORK=no $(CUDA_TEST_ENV) $(VALGRIND) $(TEST_CUDA)
valgrind: valgrind-cuda

endif
