# Core test suite: the public API on the default backend, both host page
# sizes, under the plain, sanitizer and valgrind builds.
TEST_CORE := $(BUILD)/tests/test_core

$(TEST_CORE): tests/test_core.c tests/vkv_check.h $(BUILD)/lib/libvkv.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CHECK_CFLAGS) -o $@ $< $(BUILD)/lib/libvkv.a $(LDFLAGS) \
		$(CHECK_LIBS) $(LDLIBS_VKV) $(LIB_LDLIBS)

ALL_TARGETS += $(TEST_CORE)

# ASan reports a SIGSEGV itself unless told not to; the suite expects one.
CORE_ENV := ASAN_OPTIONS=handle_segv=0:detect_leaks=1 TSAN_OPTIONS=handle_segv=0 VKV_LOG=quiet

.PHONY: check-core check-core-4k check-options-doc
check-core: $(TEST_CORE)
	$(CORE_ENV) VKV_BACKEND=host VKV_TEST_PAGE=2097152 $(TEST_CORE)
check-core-4k: $(TEST_CORE)
	$(CORE_ENV) VKV_BACKEND=host VKV_TEST_PAGE=4096 $(TEST_CORE)
check-options-doc:
	tests/check_options_doc.sh
CHECK_TARGETS += check-core check-core-4k check-options-doc

VALGRIND := valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite -q
.PHONY: valgrind-core
VALGRIND_TARGETS += valgrind-core
valgrind-core: $(TEST_CORE)
	CK_FORK=no VKV_TEST_NO_SIGNALS=1 VKV_LOG=quiet VKV_BACKEND=host VKV_TEST_PAGE=4096 \
		$(VALGRIND) $(TEST_CORE)
