// SPDX-License-Identifier: MIT
/*
 * backend_kmod.c - the kmod backend: host semantics, physical pages from
 * /dev/vkv (vkv.ko), so they are pinned, zeroed by the kernel, placed on
 * the NUMA node cfg->device names (negative: any), physically contiguous
 * in 2 MiB chunks and charged to the caller's memory cgroup.
 *
 * reserve = mmap(PROT_NONE) (PROT_READ private anonymous in zero mode)
 * page    = a page-sized piece of a 2 MiB /dev/vkv buffer (a "chunk");
 *           vkv_phys is the piece's mmap offset on /dev/vkv
 * map     = mmap(MAP_FIXED | MAP_SHARED) of /dev/vkv at that offset; runs of
 *           consecutive offsets are one call
 * unmap   = the reservation's anonymous mapping put back over the range
 * release = the piece goes back to its chunk; a chunk with no piece in use
 *           is freed to the kernel at once (the pool above already keeps
 *           the free pages it wants)
 *
 * Chunks are found by buffer id: the module hands out small, dense ids,
 * so a table indexed by id is enough.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"
#include "kmod_dev.h"

#define KMOD_SMALL_PAGE (4ULL << 10)
#define KMOD_HUGE_PAGE (2ULL << 20)
#define KMOD_CHUNK KMOD_HUGE_PAGE
#define KMOD_MAX_PIECES (KMOD_CHUNK / KMOD_SMALL_PAGE)

/* One /dev/vkv buffer cut into pieces of page_size. */
struct kmod_chunk {
	struct vkv_kmod_buf buf;
	uint32_t nfree;                      /* pieces not handed out */
	uint64_t used[KMOD_MAX_PIECES / 64]; /* bit set: piece handed out */
};

struct kmod_priv {
	int fd;
	int node;                 /* NUMA node, -1 = any; read-only */
	uint32_t pieces;          /* pieces per chunk; read-only */
	pthread_mutex_t lock;
	struct kmod_chunk **by_id; /* [cap] chunk of buffer id, or NULL (lock) */
	uint64_t cap;             /* (lock) */
	uint64_t partial;         /* id of a chunk with free pieces, 0 (lock) */
};

static int kmod_open(struct vkv_backend *b, const struct vkv_ctx_config *cfg)
{
	uint64_t page = cfg->page_size ? cfg->page_size : KMOD_HUGE_PAGE;
	struct vkv_ioc_info info;
	struct kmod_priv *kp;
	int fd, err;

	if (page != KMOD_SMALL_PAGE && page != KMOD_HUGE_PAGE)
		return vkv__set_error(-EINVAL,
				      "kmod backend: page size %llu must be 4K or 2M",
				      (unsigned long long)page);
	fd = vkv__kmod_open();
	if (fd < 0)
		return vkv__set_error(fd == -ENODEV ? -ENODEV : fd,
				      "kmod backend: open %s: %s%s",
				      VKV_KMOD_PATH, strerror(-fd),
				      fd == -ENODEV ? " (is vkv.ko loaded?)" : "");
	err = vkv__kmod_info(fd, &info);
	if (err || info.abi_version != VKV_ABI_VERSION) {
		close(fd);
		return vkv__set_error(-ENODEV,
				      "kmod backend: %s speaks ABI %u, we speak %u",
				      VKV_KMOD_PATH, err ? 0 : info.abi_version,
				      VKV_ABI_VERSION);
	}
	if (cfg->device >= 0 && (uint32_t)cfg->device >= info.nr_nodes) {
		close(fd);
		return vkv__set_error(-EINVAL,
				      "kmod backend: no NUMA node %d (VKV_DEVICE)",
				      cfg->device);
	}
	kp = calloc(1, sizeof(*kp));
	if (!kp) {
		close(fd);
		return vkv__set_error(-ENOMEM, "kmod backend: out of memory");
	}
	kp->fd = fd;
	kp->node = cfg->device >= 0 ? cfg->device : -1;
	kp->pieces = (uint32_t)(KMOD_CHUNK / page);
	pthread_mutex_init(&kp->lock, NULL);
	b->priv = kp;
	b->page_size = page;
	if (kp->node >= 0)
		snprintf(b->detail, sizeof(b->detail), "/dev/vkv node %d %s",
			 kp->node, page == KMOD_HUGE_PAGE ? "2 MiB" : "4 KiB");
	else
		snprintf(b->detail, sizeof(b->detail), "/dev/vkv any node %s",
			 page == KMOD_HUGE_PAGE ? "2 MiB" : "4 KiB");
	return 0;
}

static void kmod_close(struct vkv_backend *b)
{
	struct kmod_priv *kp = b->priv;

	if (!kp)
		return;
	/* Closing the file frees every chunk still held. */
	close(kp->fd);
	for (uint64_t id = 0; id < kp->cap; id++)
		free(kp->by_id[id]);
	free(kp->by_id);
	pthread_mutex_destroy(&kp->lock);
	free(kp);
	b->priv = NULL;
}

static int chunk_insert(struct kmod_priv *kp, struct kmod_chunk *c)
{
	uint64_t id = c->buf.id;

	if (id >= kp->cap) {
		uint64_t cap = kp->cap ? kp->cap : 64;
		struct kmod_chunk **n;

		while (cap <= id)
			cap *= 2;
		n = realloc(kp->by_id, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		memset(n + kp->cap, 0, (cap - kp->cap) * sizeof(*n));
		kp->by_id = n;
		kp->cap = cap;
	}
	kp->by_id[id] = c;
	return 0;
}

/* A chunk with a free piece: the hint, a scan, or a new buffer. */
static int chunk_with_room(struct vkv_backend *b, struct kmod_chunk **out)
{
	struct kmod_priv *kp = b->priv;
	struct kmod_chunk *c;
	int err;

	if (kp->partial && kp->partial < kp->cap && kp->by_id[kp->partial] &&
	    kp->by_id[kp->partial]->nfree) {
		*out = kp->by_id[kp->partial];
		return 0;
	}
	for (uint64_t id = 1; id < kp->cap; id++) {
		if (kp->by_id[id] && kp->by_id[id]->nfree) {
			kp->partial = id;
			*out = kp->by_id[id];
			return 0;
		}
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return vkv__set_error(-ENOMEM, "page_create: out of memory");
	err = vkv__kmod_alloc(kp->fd, KMOD_CHUNK, kp->node, VKV_ALLOC_HUGE,
			      &c->buf);
	if (err) {
		free(c);
		return vkv__set_error(err == -EDQUOT || err == -ENOMEM ? -ENOMEM :
				      err == -EINVAL ? -EINVAL : -EIO,
				      "page_create: VKV_IOC_ALLOC of 2 MiB: %s%s",
				      strerror(-err),
				      err == -EDQUOT ? " (vkv.ko max_total/max_file limit)" : "");
	}
	c->nfree = kp->pieces;
	if (chunk_insert(kp, c) != 0) {
		vkv__kmod_free(kp->fd, c->buf.id);
		free(c);
		return vkv__set_error(-ENOMEM, "page_create: out of memory");
	}
	kp->partial = c->buf.id;
	*out = c;
	return 0;
}

static int kmod_page_create(struct vkv_backend *b, vkv_phys *page)
{
	struct kmod_priv *kp = b->priv;
	struct kmod_chunk *c = NULL;
	uint32_t i;
	int err;

	if (vkv__fault_hit(VKV_FAULT_PAGE_CREATE))
		return vkv__set_error(-ENOMEM, "page_create: injected failure (VKV_FAULT_PAGE_CREATE)");
	pthread_mutex_lock(&kp->lock);
	err = chunk_with_room(b, &c);
	if (err) {
		pthread_mutex_unlock(&kp->lock);
		return err;
	}
	for (i = 0; i < kp->pieces; i++)
		if (!(c->used[i / 64] & (1ULL << (i % 64))))
			break;
	c->used[i / 64] |= 1ULL << (i % 64);
	c->nfree--;
	*page = c->buf.offset + i * b->page_size;
	pthread_mutex_unlock(&kp->lock);
	return 0;
}

static void kmod_page_release(struct vkv_backend *b, vkv_phys page)
{
	struct kmod_priv *kp = b->priv;
	uint64_t id = page >> VKV_MMAP_ID_SHIFT;
	uint64_t i = (page & (VKV_MAX_BUFFER_SIZE - 1)) / b->page_size;
	struct kmod_chunk *c;

	pthread_mutex_lock(&kp->lock);
	c = id < kp->cap ? kp->by_id[id] : NULL;
	if (!c || i >= kp->pieces || !(c->used[i / 64] & (1ULL << (i % 64)))) {
		pthread_mutex_unlock(&kp->lock);
		vkv__warn("kmod backend: release of unknown page 0x%llx",
			  (unsigned long long)page);
		return;
	}
	c->used[i / 64] &= ~(1ULL << (i % 64));
	if (++c->nfree == kp->pieces) {
		kp->by_id[id] = NULL;
		if (kp->partial == id)
			kp->partial = 0;
		if (vkv__kmod_free(kp->fd, id) != 0)
			vkv__warn("kmod backend: VKV_IOC_FREE of buffer %llu failed",
				  (unsigned long long)id);
		free(c);
	}
	pthread_mutex_unlock(&kp->lock);
}

static int kmod_map_pages(struct vkv_backend *b, uint64_t addr,
			  const vkv_phys *pages, size_t n)
{
	struct kmod_priv *kp = b->priv;

	return vkv__hostmem_map_fd(b, kp->fd, addr, pages, n);
}

static const struct vkv_backend_ops kmod_ops = {
	.name = "kmod",
	.open = kmod_open,
	.close = kmod_close,
	.reserve = vkv__hostmem_reserve,
	.unreserve = vkv__hostmem_unreserve,
	.page_create = kmod_page_create,
	.page_release = kmod_page_release,
	.map_pages = kmod_map_pages,
	.unmap_pages = vkv__hostmem_unmap,
	.copy_dd = vkv__hostmem_copy_dd,
	.copy_to_host = vkv__hostmem_copy_to_host,
	.copy_from_host = vkv__hostmem_copy_from_host,
	.copy_batch = vkv__hostmem_copy_batch,
	.fence_record = vkv__hostmem_fence_record,
	.fence_wait = vkv__hostmem_fence_wait,
	.fence_drop = vkv__hostmem_fence_drop,
	.set_stream = vkv__hostmem_set_stream,
};

const struct vkv_backend_ops *const vkv__backend_kmod_ops = &kmod_ops;
