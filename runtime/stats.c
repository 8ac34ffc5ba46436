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
 *
 * A process killed by SIGKILL cannot unlink its file. So each process,
 * once, right after creating its own segment, sweeps the directory for
 * segments of dead processes (sweep_dead_segments below). Its writer keeps
 * the file flock()ed for its whole life (the kernel drops the lock when the
 * process dies), which tells a live writer apart from a dead one even when
 * the writer lives in another pid namespace, where kill() cannot see it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
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
/* Open on the segment file, holding a shared flock(): "its writer lives". */
static int seg_fd = -1;                             /* (lock) */
static pid_t swept_pid;                             /* (lock) */

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
	/* The parent's lock stays: it belongs to the open file description,
	 * which the parent still holds. */
	if (seg_fd >= 0) {
		close(seg_fd);
		seg_fd = -1;
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
	/* Locked before it holds anything: a sweeper never sees a valid
	 * segment of a live writer unlocked. It may hold the file for a
	 * moment (judging it, finding it empty): wait for that. Without the
	 * lock (a file system that refuses flock) sweepers there cannot lock
	 * it either, and keep it. */
	while (flock(fd, LOCK_SH) != 0) {
		if (errno != EINTR) {
			vkv__debug("stats: cannot lock %s (%s)", seg_path,
				   strerror(errno));
			break;
		}
	}
	if (ftruncate(fd, sizeof(*m)) != 0)
		goto err_unlink;
	m = mmap(NULL, sizeof(*m), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		goto err_unlink;
	seg_fd = fd;
	return m;

err_unlink:
	close(fd);
	unlink(seg_path);
	return NULL;
}

/* ------------------------------------------------- sweeping dead segments
 *
 * A segment is swept only when all of this holds for the very file that is
 * unlinked: its name is VKV_STATS_PREFIX<pid> and not ours, it is a regular
 * file of our effective uid, it starts with a valid header (magic, version,
 * the same pid), nobody holds its flock() (its writer is dead, whatever pid
 * namespace it lived in), and kill(pid, 0) fails with ESRCH (no process has
 * that pid now). Only kill() and flock() decide: no /proc needed.
 *
 * The race: between the checks and the unlink, a new process may get the
 * dead pid and create its segment under the same name. Unlinking by name
 * would then remove the new, live segment. So the file is checked and
 * unlinked only under a name of our own it was first renamed to, and put
 * back when it is not dead: vkv__stats_remove_dead (stats_remove.c), which
 * vkvstat's clean-up shares.
 */

/* At most this many segment files are looked at by one sweep. */
#define SWEEP_MAX_FILES 4096

/* pid of a segment's file name, or 0 when it is not a segment's name. */
static pid_t segment_name_pid(const char *name)
{
	size_t pl = strlen(VKV_STATS_PREFIX);
	const char *d = name + pl;
	long long v = 0;

	/* Exactly as create_file writes it: no sign, no leading zero. */
	if (strncmp(name, VKV_STATS_PREFIX, pl) != 0 || *d < '1' || *d > '9' ||
	    strlen(d) > 10)
		return 0;
	for (; *d; d++) {
		if (*d < '0' || *d > '9')
			return 0;
		v = v * 10 + (*d - '0');
	}
	return v > 0 && v <= INT_MAX ? (pid_t)v : 0;
}

static bool pid_gone(pid_t pid)
{
	return kill(pid, 0) == -1 && errno == ESRCH;
}

/* Is the file open at fd the segment of a dead process, *(pid_t *)arg? */
static bool segment_dead(int fd, void *arg)
{
	const pid_t pid = *(const pid_t *)arg;
	struct vkv_stats_segment h;
	const size_t n = offsetof(struct vkv_stats_segment, start_ns);
	struct stat st;

	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
	    st.st_uid != geteuid() || st.st_size < (off_t)sizeof(h))
		return false;
	if (pread(fd, &h, n, 0) != (ssize_t)n || h.magic != VKV_STATS_MAGIC ||
	    h.version != VKV_STATS_VERSION || h.pid != pid)
		return false;
	/* Held (shared) by a live writer; ours is dropped when the file is
	 * gone or back. */
	if (flock(fd, LOCK_EX | LOCK_NB) != 0)
		return false;
	return pid_gone(pid);
}

static void sweep_one(int dfd, pid_t pid)
{
	char name[NAME_MAX + 1];
	struct stat st;

	snprintf(name, sizeof(name), "%s%d", VKV_STATS_PREFIX, (int)pid);
	/* A cheap look before taking the name away from a possible reader. */
	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
	    !S_ISREG(st.st_mode) || st.st_uid != geteuid())
		return;
	if (vkv__stats_remove_dead(dfd, name, segment_dead, &pid) == 0)
		vkv__debug("stats: removed %s of a dead process", name);
}

/* Remove the segments of dead processes of our user from `dir`. The
 * candidates are listed first and handled after the listing: a file put
 * back during readdir() could come up again (and again). */
static void sweep_dead_segments(const char *dir)
{
	pid_t *dead = NULL;
	size_t n = 0, cap = 0;
	unsigned seen = 0;
	struct dirent *de;
	DIR *d;
	int dfd;

	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return;
	d = fdopendir(dfd);
	if (!d) {
		close(dfd);
		return;
	}
	while ((de = readdir(d)) != NULL && seen < SWEEP_MAX_FILES) {
		pid_t pid = segment_name_pid(de->d_name);

		if (!pid)
			continue;
		seen++;
		/* A cheap first look; sweep_one judges the file itself. */
		if (pid == getpid() || !pid_gone(pid))
			continue;
		if (n == cap) {
			size_t nc = cap ? 2 * cap : 16;
			pid_t *p = realloc(dead, nc * sizeof(*p));

			if (!p)
				break;
			dead = p;
			cap = nc;
		}
		dead[n++] = pid;
	}
	for (size_t i = 0; i < n; i++)
		sweep_one(dfd, dead[i]);
	free(dead);
	closedir(d); /* closes dfd */
}

void vkv__stats_open(enum vkv_backend_kind backend, const char *detail,
		     uint64_t page_size)
{
	static bool registered;
	struct vkv_stats_segment *m;
	const char *dir = vkv__opt_str(VKV_OPT_STATS_DIR);
	bool sweep;

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
	sweep = swept_pid != seg_pid;
	swept_pid = seg_pid;
	pthread_mutex_unlock(&lock);
	/* Outside the lock: stats writers of other threads need not wait. */
	if (sweep)
		sweep_dead_segments(dir);
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
