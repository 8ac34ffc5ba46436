// SPDX-License-Identifier: MIT
/*
 * check_segment_reader.c - Check suite of vkvstat's segment reader.
 *
 * The reader faces files written by other processes, so most cases here
 * are broken or hostile segments: wrong magic, version or size, files too
 * short, strings without terminators or full of escape codes, a pid that
 * does not match the file name, writers that died (or died inside the
 * seqlock), a pid taken over by another program, a file truncated while
 * it is read, and a writer that keeps writing while it is read. And the
 * clean-up's race: a new process that reuses a dead pid and creates its
 * segment under the dead one's name while the reader removes that one.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "segment_reader.h"

static char dir[64];

/* ------------------------------------------ a new process takes a name
 *
 * The suite is linked with -Wl,--wrap=renameat,--wrap=unlinkat: the
 * reader's calls of those reach the wrappers below. A test sets
 * `take_over_at` to have a new process with the pid `take_over_pid` take
 * that pid's segment name just before the reader's next call of one of
 * them, the way libvkv creates its segment (unlink what is there, create,
 * lock, publish). So the race a clean-up must survive happens every time,
 * at the worst moment, instead of once in a million runs.
 */
enum take_over_site { TAKE_OVER_NONE, TAKE_OVER_RENAMEAT, TAKE_OVER_UNLINKAT };

static enum take_over_site take_over_at;
static int32_t take_over_pid;
static int taker_fd = -1; /* the new writer's file, its lock held */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/vkvstat-check.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	take_over_at = TAKE_OVER_NONE;
	taker_fd = -1;
}

static void teardown(void)
{
	char cmd[128];

	take_over_at = TAKE_OVER_NONE;
	if (taker_fd >= 0)
		close(taker_fd);
	taker_fd = -1;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
}

/* A valid segment of process `pid`, as libvkv would publish it. */
static void good_segment(struct vkv_stats_segment *s, int32_t pid)
{
	memset(s, 0, sizeof(*s));
	s->magic = VKV_STATS_MAGIC;
	s->version = VKV_STATS_VERSION;
	s->size = sizeof(*s);
	s->pid = pid;
	s->backend = 1;
	s->start_ns = now_ns() - 1000000000ull;
	s->update_ns = now_ns();
	snprintf(s->comm, sizeof(s->comm), "check");
	snprintf(s->backend_detail, sizeof(s->backend_detail), "host 4 KiB");
	s->page_size = 4096;
	s->reserved_bytes = 1ull << 30;
	s->committed_bytes = 64ull << 20;
	s->in_use_bytes = 48ull << 20;
	s->tiers[VKV_TIER_DRAM].evictions = 3;
}

/* Write `len` bytes of s as the segment of `pid`; returns the path. */
static const char *put(int32_t pid, const void *s, size_t len)
{
	static char path[128];
	int fd;

	snprintf(path, sizeof(path), "%s/" VKV_STATS_PREFIX "%d", dir, pid);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, s, len), (ssize_t)len);
	close(fd);
	return path;
}

/* Scan and expect exactly one entry; returns it (valid until next scan). */
static struct vkvstat_scan scan;

static struct vkvstat_proc *scan_one(unsigned flags)
{
	vkvstat_scan_free(&scan);
	ck_assert_int_eq(vkvstat_scan_dir(dir, flags, &scan), 0);
	ck_assert_uint_eq(scan.nprocs, 1);
	return &scan.procs[0];
}

/* A pid that belonged to a process that has exited and been reaped. */
static int32_t dead_pid(void)
{
	pid_t c = fork();

	ck_assert_int_ge(c, 0);
	if (c == 0)
		_exit(0);
	ck_assert_int_eq(waitpid(c, NULL, 0), c);
	return c;
}

int __real_renameat(int odfd, const char *old, int ndfd, const char *new);
int __real_unlinkat(int dfd, const char *name, int flags);
int __wrap_renameat(int odfd, const char *old, int ndfd, const char *new);
int __wrap_unlinkat(int dfd, const char *name, int flags);

static void take_over(void)
{
	struct vkv_stats_segment s;
	char path[128];

	take_over_at = TAKE_OVER_NONE;
	snprintf(path, sizeof(path), "%s/" VKV_STATS_PREFIX "%d", dir,
		 take_over_pid);
	unlink(path);
	taker_fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	ck_assert_int_ge(taker_fd, 0);
	ck_assert_int_eq(flock(taker_fd, LOCK_SH), 0);
	good_segment(&s, take_over_pid);
	ck_assert_int_eq(pwrite(taker_fd, &s, sizeof(s), 0), (ssize_t)sizeof(s));
}

int __wrap_renameat(int odfd, const char *old, int ndfd, const char *new)
{
	if (take_over_at == TAKE_OVER_RENAMEAT)
		take_over();
	return __real_renameat(odfd, old, ndfd, new);
}

int __wrap_unlinkat(int dfd, const char *name, int flags)
{
	if (take_over_at == TAKE_OVER_UNLINKAT)
		take_over();
	return __real_unlinkat(dfd, name, flags);
}

/* Is the new writer's file, intact and still locked, under `path`? */
static void assert_taker_in_place(const char *path)
{
	struct vkv_stats_segment s;
	struct stat mine, there;
	int fd;

	ck_assert_int_ge(taker_fd, 0);
	ck_assert_int_eq(fstat(taker_fd, &mine), 0);
	ck_assert_int_eq(stat(path, &there), 0);
	ck_assert_uint_eq(there.st_ino, mine.st_ino);
	fd = open(path, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, &s, sizeof(s), 0), (ssize_t)sizeof(s));
	ck_assert_uint_eq(s.magic, VKV_STATS_MAGIC);
	ck_assert_int_eq(s.pid, take_over_pid);
	ck_assert_int_eq(flock(fd, LOCK_EX | LOCK_NB), -1);
	close(fd);
}

/* Files in the test's directory: a name renamed aside must not stay. */
static unsigned dir_entries(void)
{
	struct dirent *de;
	unsigned n = 0;
	DIR *d = opendir(dir);

	ck_assert_ptr_nonnull(d);
	while ((de = readdir(d)) != NULL)
		n += strcmp(de->d_name, ".") && strcmp(de->d_name, "..");
	closedir(d);
	return n;
}

START_TEST(test_valid_live)
{
	struct vkv_stats_segment s;
	struct vkvstat_proc *p;

	good_segment(&s, getpid());
	put(getpid(), &s, sizeof(s));
	p = scan_one(VKVSTAT_SCAN_CLEAN);
	ck_assert_int_eq(p->state, VKVSTAT_SEG_LIVE);
	ck_assert_int_eq(p->pid, getpid());
	ck_assert_str_eq(p->seg.comm, "check");
	ck_assert_uint_eq(p->seg.committed_bytes, 64ull << 20);
	ck_assert_uint_eq(p->seg.tiers[VKV_TIER_DRAM].evictions, 3);
	ck_assert_uint_eq(scan.count[VKVSTAT_SEG_LIVE], 1);
	vkvstat_scan_free(&scan);
}
END_TEST

START_TEST(test_larger_writer_accepted)
{
	/* A newer writer appends fields: size grows, the file too. */
	size_t len = sizeof(struct vkv_stats_segment) + 256;
	struct vkv_stats_segment *s = calloc(1, len);
	struct vkvstat_proc *p;

	good_segment(s, getpid());
	s->size = (uint32_t)len;
	put(getpid(), s, len);
	p = scan_one(0);
	ck_assert_int_eq(p->state, VKVSTAT_SEG_LIVE);
	ck_assert_uint_eq(p->writer_size, len);
	free(s);
	vkvstat_scan_free(&scan);
}
END_TEST

START_TEST(test_wrong_magic)
{
	struct vkv_stats_segment s;
	struct vkvstat_proc *p;

	good_segment(&s, getpid());
	s.magic ^= 1;
	put(getpid(), &s, sizeof(s));
	p = scan_one(0);
	ck_assert_int_eq(p->state, VKVSTAT_SEG_BAD);
	ck_assert_int_eq(p->err, -EBADMSG);
	vkvstat_scan_free(&scan);
}
END_TEST

START_TEST(test_wrong_version)
{
	struct vkv_stats_segment s;
	struct vkvstat_proc *p;

	good_segment(&s, getpid());
	s.version = VKV_STATS_VERSION + 1;
	put(getpid(), &s, sizeof(s));
	p = scan_one(0);
	ck_assert_int_eq(p->state, VKVSTAT_SEG_BAD);
	ck_assert_int_eq(p->err, -EPROTO);
	vkvstat_scan_free(&scan);
}
END_TEST

START_TEST(test_wrong_size)
{
	static const uint32_t sizes[] = { 0, 8, sizeof(struct vkv_stats_segment) - 8,
					  sizeof(struct vkv_stats_segment) + 8,
					  0xffffffffu };
	struct vkv_stats_segment s;

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		struct vkvstat_proc *p;

		good_segment(&s, getpid());
		s.size = sizes[i]; /* the file holds exactly sizeof(s) */
		put(getpid(), &s, sizeof(s));
		p = scan_one(0);
		ck_assert_int_eq(p->state, VKVSTAT_SEG_BAD);
		ck_assert_int_eq(p->err, -EMSGSIZE);
	}
	vkvstat_scan_free(&scan);
}
END_TEST

START_TEST(test_truncated)
{
	struct vkv_stats_segment s;
	static const size_t lens[] = { 0, 7, 24, sizeof(s) / 2, sizeof(s) - 1 };

	good_segment(&s, getpid());
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		struct vkvstat_proc *p;

		put(getpid(), &s, lens[i]);
		p = scan_one(0);
		ck_assert_int_eq(p->state, VKVSTAT_SEG_BAD);
		ck_assert_int_eq(p->err, -ENODATA);
	}
	vkvstat_scan_free(&scan);
}
END_TEST

START_TEST(test_hostile_strings)
{
	struct vkv_stats_segment s;
	struct vkvstat_proc *p;

	good_segment(&s, getpid());
	memset(s.comm, 0xff, sizeof(s.comm)); /* no terminator at all */
	memcpy(s.comm, "\x1b[2J\x1b]0;pwn\x07\"\\", 14);
	memset(s.backend_detail, 'A', sizeof(s.backend_detail));
	s.backend_detail[3] = '\n';
	put(getpid(), &s, sizeof(s));
	p = scan_one(0);
	ck_assert_int_eq(p->state, VKVSTAT_SEG_LIVE);
	ck_assert_uint_lt(strlen(p->seg.comm), sizeof(p->seg.comm));
	ck_assert_uint_lt(strlen(p->seg.backend_detail),
			  sizeof(p->seg.backend_detail));
	for (const char *c = p->seg.comm; *c; c++)
		ck_assert(*c >= 0x20 && *c < 0x7f);
	ck_assert_int_eq(p->seg.comm[0], '?');
	ck_assert_int_eq(p->seg.backend_detail[3], '?');
	vkvstat_scan_free(&scan);
}
END_TEST

START_TEST(test_hostile_counts)
{
	struct vkv_stats_segment s;
	struct vkvstat_proc *p;

	/* Absurd counters are data, not a reason to fail... */
	good_segment(&s, getpid());
	s.committed_bytes = UINT64_MAX;
	s.in_use_bytes = UINT64_MAX;
	s.contexts = UINT64_MAX;
	s.step_hist[VKV_STATS_HIST_BUCKETS - 1] = UINT64_MAX;
	put(getpid(), &s, sizeof(s));
	p = scan_one(0);
	ck_assert_int_eq(p->state, VKVSTAT_SEG_LIVE);
	/* ...but a page size that no backend has is inconsistent. */
	s.page_size = 4097;
	put(getpid(), &s, sizeof(s));
	p = scan_one(0);
	ck_assert_int_eq(p->state, VKVSTAT_SEG_BAD);
	ck_assert_int_eq(p->err, -EINVAL);
	vkvstat_scan_free(&scan);
}
END_TEST

START_TEST(test_pid_mismatch)
{
	struct vkv_stats_segment s;
	struct vkvstat_proc *p;

	good_segment(&s, getppid());
	put(getpid(), &s, sizeof(s));
	p = scan_one(VKVSTAT_SCAN_CLEAN);
	ck_assert_int_eq(p->state, VKVSTAT_SEG_BAD);
	ck_assert(!p->cleaned);
	vkvstat_scan_free(&scan);
}
END_TEST

START_TEST(test_names_and_file_types)
{
	char path[128];
	struct vkv_stats_segment s;

	/* Not segment names: ignored. */
	good_segment(&s, getpid());
	snprintf(path, sizeof(path), "%s/vkv-stats.12x", dir);
	ck_assert_int_eq(mkfifo(path, 0600), 0);
	snprintf(path, sizeof(path), "%s/vkv-stats.", dir);
	close(open(path, O_CREAT | O_WRONLY, 0600));
	snprintf(path, sizeof(path), "%s/vkv-stats.99999999999", dir);
	close(open(path, O_CREAT | O_WRONLY, 0600));
	/* A FIFO with a segment's name must not block the scan. */
	snprintf(path, sizeof(path), "%s/vkv-stats.7", dir);
	ck_assert_int_eq(mkfifo(path, 0600), 0);
	/* A symlink is not followed. */
	snprintf(path, sizeof(path), "%s/vkv-stats.8", dir);
	ck_assert_int_eq(symlink("/etc/passwd", path), 0);
	vkvstat_scan_free(&scan);
	ck_assert_int_eq(vkvstat_scan_dir(dir, VKVSTAT_SCAN_CLEAN, &scan), 0);
	ck_assert_uint_eq(scan.nprocs, 2);
	ck_assert_int_eq(scan.procs[0].state, VKVSTAT_SEG_BAD);
	ck_assert_int_eq(scan.procs[1].state, VKVSTAT_SEG_BAD);
	ck_assert_uint_eq(scan.cleaned, 0);
	vkvstat_scan_free(&scan);
}
END_TEST

START_TEST(test_missing_dir)
{
	struct vkvstat_scan sc;

	ck_assert_int_eq(vkvstat_scan_dir("/nonexistent/vkvstat", 0, &sc), -ENOENT);
	ck_assert_uint_eq(sc.nprocs, 0);
	ck_assert_ptr_null(sc.procs);
}
END_TEST

START_TEST(test_dead_cleaned)
{
	struct vkv_stats_segment s;
	struct vkvstat_proc *p;
	int32_t pid = dead_pid();
	const char *path;

	good_segment(&s, pid);
	s.update_ns = now_ns() - 60ull * 1000000000ull;
	path = put(pid, &s, sizeof(s));
	/* Without the flag a dead segment is reported and left alone. */
	p = scan_one(0);
	ck_assert_int_eq(p->state, VKVSTAT_SEG_DEAD);
	ck_assert(!p->cleaned);
	ck_assert_int_eq(access(path, F_OK), 0);
	p = scan_one(VKVSTAT_SCAN_CLEAN);
	ck_assert_int_eq(p->state, VKVSTAT_SEG_DEAD);
	ck_assert(p->cleaned);
	ck_assert_uint_eq(scan.cleaned, 1);
	ck_assert_int_eq(access(path, F_OK), -1);
	vkvstat_scan_free(&scan);
}
END_TEST

START_TEST(test_dead_but_fresh_kept)
{
	/* Updated a moment ago: maybe a writer in another pid namespace. */
	struct vkv_stats_segment s;
	struct vkvstat_proc *p;
	int32_t pid = dead_pid();
	const char *path;

	good_segment(&s, pid);
	path = put(pid, &s, sizeof(s));
	p = scan_one(VKVSTAT_SCAN_CLEAN);
	ck_assert_int_eq(p->state, VKVSTAT_SEG_DEAD);
	ck_assert(!p->cleaned);
	ck_assert_int_eq(access(path, F_OK), 0);
	vkvstat_scan_free(&scan);
}
END_TEST

START_TEST(test_dead_pid_but_locked_live)
{
	/* A writer in another pid namespace: kill() cannot see its pid, but
	 * it holds its segment's lock, as libvkv does for its whole life. */
	struct vkv_stats_segment s;
	struct vkvstat_proc *p;
	int32_t pid = dead_pid();
	const char *path;
	int fd;

	good_segment(&s, pid);
	s.update_ns = now_ns() - 60ull * 1000000000ull;
	path = put(pid, &s, sizeof(s));
	fd = open(path, O_RDWR);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(flock(fd, LOCK_SH), 0);
	p = scan_one(VKVSTAT_SCAN_CLEAN);
	ck_assert_int_eq(p->state, VKVSTAT_SEG_LIVE);
	ck_assert(!p->cleaned);
	ck_assert_int_eq(access(path, F_OK), 0);
	vkvstat_scan_free(&scan);
	/* Stuck inside the seqlock too: busy, not dead. */
	s.seq = 7;
	ck_assert_int_eq(pwrite(fd, &s, sizeof(s), 0), (ssize_t)sizeof(s));
	p = scan_one(VKVSTAT_SCAN_CLEAN);
	ck_assert_int_eq(p->state, VKVSTAT_SEG_BUSY);
	ck_assert(!p->cleaned);
	vkvstat_scan_free(&scan);
	/* The lock goes with its holder: then the segment is dead. */
	close(fd);
	p = scan_one(VKVSTAT_SCAN_CLEAN);
	ck_assert_int_eq(p->state, VKVSTAT_SEG_DEAD);
	ck_assert(p->cleaned);
	vkvstat_scan_free(&scan);
}
END_TEST

START_TEST(test_dead_inside_seqlock)
{
	struct vkv_stats_segment s;
	struct vkvstat_proc *p;
	int32_t pid = dead_pid();

	good_segment(&s, pid);
	s.seq = 7; /* the writer died between its two increments */
	s.update_ns = now_ns() - 60ull * 1000000000ull;
	put(pid, &s, sizeof(s));
	p = scan_one(VKVSTAT_SCAN_CLEAN);
	ck_assert_int_eq(p->state, VKVSTAT_SEG_DEAD);
	ck_assert(p->cleaned);
	vkvstat_scan_free(&scan);
}
END_TEST

START_TEST(test_busy_live)
{
	struct vkv_stats_segment s;
	struct vkvstat_proc *p;

	good_segment(&s, getpid());
	s.seq = 1;
	put(getpid(), &s, sizeof(s));
	p = scan_one(VKVSTAT_SCAN_CLEAN);
	ck_assert_int_eq(p->state, VKVSTAT_SEG_BUSY);
	ck_assert_int_eq(p->err, -EAGAIN);
	ck_assert(!p->cleaned);
	vkvstat_scan_free(&scan);
}
END_TEST

START_TEST(test_pid_reused)
{
	/* Our pid, but the segment was created long before we started. */
	struct vkv_stats_segment s;
	struct vkvstat_proc *p;
	char why[96];

	good_segment(&s, getpid());
	s.start_ns = now_ns() - 86400ull * 1000000000ull * 365;
	s.update_ns = s.start_ns;
	ck_assert_int_eq(vkvstat_pid_alive(getpid(), s.start_ns, s.update_ns, why,
					   sizeof(why)), 0);
	ck_assert_ptr_nonnull(strstr(why, "now belongs"));
	ck_assert_int_eq(vkvstat_pid_alive(getpid(), now_ns(), now_ns(), NULL, 0), 1);
	/* Created long ago but written since we started: ours (the clock
	 * stepped forward under a live writer), not a reused pid. */
	ck_assert_int_eq(vkvstat_pid_alive(getpid(), s.start_ns, now_ns(), NULL, 0), 1);
	put(getpid(), &s, sizeof(s));
	p = scan_one(VKVSTAT_SCAN_CLEAN);
	ck_assert_int_eq(p->state, VKVSTAT_SEG_DEAD);
	ck_assert(p->cleaned);
	vkvstat_scan_free(&scan);
}
END_TEST

START_TEST(test_permission_denied)
{
	/* Root opens anything: read as nobody in a child to see EACCES. */
	struct vkv_stats_segment s;
	pid_t c;
	int status;

	good_segment(&s, getpid());
	put(getpid(), &s, sizeof(s));
	ck_assert_int_eq(chmod(dir, 0755), 0);
	if (geteuid() != 0) {
		char path[128];

		snprintf(path, sizeof(path), "%s/" VKV_STATS_PREFIX "%d", dir,
			 getpid());
		ck_assert_int_eq(chmod(path, 0), 0);
	}
	c = fork();
	ck_assert_int_ge(c, 0);
	if (c == 0) {
		struct vkvstat_scan sc;

		if (geteuid() == 0 && setuid(65534) != 0)
			_exit(3);
		if (vkvstat_scan_dir(dir, VKVSTAT_SCAN_CLEAN, &sc) != 0)
			_exit(4);
		if (sc.nprocs != 1 || sc.procs[0].state != VKVSTAT_SEG_DENIED ||
		    sc.count[VKVSTAT_SEG_DENIED] != 1 ||
		    !strstr(sc.procs[0].why, "permission"))
			_exit(5);
		vkvstat_scan_free(&sc);
		_exit(0);
	}
	ck_assert_int_eq(waitpid(c, &status, 0), c);
	ck_assert(WIFEXITED(status));
	ck_assert_int_eq(WEXITSTATUS(status), 0);
}
END_TEST

/* ------------------------------------------------ concurrency: seqlock */

struct writer {
	struct vkv_stats_segment *seg; /* shared mapping */
	int stop;
	uint64_t writes;
};

static void store(uint64_t *p, uint64_t v)
{
	/* release: cannot move before the store that made seq odd */
	__atomic_store_n(p, v, __ATOMIC_RELEASE);
}

/* libvkv's protocol: seq odd, stores, seq even. Every write keeps the
 * invariants in_use == committed / 2 and peak == ~committed. */
static void *writer_main(void *arg)
{
	struct writer *w = arg;
	struct vkv_stats_segment *s = w->seg;
	uint64_t k = 1;

	while (!__atomic_load_n(&w->stop, __ATOMIC_RELAXED)) {
		uint64_t seq = __atomic_load_n(&s->seq, __ATOMIC_RELAXED);

		__atomic_store_n(&s->seq, seq + 1, __ATOMIC_RELAXED);
		store(&s->committed_bytes, k * 4096);
		store(&s->in_use_bytes, k * 2048);
		store(&s->peak_committed, ~(k * 4096));
		store(&s->tiers[VKV_TIER_NVME].file_bytes, k);
		__atomic_store_n(&s->seq, seq + 2, __ATOMIC_RELEASE);
		k++;
		w->writes++;
	}
	return NULL;
}

START_TEST(test_concurrent_writer)
{
	struct vkv_stats_segment s, copy;
	struct writer w = { 0 };
	const char *path;
	pthread_t t;
	unsigned busy = 0, good = 0;
	int fd;

	good_segment(&s, getpid());
	s.committed_bytes = s.in_use_bytes = 0; /* k = 0 of the invariants */
	s.peak_committed = ~0ull;
	path = put(getpid(), &s, sizeof(s));
	fd = open(path, O_RDWR);
	ck_assert_int_ge(fd, 0);
	w.seg = mmap(NULL, sizeof(s), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	ck_assert_ptr_ne(w.seg, MAP_FAILED);
	ck_assert_int_eq(pthread_create(&t, NULL, writer_main, &w), 0);
	for (int i = 0; i < 20000; i++) {
		uint32_t size;
		int err = vkvstat_segment_copy(w.seg, sizeof(s), 64, &copy, &size);

		if (err == -EAGAIN) {
			busy++;
			continue;
		}
		ck_assert_int_eq(err, 0);
		ck_assert_uint_eq(copy.in_use_bytes * 2, copy.committed_bytes);
		ck_assert_uint_eq(copy.peak_committed, ~copy.committed_bytes);
		ck_assert_uint_eq(copy.tiers[VKV_TIER_NVME].file_bytes * 4096,
				  copy.committed_bytes);
		good++;
	}
	/* The scanner goes through the same path, via its own mapping. */
	for (int i = 0; i < 200; i++) {
		struct vkvstat_proc *p = scan_one(0);

		if (p->state == VKVSTAT_SEG_BUSY)
			continue;
		ck_assert_int_eq(p->state, VKVSTAT_SEG_LIVE);
		ck_assert_uint_eq(p->seg.in_use_bytes * 2, p->seg.committed_bytes);
	}
	__atomic_store_n(&w.stop, 1, __ATOMIC_RELAXED);
	pthread_join(t, NULL);
	ck_assert_uint_gt(good, 0);
	munmap(w.seg, sizeof(s));
	close(fd);
	vkvstat_scan_free(&scan);
}
END_TEST

/* A hostile owner truncates and regrows the file while it is read: the
 * reader gets SIGBUS on the vanished pages and must survive it. */
struct truncator {
	const char *path;
	int stop;
};

static void *truncator_main(void *arg)
{
	struct truncator *tr = arg;
	int fd = open(tr->path, O_RDWR);

	if (fd < 0)
		return NULL;
	while (!__atomic_load_n(&tr->stop, __ATOMIC_RELAXED)) {
		if (ftruncate(fd, 0) != 0 ||
		    ftruncate(fd, sizeof(struct vkv_stats_segment)) != 0)
			break;
	}
	close(fd);
	return NULL;
}

START_TEST(test_truncated_while_reading)
{
	struct vkv_stats_segment s;
	struct truncator tr = { 0 };
	pthread_t t;

	good_segment(&s, getpid());
	tr.path = put(getpid(), &s, sizeof(s));
	ck_assert_int_eq(pthread_create(&t, NULL, truncator_main, &tr), 0);
	for (int i = 0; i < 2000; i++) {
		struct vkvstat_proc *p = scan_one(0);

		ck_assert(p->state == VKVSTAT_SEG_BAD ||
			  p->state == VKVSTAT_SEG_LIVE);
	}
	__atomic_store_n(&tr.stop, 1, __ATOMIC_RELAXED);
	pthread_join(t, NULL);
	vkvstat_scan_free(&scan);
}
END_TEST

/* Scan with clean-up; returns the entry of the dead segment. The file a
 * new writer creates during the scan may or may not be listed too (readdir
 * need not show it): it is then live. */
static struct vkvstat_proc *scan_for_dead(void)
{
	struct vkvstat_proc *dead = NULL;

	vkvstat_scan_free(&scan);
	ck_assert_int_eq(vkvstat_scan_dir(dir, VKVSTAT_SCAN_CLEAN, &scan), 0);
	for (size_t i = 0; i < scan.nprocs; i++) {
		if (scan.procs[i].state == VKVSTAT_SEG_DEAD) {
			ck_assert_ptr_null(dead);
			dead = &scan.procs[i];
		} else {
			ck_assert_int_eq(scan.procs[i].state, VKVSTAT_SEG_LIVE);
		}
	}
	ck_assert_ptr_nonnull(dead);
	return dead;
}

/* A dead segment, old enough to be removed; returns its path. */
static const char *put_dead(int32_t pid)
{
	struct vkv_stats_segment s;

	good_segment(&s, pid);
	s.update_ns = now_ns() - 60ull * 1000000000ull;
	return put(pid, &s, sizeof(s));
}

START_TEST(test_clean_name_taken_before_unlink)
{
	/* The reader has found the segment dead and checked everything; just
	 * before it unlinks, a new process that got the dead pid creates its
	 * own segment under that name. Unlinking by name would remove the
	 * new, live segment; the dead one must go, the live one stay. */
	int32_t pid = dead_pid();
	const char *path = put_dead(pid);
	struct vkvstat_proc *p;

	take_over_pid = pid;
	take_over_at = TAKE_OVER_UNLINKAT;
	p = scan_for_dead();
	ck_assert_int_eq(take_over_at, TAKE_OVER_NONE); /* the race happened */
	ck_assert(p->cleaned);
	ck_assert_uint_eq(scan.cleaned, 1);
	assert_taker_in_place(path);
	ck_assert_uint_eq(dir_entries(), 1);
	vkvstat_scan_free(&scan);
}
END_TEST

START_TEST(test_clean_name_taken_before_rename)
{
	/* The new process takes the name just before the reader renames the
	 * file aside: the reader takes the live segment, finds it is not the
	 * file it read, and puts it back. */
	int32_t pid = dead_pid();
	const char *path = put_dead(pid);
	struct vkvstat_proc *p;

	take_over_pid = pid;
	take_over_at = TAKE_OVER_RENAMEAT;
	p = scan_for_dead();
	ck_assert_int_eq(take_over_at, TAKE_OVER_NONE);
	ck_assert(!p->cleaned);
	ck_assert_uint_eq(scan.cleaned, 0);
	assert_taker_in_place(path);
	ck_assert_uint_eq(dir_entries(), 1);
	vkvstat_scan_free(&scan);
}
END_TEST

/* The building blocks, vkv__stats_remove_dead with judges of our own. */

struct judged {
	const char *path; /* the public name, empty while judged */
	struct stat was;  /* the file expected aside */
	bool verdict;     /* what the judge answers */
	bool take_name;   /* a new writer takes the name meanwhile */
	int calls;
};

static bool judge(int fd, void *arg)
{
	struct judged *j = arg;
	struct stat st;

	j->calls++;
	ck_assert_int_eq(fstat(fd, &st), 0);
	ck_assert_uint_eq(st.st_ino, j->was.st_ino);
	ck_assert_int_eq(access(j->path, F_OK), -1);
	if (j->take_name)
		take_over();
	return j->verdict && flock(fd, LOCK_EX | LOCK_NB) == 0;
}

static int remove_dead(const char *name, struct judged *j)
{
	int dfd = open(dir, O_RDONLY | O_DIRECTORY), err;

	ck_assert_int_ge(dfd, 0);
	err = vkv__stats_remove_dead(dfd, name, judge, j);
	close(dfd);
	return err;
}

START_TEST(test_remove_dead_file)
{
	struct judged j = { .verdict = true };
	int32_t pid = dead_pid();
	char name[64];

	j.path = put_dead(pid);
	ck_assert_int_eq(stat(j.path, &j.was), 0);
	snprintf(name, sizeof(name), VKV_STATS_PREFIX "%d", pid);
	ck_assert_int_eq(remove_dead(name, &j), 0);
	ck_assert_int_eq(j.calls, 1);
	ck_assert_uint_eq(dir_entries(), 0);
	/* Gone already: the judge is not asked. */
	ck_assert_int_eq(remove_dead(name, &j), -ENOENT);
	ck_assert_int_eq(j.calls, 1);
}
END_TEST

START_TEST(test_remove_live_file_put_back)
{
	/* A live writer holds its lock: judged alive aside, back intact. */
	struct judged j = { .verdict = true };
	char name[64], path[128];

	take_over_pid = getpid();
	take_over();
	ck_assert_int_eq(fstat(taker_fd, &j.was), 0);
	snprintf(name, sizeof(name), VKV_STATS_PREFIX "%d", take_over_pid);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	j.path = path;
	ck_assert_int_eq(remove_dead(name, &j), -EBUSY);
	ck_assert_int_eq(j.calls, 1);
	assert_taker_in_place(path);
	ck_assert_uint_eq(dir_entries(), 1);
}
END_TEST

START_TEST(test_remove_put_back_never_replaces)
{
	/* Judged alive (or not judged), while a new writer took the name:
	 * the newer file keeps the name and ours goes (that writer's own
	 * creation would have replaced it). Nothing is left aside. */
	struct judged j = { .verdict = false, .take_name = true };
	int32_t pid = dead_pid();
	char name[64];

	j.path = put_dead(pid);
	ck_assert_int_eq(stat(j.path, &j.was), 0);
	take_over_pid = pid;
	snprintf(name, sizeof(name), VKV_STATS_PREFIX "%d", pid);
	ck_assert_int_eq(remove_dead(name, &j), -EBUSY);
	ck_assert_int_eq(j.calls, 1);
	assert_taker_in_place(j.path);
	ck_assert_uint_eq(dir_entries(), 1);
}
END_TEST

static Suite *reader_suite(void)
{
	Suite *s = suite_create("vkvstat_segment_reader");
	TCase *tc = tcase_create("reader");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_valid_live);
	tcase_add_test(tc, test_larger_writer_accepted);
	tcase_add_test(tc, test_wrong_magic);
	tcase_add_test(tc, test_wrong_version);
	tcase_add_test(tc, test_wrong_size);
	tcase_add_test(tc, test_truncated);
	tcase_add_test(tc, test_hostile_strings);
	tcase_add_test(tc, test_hostile_counts);
	tcase_add_test(tc, test_pid_mismatch);
	tcase_add_test(tc, test_names_and_file_types);
	tcase_add_test(tc, test_missing_dir);
	tcase_add_test(tc, test_dead_cleaned);
	tcase_add_test(tc, test_dead_but_fresh_kept);
	tcase_add_test(tc, test_dead_pid_but_locked_live);
	tcase_add_test(tc, test_dead_inside_seqlock);
	tcase_add_test(tc, test_busy_live);
	tcase_add_test(tc, test_pid_reused);
	tcase_add_test(tc, test_permission_denied);
	suite_add_tcase(s, tc);

	/* Removing dead segments while new writers take their names. */
	tc = tcase_create("clean");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_clean_name_taken_before_unlink);
	tcase_add_test(tc, test_clean_name_taken_before_rename);
	tcase_add_test(tc, test_remove_dead_file);
	tcase_add_test(tc, test_remove_live_file_put_back);
	tcase_add_test(tc, test_remove_put_back_never_replaces);
	suite_add_tcase(s, tc);

	/* Threads racing the reader: tagged, so valgrind can leave them out. */
	tc = tcase_create("race");
	tcase_set_tags(tc, "race");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_concurrent_writer);
	tcase_add_test(tc, test_truncated_while_reading);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(reader_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
