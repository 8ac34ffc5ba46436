// SPDX-License-Identifier: MIT
/*
 * stats.c - the process's statistics segment (layout: include/vkv_stats.h).
 *
 * One segment per process, shared by all its contexts: a file
 * $VKV_STATS_DIR/vkv-stats.<pid> created 0600 with O_EXCL semantics (a stale
 * file of a dead process with our pid is replaced), mapped MAP_SHARED.
 * Until a context asks for publishing, and when the file cannot be made,
 * updates go to a private copy so that writers never need to check.
 *
 * Writers hold `lock` and bump `seq` to odd and back to even around their
 * stores; readers in other processes retry on odd or changed `seq`. The
 * file is unlinked at exit.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct vkv_stats_segment private_seg;
static struct vkv_stats_segment *seg = &private_seg; /* (lock) */
static char seg_path[PATH_MAX];                     /* (lock) */
static pid_t seg_pid;                               /* (lock) */

uint64_t vkv__now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static uint64_t realtime_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

struct vkv_stats_segment *vkv__stats_begin(void)
{
	pthread_mutex_lock(&lock);
	/* acq_rel: the stores that follow cannot move above the odd seq. */
	atomic_fetch_add_explicit((_Atomic uint64_t *)&seg->seq, 1,
				  memory_order_acq_rel);
	return seg;
}

void vkv__stats_end(void)
{
	seg->update_ns = realtime_ns();
	/* release: the stores above cannot move below the even seq. */
	atomic_fetch_add_explicit((_Atomic uint64_t *)&seg->seq, 1,
				  memory_order_release);
	pthread_mutex_unlock(&lock);
}

static void unlink_segment(void)
{
	pthread_mutex_lock(&lock);
	if (seg != &private_seg && seg_pid == getpid())
		unlink(seg_path);
	pthread_mutex_unlock(&lock);
}

/* After fork the child must not write into the parent's segment. */
static void after_fork_child(void)
{
	pthread_mutex_init(&lock, NULL);
	if (seg != &private_seg) {
		memcpy(&private_seg, seg, sizeof(private_seg));
		private_seg.seq &= ~1ULL;
		munmap(seg, sizeof(*seg));
		seg = &private_seg;
	}
}

static void read_comm(char *buf, size_t len)
{
	FILE *f = fopen("/proc/self/comm", "re");

	buf[0] = '\0';
	if (f) {
		if (fgets(buf, (int)len, f))
			buf[strcspn(buf, "\n")] = '\0';
		fclose(f);
	}
}

static struct vkv_stats_segment *create_file(const char *dir)
{
	struct vkv_stats_segment *m;
	int fd;

	if (snprintf(seg_path, sizeof(seg_path), "%s/%s%d", dir, VKV_STATS_PREFIX,
		     (int)getpid()) >= (int)sizeof(seg_path))
		return NULL;
	/* A file with our pid belongs to a dead process: replace it. */
	unlink(seg_path);
	fd = open(seg_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
		  0600);
	if (fd < 0)
		return NULL;
	if (ftruncate(fd, sizeof(*m)) != 0) {
		close(fd);
		unlink(seg_path);
		return NULL;
	}
	m = mmap(NULL, sizeof(*m), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (m == MAP_FAILED) {
		unlink(seg_path);
		return NULL;
	}
	return m;
}

void vkv__stats_open(enum vkv_backend_kind backend, const char *detail,
		     uint64_t page_size)
{
	static bool registered;
	struct vkv_stats_segment *m;
	const char *dir = vkv__opt_str(VKV_OPT_STATS_DIR);

	pthread_mutex_lock(&lock);
	if (seg != &private_seg && seg_pid == getpid()) {
		pthread_mutex_unlock(&lock);
		return;
	}
	if (private_seg.magic == 0) {
		private_seg.magic = VKV_STATS_MAGIC;
		private_seg.version = VKV_STATS_VERSION;
		private_seg.size = sizeof(private_seg);
		private_seg.pid = getpid();
		private_seg.backend = backend;
		private_seg.start_ns = realtime_ns();
		private_seg.page_size = page_size;
		read_comm(private_seg.comm, sizeof(private_seg.comm));
		snprintf(private_seg.backend_detail,
			 sizeof(private_seg.backend_detail), "%s %s",
			 vkv_backend_name(backend), detail);
	}
	m = create_file(dir);
	if (!m) {
		pthread_mutex_unlock(&lock);
		vkv__warn("stats: cannot create %s (%s); vkvstat will not see "
			  "this process", seg_path, strerror(errno));
		return;
	}
	/* Carry over what was counted privately, then switch. */
	memcpy(m, &private_seg, sizeof(*m));
	m->seq &= ~1ULL;
	m->pid = getpid();
	seg = m;
	seg_pid = getpid();
	if (!registered) {
		registered = true;
		atexit(unlink_segment);
		pthread_atfork(NULL, NULL, after_fork_child);
	}
	pthread_mutex_unlock(&lock);
}

void vkv__stats_step(uint64_t ns)
{
	struct vkv_stats_segment *s = vkv__stats_begin();
	unsigned b = 0;

	while (b + 1 < VKV_STATS_HIST_BUCKETS && (ns >> (b + 1)))
		b++;
	s->steps++;
	s->step_ns_total += ns;
	if (ns > s->step_ns_max)
		s->step_ns_max = ns;
	s->step_hist[b]++;
	vkv__stats_end();
}
