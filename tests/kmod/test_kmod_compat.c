// SPDX-License-Identifier: MIT
/*
 * test_kmod_compat.c - the /dev/vkv ABI from a 32-bit process: every ioctl
 * through compat_ioctl, and mmap through mmap2's page offsets. Built with
 * -m32 -static by mk/kmod.mk and run inside the test VM (tests/kmod/
 * run.sh); plain C, because Check has no 32-bit build here. Exits 0 pass,
 * 1 fail, 77 when /dev/vkv is absent.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kmod_dev.h"

static int failures;

#define CHECK(cond)                                                    \
	do {                                                           \
		if (!(cond)) {                                         \
			printf("%s:%d: check failed: %s (errno %s)\n", \
			       __FILE__, __LINE__, #cond,              \
			       strerror(errno));                       \
			failures++;                                    \
		}                                                      \
	} while (0)

int main(void)
{
	struct vkv_ioc_info in;
	struct vkv_kmod_buf b;
	unsigned char *p = NULL;
	bool purged = true;
	int fd = vkv__kmod_open();

	if (fd < 0) {
		printf("skip: /dev/vkv: %s\n", strerror(-fd));
		return 77;
	}
	CHECK(sizeof(void *) == 4);
	CHECK(vkv__kmod_info(fd, &in) == 0);
	CHECK(in.abi_version == VKV_ABI_VERSION && in.page_size == 4096);
	CHECK(vkv__kmod_alloc(fd, 0, -1, 0, &b) == -EINVAL);
	CHECK(vkv__kmod_alloc(fd, 3 << 20, -1, VKV_ALLOC_HUGE, &b) == 0);
	CHECK(b.size == 4 << 20 && b.id > 0);
	CHECK(vkv__kmod_map(fd, &b, 1 << 20, 1 << 20, NULL, (void **)&p) == 0);
	if (p) {
		CHECK(p[0] == 0 && p[(1 << 20) - 1] == 0);
		memset(p, 0x21, 1 << 20);
		CHECK(munmap(p, 1 << 20) == 0);
	}
	CHECK(vkv__kmod_unpin(fd, b.id) == 0);
	CHECK(vkv__kmod_pin(fd, b.id, &purged) == 0 && !purged);
	CHECK(vkv__kmod_free(fd, b.id) == 0);
	CHECK(vkv__kmod_free(fd, b.id) == -ENOENT);
	CHECK(vkv__kmod_info(fd, &in) == 0 && in.file_bytes == 0);
	close(fd);
	printf("compat: %s\n", failures ? "FAIL" : "pass");
	return failures ? 1 : 0;
}
