// SPDX-License-Identifier: MIT
/*
 * tier.c - eviction and restoration of slots, and the automatic policy.
 *
 * State machine of a slot, all under ctx->lock:
 *
 *   ACTIVE --vkv_evict--> EVICTED (busy: copies in flight)
 *          <--failure---  (data never left tier 0; pages still mapped)
 *   EVICTED (not busy: tier_priv holds the slot's table of entries)
 *          --vkv_restore--> EVICTED, busy --> ACTIVE (same addresses)
 *                                        \--> EVICTED (I/O error, -ENOMEM)
 *                                        \--> ACTIVE, empty (-EBADMSG, lost)
 *   EVICTED --vkv_slot_free / region destroy--> tier_discard, then free
 *
 * An operation locks (marks busy) every slot of its batch, in index order
 * so that two batches cannot deadlock, at submission; the tier thread runs
 * it and unlocks them. The copies run without ctx->lock. The slot becomes
 * EVICTED at submission, so vkv_step refuses it (-EAGAIN) at once.
 *
 * Eviction of a batch: distinct pages are collected (a shared page once),
 * each gets an entry in the target store, the data is copied down, then
 * the slots are unmapped and their pages dropped. Any failure before that
 * point gives the storage back and leaves the slots as they were.
 *
 * Restoration of a batch: one fresh page per distinct entry (so pages
 * shared at eviction are shared again), mapped at the slots' old
 * addresses, then filled from the store. NVMe blocks are read into staging
 * buffers and copied into a page only after they passed their checksum.
 *
 * The automatic policy (VKV_TIER_AUTO=1) installs two hooks in the
 * context: tier_demote, called when the pool cannot give pages and nothing
 * cached is left (and by the worker when the pool falls below its low
 * watermark with the budget spent), evicts idle active slots least recently
 * stepped first, to DRAM and, when DRAM is full, to NVMe; tier_promote,
 * called by vkv_step/vkv_slot_ensure on an evicted slot, restores it
 * synchronously, and by vkv_slot_prefetch, starts that restore on the tier
 * thread so that the step rarely waits.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tier.h"

/* An operation: one batch of one region. */
struct vkv_op {
	struct vkv_op *next;   /* tier thread's queue (ctx->lock) */
	struct vkv_ctx *ctx;
	struct vkv_region *r;
	bool restore;
	unsigned tier;         /* evict: the target */
	size_t n;
	uint32_t *slots;       /* sorted */
	bool has_fence;
	vkv_fence fence;       /* engine work to wait for before copying */
	bool done;             /* (ctx->lock) */
	bool detached;         /* freed by the thread when done (ctx->lock) */
	int result;            /* (ctx->lock) */
	char detail[256];      /* the failure's detail */
};

/* An evicted slot's table: entry of page i of tensor t at i*ntensors+t. */
struct tier_slot {
	uint64_t mapped;       /* pages per tensor it had */
	struct vkv_tier_entry **ent;
};

static struct vkv_tier *tier_of(struct vkv_ctx *ctx)
{
	return ctx->tier;
}

static const char *tier_name(unsigned tier)
{
	return tier == VKV_TIER_DRAM ? "dram" : tier == VKV_TIER_NVME ? "nvme" : "?";
}

/* ----------------------------------------------------------------- stats */

static void stat_move(unsigned tier, bool in, uint64_t slots, uint64_t bytes,
		      uint64_t ns)
{
	struct vkv_stats_segment *st = vkv__stats_begin();
	struct vkv_stats_tier *t = &st->tiers[tier];

	if (in) {
		t->evictions += slots;
		t->bytes_in += bytes;
		t->ns_in += ns;
		t->bytes_used += bytes;
	} else {
		t->restores += slots;
		t->bytes_out += bytes;
		t->ns_out += ns;
	}
	vkv__stats_end();
}

static void stat_error(unsigned tier)
{
	struct vkv_stats_segment *st = vkv__stats_begin();

	st->tiers[tier].errors++;
	vkv__stats_end();
}

/* Publish this context's share of the tiers' sizes (all contexts of the
 * process add up in the segment); `on` false takes it back. */
static void stat_capacity(struct vkv_tier *t, bool on)
{
	struct vkv_stats_segment *st;
	uint64_t dram = on ? t->dram.budget : 0, nvme = 0, file = 0;

	if (on && t->nvme) {
		nvme = vkv__nvme_budget(t->nvme);
		file = vkv__nvme_file_bytes(t->nvme);
	}
	st = vkv__stats_begin();
	/* Unsigned wrap-around makes "+ new - old" right both ways. */
	st->tiers[VKV_TIER_DRAM].bytes_capacity += dram - t->pub_dram_cap;
	st->tiers[VKV_TIER_NVME].bytes_capacity += nvme - t->pub_nvme_cap;
	st->tiers[VKV_TIER_NVME].file_bytes += file - t->pub_file;
	vkv__stats_end();
	t->pub_dram_cap = dram;
	t->pub_nvme_cap = nvme;
	t->pub_file = file;
}

/* -------------------------------------------------------- pointer maps */

/* A small open-addressing map from a pointer to an index, for collecting
 * distinct pages (eviction) or distinct entries (restoration). */
struct ptrmap {
	const void **keys;
	size_t *vals;
	size_t mask;
};

static int ptrmap_init(struct ptrmap *m, size_t n)
{
	size_t cap = 16;

	while (cap < 2 * n)
		cap *= 2;
	m->keys = calloc(cap, sizeof(*m->keys));
	m->vals = calloc(cap, sizeof(*m->vals));
	m->mask = cap - 1;
	if (!m->keys || !m->vals) {
		free(m->keys);
		free(m->vals);
		return -ENOMEM;
	}
	return 0;
}

static void ptrmap_fini(struct ptrmap *m)
{
	free(m->keys);
	free(m->vals);
}

/* The index of key; *added when it was not there (then it gets val). */
static size_t ptrmap_get(struct ptrmap *m, const void *key, size_t val,
			 bool *added)
{
	size_t h = ((uintptr_t)key >> 4) * 0x9E3779B97F4A7C15ULL;

	for (h &= m->mask;; h = (h + 1) & m->mask) {
		if (m->keys[h] == key) {
			*added = false;
			return m->vals[h];
		}
		if (!m->keys[h]) {
			m->keys[h] = key;
			m->vals[h] = val;
			*added = true;
			return val;
		}
	}
}

/* ------------------------------------------------------------- storage */

static int store_alloc(struct vkv_tier *t, unsigned tier,
		       struct vkv_tier_entry **e, size_t n)
{
	int err;

	for (size_t i = 0; i < n; i++)
		e[i]->tier = tier;
	if (tier == VKV_TIER_DRAM)
		return vkv__dram_alloc(&t->dram, e, n);
	if (!t->nvme) {
		/* Created once, under ctx->lock (held by every caller). */
		t->nvme = vkv__nvme_new(&t->ctx->backend, &t->dram);
		if (!t->nvme)
			return vkv__set_error(-ENOMEM, "nvme tier: out of host memory");
	}
	err = vkv__nvme_alloc(t->nvme, e, n);
	stat_capacity(t, true);
	return err;
}

static void entry_free(struct vkv_tier *t, struct vkv_tier_entry *e)
{
	if (e->tier == VKV_TIER_DRAM && e->dram)
		vkv__dram_free(&t->dram, e);
	else if (e->tier == VKV_TIER_NVME && e->crc)
		vkv__nvme_free(t->nvme, e);
	free(e);
}

/* Drop one reference of an entry (ctx->lock held). */
static void entry_put(struct vkv_tier *t, struct vkv_tier_entry *e)
{
	struct vkv_stats_segment *st;

	if (--e->refs)
		return;
	st = vkv__stats_begin();
	st->tiers[e->tier].bytes_used -= t->dram.block;
	vkv__stats_end();
	entry_free(t, e);
}

/* Forget an evicted slot's table (ctx->lock held). */
static void tier_slot_drop(struct vkv_tier *t, struct vkv_region *r,
			   struct tier_slot *ts)
{
	for (uint64_t i = 0; i < ts->mapped * r->ntensors; i++)
		entry_put(t, ts->ent[i]);
	free(ts->ent);
	free(ts);
}

/*
 * The copies: device -> store (down) or store -> device. done == NULL:
 * finished on return; else DRAM copies may still run and *done is their
 * fence (see copy_batch in backend.h; NVMe transfers always finish).
 */
static int copy_entries(struct vkv_tier *t, struct vkv_tier_entry **e,
			const uint64_t *addr, size_t n, bool down,
			vkv_fence *done)
{
	struct vkv_backend *b = &t->ctx->backend;
	void **host;
	int err;

	if (done)
		*done = 0;
	if (!n)
		return 0;
	if (e[0]->tier == VKV_TIER_NVME)
		return vkv__nvme_transfer(t->nvme, e, addr, n, down);
	/* one submission for the batch: under cuda one wait, not one per page */
	host = malloc(n * sizeof(*host));
	if (!host)
		return vkv__set_error(-ENOMEM, "tier: out of memory");
	for (size_t i = 0; i < n; i++)
		host[i] = e[i]->dram;
	err = vkv__backend_copy_batch(b, down, vkv__dram_pinned(&t->dram), host,
				      addr, n, b->page_size, done);
	free(host);
	return err;
}

/*
 * Pipelining. A batch moves in groups of consecutive slots of about
 * TIER_GROUP_BYTES: under cuda the copies of one group run on the copy
 * engine while the CPU unmaps the group before it (evict) or maps the
 * group after it (restore), so the driver's per-page map and unmap calls
 * hide behind the transfer instead of adding to it. On host memory the
 * copies are synchronous and the groups change nothing but the order.
 * first[k] is the index of slot k's first distinct page in the batch's
 * page list (pages shared with an earlier slot belong to that slot's
 * group); first[n] is the number of distinct pages.
 */
#define TIER_GROUP_BYTES (32ull << 20)

static size_t group_end(const struct vkv_region *r, const struct vkv_op *op,
			struct tier_slot *const *ts, size_t lo)
{
	uint64_t bytes = 0;
	size_t k = lo;

	while (k < op->n && (k == lo || bytes < TIER_GROUP_BYTES))
		bytes += ts[k++]->mapped * r->ntensors * r->page_size;
	return k;
}

/* Wait for and forget fences f[0..n); the first error. */
static int fences_finish(struct vkv_backend *b, vkv_fence *f, size_t n)
{
	int err = 0;

	for (size_t i = 0; i < n; i++) {
		int e = b->ops->fence_wait(b, f[i]);

		if (!err)
			err = e;
		b->ops->fence_drop(b, f[i]);
	}
	return err;
}

/* ---------------------------------------------------------------- evict */

/*
 * The slots' distinct pages, as fresh entries with the address of one
 * mapping each, and each slot's table (lock held).
 */
static int collect_pages(struct vkv_region *r, const struct vkv_op *op,
			 struct tier_slot **ts, struct vkv_tier_entry ***ents,
			 uint64_t **addr, size_t *m, size_t *first)
{
	struct ptrmap map;
	size_t total = 0;
	int err;

	for (size_t k = 0; k < op->n; k++)
		total += r->slots[op->slots[k]].mapped * r->ntensors;
	*m = 0;
	*ents = calloc(total ? total : 1, sizeof(**ents));
	*addr = calloc(total ? total : 1, sizeof(**addr));
	err = ptrmap_init(&map, total);
	if (!*ents || !*addr || err)
		goto nomem;
	for (size_t k = 0; k < op->n; k++) {
		uint32_t s = op->slots[k];
		struct vkv_slot *sl = &r->slots[s];
		uint64_t np = sl->mapped * r->ntensors;

		first[k] = *m;
		ts[k] = calloc(1, sizeof(*ts[k]));
		if (!ts[k] || !(ts[k]->ent = calloc(np ? np : 1, sizeof(void *))))
			goto nomem_map;
		ts[k]->mapped = sl->mapped;
		/* Tensor by tensor, as restoration reads them back: the
		 * store's blocks and extents, allocated in this order, are
		 * then read sequentially. */
		for (uint64_t i = 0; i < np; i++) {
			uint64_t tn = i / sl->mapped, p = i % sl->mapped;
			uint64_t e = p * r->ntensors + tn;
			bool added;
			size_t idx = ptrmap_get(&map, sl->pages[e], *m, &added);

			if (added) {
				(*ents)[idx] = calloc(1, sizeof(struct vkv_tier_entry));
				if (!(*ents)[idx])
					goto nomem_map;
				(*addr)[idx] = vkv__page_addr(r, s, (uint32_t)tn, p);
				(*m)++;
			}
			ts[k]->ent[e] = (*ents)[idx];
		}
	}
	first[op->n] = *m;
	ptrmap_fini(&map);
	return 0;

nomem_map:
	ptrmap_fini(&map);
nomem:
	return vkv__set_error(-ENOMEM, "evict: out of host memory");
}

static void free_tables(struct tier_slot **ts, size_t n)
{
	for (size_t k = 0; k < n; k++) {
		if (!ts[k])
			continue;
		free(ts[k]->ent);
		free(ts[k]);
		ts[k] = NULL;
	}
}

/* Map slots [lo, hi) of an eviction back (their pages are untouched). */
static void remap_slots(struct vkv_region *r, const struct vkv_op *op,
			size_t lo, size_t hi)
{
	for (size_t j = lo; j < hi; j++)
		vkv__slot_map_range(r, op->slots[j], 0,
				    r->slots[op->slots[j]].mapped);
}

/* Unmap slots [lo, hi) of the batch; on failure map them back. */
static int unmap_slots(struct vkv_region *r, const struct vkv_op *op,
		       size_t lo, size_t hi)
{
	size_t k;
	int err = 0;

	for (k = lo; k < hi && !err; k++)
		err = vkv__slot_unmap_range(r, op->slots[k], 0,
					    r->slots[op->slots[k]].mapped);
	if (err) {
		/* The failed slot's unmap may be partial: unmap it whole, then
		 * map back every slot up to it. */
		vkv__slot_unmap_range(r, op->slots[k - 1], 0,
				      r->slots[op->slots[k - 1]].mapped);
		remap_slots(r, op, lo, k);
	}
	return err;
}

static int try_host_pipeline(struct vkv_tier *t, struct vkv_region *r,
			     const struct vkv_op *op, struct tier_slot *const *ts,
			     struct vkv_tier_entry **ents, const uint64_t *addr,
			     const size_t *first, bool restore);

/*
 * Copy every distinct page down and unmap every slot, group by group: the
 * copies of group g are queued before group g-1, whose copies are then
 * finished, is unmapped. On failure every slot is mapped again, as it was.
 */
static int evict_copy_unmap(struct vkv_tier *t, struct vkv_region *r,
			    const struct vkv_op *op, struct tier_slot *const *ts,
			    struct vkv_tier_entry **ents, const uint64_t *addr,
			    const size_t *first)
{
	struct vkv_backend *b = &t->ctx->backend;
	size_t lo, hi, plo = 0, phi = 0, unmapped = 0;
	vkv_fence pf = 0;
	bool pending = false;
	int err = 0;

	if (op->tier == VKV_TIER_DRAM) {
		err = try_host_pipeline(t, r, op, ts, ents, addr, first, false);
		if (err != -EAGAIN)
			return err;
		err = 0;
	}
	for (lo = 0; lo < op->n && !err; lo = hi) {
		vkv_fence f = 0;

		/* NVMe: one transfer, so that the ring never drains between
		 * groups (the writes finish before it returns anyway). */
		hi = op->tier == VKV_TIER_DRAM ? group_end(r, op, ts, lo) : op->n;
		err = copy_entries(t, ents + first[lo], addr + first[lo],
				   first[hi] - first[lo], true, &f);
		if (pending) {
			int werr = fences_finish(b, &pf, 1);

			pending = false;
			if (!err)
				err = werr;
			if (!err)
				err = unmap_slots(r, op, plo, phi);
			if (!err)
				unmapped = phi;
		}
		if (err) {
			fences_finish(b, &f, 1);
			break;
		}
		pf = f;
		pending = true;
		plo = lo;
		phi = hi;
	}
	if (pending) {
		err = fences_finish(b, &pf, 1);
		if (!err)
			err = unmap_slots(r, op, plo, phi);
		if (!err)
			unmapped = phi;
	}
	if (err)
		remap_slots(r, op, 0, unmapped);
	return err;
}

/* Run an eviction; ctx->lock held on entry and return, slots busy and
 * marked EVICTED. */
static int run_evict(struct vkv_tier *t, struct vkv_op *op)
{
	struct vkv_ctx *ctx = t->ctx;
	struct vkv_region *r = op->r;
	struct vkv_tier_entry **ents = NULL;
	struct tier_slot **ts;
	uint64_t *addr = NULL, t0 = vkv__now_ns(), bytes;
	size_t m = 0, *first;
	int err;

	ts = calloc(op->n, sizeof(*ts));
	first = calloc(op->n + 1, sizeof(*first));
	err = ts && first ? collect_pages(r, op, ts, &ents, &addr, &m, first)
			  : vkv__set_error(-ENOMEM, "evict: out of host memory");
	if (!err)
		err = store_alloc(t, op->tier, ents, m);
	pthread_mutex_unlock(&ctx->lock);
	if (!err && op->has_fence)
		err = ctx->backend.ops->fence_wait(&ctx->backend, op->fence);
	if (!err)
		err = evict_copy_unmap(t, r, op, ts, ents, addr, first);
	pthread_mutex_lock(&ctx->lock);
	bytes = m * r->page_size;
	if (err) {
		for (size_t i = 0; i < m; i++)
			entry_free(t, ents[i]);
		if (ts)
			free_tables(ts, op->n);
		for (size_t k = 0; k < op->n; k++)
			r->slots[op->slots[k]].state = VKV_SLOT_ACTIVE;
		stat_error(op->tier);
		err = vkv__prefix_error(err, "evict to %s", tier_name(op->tier));
		goto out;
	}
	for (size_t k = 0; k < op->n; k++) {
		uint32_t s = op->slots[k];
		struct vkv_slot *sl = &r->slots[s];

		for (uint64_t i = 0; i < ts[k]->mapped * r->ntensors; i++)
			ts[k]->ent[i]->refs++;
		/* Pages are dropped as an allocated slot's. */
		sl->state = VKV_SLOT_ACTIVE;
		vkv__slot_drop_pages(r, s, 0, sl->mapped);
		sl->mapped = 0;
		sl->want = 0;
		sl->state = VKV_SLOT_EVICTED;
		sl->tier = op->tier;
		sl->tier_priv = ts[k];
	}
	{
		struct vkv_stats_segment *st = vkv__stats_begin();
		st->unmaps += bytes / r->page_size;
		vkv__stats_end();
	}
	stat_move(op->tier, true, op->n, bytes, vkv__now_ns() - t0);
	vkv__ctx_publish(ctx);
out:
	free(ents);
	free(addr);
	free(first);
	free(ts);
	return err;
}

/* -------------------------------------------------------------- restore */

static bool host_memory(const struct vkv_backend *b)
{
	return b->kind == VKV_BACKEND_HOST || b->kind == VKV_BACKEND_KMOD;
}

/*
 * Map every slot at its old addresses; on failure unmap what was mapped.
 * populate: the data is about to be copied in by the CPU through these
 * mappings; host memory is then prefaulted (vkv__tier_prefault), which
 * costs much less than the page fault per 4 KiB the copy would take.
 */
static int map_slots(struct vkv_region *r, const struct vkv_op *op,
		     struct tier_slot *const *ts, size_t lo, size_t hi,
		     bool populate)
{
	size_t k;
	int err = 0;

	for (k = lo; k < hi && !err; k++)
		err = vkv__slot_map_range(r, op->slots[k], 0, ts[k]->mapped);
	if (err) {
		for (size_t j = lo; j + 1 < k; j++)
			vkv__slot_unmap_range(r, op->slots[j], 0, ts[j]->mapped);
		return err;
	}
	if (!populate || !host_memory(&r->ctx->backend))
		return 0;
	for (k = lo; k < hi; k++)
		for (uint32_t t = 0; t < r->ntensors && ts[k]->mapped; t++)
			vkv__tier_prefault(vkv__page_addr(r, op->slots[k], t, 0),
					   ts[k]->mapped * r->page_size);
	return 0;
}

/*
 * Map the page tables of freshly mapped host memory before the CPU writes
 * it all. The pages are shared file pages (memfd, hugetlb, /dev/vkv), which
 * a read fault maps writable already, and a read fault maps the neighbours
 * that the page cache holds with the page (fault-around, 64 KiB by
 * default), where a write fault maps one 4 KiB page. So one read every
 * 64 KiB does it with a fault per 16 pages. Measured with 4 KiB pages
 * (256 MiB): 14 ms, against 20 ms for MADV_POPULATE_READ (its page-table
 * walk per page costs more than the faults it saves) and 48 ms for
 * MADV_POPULATE_WRITE (a fault per page). Where fault-around is smaller,
 * the copy takes the remaining faults: slower, equally correct.
 */
void vkv__tier_prefault(uint64_t addr, uint64_t bytes)
{
	const volatile uint8_t *p = (const volatile uint8_t *)(uintptr_t)addr;

	for (uint64_t off = 0; off < bytes; off += TIER_PREFAULT_STRIDE)
		(void)p[off];
}

static void unmap_slots_ts(struct vkv_region *r, const struct vkv_op *op,
			   struct tier_slot *const *ts, size_t lo, size_t hi)
{
	for (size_t k = lo; k < hi; k++)
		vkv__slot_unmap_range(r, op->slots[k], 0, ts[k]->mapped);
}

/* ------------------------------------------------- host-memory pipeline
 *
 * On host memory the copies are the CPU's, so the overlap the copy engine
 * gives under cuda needs a second thread: a pager that does the page-table
 * half (evict: unmap each group once its copy is done; restore: map and
 * prefault each group before its copy), while the tier thread copies.
 * Measured alone on the development VM for 256 MiB of 4 KiB shmem pages:
 * the copy ~17 ms, the unmap ~14 ms, the prefault ~14 ms, so in sequence
 * they nearly halve the rate. One short-lived thread per batch of two
 * groups or more (its creation costs tens of microseconds against tens of
 * milliseconds). The groups and the rollback rules are the cuda ones.
 */
struct pager {
	struct vkv_region *r;
	const struct vkv_op *op;
	struct tier_slot *const *ts;
	const size_t *bound;  /* group g = slots [bound[g], bound[g + 1]) */
	size_t ngroups;
	bool restore;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	size_t copied;        /* groups the tier thread copied (lock) */
	size_t paged;         /* groups the pager mapped / unmapped (lock) */
	bool stop;            /* the tier thread failed: no more paging (lock) */
	bool finished;        /* the pager returned (lock) */
	int err;              /* the pager's error (lock) */
	char detail[200];     /* its vkv_last_error(), which is per thread */
};

static void *pager_main(void *arg)
{
	struct pager *pg = arg;
	int err = 0;

	for (size_t g = 0; g < pg->ngroups && !err; g++) {
		size_t lo = pg->bound[g], hi = pg->bound[g + 1];

		pthread_mutex_lock(&pg->lock);
		/* evict: a group is unmapped only after its copy */
		while (!pg->restore && pg->copied <= g && !pg->stop)
			pthread_cond_wait(&pg->cond, &pg->lock);
		if (pg->stop) {
			pthread_mutex_unlock(&pg->lock);
			break;
		}
		pthread_mutex_unlock(&pg->lock);
		err = pg->restore ? map_slots(pg->r, pg->op, pg->ts, lo, hi, true)
				  : unmap_slots(pg->r, pg->op, lo, hi);
		pthread_mutex_lock(&pg->lock);
		if (err) {
			pg->err = err;
			snprintf(pg->detail, sizeof(pg->detail), "%s", vkv_last_error());
		} else {
			pg->paged = g + 1;
		}
		pthread_cond_broadcast(&pg->cond);
		pthread_mutex_unlock(&pg->lock);
	}
	pthread_mutex_lock(&pg->lock);
	pg->finished = true;
	pthread_cond_broadcast(&pg->cond);
	pthread_mutex_unlock(&pg->lock);
	return NULL;
}

/* Group boundaries of a DRAM batch; the number of groups. */
static size_t group_bounds(const struct vkv_region *r, const struct vkv_op *op,
			   struct tier_slot *const *ts, size_t *bound)
{
	size_t g = 0;

	bound[0] = 0;
	for (size_t lo = 0; lo < op->n; lo = bound[++g])
		bound[g + 1] = group_end(r, op, ts, lo);
	return g;
}

/*
 * The whole DRAM batch with the pager: copies here, page tables there. On
 * failure every slot is as the cuda paths leave it (evict: mapped again;
 * restore: nothing mapped). -EAGAIN: no thread to be had, nothing done
 * (the caller goes the sequential way).
 */
static int host_pipeline(struct vkv_tier *t, struct vkv_region *r,
			 const struct vkv_op *op, struct tier_slot *const *ts,
			 struct vkv_tier_entry **ents, const uint64_t *addr,
			 const size_t *first, const size_t *bound, size_t ngroups,
			 bool restore)
{
	struct pager pg = { .r = r, .op = op, .ts = ts, .bound = bound,
			    .ngroups = ngroups, .restore = restore };
	pthread_t th;
	int err = 0;

	pthread_mutex_init(&pg.lock, NULL);
	pthread_cond_init(&pg.cond, NULL);
	if (pthread_create(&th, NULL, pager_main, &pg)) {
		pthread_cond_destroy(&pg.cond);
		pthread_mutex_destroy(&pg.lock);
		return -EAGAIN;
	}
	for (size_t g = 0; g < ngroups && !err; g++) {
		size_t lo = bound[g], hi = bound[g + 1];

		if (restore) { /* copy into a group once it is mapped */
			pthread_mutex_lock(&pg.lock);
			while (pg.paged <= g && !pg.finished)
				pthread_cond_wait(&pg.cond, &pg.lock);
			if (pg.paged <= g)
				err = pg.err ? pg.err : -EIO; /* detail below */
			pthread_mutex_unlock(&pg.lock);
			if (err)
				break;
		}
		err = copy_entries(t, ents + first[lo], addr + first[lo],
				   first[hi] - first[lo], !restore, NULL);
		pthread_mutex_lock(&pg.lock);
		if (err)
			pg.stop = true;
		else
			pg.copied = g + 1;
		pthread_cond_broadcast(&pg.cond);
		pthread_mutex_unlock(&pg.lock);
	}
	pthread_join(th, NULL);
	if (pg.err && (!err || restore)) /* the pager's failure came first */
		err = vkv__set_error(pg.err, "%s", pg.detail);
	if (err) {
		if (restore)
			unmap_slots_ts(r, op, ts, 0, bound[pg.paged]);
		else
			remap_slots(r, op, 0, bound[pg.paged]);
	}
	pthread_cond_destroy(&pg.cond);
	pthread_mutex_destroy(&pg.lock);
	return err;
}

/* Try the pager for a DRAM batch of host memory; -EAGAIN: not taken. */
static int try_host_pipeline(struct vkv_tier *t, struct vkv_region *r,
			     const struct vkv_op *op, struct tier_slot *const *ts,
			     struct vkv_tier_entry **ents, const uint64_t *addr,
			     const size_t *first, bool restore)
{
	size_t *bound, ngroups;
	int err = -EAGAIN;

	if (!host_memory(&t->ctx->backend) || op->n < 2)
		return -EAGAIN;
	bound = calloc(op->n + 1, sizeof(*bound));
	if (!bound)
		return -EAGAIN;
	ngroups = group_bounds(r, op, ts, bound);
	if (ngroups >= 2)
		err = host_pipeline(t, r, op, ts, ents, addr, first, bound,
				    ngroups, restore);
	free(bound);
	return err;
}

/*
 * Map every slot at its old addresses and copy its data in. DRAM: group
 * by group, each group's copies queued as soon as it is mapped, so the
 * next group is mapped while they run. NVMe data is copied in block by
 * block while later reads are in flight, each block's destination
 * prefaulted just before its copy (tier_nvme.c), so that page-table work
 * overlaps with I/O. On failure nothing stays mapped.
 */
static int restore_map_copy(struct vkv_tier *t, struct vkv_region *r,
			    const struct vkv_op *op, struct tier_slot *const *ts,
			    struct vkv_tier_entry **ents, const uint64_t *addr,
			    const size_t *first, unsigned tier)
{
	struct vkv_backend *b = &t->ctx->backend;
	size_t lo, hi, mapped = 0, nf = 0;
	vkv_fence *f;
	int err = 0, werr;

	if (tier != VKV_TIER_DRAM) {
		err = map_slots(r, op, ts, 0, op->n, false);
		if (!err) {
			err = copy_entries(t, ents, addr, first[op->n], false, NULL);
			if (err)
				unmap_slots_ts(r, op, ts, 0, op->n);
		}
		return err;
	}
	err = try_host_pipeline(t, r, op, ts, ents, addr, first, true);
	if (err != -EAGAIN)
		return err;
	err = 0;
	f = calloc(op->n, sizeof(*f));
	if (!f)
		return vkv__set_error(-ENOMEM, "restore: out of host memory");
	for (lo = 0; lo < op->n && !err; lo = hi) {
		hi = group_end(r, op, ts, lo);
		err = map_slots(r, op, ts, lo, hi, true);
		if (err)
			break;
		mapped = hi;
		err = copy_entries(t, ents + first[lo], addr + first[lo],
				   first[hi] - first[lo], false, &f[nf]);
		if (!err)
			nf++;
	}
	werr = fences_finish(b, f, nf);
	if (!err)
		err = werr;
	if (err)
		unmap_slots_ts(r, op, ts, 0, mapped);
	free(f);
	return err;
}

/* After a failed restore: slots whose copy is bad come back empty (lock
 * held); the others stay evicted. */
static void restore_failed(struct vkv_tier *t, struct vkv_op *op,
			   struct tier_slot **ts)
{
	struct vkv_region *r = op->r;

	for (size_t k = 0; k < op->n; k++) {
		struct vkv_slot *sl = &r->slots[op->slots[k]];
		uint64_t np = ts[k]->mapped * r->ntensors;
		bool bad = false;

		for (uint64_t i = 0; i < np; i++) {
			sl->pages[i] = NULL;
			bad = bad || ts[k]->ent[i]->bad;
		}
		if (!bad)
			continue;
		tier_slot_drop(t, r, ts[k]);
		sl->tier_priv = NULL;
		sl->state = VKV_SLOT_ACTIVE;
		sl->last_len = 0;
	}
}

static void restore_commit(struct vkv_tier *t, struct vkv_op *op,
			   struct tier_slot **ts)
{
	struct vkv_ctx *ctx = t->ctx;
	struct vkv_region *r = op->r;

	for (size_t k = 0; k < op->n; k++) {
		struct vkv_slot *sl = &r->slots[op->slots[k]];
		uint64_t np = ts[k]->mapped * r->ntensors;

		for (uint64_t i = 0; i < np; i++)
			vkv__page_ref(ctx, sl->pages[i], true);
		sl->mapped = ts[k]->mapped;
		r->pages_mapped += np;
		sl->state = VKV_SLOT_ACTIVE;
		sl->tier_priv = NULL;
		sl->used_at = ctx->tick;
		tier_slot_drop(t, r, ts[k]);
	}
}

/* Run a restoration; ctx->lock held on entry and return, slots busy. */
static int run_restore(struct vkv_tier *t, struct vkv_op *op)
{
	struct vkv_ctx *ctx = t->ctx;
	struct vkv_region *r = op->r;
	struct vkv_tier_entry **ents = NULL;
	struct vkv_page **pages = NULL;
	struct tier_slot **ts;
	struct ptrmap map = { 0 };
	uint64_t *addr = NULL, total = 0, t0 = vkv__now_ns();
	unsigned tier = r->slots[op->slots[0]].tier;
	size_t m = 0, *first = calloc(op->n + 1, sizeof(size_t));
	int err;

	ts = calloc(op->n, sizeof(*ts));
	for (size_t k = 0; ts && k < op->n; k++) {
		ts[k] = r->slots[op->slots[k]].tier_priv;
		total += ts[k]->mapped * r->ntensors;
	}
	ents = calloc(total ? total : 1, sizeof(*ents));
	addr = calloc(total ? total : 1, sizeof(*addr));
	pages = calloc(total ? total : 1, sizeof(*pages));
	if (!ts || !ents || !addr || !pages || !first || ptrmap_init(&map, total)) {
		err = vkv__set_error(-ENOMEM, "restore: out of host memory");
		goto out;
	}
	/* Tensor by tensor: the pool's pages, taken in this order, then lie
	 * at consecutive offsets along each tensor as often as the pool has
	 * them so, and the backend maps each such run with one call. */
	for (size_t k = 0; k < op->n; k++) {
		first[k] = m;
		for (uint32_t tn = 0; tn < r->ntensors; tn++) {
			for (uint64_t p = 0; p < ts[k]->mapped; p++) {
				uint64_t i = p * r->ntensors + tn;
				bool added;

				ptrmap_get(&map, ts[k]->ent[i], m, &added);
				if (!added)
					continue;
				ents[m] = ts[k]->ent[i];
				addr[m++] = vkv__page_addr(r, op->slots[k], tn, p);
			}
		}
	}
	first[op->n] = m;
	for (size_t i = 0; i < m; i++) {
		if (ents[i]->bad) {
			/* An earlier restore found this copy corrupt. */
			err = vkv__set_error(-EBADMSG, "restore: a page copy of slot "
					     "%u failed its checksum earlier", op->slots[0]);
			restore_failed(t, op, ts);
			goto out;
		}
	}
	err = vkv__take_pages(ctx, pages, m);
	if (err) {
		err = vkv__prefix_error(err, "restore: %zu pages", m);
		goto out;
	}
	/* In offset order, given out tensor by tensor (above): consecutive
	 * offsets become runs that the host backend maps with one call each,
	 * and fault-around then works across them (a VMA per 4 KiB page
	 * otherwise, whatever order the pool got the pages back in). */
	vkv__pages_sort_phys(&ctx->backend, pages, m);
	for (size_t k = 0; k < op->n; k++) {
		struct vkv_slot *sl = &r->slots[op->slots[k]];

		for (uint64_t i = 0; i < ts[k]->mapped * r->ntensors; i++) {
			bool added;

			sl->pages[i] = pages[ptrmap_get(&map, ts[k]->ent[i], 0, &added)];
		}
	}
	pthread_mutex_unlock(&ctx->lock);
	err = restore_map_copy(t, r, op, ts, ents, addr, first, tier);
	pthread_mutex_lock(&ctx->lock);
	if (err) {
		vkv__pool_put(&ctx->pool, pages, m);
		restore_failed(t, op, ts);
		stat_error(tier);
		err = vkv__prefix_error(err, "restore from %s", tier_name(tier));
		goto out;
	}
	restore_commit(t, op, ts);
	stat_move(tier, false, op->n, m * r->page_size, vkv__now_ns() - t0);
	{
		struct vkv_stats_segment *st = vkv__stats_begin();
		st->maps_sync += total;
		vkv__stats_end();
	}
	vkv__ctx_publish(ctx);
out:
	ptrmap_fini(&map);
	free(ents);
	free(addr);
	free(pages);
	free(first);
	free(ts);
	return err;
}

/* ------------------------------------------------------------ operations */

static void op_unlock_slots(struct vkv_op *op)
{
	for (size_t k = 0; k < op->n; k++)
		vkv__slot_unlock(op->r, op->slots[k]);
}

/* Run op; lock held on entry and return. Records the result. */
static void op_run(struct vkv_tier *t, struct vkv_op *op)
{
	int err;

	if (!op->restore)
		t->ctx->evicting++;
	err = op->restore ? run_restore(t, op) : run_evict(t, op);
	if (!op->restore)
		t->ctx->evicting--; /* op_unlock_slots broadcasts ctx->cond */

	if (op->has_fence)
		t->ctx->backend.ops->fence_drop(&t->ctx->backend, op->fence);
	op->has_fence = false;
	op_unlock_slots(op);
	op->result = err;
	if (err)
		snprintf(op->detail, sizeof(op->detail), "%s", vkv_last_error());
	op->done = true;
	pthread_cond_broadcast(&t->done);
}

static void op_destroy(struct vkv_op *op)
{
	free(op->slots);
	free(op);
}

static void *tier_thread(void *arg)
{
	struct vkv_tier *t = arg;
	struct vkv_ctx *ctx = t->ctx;

	pthread_mutex_lock(&ctx->lock);
	for (;;) {
		struct vkv_op *op = t->head;

		if (!op) {
			if (t->stop)
				break;
			pthread_cond_wait(&t->wake, &ctx->lock);
			continue;
		}
		t->head = op->next;
		if (!t->head)
			t->tail = NULL;
		op_run(t, op);
		if (op->detached)
			op_destroy(op);
	}
	pthread_mutex_unlock(&ctx->lock);
	return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* Check one slot of a batch once it is locked (lock held). */
static int check_batch_slot(struct vkv_region *r, uint32_t s, bool restore)
{
	const struct vkv_slot *sl = &r->slots[s];

	if (restore) {
		if (sl->state != VKV_SLOT_EVICTED)
			return vkv__set_error(-EINVAL, "restore: slot %u is not evicted", s);
		return 0;
	}
	if (sl->state == VKV_SLOT_EVICTED)
		return vkv__set_error(-EAGAIN, "evict: slot %u is already evicted", s);
	if (sl->state != VKV_SLOT_ACTIVE)
		return vkv__set_error(-EINVAL, "evict: slot %u is not allocated", s);
	if (sl->pins)
		return vkv__set_error(-EBUSY, "evict: slot %u is being stepped", s);
	return 0;
}

/*
 * A new operation with its slots locked and checked (lock held). One
 * transfer runs on one store, so the slots of a restore must all be in the
 * same tier. Returns 0 and *out.
 */
static int op_prepare(struct vkv_region *r, const uint32_t *slots, size_t n,
		      bool restore, unsigned tier, struct vkv_op **out)
{
	struct vkv_ctx *ctx = r->ctx;
	struct vkv_op *op;
	size_t locked = 0;
	int err = 0;

	op = calloc(1, sizeof(*op));
	if (!op || !(op->slots = malloc(n * sizeof(*op->slots)))) {
		free(op);
		return vkv__set_error(-ENOMEM, "tier: out of host memory");
	}
	op->ctx = ctx;
	op->r = r;
	op->restore = restore;
	op->tier = tier;
	op->n = n;
	memcpy(op->slots, slots, n * sizeof(*slots));
	qsort(op->slots, n, sizeof(*op->slots), cmp_u32);
	for (size_t k = 0; k < n && !err; k++) {
		if (op->slots[k] >= r->cfg.max_slots)
			err = vkv__set_error(-EINVAL, "slot %u out of range (max_slots %u)",
					     op->slots[k], r->cfg.max_slots);
		else if (k && op->slots[k] == op->slots[k - 1])
			err = vkv__set_error(-EINVAL, "slot %u appears twice in the batch",
					     op->slots[k]);
	}
	for (; locked < n && !err; locked++)
		vkv__slot_lock(r, op->slots[locked]);
	for (size_t k = 0; k < n && !err; k++)
		err = check_batch_slot(r, op->slots[k], restore);
	for (size_t k = 1; k < n && !err && restore; k++)
		if (r->slots[op->slots[k]].tier != r->slots[op->slots[0]].tier)
			err = vkv__set_error(-EINVAL, "restore: slots %u and %u are in "
					     "different tiers; restore them apart",
					     op->slots[0], op->slots[k]);
	if (err) {
		for (size_t k = 0; k < locked; k++)
			vkv__slot_unlock(r, op->slots[k]);
		op_destroy(op);
		return err;
	}
	if (!restore) {
		for (size_t k = 0; k < n; k++) {
			r->slots[op->slots[k]].state = VKV_SLOT_EVICTED;
			r->slots[op->slots[k]].tier = tier;
		}
		op->has_fence = ctx->backend.ops->fence_record(&ctx->backend,
							       &op->fence) == 0;
	}
	*out = op;
	return 0;
}

static int start_thread(struct vkv_tier *t)
{
	int err;

	if (t->thread_on)
		return 0;
	err = pthread_create(&t->thread, NULL, tier_thread, t);
	if (err)
		return vkv__set_error(-err, "tier: cannot start the tier thread");
	t->thread_on = true;
	return 0;
}

/* Queue op for the tier thread, or run it here when that thread cannot
 * start (lock held). */
static void op_queue(struct vkv_tier *t, struct vkv_op *op)
{
	if (start_thread(t)) {
		op_run(t, op);
		return;
	}
	if (t->tail)
		t->tail->next = op;
	else
		t->head = op;
	t->tail = op;
	pthread_cond_signal(&t->wake);
}

static int op_wait_locked(struct vkv_op *op)
{
	struct vkv_tier *t = tier_of(op->ctx);

	while (!op->done)
		pthread_cond_wait(&t->done, &op->ctx->lock);
	if (op->result)
		vkv__set_error(op->result, "%s", op->detail);
	return op->result;
}

static int submit(vkv_region *r, const uint32_t *slots, size_t n, bool restore,
		  unsigned tier, vkv_op **out)
{
	struct vkv_ctx *ctx;
	struct vkv_op *op;
	int err;

	if (!r || (n && !slots))
		return vkv__set_error(-EINVAL, "%s: NULL argument",
				      restore ? "restore" : "evict");
	if (!restore && tier != VKV_TIER_DRAM && tier != VKV_TIER_NVME)
		return vkv__set_error(-EINVAL, "evict: tier %u is not VKV_TIER_DRAM (%d) "
				      "or VKV_TIER_NVME (%d)", tier, VKV_TIER_DRAM,
				      VKV_TIER_NVME);
	if (n == 0)
		return vkv__set_error(-EINVAL, "%s: empty batch",
				      restore ? "restore" : "evict");
	ctx = r->ctx;
	pthread_mutex_lock(&ctx->lock);
	err = op_prepare(r, slots, n, restore, tier, &op);
	if (err)
		goto out;
	if (!out) {
		/* Synchronous: run it on this thread. */
		op_run(tier_of(ctx), op);
		err = op->result;
		op_destroy(op);
		goto out;
	}
	op_queue(tier_of(ctx), op);
	*out = op;
out:
	pthread_mutex_unlock(&ctx->lock);
	return err;
}

VKV_API int vkv_evict(vkv_region *r, const uint32_t *slots, size_t n,
		      unsigned tier, vkv_op **op)
{
	return submit(r, slots, n, false, tier, op);
}

VKV_API int vkv_restore(vkv_region *r, const uint32_t *slots, size_t n,
			vkv_op **op)
{
	return submit(r, slots, n, true, 0, op);
}

VKV_API int vkv_op_poll(vkv_op *op)
{
	int err;

	if (!op)
		return vkv__set_error(-EINVAL, "op_poll: NULL operation");
	pthread_mutex_lock(&op->ctx->lock);
	err = op->done ? op->result : -EINPROGRESS;
	pthread_mutex_unlock(&op->ctx->lock);
	return err;
}

VKV_API int vkv_op_wait(vkv_op *op)
{
	int err;

	if (!op)
		return vkv__set_error(-EINVAL, "op_wait: NULL operation");
	pthread_mutex_lock(&op->ctx->lock);
	err = op_wait_locked(op);
	pthread_mutex_unlock(&op->ctx->lock);
	return err;
}

VKV_API int vkv_op_free(vkv_op *op)
{
	struct vkv_ctx *ctx;
	bool done;

	if (!op)
		return 0;
	ctx = op->ctx;
	pthread_mutex_lock(&ctx->lock);
	done = op->done;
	op->detached = !done;
	pthread_mutex_unlock(&ctx->lock);
	if (done)
		op_destroy(op);
	return 0;
}

/* ------------------------------------------------------- automatic policy */

/* The least recently stepped idle active slot holding pages (lock held). */
static struct vkv_region *pick_idle(struct vkv_ctx *ctx, uint32_t idle,
				    uint32_t *slot)
{
	struct vkv_region *best = NULL;
	uint64_t oldest = UINT64_MAX;

	for (struct vkv_region *r = ctx->regions; r; r = r->next) {
		for (uint32_t s = 0; s < r->cfg.max_slots; s++) {
			const struct vkv_slot *sl = &r->slots[s];

			if (sl->state != VKV_SLOT_ACTIVE || sl->busy || sl->pins ||
			    !sl->mapped || sl->used_at + idle > ctx->tick ||
			    sl->used_at >= oldest)
				continue;
			oldest = sl->used_at;
			best = r;
			*slot = s;
		}
	}
	return best;
}

/* Evict one slot now, to DRAM or, when DRAM is full, NVMe (lock held). */
static int demote_one(struct vkv_tier *t, struct vkv_region *r, uint32_t s)
{
	static const unsigned order[] = { VKV_TIER_DRAM, VKV_TIER_NVME };
	int err = -ENOSPC;

	for (size_t i = 0; i < 2 && (err == -ENOSPC || err == -ENOMEM); i++) {
		struct vkv_op *op;

		err = op_prepare(r, &s, 1, false, order[i], &op);
		if (err)
			return err;
		op_run(t, op);
		err = op->result;
		op_destroy(op);
	}
	return err;
}

static uint64_t tier_demote(struct vkv_ctx *ctx, uint64_t want)
{
	struct vkv_tier *t = tier_of(ctx);
	uint64_t got = 0;
	struct vkv_region *r;
	uint32_t s;

	while (got < want && (r = pick_idle(ctx, t->idle, &s))) {
		uint64_t pages = r->slots[s].mapped * r->ntensors;
		int err = demote_one(t, r, s);

		if (err) {
			vkv__debug("automatic demotion of slot %u failed: %s", s,
				   vkv_strerror(err));
			break;
		}
		got += pages;
	}
	return got;
}

static int tier_promote(struct vkv_region *r, uint32_t s, bool wait)
{
	struct vkv_ctx *ctx = r->ctx;
	struct vkv_tier *t = tier_of(ctx);
	struct vkv_op *op;
	int err;

	if (!wait) {
		if (r->slots[s].busy)
			return 0; /* an eviction or a restore is on its way */
		err = op_prepare(r, &s, 1, true, 0, &op);
		if (err)
			return err;
		op->detached = true;
		op_queue(t, op);
		return 0;
	}
	/* Wait for anything in flight (a prefetch's restore, say). */
	vkv__slot_lock(r, s);
	vkv__slot_unlock(r, s);
	if (r->slots[s].state != VKV_SLOT_EVICTED)
		return 0;
	err = op_prepare(r, &s, 1, true, 0, &op);
	if (err)
		return err;
	op_run(t, op);
	err = op->result;
	op_destroy(op);
	if (err)
		vkv__set_error(err, "%s", vkv_last_error());
	return err;
}

/* --------------------------------------------------------------- context */

static void tier_discard(struct vkv_region *r, uint32_t s)
{
	struct vkv_slot *sl = &r->slots[s];

	if (sl->tier_priv)
		tier_slot_drop(tier_of(r->ctx), r, sl->tier_priv);
	sl->tier_priv = NULL;
}

int vkv__tier_ctx_init(struct vkv_ctx *ctx)
{
	struct vkv_tier *t = calloc(1, sizeof(*t));
	int err;

	if (!t)
		return vkv__set_error(-ENOMEM, "tier: out of host memory");
	t->ctx = ctx;
	err = vkv__dram_init(&t->dram, &ctx->backend);
	if (err) {
		free(t);
		return err;
	}
	pthread_cond_init(&t->wake, NULL);
	pthread_cond_init(&t->done, NULL);
	t->idle = (uint32_t)vkv__opt_u64(VKV_OPT_TIER_IDLE);
	ctx->tier = t;
	ctx->tier_discard = tier_discard;
	if (vkv__opt_enum(VKV_OPT_TIER_AUTO)) {
		ctx->tier_demote = tier_demote;
		ctx->tier_promote = tier_promote;
	}
	stat_capacity(t, true);
	return 0;
}

void vkv__tier_ctx_fini(struct vkv_ctx *ctx)
{
	struct vkv_tier *t = tier_of(ctx);

	if (!t)
		return;
	pthread_mutex_lock(&ctx->lock);
	t->stop = true;
	pthread_cond_signal(&t->wake);
	pthread_mutex_unlock(&ctx->lock);
	if (t->thread_on)
		pthread_join(t->thread, NULL);
	stat_capacity(t, false);
	if (t->nvme)
		vkv__nvme_destroy(t->nvme);
	vkv__dram_fini(&t->dram);
	pthread_cond_destroy(&t->wake);
	pthread_cond_destroy(&t->done);
	ctx->tier = NULL;
	ctx->tier_discard = NULL;
	ctx->tier_demote = NULL;
	ctx->tier_promote = NULL;
	free(t);
}

int vkv__tier_nvme_fd(struct vkv_ctx *ctx)
{
	struct vkv_tier *t = tier_of(ctx);

	return t && t->nvme ? vkv__nvme_fd(t->nvme) : -1;
}
