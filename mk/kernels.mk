# SPDX-License-Identifier: MIT
# kernels: the CUDA kernels of kernels/ (nvcc -> fatbins embedded in libvkv,
# launched through the driver API by runtime/kernels.c), their CPU references
# (runtime/attn_ref.c, always built) and their tests.
#
# The kernels are built when nvcc and cuda.h are found and the driver loader
# (runtime/cuda_driver.c, added by the cuda backend's fragment, which sorts
# before this one) is part of libvkv; otherwise the build says so in one
# line and goes on without them (VKV_HAVE_KERNELS undefined).

NVCC ?= $(CUDA_HOME)/bin/nvcc
NVCC_GENCODE ?= -gencode arch=compute_80,code=sm_80 \
	-gencode arch=compute_90,code=sm_90 \
	-gencode arch=compute_90,code=compute_90
NVCC_FLAGS := -O3 -std=c++17 -Ikernels -Xptxas -Werror -Werror all-warnings

KERN_CUS := $(sort $(wildcard kernels/*.cu))
KERN_FATBINS := $(KERN_CUS:kernels/%.cu=$(BUILD)/kernels/%.fatbin)
HAVE_NVCC := $(shell command -v $(NVCC) >/dev/null 2>&1 && echo 1)

LIB_SRCS += runtime/attn_ref.c

KERN_BUILD := $(HAVE_CUDA_H)$(HAVE_NVCC)$(if $(filter runtime/cuda_driver.c,$(LIB_SRCS)),1)

ifeq ($(KERN_BUILD),111)
LIB_SRCS += runtime/kernels.c runtime/kernels_blob.c
CFLAGS += -DVKV_HAVE_KERNELS

$(BUILD)/kernels/%.fatbin: kernels/%.cu kernels/vkv_kern_abi.h
	@mkdir -p $(dir $@)
	$(NVCC) -fatbin $(NVCC_GENCODE) $(NVCC_FLAGS) -o $@ $<

$(BUILD)/obj/runtime/kernels_blob.o: $(KERN_FATBINS)
$(BUILD)/obj/runtime/kernels_blob.o: CFLAGS += -DVKV_FATBIN_DIR='"$(BUILD)/kernels"'
else ifneq ($(HAVE_NVCC),1)
$(info vkv: nvcc not found ($(NVCC)); building without the CUDA kernels)
else ifeq ($(HAVE_CUDA_H),1)
$(info vkv: the CUDA driver loader is not built; building without the CUDA kernels)
endif

# ---------------------------------------------------------------- tests

KERN_TEST_CFLAGS = $(CFLAGS) $(CHECK_CFLAGS) -Itests

$(BUILD)/tests/test_kernels_ref: tests/test_kernels_ref.c tests/kern_case.h \
		$(BUILD)/obj/runtime/attn_ref.o
	@mkdir -p $(dir $@)
	$(CC) $(KERN_TEST_CFLAGS) -o $@ $< $(BUILD)/obj/runtime/attn_ref.o \
		$(LDFLAGS) $(CHECK_LIBS) -lm

.PHONY: check-kernels-ref
check-kernels-ref: $(BUILD)/tests/test_kernels_ref
	$(BUILD)/tests/test_kernels_ref

CHECK_TARGETS += check-kernels-ref

# vkvbench attn / gather with tiny sizes: JSON keys, bad options.
.PHONY: check-kernels-bench
check-kernels-bench: $(BUILD)/bin/vkvbench
	VKV_LOG=quiet tests/kernels_bench.sh $(BUILD)

CHECK_TARGETS += check-kernels-bench

# The kernels against their references: real kernels on a GPU; under the
# CUDA test double the test's own host versions stand in for them, which
# checks the launcher. Exits 77 without a driver. -rdynamic lets the
# double find the host versions.
ifeq ($(KERN_BUILD),111)
TEST_KERNELS_GPU := $(BUILD)/tests/test_kernels_gpu

$(TEST_KERNELS_GPU): tests/test_kernels_gpu.c tests/kern_case.h \
		$(BUILD)/lib/libvkv.a
	@mkdir -p $(dir $@)
	$(CC) $(KERN_TEST_CFLAGS) -rdynamic -o $@ $< $(BUILD)/lib/libvkv.a \
		$(LDFLAGS) $(LDLIBS_VKV) $(LIB_LDLIBS) $(CHECK_LIBS) -lm

ALL_TARGETS += $(TEST_KERNELS_GPU)

# In `make check`: against the test double (tests/gpu/run.sh runs the same
# program against the real driver).
.PHONY: check-kernels-gpu valgrind-kernels
check-kernels-gpu: $(TEST_KERNELS_GPU) $(CUDADOUBLE)
	$(CUDADOUBLE_ENV) VKV_LOG=quiet $(TEST_KERNELS_GPU)

valgrind-kernels: $(TEST_KERNELS_GPU) $(CUDADOUBLE)
	$(CUDADOUBLE_ENV) VKV_LOG=quiet $(VALGRIND) $(TEST_KERNELS_GPU)
valgrind: valgrind-kernels

CHECK_TARGETS += check-kernels-gpu
endif

# The kernels' device code run on the CPU (tests/kernels_emu.cc emulates
# threads, barriers and warp shuffles with fibers): proves the .cu sources in
# CI without a GPU. Needs cuda.h's fp16/bf16 headers and a C++ compiler, not
# nvcc. Plain builds only: the sanitizers do not follow fiber switches.
ifeq ($(HAVE_CUDA_H)$(SAN),1)
KERN_EMU_CXXFLAGS := -std=c++17 -g -O1 -Wall -Wextra -Werror \
	-Wno-unknown-pragmas -isystem $(CUDA_HOME)/include -Ikernels -Itests
TEST_KERNELS_EMU := $(BUILD)/tests/test_kernels_emu

$(BUILD)/obj/tests/kernels_emu.o: tests/kernels_emu.cc tests/kernels_emu.h \
		$(KERN_CUS) kernels/vkv_kern_abi.h
	@mkdir -p $(dir $@)
	$(CXX) $(KERN_EMU_CXXFLAGS) -c $< -o $@

$(TEST_KERNELS_EMU): tests/test_kernels_emu.c tests/kern_case.h \
		tests/kernels_emu.h $(BUILD)/obj/tests/kernels_emu.o \
		$(BUILD)/obj/runtime/attn_ref.o
	@mkdir -p $(dir $@)
	$(CC) $(KERN_TEST_CFLAGS) -o $@ $< $(BUILD)/obj/tests/kernels_emu.o \
		$(BUILD)/obj/runtime/attn_ref.o $(LDFLAGS) $(CHECK_LIBS) -lstdc++ -lm

.PHONY: check-kernels-emu
check-kernels-emu: $(TEST_KERNELS_EMU)
	$(TEST_KERNELS_EMU)

CHECK_TARGETS += check-kernels-emu
endif
