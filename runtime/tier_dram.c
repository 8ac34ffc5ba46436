// SPDX-License-Identifier: MIT
/*
 * tier_dram.c - the DRAM tier's store: pinned, NUMA-bound host buffers.
 *
 * Memory comes in chunks (VKV_DRAM_CHUNK, 64 MiB by default) allocated on
 * first need, never all at start-up, up to VKV_DRAM_BUDGET. A chunk is cut
 * into page-sized blocks tracked by a bitmap; one block holds one page's
 * copy. Chunks are:
 *  - bound to one NUMA node with libnuma (numa_alloc_onnode): the GPU's
 *    node under cuda (its PCI address, /sys/bus/pci/devices/<id>/numa_node),
 *    the calling CPU's node under host, or VKV_NUMA_NODE;
 *  - backed by transparent huge pages where the kernel has them
 *    (MADV_HUGEPAGE) and prefaulted, so that the first eviction into a
 *    fresh chunk does not pay a page fault per 4 KiB;
 *  - pinned for DMA: cuMemHostRegister under cuda (copies then run at full
 *    PCIe speed), mlock otherwise. An mlock refused by RLIMIT_MEMLOCK is
 *    warned about once and the memory is used unpinned.
 * Under the host and kmod backends, when /dev/vkv (vkv.ko) is there, chunks
 * are the module's buffers instead: pinned, NUMA-placed and huge-page
 * backed by the kernel, accounted across processes, without RLIMIT_MEMLOCK
 * (any failure there falls back to the above).
 * Chunks stay until the context is destroyed: a tier that was needed once
 * is likely to be needed again, and re-pinning is slow.
 */
#include <errno.h>
#include <numa.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kmod_dev.h"
#include "tier.h"
#ifdef VKV_HAVE_CUDA
#include "cuda_driver.h"
#endif

static atomic_uint warned_mlock;

/* ------------------------------------------------------------ NUMA node */

#ifdef VKV_HAVE_CUDA
/* The NUMA node of the CUDA device's PCI function, -1 when unknown. */
static int cuda_node(int ordinal)
{
	const struct vkv_cu *cu = vkv__cu();
	char bus[32], path[96];
	CUdevice dev;
	FILE *f;
	int node = -1;

	if (!cu || cu->cuDeviceGet(&dev, ordinal) != CUDA_SUCCESS ||
	    cu->cuDeviceGetPCIBusId(bus, sizeof(bus), dev) != CUDA_SUCCESS)
		return -1;
	for (char *p = bus; *p; p++)
		if (*p >= 'A' && *p <= 'F')
			*p = (char)(*p - 'A' + 'a');
	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/numa_node", bus);
	f = fopen(path, "r");
	if (!f)
		return -1;
	if (fscanf(f, "%d", &node) != 1)
		node = -1;
	fclose(f);
	return node;
}
#endif

static int pick_node(struct vkv_backend *b)
{
	int node = (int)vkv__opt_i64(VKV_OPT_NUMA_NODE);
	int cpu;

	if (numa_available() < 0)
		return -1;
	if (node >= 0)
		return node <= numa_max_node() ? node : -1;
#ifdef VKV_HAVE_CUDA
	if (b->kind == VKV_BACKEND_CUDA) {
		node = cuda_node(b->device);
		if (node >= 0)
			return node;
	}
#else
	(void)b;
#endif
	cpu = sched_getcpu();
	return cpu >= 0 ? numa_node_of_cpu(cpu) : -1;
}

/* --------------------------------------------------------------- pinning */

#ifdef VKV_HAVE_CUDA
static bool cuda_register(struct vkv_tier_dram *d, void *p, uint64_t bytes)
{
	const struct vkv_cu *cu = vkv__cu();
	CUcontext prev = NULL;
	CUdevice dev;
	bool ok;

	if (!cu)
		return false;
	if (!d->cu_ctx) {
		CUcontext c;

		if (cu->cuDeviceGet(&dev, d->backend->device) != CUDA_SUCCESS ||
		    cu->cuDevicePrimaryCtxRetain(&c, dev) != CUDA_SUCCESS)
			return false;
		d->cu_ctx = c;
	}
	cu->cuCtxGetCurrent(&prev);
	cu->cuCtxSetCurrent(d->cu_ctx);
	ok = cu->cuMemHostRegister(p, bytes, CU_MEMHOSTREGISTER_PORTABLE) ==
	     CUDA_SUCCESS;
	cu->cuCtxSetCurrent(prev);
	return ok;
}

static void cuda_unregister(struct vkv_tier_dram *d, void *p)
{
	const struct vkv_cu *cu = vkv__cu();
	CUcontext prev = NULL;

	cu->cuCtxGetCurrent(&prev);
	cu->cuCtxSetCurrent(d->cu_ctx);
	cu->cuMemHostUnregister(p);
	cu->cuCtxSetCurrent(prev);
}

static void cuda_release(struct vkv_tier_dram *d)
{
	const struct vkv_cu *cu = vkv__cu();
	CUdevice dev;

	if (cu && d->cu_ctx && cu->cuDeviceGet(&dev, d->backend->device) == CUDA_SUCCESS)
		cu->cuDevicePrimaryCtxRelease(dev);
	d->cu_ctx = NULL;
}
#endif

static void pin_chunk(struct vkv_tier_dram *d, struct dram_chunk *c)
{
#ifdef VKV_HAVE_CUDA
	if (d->backend->kind == VKV_BACKEND_CUDA) {
		c->registered = cuda_register(d, c->base, c->bytes);
		if (!c->registered) {
			d->unregistered++;
			vkv__warn("dram tier: cuMemHostRegister refused %llu bytes; "
				  "copies use pageable memory (slower)",
				  (unsigned long long)c->bytes);
		}
		return;
	}
#else
	(void)d;
#endif
	c->locked = mlock(c->base, c->bytes) == 0;
	if (!c->locked && atomic_fetch_add(&warned_mlock, 1) == 0)
		vkv__warn("dram tier: mlock failed (%s); the tier is not pinned "
			  "(raise RLIMIT_MEMLOCK, `ulimit -l`)", strerror(errno));
}

bool vkv__dram_pinned(struct vkv_tier_dram *d)
{
	bool all;

	pthread_mutex_lock(&d->lock);
	all = d->backend->kind == VKV_BACKEND_CUDA && d->unregistered == 0;
	pthread_mutex_unlock(&d->lock);
	return all;
}

bool vkv__dram_pin(struct vkv_tier_dram *d, void *p, uint64_t bytes)
{
	bool ok = false;

#ifdef VKV_HAVE_CUDA
	if (d->backend->kind == VKV_BACKEND_CUDA) {
		pthread_mutex_lock(&d->lock);
		ok = cuda_register(d, p, bytes);
		pthread_mutex_unlock(&d->lock);
	}
#else
	(void)d;
	(void)p;
	(void)bytes;
#endif
	return ok;
}

void vkv__dram_unpin(struct vkv_tier_dram *d, void *p)
{
#ifdef VKV_HAVE_CUDA
	pthread_mutex_lock(&d->lock);
	cuda_unregister(d, p);
	pthread_mutex_unlock(&d->lock);
#else
	(void)d;
	(void)p;
#endif
}

/* ---------------------------------------------------------------- chunks */

/* A chunk from /dev/vkv: 0, or -errno and nothing allocated. */
static int chunk_from_kmod(struct vkv_tier_dram *d, struct dram_chunk *c,
			   uint64_t bytes)
{
	struct vkv_kmod_buf buf;
	void *p;
	int err = vkv__kmod_alloc(d->kmod_fd, bytes, d->node, VKV_ALLOC_HUGE, &buf);

	if (err)
		return err;
	err = vkv__kmod_map(d->kmod_fd, &buf, 0, bytes, NULL, &p);
	if (err) {
		vkv__kmod_free(d->kmod_fd, buf.id);
		return err;
	}
	c->base = p;
	c->kmod = true;
	c->kmod_id = buf.id;
	return 0;
}

static int chunk_create(struct vkv_tier_dram *d, uint64_t bytes)
{
	struct dram_chunk *c;

	if (d->nchunks == d->cap) {
		size_t cap = d->cap ? 2 * d->cap : 8;
		struct dram_chunk *n = realloc(d->chunks, cap * sizeof(*n));

		if (!n)
			return vkv__set_error(-ENOMEM, "dram tier: out of host memory");
		d->chunks = n;
		d->cap = cap;
	}
	c = &d->chunks[d->nchunks];
	memset(c, 0, sizeof(*c));
	c->bytes = bytes;
	c->nblocks = bytes / d->block;
	c->nfree = c->nblocks;
	c->bits = calloc((c->nblocks + 63) / 64, sizeof(*c->bits));
	if (!c->bits)
		return vkv__set_error(-ENOMEM, "dram tier: out of host memory");
	if (vkv__fault_hit(VKV_FAULT_DRAM_ALLOC)) {
		free(c->bits);
		return vkv__set_error(-ENOMEM, "dram tier: allocating %llu bytes: "
				      "injected fault (VKV_FAULT_DRAM_ALLOC)",
				      (unsigned long long)bytes);
	}
	if (d->kmod_fd >= 0 && chunk_from_kmod(d, c, bytes) == 0)
		goto placed;
	if (d->node >= 0) {
		c->base = numa_alloc_onnode(bytes, d->node);
		c->numa = c->base != NULL;
	}
	if (!c->base) {
		void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		c->base = p == MAP_FAILED ? NULL : p;
	}
	if (!c->base) {
		free(c->bits);
		return vkv__set_error(-ENOMEM, "dram tier: cannot allocate %llu bytes",
				      (unsigned long long)bytes);
	}
	madvise(c->base, bytes, MADV_HUGEPAGE);
	madvise(c->base, bytes, MADV_POPULATE_WRITE); /* older kernels: no-op */
placed:
	pin_chunk(d, c); /* /dev/vkv memory too: the driver must know it is pinned */
	d->nchunks++;
	d->bytes_total += bytes;
	return 0;
}

static void chunk_destroy(struct vkv_tier_dram *d, struct dram_chunk *c)
{
#ifdef VKV_HAVE_CUDA
	if (c->registered)
		cuda_unregister(d, c->base);
#else
	(void)d;
#endif
	if (c->locked)
		munlock(c->base, c->bytes);
	if (c->kmod) {
		munmap(c->base, c->bytes);
		vkv__kmod_free(d->kmod_fd, c->kmod_id);
	} else if (c->numa)
		numa_free(c->base, c->bytes);
	else
		munmap(c->base, c->bytes);
	free(c->bits);
}

/* One free block of chunk c (which has one). */
static void *chunk_take(struct vkv_tier_dram *d, struct dram_chunk *c)
{
	uint64_t words = (c->nblocks + 63) / 64;

	/* Next fit from the last word that had room: a batch's blocks are
	 * taken in one sweep, not one scan from the start each. */
	for (uint64_t k = 0; k < words; k++) {
		uint64_t w = (c->hint + k) % words, freebits = ~c->bits[w], i;

		if (!freebits)
			continue;
		i = w * 64 + (uint64_t)__builtin_ctzll(freebits);
		if (i >= c->nblocks)
			continue;
		c->bits[w] |= 1ULL << (i % 64);
		c->nfree--;
		c->hint = w;
		d->blocks_used++;
		return c->base + i * d->block;
	}
	return NULL;
}

/* --------------------------------------------------------------- the store */

int vkv__dram_init(struct vkv_tier_dram *d, struct vkv_backend *b)
{
	memset(d, 0, sizeof(*d));
	pthread_mutex_init(&d->lock, NULL);
	d->backend = b;
	d->block = b->page_size;
	d->budget = vkv__opt_u64(VKV_OPT_DRAM_BUDGET) / d->block * d->block;
	d->chunk_bytes = vkv__opt_u64(VKV_OPT_DRAM_CHUNK) / d->block * d->block;
	if (d->chunk_bytes < d->block)
		d->chunk_bytes = d->block;
	d->node = pick_node(b);
	d->kmod_fd = b->kind == VKV_BACKEND_CUDA ? -1 : vkv__kmod_open();
	if (d->kmod_fd < 0)
		d->kmod_fd = -1;
	return 0;
}

void vkv__dram_fini(struct vkv_tier_dram *d)
{
	if (d->blocks_used)
		vkv__warn("dram tier: %llu blocks still in use at context destruction",
			  (unsigned long long)d->blocks_used);
	for (size_t i = 0; i < d->nchunks; i++)
		chunk_destroy(d, &d->chunks[i]);
	free(d->chunks);
	if (d->kmod_fd >= 0)
		close(d->kmod_fd);
#ifdef VKV_HAVE_CUDA
	cuda_release(d);
#endif
	pthread_mutex_destroy(&d->lock);
}

static void block_free(struct vkv_tier_dram *d, void *p)
{
	for (size_t i = 0; i < d->nchunks; i++) {
		struct dram_chunk *c = &d->chunks[i];
		uint64_t b;

		if ((uint8_t *)p < c->base || (uint8_t *)p >= c->base + c->bytes)
			continue;
		b = (uint64_t)((uint8_t *)p - c->base) / d->block;
		c->bits[b / 64] &= ~(1ULL << (b % 64));
		c->nfree++;
		d->blocks_used--;
		return;
	}
}

int vkv__dram_alloc(struct vkv_tier_dram *d, struct vkv_tier_entry **e, size_t n)
{
	size_t got = 0, ci = 0;
	int err = 0;

	pthread_mutex_lock(&d->lock);
	while (got < n) {
		uint64_t room;

		while (ci < d->nchunks && !d->chunks[ci].nfree)
			ci++;
		if (ci < d->nchunks) {
			e[got++]->dram = chunk_take(d, &d->chunks[ci]);
			continue;
		}
		room = d->budget > d->bytes_total ? d->budget - d->bytes_total : 0;
		if (room < d->block) {
			err = vkv__set_error(-ENOSPC, "dram tier: budget %llu bytes "
					     "(VKV_DRAM_BUDGET) is full",
					     (unsigned long long)d->budget);
			break;
		}
		err = chunk_create(d, room < d->chunk_bytes ? room : d->chunk_bytes);
		if (err)
			break;
	}
	while (err && got) {
		got--;
		block_free(d, e[got]->dram);
		e[got]->dram = NULL;
	}
	pthread_mutex_unlock(&d->lock);
	return err;
}

void vkv__dram_free(struct vkv_tier_dram *d, struct vkv_tier_entry *e)
{
	pthread_mutex_lock(&d->lock);
	block_free(d, e->dram);
	pthread_mutex_unlock(&d->lock);
	e->dram = NULL;
}
