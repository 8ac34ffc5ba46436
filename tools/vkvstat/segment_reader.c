// SPDX-License-Identifier: MIT
/*
 * segment_reader.c - find, map, copy and validate vkv stats segments.
 *
 * See segment_reader.h for the contract. Three things here are less obvious:
 *
 * The copy is made with 64-bit atomic loads, not memcpy: the writer stores
 * into the same words at the same time, and the seqlock only tells us
 * afterwards whether the copy must be thrown away. Word-sized atomic loads
 * make that race well defined (and quiet under TSan). They are acquire
 * loads so that the second read of `seq` cannot move before any of them;
 * that is what a fence would do, and TSan does not model fences. On x86
 * an acquire load is a plain load.
 *
 * A segment can be truncated by its owner while it is mapped here; touching
 * a page past the new end raises SIGBUS. While a copy is in progress a
 * SIGBUS handler maps a zero page over the faulting address and lets the
 * copy finish; the file size is checked again afterwards and the copy is
 * rejected. A SIGBUS anywhere else gets the default action, as before.
 *
 * A dead segment is removed exactly as libvkv's own sweep removes one, by
 * the same code (vkv__stats_remove_dead, runtime/stats_remove.c, whose
 * object is linked here): judged and unlinked under a private name, never
 * by its public name, which a new process with the same pid may have
 * taken meanwhile.
 */
#include "segment_reader.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

/* At most this many segment files are looked at in one scan. */
#define VKVSTAT_MAX_SEGMENTS 4096
/* A segment written this recently is never unlinked, even when its pid is
 * not visible: its writer may live in another pid namespace. */
#define VKVSTAT_FRESH_NS (5ull * 1000000000ull)
/* Slack when comparing a process's start time with a segment's creation
 * time: /proc/stat's btime has one-second resolution. */
#define VKVSTAT_START_SLACK_NS (2ull * 1000000000ull)

_Static_assert(sizeof(struct vkv_stats_segment) % 8 == 0,
	       "the segment is copied in 64-bit words");

/* ------------------------------------------------------------ SIGBUS guard */

static __thread volatile uintptr_t guard_base;
static __thread volatile size_t guard_len;
static pthread_once_t guard_once = PTHREAD_ONCE_INIT;
static long guard_page; /* page size, read before the handler is installed */

static void guard_handler(int sig, siginfo_t *si, void *uctx)
{
	uintptr_t a = (uintptr_t)si->si_addr;
	long pg = guard_page;

	(void)uctx;
	if (guard_len && a >= guard_base && a < guard_base + guard_len) {
		void *page = (void *)(a & ~((uintptr_t)pg - 1));
		if (mmap(page, (size_t)pg, PROT_READ,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) !=
		    MAP_FAILED)
			return;
	}
	signal(sig, SIG_DFL); /* not ours: fault again, default action */
}

static void guard_install(void)
{
	struct sigaction sa;

	guard_page = sysconf(_SC_PAGESIZE);
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = guard_handler;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, NULL);
}

/* ------------------------------------------------------------- the copy */

static uint64_t load_seq(const void *mem, int order)
{
	const uint64_t *p = (const uint64_t *)((const char *)mem +
					       offsetof(struct vkv_stats_segment, seq));
	return __atomic_load_n(p, order);
}

static void copy_words(uint64_t *dst, const void *mem, size_t n)
{
	const uint64_t *src = mem;

	for (size_t i = 0; i < n / 8; i++)
		dst[i] = __atomic_load_n(&src[i], __ATOMIC_ACQUIRE);
}

static bool page_size_ok(uint64_t ps)
{
	return ps == 0 || ((ps & (ps - 1)) == 0 && ps <= (1ull << 30));
}

int vkvstat_segment_copy(const void *mem, size_t len, unsigned retries,
			 struct vkv_stats_segment *out, uint32_t *writer_size)
{
	const size_t n = VKVSTAT_SEG_V1_SIZE;
	bool settled = false;

	*writer_size = 0;
	if (!mem || len < n || ((uintptr_t)mem & 7))
		return -ENODATA;
	if (retries == 0)
		retries = 1;
	for (unsigned i = 0; i < retries; i++) {
		uint64_t s1 = load_seq(mem, __ATOMIC_ACQUIRE);
		if (s1 & 1) {
			if (i & 1)
				sched_yield();
			continue;
		}
		copy_words((uint64_t *)out, mem, n);
		if (load_seq(mem, __ATOMIC_RELAXED) == s1) {
			settled = true;
			break;
		}
	}
	if (!settled) {
		/* Tell "never stable" from "not a segment at all". */
		copy_words((uint64_t *)out, mem, n);
		if (out->magic != VKV_STATS_MAGIC)
			return -EBADMSG;
		return -EAGAIN;
	}
	if (out->magic != VKV_STATS_MAGIC)
		return -EBADMSG;
	if (out->version != VKV_STATS_VERSION)
		return -EPROTO;
	*writer_size = out->size;
	if (out->size < n || out->size > VKVSTAT_SEG_MAX_SIZE || out->size > len)
		return -EMSGSIZE;
	if (out->pid <= 0 || !page_size_ok(out->page_size))
		return -EINVAL;
	vkvstat_segment_sanitize(out);
	return 0;
}

static void sanitize_str(char *s, size_t cap)
{
	size_t i;

	for (i = 0; i < cap - 1 && s[i]; i++)
		if (!isprint((unsigned char)s[i]) || (unsigned char)s[i] > 0x7e)
			s[i] = '?';
	memset(s + i, 0, cap - i);
}

void vkvstat_segment_sanitize(struct vkv_stats_segment *seg)
{
	sanitize_str(seg->comm, sizeof(seg->comm));
	sanitize_str(seg->backend_detail, sizeof(seg->backend_detail));
}

/* --------------------------------------------------------- process checks */

static uint64_t now_realtime_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Boot time from /proc/stat, in seconds of CLOCK_REALTIME; 0 if unknown. */
static uint64_t boot_time_s(void)
{
	char line[256];
	uint64_t bt = 0;
	FILE *f = fopen("/proc/stat", "re");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "btime %" SCNu64, &bt) == 1)
			break;
	fclose(f);
	return bt;
}

/* State letter and start time (CLOCK_REALTIME ns) of a pid from /proc.
 * Returns 0, or -ENOENT when /proc has no such entry (or no /proc). */
static int proc_start(int32_t pid, char *state, uint64_t *start_ns)
{
	char path[64], buf[1024];
	unsigned long long ticks = 0;
	const char *p;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -ENOENT;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -ENOENT;
	buf[n] = 0;
	/* comm may hold spaces and parentheses: fields resume after the last ')' */
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 1, " %c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u "
			 "%*u %*u %*d %*d %*d %*d %*d %*d %llu", state, &ticks) != 2)
		return -ENOENT;
	long hz = sysconf(_SC_CLK_TCK);
	uint64_t bt = boot_time_s();
	if (hz <= 0 || bt == 0)
		return -ENOENT;
	*start_ns = bt * 1000000000ull + ticks * (1000000000ull / (uint64_t)hz);
	return 0;
}

int vkvstat_pid_alive(int32_t pid, uint64_t start_ns, uint64_t update_ns,
		      char *why, size_t whylen)
{
	char st = 0, dummy[1];
	uint64_t pstart = 0;

	if (!why) {
		why = dummy;
		whylen = sizeof(dummy);
	}
	why[0] = 0;
	if (pid <= 0) {
		snprintf(why, whylen, "invalid pid %d", pid);
		return 0;
	}
	if (kill(pid, 0) < 0 && errno == ESRCH) {
		snprintf(why, whylen, "process %d has exited", pid);
		return 0;
	}
	if (proc_start(pid, &st, &pstart) < 0)
		return 1; /* exists; /proc cannot tell more */
	if (st == 'Z' || st == 'X') {
		snprintf(why, whylen, "process %d is a zombie", pid);
		return 0;
	}
	if (start_ns && pstart > start_ns + VKVSTAT_START_SLACK_NS &&
	    pstart > update_ns + VKVSTAT_START_SLACK_NS) {
		snprintf(why, whylen,
			 "pid %d now belongs to a process started %" PRIu64
			 " s after the segment was created",
			 pid, (uint64_t)((pstart - start_ns) / 1000000000ull));
		return 0;
	}
	return 1;
}

/* ----------------------------------------------------------------- scan */

const char *vkvstat_stats_dir(const char *arg)
{
	const char *e;

	if (arg && *arg)
		return arg;
	e = getenv("VKV_STATS_DIR");
	return e && *e ? e : "/dev/shm";
}

const char *vkvstat_state_name(enum vkvstat_seg_state st)
{
	static const char *const names[VKVSTAT_SEG_STATE_COUNT] = {
		"live", "dead", "denied", "bad", "busy",
	};
	return (unsigned)st < VKVSTAT_SEG_STATE_COUNT ? names[st] : "?";
}

/* pid from "vkv-stats.<digits>", or 0 when the name is not a segment's. */
static int32_t name_pid(const char *name)
{
	size_t pl = strlen(VKV_STATS_PREFIX);
	const char *d = name + pl;
	long long v = 0;

	if (strncmp(name, VKV_STATS_PREFIX, pl) != 0 || !*d || strlen(d) > 10)
		return 0;
	for (; *d; d++) {
		if (*d < '0' || *d > '9')
			return 0;
		v = v * 10 + (*d - '0');
	}
	return v > 0 && v <= INT32_MAX ? (int32_t)v : 0;
}

static const char *copy_err_text(int err)
{
	switch (err) {
	case -EBADMSG: return "wrong magic";
	case -EPROTO: return "unsupported version";
	case -EMSGSIZE: return "size field out of range";
	case -ENODATA: return "file shorter than a segment";
	case -EAGAIN: return "writer held the seqlock through every retry";
	case -EINVAL: return "inconsistent contents";
	default: return strerror(-err);
	}
}

static void set_state(struct vkvstat_proc *p, enum vkvstat_seg_state st,
		      int err, const char *why)
{
	p->state = st;
	p->err = err;
	snprintf(p->why, sizeof(p->why), "%s", why ? why : "");
}

/* Map, copy under the guard, and check the size again. */
static int read_mapped(int fd, size_t len, struct vkvstat_proc *p)
{
	size_t maplen = len < VKVSTAT_SEG_MAX_SIZE ? len : VKVSTAT_SEG_MAX_SIZE;
	struct stat st2;
	void *m;
	int err;

	m = mmap(NULL, maplen, PROT_READ, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		return -errno;
	pthread_once(&guard_once, guard_install);
	guard_base = (uintptr_t)m;
	guard_len = maplen;
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	err = vkvstat_segment_copy(m, maplen, VKVSTAT_SEQ_RETRIES, &p->seg,
				   &p->writer_size);
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	guard_len = 0;
	munmap(m, maplen);
	if (fstat(fd, &st2) == 0 && (size_t)st2.st_size < VKVSTAT_SEG_V1_SIZE)
		return -ENODATA; /* truncated while we read it */
	return err;
}

/* Does a live writer hold the segment's flock()? libvkv keeps a shared
 * lock on its segment for its whole life; the kernel drops it when the
 * process dies. It tells a live writer that kill() cannot see (another pid
 * namespace) from a dead one. Our exclusive try is dropped at once. */
static bool writer_holds_lock(int fd)
{
	if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
		flock(fd, LOCK_UN);
		return false;
	}
	return errno == EWOULDBLOCK;
}

/* May this dead segment be removed? Only ours, never one written moments
 * ago (its writer may be in another pid namespace, where our kill() cannot
 * see it). */
static bool may_remove(const struct vkvstat_proc *p, const struct stat *st)
{
	if (st->st_uid != geteuid())
		return false;
	return !p->seg.update_ns ||
	       p->seg.update_ns + VKVSTAT_FRESH_NS <= now_realtime_ns();
}

/* The judge of vkv__stats_remove_dead: is the file renamed aside still the
 * very file we read and found dead (arg: its struct stat), with nobody
 * holding its lock? Checking the name instead and unlinking by name would
 * race with a new process that reuses the pid and creates its segment
 * under that name between the check and the unlink: we would remove its
 * live segment. Our lock is held until the file is gone or back. */
static bool still_the_dead_file(int fd, void *arg)
{
	const struct stat *was = arg;
	struct stat now;

	if (fstat(fd, &now) != 0 || now.st_dev != was->st_dev ||
	    now.st_ino != was->st_ino)
		return false;
	return flock(fd, LOCK_EX | LOCK_NB) == 0;
}

static void read_one(int dfd, const char *name, int32_t pid, unsigned flags,
		     struct vkvstat_proc *p)
{
	struct stat st;
	char why[96];
	int fd, err;

	memset(p, 0, sizeof(*p));
	snprintf(p->name, sizeof(p->name), "%s", name);
	p->pid = pid;
	fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		err = -errno;
		if (err == -EACCES || err == -EPERM) {
			if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0)
				p->uid = st.st_uid;
			snprintf(why, sizeof(why), "permission denied (owner uid %u)",
				 (unsigned)p->uid);
			set_state(p, VKVSTAT_SEG_DENIED, err, why);
		} else {
			set_state(p, VKVSTAT_SEG_BAD, err, strerror(-err));
		}
		return;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		set_state(p, VKVSTAT_SEG_BAD, -EINVAL, "not a regular file");
		goto out_close;
	}
	p->uid = st.st_uid;
	if ((size_t)st.st_size < VKVSTAT_SEG_V1_SIZE) {
		set_state(p, VKVSTAT_SEG_BAD, -ENODATA, copy_err_text(-ENODATA));
		goto out_close;
	}
	err = read_mapped(fd, (size_t)st.st_size, p);
	if (err == -EAGAIN) {
		/* A writer that died inside its write leaves seq odd forever. */
		if (kill(pid, 0) < 0 && errno == ESRCH && !writer_holds_lock(fd)) {
			set_state(p, VKVSTAT_SEG_DEAD, 0,
				  "process has exited (seqlock left held)");
			goto out_dead;
		}
		set_state(p, VKVSTAT_SEG_BUSY, err, copy_err_text(err));
		goto out_close;
	}
	if (err) {
		set_state(p, VKVSTAT_SEG_BAD, err, copy_err_text(err));
		goto out_close;
	}
	if (p->seg.pid != pid) {
		snprintf(why, sizeof(why), "holds pid %d, file is named for %d",
			 p->seg.pid, pid);
		set_state(p, VKVSTAT_SEG_BAD, -EINVAL, why);
		goto out_close;
	}
	if (vkvstat_pid_alive(pid, p->seg.start_ns, p->seg.update_ns, why,
			      sizeof(why)) || writer_holds_lock(fd)) {
		set_state(p, VKVSTAT_SEG_LIVE, 0, NULL);
		goto out_close;
	}
	set_state(p, VKVSTAT_SEG_DEAD, 0, why);
out_dead:
	if ((flags & VKVSTAT_SCAN_CLEAN) && may_remove(p, &st) &&
	    vkv__stats_remove_dead(dfd, name, still_the_dead_file, &st) == 0)
		p->cleaned = true;
out_close:
	close(fd);
}

static int cmp_proc(const void *a, const void *b)
{
	const struct vkvstat_proc *x = a, *y = b;

	return (x->pid > y->pid) - (x->pid < y->pid);
}

int vkvstat_scan_dir(const char *dir, unsigned flags, struct vkvstat_scan *out)
{
	struct vkvstat_proc *procs = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	DIR *d;
	int err = 0;

	memset(out, 0, sizeof(*out));
	d = opendir(dir);
	if (!d)
		return -errno;
	while ((de = readdir(d)) != NULL && n < VKVSTAT_MAX_SEGMENTS) {
		int32_t pid = name_pid(de->d_name);
		if (!pid)
			continue;
		if (n == cap) {
			size_t nc = cap ? cap * 2 : 16;
			void *np = realloc(procs, nc * sizeof(*procs));
			if (!np) {
				err = -ENOMEM;
				goto out_free;
			}
			procs = np;
			cap = nc;
		}
		read_one(dirfd(d), de->d_name, pid, flags, &procs[n]);
		out->count[procs[n].state]++;
		out->cleaned += procs[n].cleaned;
		n++;
	}
	closedir(d);
	if (n)
		qsort(procs, n, sizeof(*procs), cmp_proc);
	out->procs = procs;
	out->nprocs = n;
	return 0;

out_free:
	closedir(d);
	free(procs);
	memset(out, 0, sizeof(*out));
	return err;
}

void vkvstat_scan_free(struct vkvstat_scan *s)
{
	free(s->procs);
	memset(s, 0, sizeof(*s));
}
