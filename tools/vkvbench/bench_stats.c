// SPDX-License-Identifier: MIT
/*
 * bench_stats.c - read this process's own stats segment (include/vkv_stats.h)
 * so that benchmarks can report the library's counters (maps done on the
 * critical path vs by the worker, ...) without reaching into internals.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vkvbench.h"

int bench_stats_snapshot(struct vkv_stats_segment *out)
{
	const char *dir = getenv("VKV_STATS_DIR");
	char path[512];
	struct stat st;
	int ret = -ENOENT;

	snprintf(path, sizeof(path), "%s/" VKV_STATS_PREFIX "%d",
		 dir && *dir ? dir : "/dev/shm", (int)getpid());
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || (size_t)st.st_size < offsetof(struct vkv_stats_segment, reserved))
		goto out_close;
	size_t len = (size_t)st.st_size;
	const struct vkv_stats_segment *seg =
		mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
	if (seg == MAP_FAILED) {
		ret = -errno;
		goto out_close;
	}
	size_t words = (len < sizeof(*out) ? len : sizeof(*out)) / sizeof(uint64_t);
	const uint64_t *src = (const uint64_t *)seg;
	uint64_t *dst = (uint64_t *)out;

	ret = -EAGAIN;
	for (int tries = 0; tries < 1000; tries++) {
		uint64_t s1 = __atomic_load_n(&seg->seq, __ATOMIC_ACQUIRE);
		if (s1 & 1)
			continue;
		memset(out, 0, sizeof(*out));
		/* Acquire loads word by word: none can move after the second
		 * load of seq (and ThreadSanitizer understands them, unlike a
		 * bare fence). */
		for (size_t i = 0; i < words; i++)
			dst[i] = __atomic_load_n(&src[i], __ATOMIC_ACQUIRE);
		if (__atomic_load_n(&seg->seq, __ATOMIC_ACQUIRE) == s1) {
			ret = out->magic == VKV_STATS_MAGIC ? 0 : -EPROTO;
			break;
		}
	}
	munmap((void *)seg, len);
out_close:
	close(fd);
	return ret;
}
