# SPDX-License-Identifier: MIT
# vkv top-level Makefile. Builds into $(BUILD) (default build/).
#
#   make                 libvkv.so/.a, tools, vkv.pc
#   make check           Check suites (and every part's tests)
#   make SAN=asan check  the same under ASan+UBSan (SAN=tsan: TSan)
#   make valgrind        the suites under valgrind
#   make install PREFIX=/usr/local DESTDIR=
#
# Parts add themselves through mk/*.mk: they append to LIB_SRCS (sources of
# libvkv), BINS (programs in $(BUILD)/bin), CHECK_TARGETS (phony targets run
# by `make check`), VALGRIND_TARGETS (run by `make valgrind`) and ALL_TARGETS.

BUILD ?= build
PREFIX ?= /usr/local
DESTDIR ?=
CC ?= cc
CUDA_HOME ?= /usr/local/cuda
SAN ?=

VKV_VERSION := 0.1.0

OPT ?= -O2
WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
	-Wmissing-prototypes -Wpointer-arith -Wformat=2 -Wvla
BASE_CFLAGS := -std=gnu11 -g $(OPT) $(WARN) -fPIC -D_GNU_SOURCE \
	-Iinclude -Iruntime -pthread
LDLIBS_VKV := -pthread -ldl -lm

ifeq ($(SAN),asan)
BASE_CFLAGS += -fsanitize=address,undefined -fno-sanitize-recover=all \
	-fno-omit-frame-pointer
SAN_LDFLAGS := -fsanitize=address,undefined
else ifeq ($(SAN),tsan)
BASE_CFLAGS += -fsanitize=thread -fno-omit-frame-pointer
SAN_LDFLAGS := -fsanitize=thread
else ifneq ($(SAN),)
$(error SAN must be asan, tsan or empty)
endif

HAVE_CUDA_H := $(shell test -f $(CUDA_HOME)/include/cuda.h && echo 1)
ifeq ($(HAVE_CUDA_H),1)
CUDA_CFLAGS := -DVKV_HAVE_CUDA -isystem $(CUDA_HOME)/include
else
$(info vkv: cuda.h not found under $(CUDA_HOME); building without the cuda backend)
endif

CFLAGS += $(BASE_CFLAGS) $(CUDA_CFLAGS)
LDFLAGS += $(SAN_LDFLAGS)

LIB_SRCS := runtime/error.c runtime/options.c runtime/fault.c \
	runtime/backend.c runtime/backend_host.c runtime/pool.c \
	runtime/region.c runtime/ctx.c runtime/stats.c runtime/stats_remove.c
BINS :=
CHECK_TARGETS :=
VALGRIND_TARGETS :=
ALL_TARGETS :=

CHECK_CFLAGS := $(shell pkg-config --cflags check 2>/dev/null)
CHECK_LIBS := $(shell pkg-config --libs check 2>/dev/null || echo -lcheck -lsubunit -lm -lrt -lpthread)

.PHONY: all lib check valgrind install clean format lint deps demo test ci
all: lib

include $(sort $(wildcard mk/*.mk))

ifneq ($(filter runtime/backend_cuda.c,$(LIB_SRCS)),)
CFLAGS += -DVKV_HAVE_CUDA_BACKEND
endif
ifneq ($(filter runtime/backend_kmod.c,$(LIB_SRCS)),)
CFLAGS += -DVKV_HAVE_KMOD_BACKEND
endif

LIB_OBJS = $(LIB_SRCS:%.c=$(BUILD)/obj/%.o)
LIBSO := $(BUILD)/lib/libvkv.so
LIBA := $(BUILD)/lib/libvkv.a

lib: $(LIBSO) $(LIBA) $(BUILD)/lib/pkgconfig/vkv.pc
all: $(BINS:%=$(BUILD)/bin/%) $(ALL_TARGETS)

# Objects depend on the flags they were built with, so that a changed
# configuration (a part's fragment appearing, SAN=...) rebuilds them.
FLAGS_FILE := $(BUILD)/.cflags
FLAGS_NOW := $(subst ','\'',$(CC) $(CFLAGS))
$(shell mkdir -p $(BUILD) && (printf '%s\n' '$(FLAGS_NOW)' | cmp -s - $(FLAGS_FILE) || printf '%s\n' '$(FLAGS_NOW)' > $(FLAGS_FILE)))

$(BUILD)/obj/%.o: %.c $(FLAGS_FILE)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(LIBSO): $(LIB_OBJS) runtime/libvkv.map
	@mkdir -p $(dir $@)
	$(CC) -shared -fvisibility=hidden -Wl,--version-script=runtime/libvkv.map \
		-Wl,-soname,libvkv.so.0 -Wl,-z,defs -o $@ $(LIB_OBJS) $(LDFLAGS) $(LDLIBS_VKV) $(LIB_LDLIBS)
	@ln -sf libvkv.so $(BUILD)/lib/libvkv.so.0

$(LIBA): $(LIB_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/lib/pkgconfig/vkv.pc: vkv.pc.in Makefile
	@mkdir -p $(dir $@)
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VKV_VERSION)|g' \
		-e 's|@LIBS_PRIVATE@|$(LDLIBS_VKV) $(LIB_LDLIBS)|g' $< > $@

# Every object of the library is compiled with -fvisibility=hidden; the
# version script is the second fence.
$(LIB_OBJS): CFLAGS += -fvisibility=hidden

check: $(CHECK_TARGETS)
valgrind: $(VALGRIND_TARGETS)

install: all
	install -d $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include \
		$(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(LIBSO) $(DESTDIR)$(PREFIX)/lib/libvkv.so.$(VKV_VERSION)
	ln -sf libvkv.so.$(VKV_VERSION) $(DESTDIR)$(PREFIX)/lib/libvkv.so.0
	ln -sf libvkv.so.0 $(DESTDIR)$(PREFIX)/lib/libvkv.so
	install -m 0644 $(LIBA) $(DESTDIR)$(PREFIX)/lib/
	install -m 0644 include/vkv.h include/vkv_stats.h $(DESTDIR)$(PREFIX)/include/
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VKV_VERSION)|g' \
		-e 's|@LIBS_PRIVATE@|$(LDLIBS_VKV) $(LIB_LDLIBS)|g' vkv.pc.in \
		> $(DESTDIR)$(PREFIX)/lib/pkgconfig/vkv.pc
	for b in $(BINS); do install -m 0755 $(BUILD)/bin/$$b $(DESTDIR)$(PREFIX)/bin/; done

clean:
	rm -rf $(BUILD)

FORMAT_SRCS = $(shell git ls-files '*.c' '*.h' | grep -v '^kmod/')
format:
	clang-format -i $(FORMAT_SRCS)
lint:
	cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability \
		--inline-suppr --suppress=missingIncludeSystem -D__GNUC__ -DVKV_HAVE_CUDA \
		-DVKV_FATBIN_DIR=\"build/kernels\" \
		-Iinclude -Iruntime runtime tools

# The README's two commands.
deps:
	@tools/install-deps.sh
demo: deps
	$(MAKE) all
	$(BUILD)/bin/vkvbench serve --verify
test: deps
	tools/run-tests.sh

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
