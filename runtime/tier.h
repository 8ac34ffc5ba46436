// SPDX-License-Identifier: MIT
/*
 * tier.h - lower tiers of a context: host DRAM (tier 1) and NVMe (tier 2).
 *
 * tier.c owns the policy and the slot state machine (ACTIVE -> EVICTED ->
 * ACTIVE), the operations (vkv_evict / vkv_restore) and the tier thread
 * that runs them. The two stores below only keep page-sized copies:
 *
 *   tier_dram.c  pinned, NUMA-bound host buffers, grown lazily in chunks up
 *                to a budget; one block per page copy.
 *   tier_nvme.c  one private preallocated file opened O_DIRECT, an extent
 *                allocator (one page-sized extent per page copy), io_uring
 *                with registered buffers and files, a crc32c per I/O block
 *                of every extent, verified before anything is copied back.
 *
 * The unit of storage is an entry: the copy of one distinct physical page.
 * A page shared by several slots of one eviction (prefix sharing) gets one
 * entry that all of them point at; entries are refcounted by the evicted
 * slots' tables and released when the last one is restored or freed.
 *
 * Locking: entries and evicted slots' tables are protected by ctx->lock.
 * Each store has its own lock (inner to ctx->lock) for its allocator; the
 * NVMe store serialises transfers on its ring with io_lock, taken without
 * ctx->lock.
 */
#ifndef VKV_TIER_H
#define VKV_TIER_H

#include <stdbool.h>
#include <stdint.h>

#include "internal.h"

/* The copy of one physical page in a lower tier. */
struct vkv_tier_entry {
	uint32_t tier;  /* VKV_TIER_DRAM or VKV_TIER_NVME */
	uint32_t refs;  /* evicted slots' table entries pointing here (ctx->lock) */
	bool bad;       /* failed its checksum or was lost (ctx->lock) */
	void *dram;     /* DRAM: the block */
	uint64_t off;   /* NVMe: the extent's file offset */
	uint32_t *crc;  /* NVMe: one crc32c per I/O block of the extent */
};

/* ------------------------------------------------------------ tier_dram.c */

struct dram_chunk {
	uint8_t *base;
	uint64_t bytes;
	uint64_t nblocks;
	uint64_t nfree;
	uint64_t *bits;   /* 1 = block in use */
	uint64_t hint;    /* word where the last free block was found */
	bool numa;        /* from numa_alloc_onnode (else mmap) */
	bool kmod;        /* a /dev/vkv buffer, kmod_id */
	uint64_t kmod_id;
	bool locked;      /* mlock succeeded */
	bool registered;  /* cuMemHostRegister succeeded */
};

struct vkv_tier_dram {
	pthread_mutex_t lock;      /* everything below */
	struct vkv_backend *backend;
	uint64_t block;            /* bytes per block: the page size */
	uint64_t budget;           /* bytes; read-only */
	uint64_t chunk_bytes;      /* growth step; read-only */
	int node;                  /* NUMA node, -1 = none; read-only */
	int kmod_fd;               /* /dev/vkv, -1 when absent; read-only */
	struct dram_chunk *chunks;
	size_t nchunks, cap;
	uint64_t bytes_total;      /* allocated chunks */
	uint64_t blocks_used;
	void *cu_ctx;              /* cuda: retained primary context */
	size_t unregistered;       /* cuda: chunks cuMemHostRegister refused */
};

int vkv__dram_init(struct vkv_tier_dram *d, struct vkv_backend *b);
/* cuda: every block is in memory registered with the device. */
bool vkv__dram_pinned(struct vkv_tier_dram *d);
void vkv__dram_fini(struct vkv_tier_dram *d);
/* Give each entry a block; all or nothing. -ENOSPC at the budget, -ENOMEM
 * when the host says no. */
int vkv__dram_alloc(struct vkv_tier_dram *d, struct vkv_tier_entry **e,
		    size_t n);
void vkv__dram_free(struct vkv_tier_dram *d, struct vkv_tier_entry *e);
/* Pin other host memory for DMA like the chunks (cuda: register it with
 * the driver); false when there is nothing to do or it failed. */
bool vkv__dram_pin(struct vkv_tier_dram *d, void *p, uint64_t bytes);
void vkv__dram_unpin(struct vkv_tier_dram *d, void *p);

/* ------------------------------------------------------------ tier_nvme.c */

struct vkv_tier_nvme;

/* Allocated on first use (the file is created then). Staging buffers are
 * pinned for DMA through `pin` (the DRAM store). */
struct vkv_tier_nvme *vkv__nvme_new(struct vkv_backend *b,
				    struct vkv_tier_dram *pin);
void vkv__nvme_destroy(struct vkv_tier_nvme *nv);
/* Give each entry an extent (the file grows, preallocated, as needed); all
 * or nothing. -ENOSPC (budget or disk full), -ENOENT (no VKV_NVME_DIR),
 * -EIO. */
int vkv__nvme_alloc(struct vkv_tier_nvme *nv, struct vkv_tier_entry **e,
		    size_t n);
void vkv__nvme_free(struct vkv_tier_nvme *nv, struct vkv_tier_entry *e);
/*
 * Copy pages between the backend (at addr[i]) and the entries' extents.
 * write: device -> file, recording the checksums. read: file -> device,
 * verifying every block before it is copied: a mismatch marks the entry
 * bad and gives -EBADMSG, a short read (truncated file) marks it bad and
 * gives -EIO, a failed read gives -EIO and leaves it good. Reads always
 * go through staging buffers; writes of host memory (host, kmod backends)
 * go straight from addr[], which are then host pointers.
 */
int vkv__nvme_transfer(struct vkv_tier_nvme *nv, struct vkv_tier_entry **e,
		       const uint64_t *addr, size_t n, bool write);
/* Bytes of the tier file and of its budget (stats). */
uint64_t vkv__nvme_file_bytes(struct vkv_tier_nvme *nv);
uint64_t vkv__nvme_budget(struct vkv_tier_nvme *nv);
/* The file's descriptor, -1 before it exists (tests truncate it). */
int vkv__nvme_fd(struct vkv_tier_nvme *nv);

/* ----------------------------------------------------------------- tier.c */

struct vkv_op;

struct vkv_tier {
	struct vkv_ctx *ctx;
	struct vkv_tier_dram dram;
	struct vkv_tier_nvme *nvme;
	/* the tier thread (ctx->lock) */
	pthread_t thread;
	bool thread_on;
	bool stop;
	pthread_cond_t wake;     /* an operation was queued */
	pthread_cond_t done;     /* an operation finished */
	struct vkv_op *head, *tail;
	uint32_t idle;           /* VKV_TIER_IDLE; read-only */
	/* what this context added to the stats segment (ctx->lock) */
	uint64_t pub_dram_cap, pub_nvme_cap, pub_file;
};

/* Host memory just mapped at addr, about to be written by the CPU: fault
 * its page tables in, a read every TIER_PREFAULT_STRIDE bytes. */
#define TIER_PREFAULT_STRIDE (64ULL << 10)
void vkv__tier_prefault(uint64_t addr, uint64_t bytes);

/* For tests: the context's NVMe file descriptor, -1 before it exists. */
int vkv__tier_nvme_fd(struct vkv_ctx *ctx);

#endif /* VKV_TIER_H */
