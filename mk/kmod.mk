# SPDX-License-Identifier: MIT
# kmod: the kmod backend and the /dev/vkv wrapper in libvkv, and the
# statically linked programs that tests/kmod/run.sh packs into its VM.
# The kernel module itself is built by Kbuild (Kbuild, kmod/), never here.
#
#   make check-kmod      build the VM suite; run it (it skips without
#                        /dev/vkv, which is the case on any build host)
#   make kmod-vm-progs   the static programs for the VM, in $(BUILD)/kmod-vm
#   tests/kmod/run.sh    the real test: boots both Debian kernels in qemu

LIB_SRCS += runtime/backend_kmod.c runtime/kmod_dev.c

KMOD_VM := $(BUILD)/kmod-vm
KMOD_STATIC_LIBS := -lcheck -lsubunit -lrt -lm -pthread
KMOD_TEST_SRCS := tests/kmod/test_kmod.c runtime/kmod_dev.c
KMOD_TEST_DEPS := $(KMOD_TEST_SRCS) runtime/kmod_dev.h include/uapi/vkv_ioctl.h

$(BUILD)/tests/test_kmod: $(KMOD_TEST_DEPS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CHECK_CFLAGS) -o $@ $(KMOD_TEST_SRCS) $(LDFLAGS) \
		$(CHECK_LIBS)

$(KMOD_VM)/test_kmod: $(KMOD_TEST_DEPS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CHECK_CFLAGS) -static -o $@ $(KMOD_TEST_SRCS) \
		$(KMOD_STATIC_LIBS)

# The backend's own suite links the library (it calls the backend's ops).
$(BUILD)/tests/test_kmod_backend: tests/kmod/test_kmod_backend.c $(BUILD)/lib/libvkv.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CHECK_CFLAGS) -o $@ $< $(BUILD)/lib/libvkv.a $(LDFLAGS) \
		$(CHECK_LIBS) $(LDLIBS_VKV) $(LIB_LDLIBS)

# The ABI from a 32-bit process (compat_ioctl, mmap2); needs gcc-multilib.
$(KMOD_VM)/test_kmod_compat: tests/kmod/test_kmod_compat.c runtime/kmod_dev.c \
		runtime/kmod_dev.h include/uapi/vkv_ioctl.h
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) -m32 -static -o $@ $< runtime/kmod_dev.c

$(KMOD_VM)/vm_exit: tests/kmod/vm_exit.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -static -o $@ $<

# The core suite and the backend's suite, static, for the VM. glibc warns
# that dlopen needs the shared libc at run time; the VM has none and the
# cuda backend is not used there.
define kmod_static_suite
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CHECK_CFLAGS) -static -o $@ $< $(BUILD)/lib/libvkv.a \
		$(KMOD_STATIC_LIBS) $(LDLIBS_VKV) $(LIB_LDLIBS) >$@.log 2>&1 || \
		{ cat $@.log; exit 1; }
	@grep -v -e 'dlopen' -e 'statically linked' -e 'in function' $@.log || true
endef

$(KMOD_VM)/test_core: tests/test_core.c $(BUILD)/lib/libvkv.a
	$(kmod_static_suite)

$(KMOD_VM)/test_kmod_backend: tests/kmod/test_kmod_backend.c $(BUILD)/lib/libvkv.a
	$(kmod_static_suite)

$(KMOD_VM)/test_tier: tests/test_tier.c $(BUILD)/lib/libvkv.a
	$(kmod_static_suite)

ALL_TARGETS += $(BUILD)/tests/test_kmod $(BUILD)/tests/test_kmod_backend
CHECK_TARGETS += check-kmod

.PHONY: check-kmod kmod-vm-progs
check-kmod: $(BUILD)/tests/test_kmod $(BUILD)/tests/test_kmod_backend
	@$(BUILD)/tests/test_kmod; rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 77 ]
	VKV_LOG=quiet $(BUILD)/tests/test_kmod_backend

kmod-vm-progs: $(KMOD_VM)/test_kmod $(KMOD_VM)/vm_exit $(KMOD_VM)/test_core \
	$(KMOD_VM)/test_kmod_backend $(KMOD_VM)/test_kmod_compat $(KMOD_VM)/test_tier
