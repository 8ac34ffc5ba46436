/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vkv.h - internals of vkv.ko, the optional kernel assist of vkv.
 *
 * The module hands out *buffers*: runs of pinned, zeroed pages placed on a
 * NUMA node, made of 2 MiB physically contiguous chunks when asked and
 * available. Userspace maps them through /dev/vkv (vkv_main.c) and uses
 * them as the host tier's memory or as the kmod backend's physical pages.
 *
 * Ownership. An open file owns its buffers through an xarray of ids; a
 * mapping (VMA) holds a reference on the buffer it maps, and the VMA holds
 * the file, so a buffer lives until it is freed (or its file is closed)
 * *and* its last mapping is gone. Pages are ordinary kernel pages inserted
 * with vm_insert_pages(): get_user_pages() accepts them (O_DIRECT,
 * cuMemHostRegister), and a page pinned that way outlives the buffer by
 * its own reference count.
 *
 * Purging. A buffer marked purgeable sits on a global LRU (least recently
 * unpinned first); the shrinker frees the pages of purgeable buffers that
 * are not mapped anywhere. Pinning it again allocates fresh zeroed pages
 * and reports the purge.
 *
 * Locking: vkv_lock (a mutex) protects every buffer's state (pages,
 * purgeable, purged, mapcount, lru) and the LRU list. The shrinker only
 * trylocks it, so an allocation made under the lock cannot deadlock in
 * reclaim. Counters are atomics and need no lock. Page allocation happens
 * outside the lock.
 */
#ifndef VKV_KMOD_H
#define VKV_KMOD_H

#include <linux/atomic.h>
#include <linux/kref.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/types.h>
#include <linux/xarray.h>

#define VKV_HUGE_ORDER (21 - PAGE_SHIFT)
#define VKV_HUGE_PAGES (1UL << VKV_HUGE_ORDER)
#define VKV_HUGE_SIZE (PAGE_SIZE << VKV_HUGE_ORDER)

#define VKV_MODULE_VERSION_STR "0.1.0"
#define VKV_MODULE_VERSION ((0 << 16) | (1 << 8) | 0)

/* One open /dev/vkv. */
struct vkv_file {
	struct xarray bufs;   /* id -> struct vkv_buf *, the file's refs */
	atomic64_t bytes;     /* resident bytes of the file's buffers */
	atomic64_t buffers;   /* live buffers created by this file */
};

/*
 * A buffer. Invariant: pages[i] != NULL for every i unless purged, in
 * which case every entry is NULL and no byte is charged.
 */
struct vkv_buf {
	struct kref ref;         /* the file's id entry + one per VMA */
	struct vkv_file *owner;  /* outlives the buffer (see above) */
	unsigned long nr_pages;  /* read-only */
	struct page **pages;     /* [nr_pages] (vkv_lock) */
	int node;                /* requested node or NUMA_NO_NODE; read-only */
	int node_used;           /* node of pages[0] when allocated (vkv_lock) */
	u32 flags;               /* VKV_ALLOC_*; read-only */
	u32 huge;                /* contiguous 2 MiB chunks (vkv_lock) */
	unsigned int mapcount;   /* VMAs mapping it (vkv_lock) */
	bool purgeable;          /* on vkv_lru (vkv_lock) */
	bool purged;             /* pages dropped (vkv_lock) */
	bool pinning;            /* a PIN is refilling it (vkv_lock) */
	struct list_head lru;    /* vkv_lru entry (vkv_lock) */
};

/* Counters of one NUMA node, shown in sysfs. */
struct vkv_node_stats {
	atomic64_t bytes;      /* resident bytes on this node */
	atomic64_t buffers;    /* buffers whose first page is here */
	atomic64_t huge;       /* 2 MiB chunks allocated here since load */
	atomic64_t failures;   /* failed allocations asked for this node */
	atomic64_t purged;     /* buffers purged from this node */
};

/* Module-wide state (vkv_buf.c). */
struct vkv_global {
	atomic64_t bytes;           /* resident bytes, all files */
	atomic64_t buffers;         /* live buffers */
	atomic64_t purgeable_pages; /* resident pages of purgeable buffers */
	atomic64_t purged;          /* buffers purged since load */
	atomic64_t failures;        /* failed allocations since load */
	struct vkv_node_stats *node; /* [nr_node_ids] */
};

extern struct vkv_global vkv_stats;
extern struct mutex vkv_lock;
extern unsigned long vkv_max_total;  /* bytes; module parameter */
extern unsigned long vkv_max_file;   /* bytes; module parameter */

/* vkv_buf.c */
/* The limits in bytes, defaults applied. */
unsigned long vkv_limit_total(void);
unsigned long vkv_limit_file(void);
int vkv_buf_init(void);
void vkv_buf_exit(void);
/* Create a buffer of `size` bytes (rounded) charged to f. */
int vkv_buf_create(struct vkv_file *f, u64 size, int node, u32 flags,
		   struct vkv_buf **out);
void vkv_buf_get(struct vkv_buf *b);
void vkv_buf_put(struct vkv_buf *b);
int vkv_buf_unpin(struct vkv_buf *b);
/* Returns 1 when the contents had been purged, 0 when not, or -errno. */
int vkv_buf_pin(struct vkv_buf *b);

/* vkv_sysfs.c */
struct device;
int vkv_sysfs_init(struct device *dev);
void vkv_sysfs_exit(void);
extern const struct attribute_group *vkv_dev_groups[];

#endif /* VKV_KMOD_H */
