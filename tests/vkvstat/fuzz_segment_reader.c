// SPDX-License-Identifier: MIT
/*
 * fuzz_segment_reader.c - libFuzzer target for vkvstat's segment reader.
 *
 * A stats segment is written by whatever process owns the file, so the
 * reader must accept any bytes without crashing, reading out of bounds or
 * handing on an unterminated or non-printable string. Each input is fed
 * twice: straight to vkvstat_segment_copy(), and as a file in a private
 * directory through vkvstat_scan_dir() (open, mmap, validate, liveness,
 * cleanup).
 *
 * Random bytes almost never carry the 8-byte magic of a 1.4 KiB segment,
 * so most inputs are read as edits of a valid segment instead: the first
 * byte picks the mode (bit 1: edit a valid template, else raw bytes; bit 0:
 * put our pid into the pid field, so that the live-process paths run),
 * bytes 1-2 give where the rest of the input is written into the template
 * and bytes 3-4 how long the resulting file is.
 *
 *   make vkvstat-fuzz-run        (runs for VKVSTAT_FUZZ_SECONDS)
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "segment_reader.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[64];
static char path[128];

static void check_strings(const struct vkv_stats_segment *s)
{
	size_t n = strnlen(s->comm, sizeof(s->comm));

	if (n == sizeof(s->comm))
		abort();
	for (size_t i = 0; i < n; i++)
		if (s->comm[i] < 0x20 || s->comm[i] > 0x7e)
			abort();
	if (strnlen(s->backend_detail, sizeof(s->backend_detail)) ==
	    sizeof(s->backend_detail))
		abort();
}

static void feed_copy(const uint8_t *data, size_t size)
{
	/* Word-aligned like a mapping, and exactly `size` long for ASan. */
	uint64_t *buf = malloc(size ? size : 1);
	struct vkv_stats_segment out;
	uint32_t wsize;

	memcpy(buf, data, size);
	if (vkvstat_segment_copy(buf, size, 2, &out, &wsize) == 0)
		check_strings(&out);
	free(buf);
}

static void feed_file(const uint8_t *data, size_t size)
{
	struct vkvstat_scan sc;
	int fd;

	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
		abort();
	if (write(fd, data, size) != (ssize_t)size)
		abort();
	close(fd);
	if (vkvstat_scan_dir(dir, VKVSTAT_SCAN_CLEAN, &sc) != 0)
		abort();
	for (size_t i = 0; i < sc.nprocs; i++)
		if (sc.procs[i].state == VKVSTAT_SEG_LIVE)
			check_strings(&sc.procs[i].seg);
	vkvstat_scan_free(&sc);
}

static void remove_dir(void)
{
	unlink(path);
	rmdir(dir);
}

#define TEMPLATE_LEN (sizeof(struct vkv_stats_segment) + 64)

/* A valid segment of ours, `data` written into it, cut to a length. */
static size_t edit_template(const uint8_t *data, size_t size, uint8_t *buf)
{
	struct vkv_stats_segment *s = (struct vkv_stats_segment *)buf;
	size_t off, len;
	struct timespec ts;

	memset(buf, 0, TEMPLATE_LEN);
	clock_gettime(CLOCK_REALTIME, &ts);
	s->magic = VKV_STATS_MAGIC;
	s->version = VKV_STATS_VERSION;
	s->size = sizeof(*s);
	s->pid = getpid();
	s->start_ns = (uint64_t)ts.tv_sec * 1000000000ull - 1000000000ull;
	s->update_ns = (uint64_t)ts.tv_sec * 1000000000ull;
	s->page_size = 4096;
	if (size < 5)
		return TEMPLATE_LEN;
	off = (size_t)(data[1] | data[2] << 8) % TEMPLATE_LEN;
	len = data[3] & 0x80 ? TEMPLATE_LEN - (data[4] & 0x3f) :
			       (size_t)(data[3] << 8 | data[4]) % (TEMPLATE_LEN + 1);
	size -= 5;
	if (size > TEMPLATE_LEN - off)
		size = TEMPLATE_LEN - off;
	memcpy(buf + off, data + 5, size);
	return len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint64_t tmpl[TEMPLATE_LEN / 8 + 1];
	const uint8_t *in = data;
	size_t len = size;
	int32_t pid = getpid();

	if (!dir[0]) {
		snprintf(dir, sizeof(dir), "/tmp/vkvstat-fuzz.XXXXXX");
		if (!mkdtemp(dir))
			abort();
		snprintf(path, sizeof(path), "%s/" VKV_STATS_PREFIX "%d", dir,
			 getpid());
		atexit(remove_dir);
	}
	if (size > 0 && (data[0] & 2)) {
		len = edit_template(data, size, (uint8_t *)tmpl);
		in = (const uint8_t *)tmpl;
	} else if (size > 0 && (data[0] & 1) &&
		   size >= offsetof(struct vkv_stats_segment, pid) + sizeof(pid)) {
		memcpy(tmpl, data, size < sizeof(tmpl) ? size : sizeof(tmpl));
		len = size < sizeof(tmpl) ? size : sizeof(tmpl);
		memcpy((uint8_t *)tmpl + offsetof(struct vkv_stats_segment, pid),
		       &pid, sizeof(pid));
		in = (const uint8_t *)tmpl;
	}
	feed_copy(in, len);
	feed_file(in, len);
	return 0;
}
