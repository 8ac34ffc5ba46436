// SPDX-License-Identifier: MIT
/*
 * tier_nvme.c - the NVMe tier's store: one private file, io_uring, crc32c.
 *
 * The file: created in VKV_NVME_DIR on first use, private to the process
 * (O_TMPFILE, mode 0600: it has no name and disappears with the process;
 * where O_TMPFILE is not supported, a mkstemp file unlinked at once), opened
 * O_DIRECT so that evicted KV does not also fill the page cache. A
 * filesystem without O_DIRECT (tmpfs) is used buffered, with a warning. It
 * grows in steps of VKV_NVME_GROW, preallocated with fallocate so that a
 * full disk shows at growth (-ENOSPC), not in the middle of a write, up to
 * VKV_NVME_BUDGET.
 *
 * The extent allocator: the file is a sequence of page-sized extents and a
 * bitmap says which hold a copy; allocation is next-fit so that one
 * eviction's extents are mostly consecutive.
 *
 * The I/O: a ring of VKV_NVME_QD I/Os of VKV_NVME_IO bytes, 2 * VKV_NVME_QD
 * staging buffers and the file registered with io_uring (fixed buffers,
 * fixed file), and every refill of the ring submitted with one system call
 * before the CPU works on the blocks that completed (xfer_uring).
 * An eviction copies a block of the page into a free staging buffer,
 * checksums it and queues its write; when the backend's pages are host
 * memory (host, kmod) the write goes straight from the slot's mapping
 * instead (no copy). A restoration always reads a block into a staging
 * buffer, verifies its checksum and only then copies it into the page, so
 * that corrupt data never reaches a slot. When
 * io_uring is unavailable (seccomp, old kernel, VKV_FAULT_IO_URING), the
 * same loop runs on pread/pwrite, announced once.
 */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "tier.h"

#define NVME_ALIGN 4096

/* A completion taken off the ring, finished after the ring's refill. */
struct nvme_done {
	uint64_t ci;
	uint32_t bi;
	int32_t res;
	bool injected;
};

struct vkv_tier_nvme {
	pthread_mutex_t lock;     /* the file, its size and the bitmap */
	pthread_mutex_t io_lock;  /* the ring and the staging buffers */
	struct vkv_backend *backend;
	struct vkv_tier_dram *pin;/* pins the staging buffers; read-only */
	bool bufs_pinned;         /* (lock) */
	uint64_t block;           /* extent size: the page size; read-only */
	uint64_t io;              /* bytes per I/O, divides block; read-only */
	uint32_t qd;              /* I/Os in flight at most; read-only */
	uint64_t budget;          /* bytes; read-only */
	uint64_t grow;            /* bytes; read-only */
	int fd;                   /* -1 until created (lock) */
	bool direct;              /* opened O_DIRECT (lock) */
	uint64_t file_size;       /* preallocated bytes (lock) */
	uint64_t *bits;           /* extent in use, budget/block bits (lock) */
	uint64_t used;            /* extents in use (lock) */
	uint64_t hint;            /* next-fit start (lock) */
	bool host_mem;            /* the backend's pages are host memory:
				     writes go straight from them; read-only */
	/* I/O (io_lock; set up with the file, under lock) */
	bool uring, fixed_bufs, fixed_file;
	struct io_uring ring;
	uint32_t nbufs;           /* staging buffers: 2 * qd */
	uint8_t *bufs;            /* nbufs * io bytes (staging_alloc) */
	uint64_t bufs_len;        /* bytes mapped at bufs */
	uint32_t *freebuf;        /* stack of free staging buffers */
	struct nvme_done *done;   /* nbufs completions taken off the ring */
};

static atomic_uint warned_uring, warned_direct;

/* ------------------------------------------------------------- the file */

static int open_private(struct vkv_tier_nvme *nv, const char *dir)
{
	char path[4096];
	int fd;

	nv->direct = true;
	fd = open(dir, O_TMPFILE | O_RDWR | O_DIRECT | O_CLOEXEC, 0600);
	if (fd < 0 && errno == EINVAL) {
		fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
		nv->direct = false;
	}
	if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR)) {
		/* No O_TMPFILE here: a named file, unlinked at once. */
		snprintf(path, sizeof(path), "%s/.vkv-nvme.XXXXXX", dir);
		fd = mkostemp(path, O_CLOEXEC);
		if (fd >= 0) {
			unlink(path);
			nv->direct = fcntl(fd, F_SETFL, O_DIRECT) == 0;
		}
	}
	if (fd < 0)
		return vkv__set_error(-errno, "nvme tier: cannot create a file in "
				      "VKV_NVME_DIR=%s: %s", dir, strerror(errno));
	if (!nv->direct && atomic_fetch_add(&warned_direct, 1) == 0)
		vkv__warn("nvme tier: %s does not support O_DIRECT (tmpfs?); using "
			  "buffered I/O, which also fills the page cache", dir);
	nv->fd = fd;
	return 0;
}

static void setup_uring(struct vkv_tier_nvme *nv)
{
	struct iovec *iov;
	int err;

	if (vkv__fault_hit(VKV_FAULT_IO_URING))
		err = -ENOSYS;
	else {
		/* SUBMIT_ALL: an I/O that fails at submission (its error comes
		 * as its completion) does not leave the ones after it unsent
		 * in the queue; kernels before 5.18 refuse the flag. */
		err = io_uring_queue_init(nv->qd, &nv->ring, IORING_SETUP_SUBMIT_ALL);
		if (err == -EINVAL)
			err = io_uring_queue_init(nv->qd, &nv->ring, 0);
	}
	if (err < 0) {
		if (atomic_fetch_add(&warned_uring, 1) == 0)
			vkv__warn("nvme tier: io_uring is unavailable (%s); using "
				  "pread/pwrite", strerror(-err));
		return;
	}
	nv->uring = true;
	iov = nv->bufs ? calloc(nv->nbufs, sizeof(*iov)) : NULL;
	if (iov) {
		for (uint32_t i = 0; i < nv->nbufs; i++) {
			iov[i].iov_base = nv->bufs + (uint64_t)i * nv->io;
			iov[i].iov_len = nv->io;
		}
		nv->fixed_bufs = io_uring_register_buffers(&nv->ring, iov, nv->nbufs) == 0;
		free(iov);
	}
	nv->fixed_file = io_uring_register_files(&nv->ring, &nv->fd, 1) == 0;
}

/*
 * The staging buffers: anonymous memory aligned to 2 MiB and advised for
 * transparent huge pages, so that an I/O of up to 2 MiB lands in one
 * physically contiguous segment instead of one per 4 KiB page. That is
 * what the device's DMA (or a hypervisor's copy) works through: on the
 * development VM's virtio disk (at most 254 segments per request) restores
 * of 1 MiB blocks ran at 2.0-2.9 GB/s from huge-page buffers against
 * 1.2-1.9 from 4 KiB pages, and at 512 KiB (no split) 2.0-2.5 against
 * 1.2-1.4. Where THP is off the buffers are 4 KiB pages, equally correct.
 * Touched once here, so that no I/O faults them in.
 */
#define STAGING_ALIGN (2ull << 20)

static uint8_t *staging_alloc(uint64_t bytes, uint64_t *len)
{
	uint64_t n = (bytes + STAGING_ALIGN - 1) & ~(STAGING_ALIGN - 1);
	uint8_t *p = mmap(NULL, n + STAGING_ALIGN, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uintptr_t a;

	if (p == MAP_FAILED)
		return NULL;
	a = ((uintptr_t)p + STAGING_ALIGN - 1) & ~(uintptr_t)(STAGING_ALIGN - 1);
	if (a > (uintptr_t)p)
		munmap(p, a - (uintptr_t)p);
	munmap((void *)(a + n), (uintptr_t)p + STAGING_ALIGN - a);
	madvise((void *)a, n, MADV_HUGEPAGE); /* a hint: no THP, no harm */
	memset((void *)a, 0, n);
	*len = n;
	return (uint8_t *)a;
}

/* Create the file and the I/O machinery (lock held). */
static int nvme_open(struct vkv_tier_nvme *nv)
{
	int err;

	if (nv->fd >= 0)
		return 0;
	err = open_private(nv, vkv__opt_str(VKV_OPT_NVME_DIR));
	if (err)
		return err;
	nv->nbufs = 2 * nv->qd;
	nv->bufs = staging_alloc((uint64_t)nv->nbufs * nv->io, &nv->bufs_len);
	nv->freebuf = calloc(nv->nbufs, sizeof(*nv->freebuf));
	nv->done = calloc(nv->nbufs, sizeof(*nv->done));
	if (!nv->bufs || !nv->freebuf || !nv->done) {
		if (nv->bufs)
			munmap(nv->bufs, nv->bufs_len);
		free(nv->freebuf);
		free(nv->done);
		nv->bufs = NULL;
		nv->freebuf = NULL;
		nv->done = NULL;
		close(nv->fd);
		nv->fd = -1;
		return vkv__set_error(-ENOMEM, "nvme tier: out of host memory");
	}
	/* Under cuda, device <-> staging copies run at full speed only from
	 * memory registered with the driver. */
	nv->bufs_pinned = vkv__dram_pin(nv->pin, nv->bufs, (uint64_t)nv->nbufs * nv->io);
	setup_uring(nv);
	return 0;
}

/* Preallocate at least `need` more bytes (lock held). */
static int nvme_grow(struct vkv_tier_nvme *nv, uint64_t need)
{
	uint64_t add = need > nv->grow ? need : nv->grow;
	uint64_t room = nv->budget - nv->file_size;

	if (room < need)
		return vkv__set_error(-ENOSPC, "nvme tier: budget %llu bytes "
				      "(VKV_NVME_BUDGET) is full",
				      (unsigned long long)nv->budget);
	if (add > room)
		add = room;
	add = add / nv->block * nv->block;
	if (vkv__fault_hit(VKV_FAULT_NVME_ENOSPC))
		return vkv__set_error(-ENOSPC, "nvme tier: fallocate: injected fault "
				      "(VKV_FAULT_NVME_ENOSPC)");
	if (fallocate(nv->fd, 0, (off_t)nv->file_size, (off_t)add) != 0) {
		int e = errno;

		if (e != EOPNOTSUPP || ftruncate(nv->fd, (off_t)(nv->file_size + add)))
			return vkv__set_error(e == ENOSPC ? -ENOSPC : -EIO,
					      "nvme tier: growing the file to %llu bytes: %s",
					      (unsigned long long)(nv->file_size + add),
					      strerror(e));
	}
	nv->file_size += add;
	return 0;
}

/* ---------------------------------------------------------------- extents */

/* A free extent below file_size, next-fit; -1 when none (lock held). */
static int64_t find_free(struct vkv_tier_nvme *nv)
{
	uint64_t n = nv->file_size / nv->block;

	for (uint64_t k = 0; k < n; k++) {
		uint64_t i = (nv->hint + k) % n;

		if (!(nv->bits[i / 64] & (1ULL << (i % 64)))) {
			nv->hint = i + 1;
			return (int64_t)i;
		}
	}
	return -1;
}

static void extent_put(struct vkv_tier_nvme *nv, struct vkv_tier_entry *e)
{
	uint64_t i = e->off / nv->block;

	nv->bits[i / 64] &= ~(1ULL << (i % 64));
	nv->used--;
	free(e->crc);
	e->crc = NULL;
}

int vkv__nvme_alloc(struct vkv_tier_nvme *nv, struct vkv_tier_entry **e, size_t n)
{
	size_t got = 0;
	int err;

	pthread_mutex_lock(&nv->lock);
	err = nvme_open(nv);
	while (!err && got < n) {
		int64_t i = find_free(nv);

		if (i < 0) {
			err = nvme_grow(nv, (n - got) * nv->block);
			continue;
		}
		e[got]->crc = calloc(nv->block / nv->io, sizeof(uint32_t));
		if (!e[got]->crc) {
			err = vkv__set_error(-ENOMEM, "nvme tier: out of host memory");
			break;
		}
		nv->bits[i / 64] |= 1ULL << (i % 64);
		nv->used++;
		e[got++]->off = (uint64_t)i * nv->block;
	}
	while (err && got)
		extent_put(nv, e[--got]);
	pthread_mutex_unlock(&nv->lock);
	return err;
}

void vkv__nvme_free(struct vkv_tier_nvme *nv, struct vkv_tier_entry *e)
{
	pthread_mutex_lock(&nv->lock);
	extent_put(nv, e);
	pthread_mutex_unlock(&nv->lock);
}

/* ---------------------------------------------------------------- transfer */

struct xfer {
	struct vkv_tier_nvme *nv;
	struct vkv_tier_entry **e;
	const uint64_t *addr;
	bool write;
	uint64_t per;   /* I/Os per extent */
	uint64_t total; /* I/Os */
};

/* Where the I/O of block ci goes: a write of host memory straight from the
 * page (no copy), anything else staging buffer bi. */
static uint8_t *block_buf(const struct xfer *x, uint64_t ci, uint32_t bi)
{
	uint64_t i = ci / x->per, c = ci % x->per;

	if (x->nv->host_mem && x->write)
		return (uint8_t *)(uintptr_t)(x->addr[i] + c * x->nv->io);
	return x->nv->bufs + (uint64_t)bi * x->nv->io;
}

/* Before the I/O of block ci: a staged write's data and checksum. A write
 * straight from host memory is checksummed after it was queued instead
 * (block_done): the eviction owns the slot, so its data does not change. */
static int block_fill(const struct xfer *x, uint64_t ci, uint8_t *buf)
{
	struct vkv_backend *b = x->nv->backend;
	uint64_t i = ci / x->per, c = ci % x->per, io = x->nv->io;
	int err;

	if (!x->write || x->nv->host_mem)
		return 0;
	err = b->ops->copy_to_host(b, buf, x->addr[i] + c * io, io);
	if (!err)
		x->e[i]->crc[c] = vkv__crc32c(0, buf, io);
	return err;
}

/* After the I/O of block ci returned res: a direct write's checksum, a
 * read's check and copy. */
static int block_done(const struct xfer *x, uint64_t ci, uint8_t *buf,
		      int64_t res, bool injected)
{
	struct vkv_backend *b = x->nv->backend;
	uint64_t i = ci / x->per, c = ci % x->per, io = x->nv->io;
	uint64_t off = x->e[i]->off + c * io;
	const char *what = x->write ? "write" : "read";

	if (injected)
		return vkv__set_error(-EIO, "nvme tier: %s at offset %llu: injected "
				      "fault (VKV_FAULT_NVME_%s)", what,
				      (unsigned long long)off, x->write ? "WRITE" : "READ");
	if (res < 0)
		return vkv__set_error(res == -ENOSPC ? -ENOSPC : -EIO,
				      "nvme tier: %s at offset %llu: %s", what,
				      (unsigned long long)off, strerror((int)-res));
	if ((uint64_t)res != io) {
		if (!x->write)
			x->e[i]->bad = true;
		return vkv__set_error(-EIO, "nvme tier: short %s at offset %llu "
				      "(%lld of %llu bytes): the file was truncated?",
				      what, (unsigned long long)off, (long long)res,
				      (unsigned long long)io);
	}
	if (x->write) {
		if (x->nv->host_mem)
			x->e[i]->crc[c] = vkv__crc32c(0, buf, io);
		return 0;
	}
	if (vkv__fault_hit(VKV_FAULT_NVME_CORRUPT))
		buf[io / 2] ^= 0x40;
	if (vkv__crc32c(0, buf, io) != x->e[i]->crc[c]) {
		x->e[i]->bad = true;
		return vkv__set_error(-EBADMSG, "nvme tier: checksum mismatch in the "
				      "extent at offset %llu (block %llu): the copy is "
				      "corrupt and was not restored",
				      (unsigned long long)x->e[i]->off,
				      (unsigned long long)c);
	}
	if (x->nv->host_mem)
		/* A fault per 16 pages instead of one per 4 KiB of the copy. */
		vkv__tier_prefault(x->addr[i] + c * io, io);
	return b->ops->copy_from_host(b, x->addr[i] + c * io, buf, io);
}

static bool inject(const struct xfer *x)
{
	return vkv__fault_hit(x->write ? VKV_FAULT_NVME_WRITE : VKV_FAULT_NVME_READ);
}

static int xfer_sync(struct xfer *x)
{
	struct vkv_tier_nvme *nv = x->nv;
	int err = 0;

	for (uint64_t ci = 0; ci < x->total && !err; ci++) {
		uint64_t off = x->e[ci / x->per]->off + ci % x->per * nv->io;
		uint8_t *buf = block_buf(x, ci, 0);
		bool injected;
		ssize_t res;

		err = block_fill(x, ci, buf);
		if (err)
			break;
		injected = inject(x);
		res = x->write ? pwrite(nv->fd, buf, nv->io, (off_t)off)
			       : pread(nv->fd, buf, nv->io, (off_t)off);
		err = block_done(x, ci, buf, res < 0 ? -errno : res, injected);
	}
	return err;
}

#define UD_INJECTED (1ULL << 63)
#define UD_BUF_SHIFT 40

static void prep_io(struct xfer *x, struct io_uring_sqe *sqe, uint64_t ci,
		    uint32_t bi, bool injected)
{
	struct vkv_tier_nvme *nv = x->nv;
	uint8_t *buf = block_buf(x, ci, bi);
	uint64_t off = x->e[ci / x->per]->off + ci % x->per * nv->io;
	int fd = nv->fixed_file ? 0 : nv->fd;

	if (nv->host_mem && x->write)
		io_uring_prep_write(sqe, fd, buf, (unsigned)nv->io, off);
	else if (nv->fixed_bufs && x->write)
		io_uring_prep_write_fixed(sqe, fd, buf, (unsigned)nv->io, off, (int)bi);
	else if (nv->fixed_bufs)
		io_uring_prep_read_fixed(sqe, fd, buf, (unsigned)nv->io, off, (int)bi);
	else if (x->write)
		io_uring_prep_write(sqe, fd, buf, (unsigned)nv->io, off);
	else
		io_uring_prep_read(sqe, fd, buf, (unsigned)nv->io, off);
	if (nv->fixed_file)
		sqe->flags |= IOSQE_FIXED_FILE;
	io_uring_sqe_set_data64(sqe, ci | ((uint64_t)bi << UD_BUF_SHIFT) |
					     (injected ? UD_INJECTED : 0));
}

/* The completions taken off the ring and not yet finished: a FIFO of
 * nbufs entries (every one holds a staging buffer). */
struct done_fifo {
	uint32_t head, n;
};

/*
 * Take the completions that are there into the FIFO; with wait, wait for
 * one first. A completion costs nothing to take (the kernel posts it to
 * the shared ring), so the loop looks between two blocks of CPU work.
 */
static int reap(struct xfer *x, struct done_fifo *f, uint64_t *inflight,
		bool wait)
{
	struct vkv_tier_nvme *nv = x->nv;
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;
	int ret;

	if (wait) {
		do {
			ret = io_uring_wait_cqe(&nv->ring, &cqe);
		} while (ret == -EINTR);
		if (ret < 0)
			return vkv__set_error(-EIO, "nvme tier: io_uring_wait_cqe: %s",
					      strerror(-ret));
	}
	io_uring_for_each_cqe(&nv->ring, head, cqe) {
		uint64_t ud = io_uring_cqe_get_data64(cqe);
		struct nvme_done *d = &nv->done[(f->head + f->n + n++) % nv->nbufs];

		d->bi = (uint32_t)((ud & ~UD_INJECTED) >> UD_BUF_SHIFT);
		d->ci = ud & ((1ULL << UD_BUF_SHIFT) - 1);
		d->res = cqe->res;
		d->injected = ud & UD_INJECTED;
	}
	io_uring_cq_advance(&nv->ring, n);
	f->n += n;
	*inflight -= n;
	return 0;
}

/* Submit what was prepared; on failure nothing of it went out. */
static int submit_batch(struct vkv_tier_nvme *nv, unsigned *prepped,
			uint32_t *nfree, uint64_t *inflight)
{
	int ret;

	if (!*prepped)
		return 0;
	/* Without SUBMIT_ALL the kernel may stop early; send the rest. */
	do {
		ret = io_uring_submit(&nv->ring);
	} while (ret > 0 && io_uring_sq_ready(&nv->ring));
	if (ret < 0) {
		*inflight -= *prepped;
		*nfree += *prepped;
	}
	*prepped = 0;
	return ret < 0 ? vkv__set_error(-EIO, "nvme tier: io_uring_submit: %s",
					strerror(-ret))
		       : 0;
}

/*
 * Keep the device's queue full. The speed of a disk that works many
 * requests at once (NVMe, a cloud volume) is the number of requests in
 * flight over their latency, so a completed I/O is replaced before the CPU
 * works on it: each turn refills the ring to qd (the first fill submitted
 * in quarters, so that the device starts on the first ones), then finishes
 * one completed block (a read's check and copy), then takes the
 * completions that arrived meanwhile, waiting only when nothing is left
 * to finish. The staging buffers are twice the queue depth, so a refill
 * does not wait for blocks still to be finished. On the development VM a
 * restore that finished each block before queueing its replacement ran at
 * 1.0-1.2 GB/s where fio read 1.6-1.7; finishing a whole batch of
 * completions before the refill still left the queue short meanwhile.
 */
static int xfer_uring(struct xfer *x)
{
	struct vkv_tier_nvme *nv = x->nv;
	struct done_fifo f = { 0, 0 };
	uint64_t next = 0, inflight = 0;
	uint32_t nfree = nv->nbufs, batch = nv->qd / 4 ? nv->qd / 4 : 1;
	int err = 0, e;

	for (uint32_t i = 0; i < nv->nbufs; i++)
		nv->freebuf[i] = i;
	for (;;) {
		unsigned prepped = 0;

		while (!err && next < x->total && inflight < nv->qd && nfree) {
			uint32_t bi = nv->freebuf[--nfree];
			struct io_uring_sqe *sqe;

			err = block_fill(x, next, block_buf(x, next, bi));
			sqe = err ? NULL : io_uring_get_sqe(&nv->ring);
			if (!sqe) {
				nv->freebuf[nfree++] = bi;
				break;
			}
			prep_io(x, sqe, next, bi, inject(x));
			next++;
			inflight++;
			if (++prepped >= batch)
				err = submit_batch(nv, &prepped, &nfree, &inflight);
		}
		e = submit_batch(nv, &prepped, &nfree, &inflight);
		if (e && !err)
			err = e;
		if (f.n) {
			struct nvme_done *d = &nv->done[f.head];

			e = block_done(x, d->ci, block_buf(x, d->ci, d->bi), d->res,
				       d->injected);
			if (e && !err)
				err = e;
			nv->freebuf[nfree++] = d->bi;
			f.head = (f.head + 1) % nv->nbufs;
			f.n--;
			e = reap(x, &f, &inflight, false);
		} else if (inflight) {
			e = reap(x, &f, &inflight, true);
		} else if (err || next >= x->total) {
			break;
		} else {
			e = vkv__set_error(-EIO, "nvme tier: io_uring has no free "
					   "submission entry with nothing in flight");
		}
		if (e && !err)
			err = e;
	}
	return err;
}

int vkv__nvme_transfer(struct vkv_tier_nvme *nv, struct vkv_tier_entry **e,
		       const uint64_t *addr, size_t n, bool write)
{
	struct xfer x = { nv, e, addr, write, nv->block / nv->io, 0 };
	int err;

	x.total = n * x.per;
	pthread_mutex_lock(&nv->io_lock);
	err = nv->uring ? xfer_uring(&x) : xfer_sync(&x);
	pthread_mutex_unlock(&nv->io_lock);
	return err;
}

/* ------------------------------------------------------------- the store */

static uint64_t pow2_floor(uint64_t v)
{
	return v ? 1ULL << (63 - __builtin_clzll(v)) : 0;
}

struct vkv_tier_nvme *vkv__nvme_new(struct vkv_backend *b,
				    struct vkv_tier_dram *pin)
{
	struct vkv_tier_nvme *nv = calloc(1, sizeof(*nv));
	uint64_t qd;

	if (!nv)
		return NULL;
	nv->backend = b;
	nv->pin = pin;
	nv->fd = -1;
	nv->host_mem = b->kind == VKV_BACKEND_HOST || b->kind == VKV_BACKEND_KMOD;
	nv->block = b->page_size < NVME_ALIGN ? NVME_ALIGN : b->page_size;
	nv->io = pow2_floor(vkv__opt_u64(VKV_OPT_NVME_IO));
	if (nv->io < NVME_ALIGN)
		nv->io = NVME_ALIGN;
	if (nv->io > nv->block)
		nv->io = nv->block;
	qd = vkv__opt_u64(VKV_OPT_NVME_QD);
	nv->qd = (uint32_t)(qd < 1 ? 1 : qd > 4096 ? 4096 : qd);
	nv->budget = vkv__opt_u64(VKV_OPT_NVME_BUDGET) / nv->block * nv->block;
	nv->grow = vkv__opt_u64(VKV_OPT_NVME_GROW) / nv->block * nv->block;
	if (nv->grow < nv->block)
		nv->grow = nv->block;
	nv->bits = calloc((nv->budget / nv->block + 63) / 64 + 1, sizeof(*nv->bits));
	if (!nv->bits) {
		free(nv);
		return NULL;
	}
	pthread_mutex_init(&nv->lock, NULL);
	pthread_mutex_init(&nv->io_lock, NULL);
	return nv;
}

void vkv__nvme_destroy(struct vkv_tier_nvme *nv)
{
	if (nv->used)
		vkv__warn("nvme tier: %llu extents still in use at context destruction",
			  (unsigned long long)nv->used);
	if (nv->uring)
		io_uring_queue_exit(&nv->ring);
	if (nv->fd >= 0)
		close(nv->fd);
	if (nv->bufs_pinned)
		vkv__dram_unpin(nv->pin, nv->bufs);
	if (nv->bufs)
		munmap(nv->bufs, nv->bufs_len);
	free(nv->freebuf);
	free(nv->done);
	free(nv->bits);
	pthread_mutex_destroy(&nv->lock);
	pthread_mutex_destroy(&nv->io_lock);
	free(nv);
}

uint64_t vkv__nvme_file_bytes(struct vkv_tier_nvme *nv)
{
	uint64_t v;

	pthread_mutex_lock(&nv->lock);
	v = nv->file_size;
	pthread_mutex_unlock(&nv->lock);
	return v;
}

uint64_t vkv__nvme_budget(struct vkv_tier_nvme *nv)
{
	return nv->budget;
}

int vkv__nvme_fd(struct vkv_tier_nvme *nv)
{
	int fd;

	pthread_mutex_lock(&nv->lock);
	fd = nv->fd;
	pthread_mutex_unlock(&nv->lock);
	return fd;
}
