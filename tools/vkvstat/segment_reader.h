// SPDX-License-Identifier: MIT
/*
 * segment_reader.h - vkvstat's reader of the per-process stats segments.
 *
 * Every process using libvkv publishes $VKV_STATS_DIR/vkv-stats.<pid>
 * (layout: include/vkv_stats.h). This reader finds those files, maps each
 * read-only and takes a consistent copy under the writer's seqlock without
 * ever stopping the writer. Everything in a segment is untrusted input: the
 * writer may be another user's program, a crashed process, an older or newer
 * libvkv, or something hostile. So the reader checks magic, version and
 * size, bounds every string, survives a file truncated under it (SIGBUS),
 * and never believes a pid without asking the kernel whether the process
 * that wrote the segment is still the one that owns that pid; a segment
 * whose flock() its writer still holds is live whatever its pid says.
 *
 * Conventions as in libvkv: 0 or a negative errno, nothing exits or aborts.
 */
#ifndef VKVSTAT_SEGMENT_READER_H
#define VKVSTAT_SEGMENT_READER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "vkv_stats.h"

/* Bytes of version 1 of the segment: the least a reader accepts. */
#define VKVSTAT_SEG_V1_SIZE ((uint32_t)sizeof(struct vkv_stats_segment))
/* Largest `size` a writer may claim; more is treated as hostile. */
#define VKVSTAT_SEG_MAX_SIZE (1u << 20)
/* Seqlock attempts before a busy segment is reported as -EAGAIN. */
#define VKVSTAT_SEQ_RETRIES 1000u

/* What became of one file found in the directory. */
enum vkvstat_seg_state {
	VKVSTAT_SEG_LIVE = 0, /* valid, its process is alive */
	VKVSTAT_SEG_DEAD,     /* valid, its process is gone (or pid reused) */
	VKVSTAT_SEG_DENIED,   /* cannot be opened: permission */
	VKVSTAT_SEG_BAD,      /* rejected: magic, version, size, contents */
	VKVSTAT_SEG_BUSY,     /* the writer never let go of the seqlock */
	VKVSTAT_SEG_STATE_COUNT
};

/* One segment file and, when it could be read, its validated copy. */
struct vkvstat_proc {
	enum vkvstat_seg_state state;
	int err;               /* negative errno of a rejection, else 0 */
	char why[96];          /* one line: why it was rejected / declared dead */
	char name[64];         /* file name, printable ASCII */
	int32_t pid;           /* from the file name */
	uid_t uid;             /* owner of the file */
	bool cleaned;          /* DEAD and unlinked by this scan */
	uint32_t writer_size;  /* `size` the writer claims */
	/* Copy of the segment (fields this reader knows; zero beyond the
	 * writer's size). comm and backend_detail are NUL-terminated and
	 * printable ASCII after vkvstat_segment_sanitize(). */
	struct vkv_stats_segment seg;
};

struct vkvstat_scan {
	struct vkvstat_proc *procs; /* every vkv-stats.* file, sorted by pid */
	size_t nprocs;
	size_t count[VKVSTAT_SEG_STATE_COUNT];
	size_t cleaned;             /* dead segments unlinked */
};

/* Flags of vkvstat_scan_dir(). */
#define VKVSTAT_SCAN_CLEAN 0x1u /* unlink dead segments we own */

/*
 * Scan `dir` for vkv-stats.<pid> files. Every file becomes one entry of
 * out->procs with its state; per-file problems (permission, bad contents)
 * are recorded there and never make the scan fail. With VKVSTAT_SCAN_CLEAN
 * a DEAD segment is unlinked when it belongs to the calling user, was not
 * written in the last seconds, and is still the very file that was read;
 * it is judged and unlinked under a private name it is first renamed to
 * (as libvkv's sweep does), so that a live segment created under its name
 * meanwhile is never removed.
 * Returns 0, or a negative errno when the directory itself cannot be read
 * (-ENOENT, -EACCES, ...) or memory runs out; *out is then empty.
 */
int vkvstat_scan_dir(const char *dir, unsigned flags, struct vkvstat_scan *out);
void vkvstat_scan_free(struct vkvstat_scan *s);

/*
 * Copy a segment of `len` bytes at `mem` (a live mapping, written
 * concurrently by another process) into *out under the seqlock, with up to
 * `retries` attempts, then validate it. *writer_size gets the writer's size.
 * Returns 0, -EBADMSG (bad magic), -EPROTO (bad version), -EMSGSIZE (size
 * field out of range or larger than `len`), -ENODATA (`len` too short),
 * -EAGAIN (the seqlock stayed busy), -EINVAL (inconsistent contents).
 * This is the function the fuzzer drives.
 */
int vkvstat_segment_copy(const void *mem, size_t len, unsigned retries,
			 struct vkv_stats_segment *out, uint32_t *writer_size);

/* Force comm and backend_detail to NUL-terminated printable ASCII. */
void vkvstat_segment_sanitize(struct vkv_stats_segment *seg);

/*
 * Is the process that wrote a segment (pid, created at start_ns and last
 * written at update_ns, both CLOCK_REALTIME) still running? 1 alive, 0 dead:
 * no such pid, a zombie, or the pid now belongs to a process that started
 * after the segment was both created and last written (a reused pid; the
 * second condition keeps a live writer alive across a forward step of the
 * clock). `why` (may be NULL) says which. Without /proc only kill(pid, 0)
 * decides.
 */
int vkvstat_pid_alive(int32_t pid, uint64_t start_ns, uint64_t update_ns,
		      char *why, size_t whylen);

/* The directory to read: `arg` if set, else $VKV_STATS_DIR, else /dev/shm. */
const char *vkvstat_stats_dir(const char *arg);

const char *vkvstat_state_name(enum vkvstat_seg_state st);

#endif /* VKVSTAT_SEGMENT_READER_H */
