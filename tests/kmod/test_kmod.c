// SPDX-License-Identifier: MIT
/*
 * test_kmod.c - Check suite of vkv.ko, run inside the test VM by
 * tests/kmod/run.sh (never on a host: it needs the module loaded).
 *
 * Covers the ioctl ABI with every bad input we could think of, mmap
 * bounds, zeroing, 2 MiB contiguity (through /proc/self/pagemap), the
 * sysfs counters, O_DIRECT into a mapped buffer (VKV_TEST_BLOCKDEV), a
 * child killed while holding buffers, threads and fork, and purging under
 * real memory pressure. Exits 77 when /dev/vkv is absent.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kmod_dev.h"

#define KiB ((uint64_t)1 << 10)
#define MiB ((uint64_t)1 << 20)
#define SYS "/sys/class/misc/vkv/"
#define NODE0 SYS "nodes/node0/"

static uint64_t sysfs_u64(const char *path)
{
	char buf[64] = "";
	FILE *f = fopen(path, "r");

	ck_assert_msg(f != NULL, "open %s: %s", path, strerror(errno));
	ck_assert(fgets(buf, sizeof(buf), f) != NULL);
	fclose(f);
	return strtoull(buf, NULL, 10);
}

static uint64_t node_u64(uint32_t node, const char *what)
{
	char path[128];

	snprintf(path, sizeof(path), SYS "nodes/node%u/%s", node, what);
	return sysfs_u64(path);
}

/* A per-node counter summed over the nodes that have memory. */
static uint64_t nodes_sum(const char *what)
{
	char path[128];
	uint64_t sum = 0;

	for (uint32_t n = 0; n < 64; n++) {
		snprintf(path, sizeof(path), SYS "nodes/node%u", n);
		if (access(path, F_OK) == 0)
			sum += node_u64(n, what);
	}
	return sum;
}

static void sysfs_write(const char *path, const char *val)
{
	FILE *f = fopen(path, "w");

	ck_assert_msg(f != NULL, "open %s: %s", path, strerror(errno));
	ck_assert_int_ge(fputs(val, f), 0);
	ck_assert_int_eq(fclose(f), 0);
}

static int dev_open(void)
{
	int fd = vkv__kmod_open();

	ck_assert_msg(fd >= 0, "open /dev/vkv: %s", strerror(-fd));
	return fd;
}

static struct vkv_kmod_buf must_alloc(int fd, uint64_t size, uint32_t flags)
{
	struct vkv_kmod_buf b;
	int err = vkv__kmod_alloc(fd, size, -1, flags, &b);

	ck_assert_msg(err == 0, "alloc %" PRIu64 ": %s", size, strerror(-err));
	return b;
}

static uint8_t *must_map(int fd, const struct vkv_kmod_buf *b)
{
	void *p = NULL;
	int err = vkv__kmod_map(fd, b, 0, b->size, NULL, &p);

	ck_assert_msg(err == 0, "mmap: %s", strerror(-err));
	return p;
}

static bool all_bytes(const uint8_t *p, uint64_t n, uint8_t v)
{
	for (uint64_t i = 0; i < n; i++)
		if (p[i] != v)
			return false;
	return true;
}

static int raw_ioctl(int fd, unsigned long cmd, void *arg)
{
	return ioctl(fd, cmd, arg) == 0 ? 0 : errno;
}

/* ------------------------------------------------------------------ ABI */

START_TEST(test_info)
{
	struct vkv_ioc_info in;
	int fd = dev_open();

	ck_assert_int_eq(vkv__kmod_info(fd, &in), 0);
	ck_assert_uint_eq(in.abi_version, VKV_ABI_VERSION);
	ck_assert_uint_eq(in.page_size, 4096);
	ck_assert_uint_eq(in.huge_size, 2 * MiB);
	ck_assert_uint_ge(in.nr_nodes, 1);
	ck_assert_uint_gt(in.max_total, 0);
	ck_assert_uint_eq(in.file_buffers, 0);
	ck_assert_uint_eq(in.file_bytes, 0);
	close(fd);
}
END_TEST

START_TEST(test_alloc_bad_input)
{
	struct vkv_ioc_alloc a;
	struct vkv_ioc_info in;
	struct vkv_kmod_buf b;
	int fd = dev_open();

	ck_assert_int_eq(vkv__kmod_alloc(fd, 0, -1, 0, &b), -EINVAL);
	ck_assert_int_eq(vkv__kmod_alloc(fd, UINT64_MAX, -1, 0, &b), -EINVAL);
	ck_assert_int_eq(vkv__kmod_alloc(fd, VKV_MAX_BUFFER_SIZE + 1, -1, 0, &b),
			 -EINVAL);
	/* Under the ABI's cap but over the module's memory limit. */
	ck_assert_int_eq(vkv__kmod_alloc(fd, VKV_MAX_BUFFER_SIZE, -1, 0, &b),
			 -EDQUOT);
	ck_assert_int_eq(vkv__kmod_info(fd, &in), 0);
	ck_assert_int_eq(vkv__kmod_alloc(fd, 4096, (int)in.nr_nodes, 0, &b),
			 -EINVAL);
	ck_assert_int_eq(vkv__kmod_alloc(fd, 4096, 9999, 0, &b), -EINVAL);
	ck_assert_int_eq(vkv__kmod_alloc(fd, 4096, -1, 1u << 7, &b), -EINVAL);
	ck_assert_int_eq(vkv__kmod_alloc(fd, 4096, -1, 1u << 31, &b), -EINVAL);

	memset(&a, 0, sizeof(a));
	a.size = 4096;
	a.node = VKV_NODE_ANY;
	a.reserved[1] = 1;
	ck_assert_int_eq(raw_ioctl(fd, VKV_IOC_ALLOC, &a), EINVAL);
	ck_assert_int_eq(raw_ioctl(fd, VKV_IOC_ALLOC, NULL), EFAULT);
	ck_assert_int_eq(raw_ioctl(fd, VKV_IOC_ALLOC, (void *)16), EFAULT);
	ck_assert_int_eq(raw_ioctl(fd, VKV_IOC_INFO, (void *)16), EFAULT);
	ck_assert_int_eq(vkv__kmod_info(fd, &in), 0);
	ck_assert_uint_eq(in.file_buffers, 0);
	close(fd);
}
END_TEST

START_TEST(test_unknown_ioctl)
{
	char junk[64] = { 0 };
	int fd = dev_open();

	ck_assert_int_eq(raw_ioctl(fd, _IO(VKV_IOC_MAGIC, 0x7f), junk), ENOTTY);
	/* The right number with the wrong size is another command. */
	ck_assert_int_eq(raw_ioctl(fd, _IOWR(VKV_IOC_MAGIC, 0x01, char[48]),
				   junk), ENOTTY);
	ck_assert_int_eq(raw_ioctl(fd, _IOWR('T', 0x01, char[56]), junk),
			 ENOTTY);
	ck_assert_int_eq(raw_ioctl(fd, 0, junk), ENOTTY);
	close(fd);
}
END_TEST

START_TEST(test_free_bad_id)
{
	struct vkv_ioc_buf a;
	bool purged;
	int fd = dev_open();
	struct vkv_kmod_buf b = must_alloc(fd, 8 * KiB, 0);

	ck_assert_int_eq(vkv__kmod_free(fd, 0), -ENOENT);
	ck_assert_int_eq(vkv__kmod_free(fd, b.id + 1), -ENOENT);
	ck_assert_int_eq(vkv__kmod_free(fd, 1ULL << 40), -ENOENT);
	ck_assert_int_eq(vkv__kmod_free(fd, UINT64_MAX), -ENOENT);
	ck_assert_int_eq(vkv__kmod_pin(fd, b.id + 1, &purged), -ENOENT);
	ck_assert_int_eq(vkv__kmod_unpin(fd, UINT64_MAX), -ENOENT);
	memset(&a, 0, sizeof(a));
	a.id = b.id;
	a.pad = 1;
	ck_assert_int_eq(raw_ioctl(fd, VKV_IOC_FREE, &a), EINVAL);
	ck_assert_int_eq(raw_ioctl(fd, VKV_IOC_FREE, (void *)16), EFAULT);
	ck_assert_int_eq(vkv__kmod_free(fd, b.id), 0);
	ck_assert_int_eq(vkv__kmod_free(fd, b.id), -ENOENT);
	ck_assert_int_eq(vkv__kmod_pin(fd, b.id, &purged), -ENOENT);
	close(fd);
}
END_TEST

/* ----------------------------------------------------------------- mmap */

START_TEST(test_mmap_bad)
{
	int fd = dev_open(), fd2 = dev_open();
	struct vkv_kmod_buf b = must_alloc(fd, 64 * KiB, 0);
	struct vkv_kmod_buf gone = must_alloc(fd, 4 * KiB, 0);
	void *p;

	p = mmap(NULL, b.size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd,
		 (off_t)b.offset);
	ck_assert(p == MAP_FAILED && errno == EINVAL);
	p = mmap(NULL, b.size + 4096, PROT_READ, MAP_SHARED, fd, (off_t)b.offset);
	ck_assert(p == MAP_FAILED && errno == EINVAL);
	p = mmap(NULL, 8192, PROT_READ, MAP_SHARED, fd,
		 (off_t)(b.offset + b.size - 4096));
	ck_assert(p == MAP_FAILED && errno == EINVAL);
	p = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd,
		 (off_t)(b.offset + b.size));
	ck_assert(p == MAP_FAILED && errno == EINVAL);
	p = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, (off_t)(b.offset + 1));
	ck_assert(p == MAP_FAILED && errno == EINVAL);
	p = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0);
	ck_assert(p == MAP_FAILED && errno == EINVAL);
	p = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, (off_t)(b.offset << 2));
	ck_assert(p == MAP_FAILED && errno == EINVAL);
	/* Another file's id is not ours. */
	p = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd2, (off_t)b.offset);
	ck_assert(p == MAP_FAILED && errno == EINVAL);
	ck_assert_int_eq(vkv__kmod_free(fd, gone.id), 0);
	p = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, (off_t)gone.offset);
	ck_assert(p == MAP_FAILED && errno == EINVAL);

	/* A mapping cannot grow past its buffer. */
	p = must_map(fd, &b);
	ck_assert(mremap(p, b.size, b.size * 2, MREMAP_MAYMOVE) == MAP_FAILED);
	ck_assert_int_eq(munmap(p, b.size), 0);
	close(fd2);
	close(fd);
}
END_TEST

START_TEST(test_mmap_alias_and_partial)
{
	int fd = dev_open();
	struct vkv_kmod_buf b = must_alloc(fd, 64 * KiB, 0);
	uint8_t *p = must_map(fd, &b), *q = NULL;

	for (uint64_t i = 0; i < b.size; i++)
		p[i] = (uint8_t)(i * 7);
	ck_assert_int_eq(vkv__kmod_map(fd, &b, 12 * KiB, 8 * KiB, NULL,
				       (void **)&q), 0);
	ck_assert_int_eq(memcmp(q, p + 12 * KiB, 8 * KiB), 0);
	q[0] = 0x5a;
	ck_assert_uint_eq(p[12 * KiB], 0x5a);
	/* Punch a hole: both halves keep working. */
	ck_assert_int_eq(munmap(p + 16 * KiB, 16 * KiB), 0);
	ck_assert_uint_eq(p[4 * KiB], (uint8_t)(4 * KiB * 7));
	ck_assert_uint_eq(p[40 * KiB], (uint8_t)(40 * KiB * 7));
	/* After MADV_DONTNEED the same page faults back in. */
	ck_assert_int_eq(madvise(p, 4 * KiB, MADV_DONTNEED), 0);
	ck_assert_uint_eq(p[1], 7);
	ck_assert_int_eq(munmap(q, 8 * KiB), 0);
	ck_assert_int_eq(munmap(p, 16 * KiB), 0);
	ck_assert_int_eq(munmap(p + 32 * KiB, 32 * KiB), 0);
	ck_assert_int_eq(vkv__kmod_free(fd, b.id), 0);
	close(fd);
}
END_TEST

START_TEST(test_free_while_mapped)
{
	uint64_t base = sysfs_u64(SYS "bytes");
	int fd = dev_open();
	struct vkv_kmod_buf b = must_alloc(fd, 256 * KiB, 0);
	uint8_t *p = must_map(fd, &b);

	memset(p, 0x33, b.size);
	ck_assert_int_eq(vkv__kmod_free(fd, b.id), 0);
	/* The mapping keeps the buffer: still charged, still there. */
	ck_assert_uint_eq(sysfs_u64(SYS "bytes"), base + b.size);
	ck_assert(all_bytes(p, b.size, 0x33));
	ck_assert_int_eq(munmap(p, b.size), 0);
	ck_assert_uint_eq(sysfs_u64(SYS "bytes"), base);
	close(fd);
}
END_TEST

/* ------------------------------------------------------ memory contents */

START_TEST(test_always_zeroed)
{
	int fd = dev_open();

	for (int round = 0; round < 16; round++) {
		uint32_t flags = round & 1 ? VKV_ALLOC_HUGE : VKV_ALLOC_ZEROED;
		struct vkv_kmod_buf b = must_alloc(fd, 2 * MiB, flags);
		uint8_t *p = must_map(fd, &b);

		ck_assert_msg(all_bytes(p, b.size, 0), "round %d not zero", round);
		memset(p, 0xa5, b.size);
		ck_assert_int_eq(munmap(p, b.size), 0);
		ck_assert_int_eq(vkv__kmod_free(fd, b.id), 0);
	}
	close(fd);
}
END_TEST

/* Physical frame of a virtual address (root only). */
static uint64_t pfn_of(int pm, const void *va)
{
	uint64_t e = 0;
	off_t off = (off_t)((uintptr_t)va / 4096 * sizeof(e));

	ck_assert_int_eq(pread(pm, &e, sizeof(e), off), (ssize_t)sizeof(e));
	ck_assert_msg(e & (1ULL << 63), "page not present");
	return e & ((1ULL << 55) - 1);
}

START_TEST(test_huge_contiguous)
{
	uint64_t huge0 = nodes_sum("huge_chunks");
	int fd = dev_open(), pm;
	struct vkv_kmod_buf b = must_alloc(fd, 8 * MiB, VKV_ALLOC_HUGE);
	struct vkv_kmod_buf one = must_alloc(fd, 1, VKV_ALLOC_HUGE);
	uint8_t *p = must_map(fd, &b);

	ck_assert_uint_eq(one.size, 2 * MiB);
	ck_assert_uint_eq(b.huge, 4);
	ck_assert_uint_eq(nodes_sum("huge_chunks"), huge0 + 5);
	pm = open("/proc/self/pagemap", O_RDONLY);
	ck_assert_int_ge(pm, 0);
	for (uint64_t c = 0; c < b.size; c += 2 * MiB) {
		uint64_t first = pfn_of(pm, p + c);

		ck_assert_msg(first % 512 == 0, "chunk %" PRIu64 " unaligned", c);
		for (uint64_t i = 4096; i < 2 * MiB; i += 4096)
			ck_assert_uint_eq(pfn_of(pm, p + c + i), first + i / 4096);
	}
	close(pm);
	ck_assert_int_eq(munmap(p, b.size), 0);
	close(fd);
}
END_TEST

START_TEST(test_odirect_into_mapping)
{
	const char *dev = getenv("VKV_TEST_BLOCKDEV");
	int fd, bd;
	struct vkv_kmod_buf b;
	uint8_t *p, *src;

	if (!dev) {
		printf("skip: VKV_TEST_BLOCKDEV not set\n");
		return;
	}
	fd = dev_open();
	b = must_alloc(fd, 2 * MiB, VKV_ALLOC_HUGE);
	p = must_map(fd, &b);
	src = malloc(MiB);
	for (uint64_t i = 0; i < MiB; i++)
		src[i] = (uint8_t)(i * 13 + 1);
	bd = open(dev, O_RDWR);
	ck_assert_msg(bd >= 0, "open %s: %s", dev, strerror(errno));
	ck_assert_int_eq(pwrite(bd, src, MiB, 0), (ssize_t)MiB);
	ck_assert_int_eq(fsync(bd), 0);
	close(bd);

	bd = open(dev, O_RDWR | O_DIRECT);
	ck_assert_msg(bd >= 0, "open O_DIRECT: %s", strerror(errno));
	ck_assert_int_eq(pread(bd, p + 4096, MiB, 0), (ssize_t)MiB);
	ck_assert_int_eq(memcmp(p + 4096, src, MiB), 0);
	/* And out of it: write from the mapping, read back through the cache. */
	memset(p, 0x6c, 64 * KiB);
	ck_assert_int_eq(pwrite(bd, p, 64 * KiB, MiB), (ssize_t)(64 * KiB));
	close(bd);
	bd = open(dev, O_RDONLY);
	ck_assert_int_eq(pread(bd, src, 64 * KiB, MiB), (ssize_t)(64 * KiB));
	ck_assert(all_bytes(src, 64 * KiB, 0x6c));
	close(bd);
	free(src);
	ck_assert_int_eq(munmap(p, b.size), 0);
	close(fd);
}
END_TEST

/* ------------------------------------------------------------- counters */

START_TEST(test_node_counters)
{
	uint64_t bytes0 = sysfs_u64(NODE0 "bytes");
	uint64_t bufs0 = sysfs_u64(NODE0 "buffers");
	uint64_t total0 = sysfs_u64(SYS "bytes");
	struct vkv_kmod_buf b;
	struct vkv_ioc_info in;
	int fd = dev_open();

	ck_assert_int_eq(vkv__kmod_alloc(fd, 3 * MiB + 1, 0, 0, &b), 0);
	ck_assert_uint_eq(b.node_used, 0);
	ck_assert_uint_eq(b.size, 3 * MiB + 4096);
	ck_assert_uint_eq(sysfs_u64(NODE0 "bytes"), bytes0 + b.size);
	ck_assert_uint_eq(sysfs_u64(NODE0 "buffers"), bufs0 + 1);
	ck_assert_uint_eq(sysfs_u64(SYS "bytes"), total0 + b.size);
	ck_assert_int_eq(vkv__kmod_info(fd, &in), 0);
	ck_assert_uint_eq(in.file_bytes, b.size);
	ck_assert_uint_eq(in.file_buffers, 1);
	ck_assert_int_eq(vkv__kmod_free(fd, b.id), 0);
	ck_assert_uint_eq(sysfs_u64(NODE0 "bytes"), bytes0);
	ck_assert_uint_eq(sysfs_u64(NODE0 "buffers"), bufs0);
	ck_assert_uint_eq(sysfs_u64(SYS "bytes"), total0);
	close(fd);
}
END_TEST

/* Node of the page behind va, as the kernel's memory policy code sees it. */
static int node_of(const void *va)
{
	int node = -1;
	const unsigned long f = 3; /* MPOL_F_NODE | MPOL_F_ADDR */

	ck_assert_int_eq(syscall(SYS_get_mempolicy, &node, NULL, 0UL, va, f), 0);
	return node;
}

/* Each node's buffers land on it, and only its counters move. */
START_TEST(test_numa_placement)
{
	struct vkv_ioc_info in;
	int fd = dev_open();

	ck_assert_int_eq(vkv__kmod_info(fd, &in), 0);
	if (in.nr_nodes < 2) {
		printf("skip: test_numa_placement needs 2 NUMA nodes\n");
		close(fd);
		return;
	}
	for (uint32_t n = 0; n < 2; n++) {
		uint64_t mine = node_u64(n, "bytes"), other = node_u64(!n, "bytes");
		uint64_t huge = node_u64(n, "huge_chunks");
		struct vkv_kmod_buf b;
		uint8_t *p;

		ck_assert_int_eq(vkv__kmod_alloc(fd, 4 * MiB, (int)n,
						 VKV_ALLOC_HUGE, &b), 0);
		ck_assert_uint_eq(b.node_used, n);
		ck_assert_uint_eq(node_u64(n, "bytes"), mine + b.size);
		ck_assert_uint_eq(node_u64(!n, "bytes"), other);
		ck_assert_uint_eq(node_u64(n, "huge_chunks"), huge + b.huge);
		p = must_map(fd, &b);
		for (uint64_t off = 0; off < b.size; off += 256 * KiB)
			ck_assert_int_eq(node_of(p + off), (int)n);
		ck_assert_int_eq(munmap(p, b.size), 0);
		ck_assert_int_eq(vkv__kmod_free(fd, b.id), 0);
		ck_assert_uint_eq(node_u64(n, "bytes"), mine);
	}
	close(fd);
}
END_TEST

START_TEST(test_limits)
{
	uint64_t fails0 = sysfs_u64(SYS "alloc_failures");
	struct vkv_kmod_buf b, c;
	int fd = dev_open();

	sysfs_write("/sys/module/vkv/parameters/max_file", "4194304");
	ck_assert_uint_eq(sysfs_u64(SYS "max_file"), 4 * MiB);
	ck_assert_int_eq(vkv__kmod_alloc(fd, 3 * MiB, -1, 0, &b), 0);
	ck_assert_int_eq(vkv__kmod_alloc(fd, 2 * MiB, -1, 0, &c), -EDQUOT);
	ck_assert_uint_eq(sysfs_u64(SYS "alloc_failures"), fails0 + 1);
	ck_assert_int_eq(vkv__kmod_alloc(fd, 1 * MiB, -1, 0, &c), 0);
	sysfs_write("/sys/module/vkv/parameters/max_file", "0");
	close(fd);
}
END_TEST

/* Child holds buffers (mapped, unmapped, purgeable) and is SIGKILLed. */
START_TEST(test_sigkill_releases)
{
	uint64_t bytes0 = sysfs_u64(SYS "bytes"), bufs0 = sysfs_u64(SYS "buffers");
	uint64_t nodes0 = nodes_sum("bytes");
	int pipefd[2], status;
	char c;
	pid_t pid;

	ck_assert_int_eq(pipe(pipefd), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int fd = vkv__kmod_open();
		struct vkv_kmod_buf b[4];
		void *p;

		for (int i = 0; i < 4; i++)
			if (fd < 0 || vkv__kmod_alloc(fd, MiB, -1, 0, &b[i]))
				_exit(1);
		if (vkv__kmod_map(fd, &b[0], 0, MiB, NULL, &p) ||
		    vkv__kmod_map(fd, &b[1], 4096, 8192, NULL, &p) ||
		    vkv__kmod_unpin(fd, b[2].id))
			_exit(1);
		memset(p, 1, 8192);
		if (write(pipefd[1], "r", 1) != 1)
			_exit(1);
		for (;;)
			pause();
	}
	close(pipefd[1]);
	ck_assert_int_eq(read(pipefd[0], &c, 1), 1);
	ck_assert_uint_eq(sysfs_u64(SYS "bytes"), bytes0 + 4 * MiB);
	ck_assert_uint_eq(sysfs_u64(SYS "buffers"), bufs0 + 4);
	ck_assert_int_eq(kill(pid, SIGKILL), 0);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	ck_assert_uint_eq(sysfs_u64(SYS "bytes"), bytes0);
	ck_assert_uint_eq(sysfs_u64(SYS "buffers"), bufs0);
	ck_assert_uint_eq(nodes_sum("bytes"), nodes0);
	ck_assert_uint_eq(sysfs_u64(SYS "purgeable_bytes"), 0);
	close(pipefd[0]);
}
END_TEST

/* -------------------------------------------------------- threads, fork */

struct thread_arg {
	int fd;
	unsigned seed;
	int errors;
	int last_err;      /* the last unexpected result */
	const char *where; /* and which call gave it */
};

static void thread_error(struct thread_arg *t, const char *where, int err)
{
	t->errors++;
	t->last_err = err;
	t->where = where;
}

/* Another thread may free our buffer by id at any time (the b.id ^ 1 free
 * below), and the id may then be handed to a third thread's new buffer, so
 * -EINVAL from mmap, -ENOENT and -EBUSY from the ioctls and foreign
 * contents are expected. What must not happen: other errors, or a crash,
 * a leak or a warning in the kernel (checked by the harness). */
static void *thread_main(void *arg)
{
	struct thread_arg *t = arg;

	for (int i = 0; i < 150; i++) {
		struct vkv_kmod_buf b;
		uint8_t *p = NULL;
		bool purged;
		int r = rand_r(&t->seed), err;

		err = vkv__kmod_alloc(t->fd, 4096 * (1 + r % 16), -1,
				      r & 64 ? VKV_ALLOC_HUGE : 0, &b);
		if (err) {
			thread_error(t, "alloc", err);
			continue;
		}
		err = vkv__kmod_map(t->fd, &b, 0, b.size, NULL, (void **)&p);
		if (err == 0) {
			memset(p, r, b.size);
			munmap(p, b.size);
		} else if (err != -EINVAL) {
			thread_error(t, "mmap", err);
		}
		if (r & 1) {
			err = vkv__kmod_unpin(t->fd, b.id);
			if (!err)
				err = vkv__kmod_pin(t->fd, b.id, &purged);
			if (err && err != -ENOENT && err != -EBUSY)
				thread_error(t, "unpin/pin", err);
		}
		vkv__kmod_free(t->fd, b.id ^ 1);
		err = vkv__kmod_free(t->fd, b.id);
		if (err && err != -ENOENT)
			thread_error(t, "free", err);
	}
	return NULL;
}

START_TEST(test_threads_share_a_file)
{
	uint64_t bytes0 = sysfs_u64(SYS "bytes");
	struct thread_arg args[4];
	pthread_t th[4];
	int fd = dev_open();

	for (int i = 0; i < 4; i++) {
		args[i] = (struct thread_arg){ .fd = fd, .seed = 17u + i };
		ck_assert_int_eq(pthread_create(&th[i], NULL, thread_main,
						&args[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		ck_assert_msg(args[i].errors == 0, "thread %d: %d errors, last %s: %s",
			      i, args[i].errors, args[i].where ? args[i].where : "",
			      strerror(-args[i].last_err));
	}
	close(fd);
	ck_assert_uint_eq(sysfs_u64(SYS "bytes"), bytes0);
}
END_TEST

START_TEST(test_fork_shares_mapping)
{
	uint64_t bytes0 = sysfs_u64(SYS "bytes");
	int fd = dev_open(), status;
	struct vkv_kmod_buf b = must_alloc(fd, 64 * KiB, 0);
	uint8_t *p = must_map(fd, &b);
	pid_t pid;

	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct vkv_kmod_buf c;

		memset(p, 0x42, b.size);
		/* The inherited file works in the child too. */
		if (vkv__kmod_alloc(fd, 4096, -1, 0, &c) ||
		    vkv__kmod_free(fd, c.id))
			_exit(1);
		munmap(p, b.size);
		_exit(0);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	ck_assert(all_bytes(p, b.size, 0x42));
	ck_assert_int_eq(vkv__kmod_free(fd, b.id), 0);
	ck_assert_int_eq(munmap(p, b.size), 0);
	close(fd);
	ck_assert_uint_eq(sysfs_u64(SYS "bytes"), bytes0);
}
END_TEST

/* --------------------------------------------------------------- purging */

START_TEST(test_unpin_pin_without_pressure)
{
	int fd = dev_open();
	struct vkv_kmod_buf b = must_alloc(fd, 256 * KiB, 0);
	uint8_t *p = must_map(fd, &b);
	bool purged = true;

	memset(p, 0x77, b.size);
	ck_assert_int_eq(munmap(p, b.size), 0);
	ck_assert_int_eq(vkv__kmod_unpin(fd, b.id), 0);
	ck_assert_int_eq(vkv__kmod_unpin(fd, b.id), 0);
	ck_assert_uint_ge(sysfs_u64(SYS "purgeable_bytes"), b.size);
	ck_assert_int_eq(vkv__kmod_pin(fd, b.id, &purged), 0);
	ck_assert(!purged);
	ck_assert_int_eq(vkv__kmod_pin(fd, b.id, &purged), 0);
	ck_assert(!purged);
	p = must_map(fd, &b);
	ck_assert(all_bytes(p, b.size, 0x77));
	/* Purgeable while mapped is allowed (it just is not reclaimed). */
	ck_assert_int_eq(vkv__kmod_unpin(fd, b.id), 0);
	ck_assert_int_eq(munmap(p, b.size), 0);
	ck_assert_int_eq(vkv__kmod_free(fd, b.id), 0);
	ck_assert_uint_eq(sysfs_u64(SYS "purgeable_bytes"), 0);
	close(fd);
}
END_TEST

static uint64_t meminfo(const char *key)
{
	char line[128];
	uint64_t v = 0;
	FILE *f = fopen("/proc/meminfo", "r");

	ck_assert(f != NULL);
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, key, strlen(key)))
			v = strtoull(line + strlen(key) + 1, NULL, 10) * KiB;
	fclose(f);
	return v;
}

/*
 * Fill half of the available memory with purgeable buffers, then touch
 * anonymous memory worth 3/4 of it: the shrinker must give memory back,
 * oldest first, we must not be OOM-killed, and every purge must be
 * reported by PIN.
 */
START_TEST(test_pressure_purges)
{
	uint64_t avail = meminfo("MemAvailable:");
	uint64_t purged0 = sysfs_u64(SYS "purged");
	uint64_t nbuf = avail / 2 / (4 * MiB), anon = avail / 4 * 3;
	struct vkv_kmod_buf *bufs = calloc(nbuf, sizeof(*bufs));
	uint64_t reported = 0;
	int fd = dev_open();
	uint8_t *a;

	printf("pressure: available %" PRIu64 " MiB, %" PRIu64
	       " buffers of 4 MiB, %" PRIu64 " MiB anonymous\n",
	       avail / MiB, nbuf, anon / MiB);
	for (uint64_t i = 0; i < nbuf; i++) {
		uint8_t *p;

		bufs[i] = must_alloc(fd, 4 * MiB, VKV_ALLOC_HUGE);
		p = must_map(fd, &bufs[i]);
		memset(p, (int)(i % 250) + 1, bufs[i].size);
		ck_assert_int_eq(munmap(p, bufs[i].size), 0);
		ck_assert_int_eq(vkv__kmod_unpin(fd, bufs[i].id), 0);
	}
	a = mmap(NULL, anon, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ck_assert(a != MAP_FAILED);
	for (uint64_t off = 0; off < anon; off += 4096)
		a[off] = 1;
	ck_assert_int_eq(munmap(a, anon), 0);

	for (uint64_t i = 0; i < nbuf; i++) {
		bool purged;
		uint8_t *p;

		ck_assert_int_eq(vkv__kmod_pin(fd, bufs[i].id, &purged), 0);
		/* Least recently unpinned first: the purged ones are a prefix
		 * of the unpin order (pinning goes in that order too, so a
		 * purge while we pin still takes the oldest left). */
		ck_assert_msg(!purged || reported == i,
			      "buffer %" PRIu64 " purged after a kept one", i);
		reported += purged;
		p = must_map(fd, &bufs[i]);
		ck_assert_msg(all_bytes(p, bufs[i].size,
					purged ? 0 : (uint8_t)(i % 250) + 1),
			      "buffer %" PRIu64 " (purged %d) has wrong contents",
			      i, purged);
		ck_assert_int_eq(munmap(p, bufs[i].size), 0);
	}
	printf("pressure: %" PRIu64 " of %" PRIu64 " buffers purged\n",
	       reported, nbuf);
	ck_assert_uint_gt(reported, 0);
	ck_assert_uint_eq(sysfs_u64(SYS "purged") - purged0, reported);
	close(fd);
	free(bufs);
}
END_TEST

static Suite *kmod_suite(void)
{
	Suite *s = suite_create("kmod");
	TCase *abi = tcase_create("abi"), *mm = tcase_create("mmap");
	TCase *mem = tcase_create("memory"), *cnt = tcase_create("counters");
	TCase *conc = tcase_create("concurrency");
	TCase *purge = tcase_create("purge");

	tcase_add_test(abi, test_info);
	tcase_add_test(abi, test_alloc_bad_input);
	tcase_add_test(abi, test_unknown_ioctl);
	tcase_add_test(abi, test_free_bad_id);
	tcase_add_test(mm, test_mmap_bad);
	tcase_add_test(mm, test_mmap_alias_and_partial);
	tcase_add_test(mm, test_free_while_mapped);
	tcase_add_test(mem, test_always_zeroed);
	tcase_add_test(mem, test_huge_contiguous);
	tcase_add_test(mem, test_odirect_into_mapping);
	tcase_add_test(cnt, test_node_counters);
	tcase_add_test(cnt, test_numa_placement);
	tcase_add_test(cnt, test_limits);
	tcase_add_test(cnt, test_sigkill_releases);
	tcase_add_test(conc, test_threads_share_a_file);
	tcase_add_test(conc, test_fork_shares_mapping);
	tcase_add_test(purge, test_unpin_pin_without_pressure);
	tcase_add_test(purge, test_pressure_purges);
	tcase_set_timeout(conc, 300);
	tcase_set_timeout(purge, 300);
	suite_add_tcase(s, abi);
	suite_add_tcase(s, mm);
	suite_add_tcase(s, mem);
	suite_add_tcase(s, cnt);
	suite_add_tcase(s, conc);
	suite_add_tcase(s, purge);
	return s;
}

int main(void)
{
	SRunner *sr;
	int failed, fd = vkv__kmod_open();

	if (fd < 0) {
		printf("skip: /dev/vkv: %s (load vkv.ko; see docs/kmod.md)\n",
		       strerror(-fd));
		return 77;
	}
	close(fd);
	sr = srunner_create(kmod_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
