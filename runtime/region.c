// SPDX-License-Identifier: MIT
/*
 * region.c - KV regions and their slots: contiguous virtual tensors with
 * physical pages committed on demand.
 *
 * A region is one reservation holding `ntensors` virtual tensors (2*layers
 * for VKV_LAYOUT_PER_LAYER, 1 for VKV_LAYOUT_ALL_LAYERS). Every tensor is
 * max_slots rows of slot_stride bytes (max_context tokens rounded up to a
 * page), so a page always belongs to one slot of one tensor.
 *
 * A slot's mapped pages form a prefix [0, mapped) in every tensor: growth
 * appends pages, reclaim takes all of them. That keeps the page table a
 * flat array and makes "tokens [0, n) are backed" a single comparison on
 * the step path.
 *
 * Slow backend calls run without ctx->lock: the slot is marked busy, and
 * anyone else who needs it (step, free, the worker, reclaim) waits on
 * ctx->cond. Different slots never wait for each other.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

/* ------------------------------------------------------------ slot locking */

void vkv__slot_lock(struct vkv_region *r, uint32_t s)
{
	struct vkv_slot *sl = &r->slots[s];

	while (sl->busy)
		pthread_cond_wait(&r->ctx->cond, &r->ctx->lock);
	sl->busy = true;
}

void vkv__slot_unlock(struct vkv_region *r, uint32_t s)
{
	r->slots[s].busy = false;
	pthread_cond_broadcast(&r->ctx->cond);
}

/* Two slots, lower index first, so that two threads cannot deadlock. */
static void lock_two(struct vkv_region *r, uint32_t a, uint32_t b)
{
	vkv__slot_lock(r, a < b ? a : b);
	vkv__slot_lock(r, a < b ? b : a);
}

static void wait_not_busy(struct vkv_region *r, uint32_t s)
{
	while (r->slots[s].busy)
		pthread_cond_wait(&r->ctx->cond, &r->ctx->lock);
}

/* ------------------------------------------------------ mapping primitives */

int vkv__slot_unmap_range(struct vkv_region *r, uint32_t s, uint64_t from,
			  uint64_t to)
{
	struct vkv_backend *b = &r->ctx->backend;
	int err = 0, e;

	if (to <= from)
		return 0;
	for (uint32_t t = 0; t < r->ntensors; t++) {
		e = b->ops->unmap_pages(b, vkv__page_addr(r, s, t, from),
					to - from);
		if (e && !err)
			err = e;
	}
	return err;
}

/* Map pages[i * ntensors + t] for i in [from, to) of every tensor t. */
int vkv__slot_map_range(struct vkv_region *r, uint32_t s, uint64_t from,
			uint64_t to)
{
	struct vkv_backend *b = &r->ctx->backend;
	struct vkv_slot *sl = &r->slots[s];
	uint64_t n = to - from;
	vkv_phys stackbuf[64], *phys = stackbuf;
	uint32_t t;
	int err = 0;

	if (to <= from)
		return 0;
	if (n > 64) {
		phys = malloc(n * sizeof(*phys));
		if (!phys)
			return vkv__set_error(-ENOMEM, "map: out of host memory");
	}
	for (t = 0; t < r->ntensors; t++) {
		for (uint64_t i = 0; i < n; i++)
			phys[i] = sl->pages[(from + i) * r->ntensors + t]->phys;
		err = b->ops->map_pages(b, vkv__page_addr(r, s, t, from), phys, n);
		if (err)
			break;
	}
	if (err) {
		/* Contract: the failed tensor left nothing; undo the others. */
		for (uint32_t u = 0; u < t; u++)
			b->ops->unmap_pages(b, vkv__page_addr(r, s, u, from), n);
	}
	if (phys != stackbuf)
		free(phys);
	return err;
}

uint64_t vkv__slot_drop_pages(struct vkv_region *r, uint32_t s, uint64_t from,
			      uint64_t to)
{
	struct vkv_ctx *ctx = r->ctx;
	struct vkv_slot *sl = &r->slots[s];
	bool active = sl->state == VKV_SLOT_ACTIVE;
	struct vkv_page *stackbuf[64], **put = stackbuf;
	uint64_t nput = 0, freed = 0, total = (to - from) * r->ntensors;

	if (to <= from)
		return 0;
	if (total > 64) {
		put = malloc(total * sizeof(*put));
		if (!put)
			put = stackbuf; /* flush in batches of 64 below */
	}
	for (uint64_t i = from * r->ntensors; i < to * r->ntensors; i++) {
		struct vkv_page *pg = sl->pages[i];

		sl->pages[i] = NULL;
		if (!vkv__page_unref(ctx, pg, active))
			continue;
		put[nput++] = pg;
		freed++;
		if (put == stackbuf && nput == 64) {
			vkv__pool_put(&ctx->pool, put, nput);
			nput = 0;
		}
	}
	if (nput)
		vkv__pool_put(&ctx->pool, put, nput);
	if (put != stackbuf)
		free(put);
	r->pages_mapped -= total;
	return freed;
}

/* Make room for `pages` pages per tensor in the slot's table (lock held). */
static int slot_reserve_table(struct vkv_region *r, struct vkv_slot *sl,
			      uint64_t pages)
{
	struct vkv_page **n;
	uint64_t cap = sl->cap ? sl->cap : 4;

	if (pages <= sl->cap)
		return 0;
	while (cap < pages)
		cap *= 2;
	if (cap > r->slot_pages)
		cap = r->slot_pages;
	n = realloc(sl->pages, cap * r->ntensors * sizeof(*n));
	if (!n)
		return vkv__set_error(-ENOMEM, "slot page table: out of host memory");
	memset(n + sl->cap * r->ntensors, 0,
	       (cap - sl->cap) * r->ntensors * sizeof(*n));
	sl->pages = n;
	sl->cap = cap;
	return 0;
}

/* Take n pages from the pool, reclaiming cached slots (and the surplus of
 * active ones) when the budget is exhausted, then demoting idle slots to a lower tier (automatic tiering).
 * Called with the lock held and the slot busy; drops the lock around the
 * pool. */
int vkv__take_pages(struct vkv_ctx *ctx, struct vkv_page **out, uint64_t n)
{
	uint64_t returns;
	int err;

	for (;;) {
		pthread_mutex_unlock(&ctx->lock);
		returns = vkv__pool_returns(&ctx->pool);
		err = vkv__pool_get(&ctx->pool, out, n);
		pthread_mutex_lock(&ctx->lock);
		if (err != -ENOMEM)
			return err;
		if (vkv__ctx_reclaim(ctx, n) == 0 &&
		    (!ctx->tier_demote || ctx->tier_demote(ctx, n) == 0)) {
			/* An eviction running in another thread (a demotion
			 * that took the idle slots first) is about to give
			 * pages back: wait for it rather than fail. */
			if (ctx->evicting) {
				pthread_cond_wait(&ctx->cond, &ctx->lock);
				continue;
			}
			/* Nothing left to demote, and no eviction running:
			 * but one may have run to its end while the lock was
			 * dropped around the pool (the worker, keeping the
			 * pool's watermark, demotes every idle slot), and
			 * the pages it gave back came after our get failed.
			 * Try again; only when the pool took nothing back
			 * since is the budget truly spent. */
			if (vkv__pool_returns(&ctx->pool) != returns)
				continue;
			/* vkv__pool_get's detail still describes it. */
			return err;
		}
	}
}

/*
 * Grow slot s to `need` pages per tensor. ctx->lock is held on entry and on
 * return. async: called by the worker; gives up quietly when the slot is
 * no longer active.
 */
static int slot_grow(struct vkv_region *r, uint32_t s, uint64_t need, bool async)
{
	struct vkv_ctx *ctx = r->ctx;
	struct vkv_slot *sl = &r->slots[s];
	struct vkv_page **tmp;
	uint64_t from, nper, n;
	int err;

	wait_not_busy(r, s);
	if (sl->mapped >= need)
		return 0;
	if (sl->state != VKV_SLOT_ACTIVE)
		return async ? 0 : vkv__set_error(-EINVAL, "slot %u is not allocated", s);
	err = slot_reserve_table(r, sl, need);
	if (err)
		return err;
	from = sl->mapped;
	nper = need - from;
	n = nper * r->ntensors;
	tmp = malloc(n * sizeof(*tmp));
	if (!tmp)
		return vkv__set_error(-ENOMEM, "grow: out of host memory");
	sl->busy = true;
	err = vkv__take_pages(ctx, tmp, n);
	if (err)
		goto out_unbusy;
	/* Tensor by tensor, in physical order: each tensor's new pages are
	 * consecutive offsets as often as the pool has them so, and the host
	 * backend maps each such run with one call (interleaving K and V made
	 * every 4 KiB page its own mapping, towards vm.max_map_count). */
	vkv__pages_sort_phys(&ctx->backend, tmp, n);
	for (uint32_t t = 0; t < r->ntensors; t++)
		for (uint64_t i = 0; i < nper; i++)
			sl->pages[(from + i) * r->ntensors + t] = tmp[t * nper + i];

	pthread_mutex_unlock(&ctx->lock);
	err = vkv__slot_map_range(r, s, from, need);
	pthread_mutex_lock(&ctx->lock);
	if (err) {
		for (uint64_t i = from * r->ntensors; i < need * r->ntensors; i++)
			sl->pages[i] = NULL;
		vkv__pool_put(&ctx->pool, tmp, n);
		goto out_unbusy;
	}
	for (uint64_t i = 0; i < n; i++)
		vkv__page_ref(ctx, tmp[i], true);
	sl->mapped = need;
	r->pages_mapped += n;
	{
		struct vkv_stats_segment *st = vkv__stats_begin();
		if (async)
			st->maps_async += n;
		else
			st->maps_sync += n;
		vkv__stats_end();
	}
out_unbusy:
	free(tmp);
	vkv__slot_unlock(r, s);
	return err;
}

/* ---------------------------------------------------------------- validation */

static int check_slot(struct vkv_region *r, uint32_t s)
{
	if (s >= r->cfg.max_slots)
		return vkv__set_error(-EINVAL, "slot %u out of range (max_slots %u)",
				      s, r->cfg.max_slots);
	return 0;
}

static int check_active(struct vkv_region *r, uint32_t s)
{
	int err = check_slot(r, s);

	if (err)
		return err;
	switch (r->slots[s].state) {
	case VKV_SLOT_ACTIVE:
		return 0;
	case VKV_SLOT_EVICTED:
		return vkv__set_error(-EAGAIN, "slot %u is evicted; restore it first", s);
	default:
		return vkv__set_error(-EINVAL, "slot %u is not allocated", s);
	}
}

static int check_tokens(struct vkv_region *r, uint64_t tokens)
{
	if (tokens > r->cfg.max_context)
		return vkv__set_error(-E2BIG, "%llu tokens exceed max_context %llu",
				      (unsigned long long)tokens,
				      (unsigned long long)r->cfg.max_context);
	return 0;
}

/* Automatic tiering: an evicted slot that is used again comes back first
 * (wait), or starts coming back (prefetch). Without the policy, nothing
 * happens and check_active() reports the slot as evicted. Lock held. */
static int promote_evicted(struct vkv_region *r, uint32_t s, bool wait)
{
	struct vkv_ctx *ctx = r->ctx;

	if (!ctx->tier_promote || s >= r->cfg.max_slots ||
	    r->slots[s].state != VKV_SLOT_EVICTED)
		return 0;
	return ctx->tier_promote(r, s, wait);
}

/* ------------------------------------------------------------------ regions */

VKV_API void vkv_region_config_init(struct vkv_region_config *cfg)
{
	if (!cfg)
		return;
	memset(cfg, 0, sizeof(*cfg));
	cfg->struct_size = sizeof(*cfg);
	cfg->elem_size = 2;
	cfg->layout = VKV_LAYOUT_PER_LAYER;
}

static int region_geometry(struct vkv_region *r, const struct vkv_region_config *c,
			   uint64_t ps)
{
	uint64_t tb, ttb, slot_bytes, stride, tstride, total;

	if (c->layers == 0 || c->kv_heads == 0 || c->head_dim == 0 ||
	    c->max_slots == 0 || c->max_context == 0)
		return vkv__set_error(-EINVAL, "region: layers, kv_heads, head_dim, "
				      "max_slots and max_context must be >= 1");
	if (c->elem_size != 1 && c->elem_size != 2 && c->elem_size != 4 &&
	    c->elem_size != 8)
		return vkv__set_error(-EINVAL, "region: elem_size %u is not 1, 2, 4 or 8",
				      c->elem_size);
	if ((unsigned)c->layout >= VKV_LAYOUT_COUNT)
		return vkv__set_error(-EINVAL, "region: unknown layout %d", c->layout);
	if (__builtin_mul_overflow((uint64_t)c->kv_heads, c->head_dim, &tb) ||
	    __builtin_mul_overflow(tb, c->elem_size, &tb) ||
	    __builtin_mul_overflow(tb, c->layout == VKV_LAYOUT_ALL_LAYERS ?
					       2ULL * c->layers : 1ULL, &ttb) ||
	    __builtin_mul_overflow(ttb, c->max_context, &slot_bytes) ||
	    __builtin_add_overflow(slot_bytes, ps - 1, &stride) ||
	    __builtin_mul_overflow(stride / ps * ps, (uint64_t)c->max_slots, &tstride) ||
	    __builtin_mul_overflow(tstride, c->layout == VKV_LAYOUT_ALL_LAYERS ?
						    1ULL : 2ULL * c->layers, &total))
		return vkv__set_error(-EOVERFLOW, "region: sizes overflow 64 bits");
	/* x86-64 and today's GPUs give 47-49 bits of virtual space. */
	if (total > (1ULL << 46))
		return vkv__set_error(-EOVERFLOW,
				      "region: %llu bytes of virtual space is more than 64 TiB",
				      (unsigned long long)total);
	r->token_bytes = tb;
	r->tensor_token_bytes = ttb;
	r->slot_stride = stride / ps * ps;
	r->slot_pages = r->slot_stride / ps;
	r->tensor_stride = tstride;
	r->ntensors = c->layout == VKV_LAYOUT_ALL_LAYERS ? 1 : 2 * c->layers;
	r->reserved = total;
	r->page_size = ps;
	return 0;
}

VKV_API int vkv_region_create(vkv_ctx *ctx, const struct vkv_region_config *cfg,
			      vkv_region **out)
{
	struct vkv_region *r;
	uint64_t tpp;
	int err;

	if (!ctx || !cfg || !out)
		return vkv__set_error(-EINVAL, "region_create: NULL argument");
	if (cfg->struct_size < sizeof(*cfg))
		return vkv__set_error(-EINVAL, "region_create: struct_size %u < %zu "
				      "(use vkv_region_config_init)",
				      cfg->struct_size, sizeof(*cfg));
	r = calloc(1, sizeof(*r));
	if (!r)
		return vkv__set_error(-ENOMEM, "region_create: out of host memory");
	r->ctx = ctx;
	r->cfg = *cfg;
	err = region_geometry(r, cfg, ctx->backend.page_size);
	if (err)
		goto err_free;
	tpp = r->page_size / r->tensor_token_bytes;
	r->lookahead = cfg->lookahead;
	if (!r->lookahead)
		r->lookahead = (uint32_t)vkv__opt_u64(VKV_OPT_LOOKAHEAD);
	if (!r->lookahead)
		r->lookahead = tpp ? (uint32_t)(tpp < UINT32_MAX ? tpp : UINT32_MAX) : 1;
	r->cfg.lookahead = r->lookahead;
	r->slots = calloc(cfg->max_slots, sizeof(*r->slots));
	r->queue = calloc(cfg->max_slots, sizeof(*r->queue));
	if (!r->slots || !r->queue) {
		err = vkv__set_error(-ENOMEM, "region_create: out of host memory");
		goto err_free;
	}
	err = ctx->backend.ops->reserve(&ctx->backend, r->reserved, &r->base);
	if (err)
		goto err_free;

	pthread_mutex_lock(&ctx->lock);
	r->next = ctx->regions;
	ctx->regions = r;
	ctx->nregions++;
	ctx->reserved_bytes += r->reserved;
	vkv__ctx_publish(ctx);
	pthread_mutex_unlock(&ctx->lock);
	*out = r;
	return 0;

err_free:
	free(r->slots);
	free(r->queue);
	free(r);
	return err;
}

/* Unmap and drop everything a slot holds (lock held, slot busy). */
static int slot_release_all(struct vkv_region *r, uint32_t s)
{
	struct vkv_ctx *ctx = r->ctx;
	struct vkv_slot *sl = &r->slots[s];
	uint64_t mapped = sl->mapped;
	bool fence = sl->has_fence;
	int err = 0;

	if (mapped) {
		pthread_mutex_unlock(&ctx->lock);
		if (fence)
			ctx->backend.ops->fence_wait(&ctx->backend, sl->fence);
		err = vkv__slot_unmap_range(r, s, 0, mapped);
		pthread_mutex_lock(&ctx->lock);
		if (err)
			return err;
		vkv__slot_drop_pages(r, s, 0, mapped);
		sl->mapped = 0;
	}
	if (fence) {
		ctx->backend.ops->fence_drop(&ctx->backend, sl->fence);
		sl->has_fence = false;
	}
	return 0;
}

VKV_API int vkv_region_destroy(vkv_region *r)
{
	struct vkv_ctx *ctx;
	struct vkv_region **pp;
	int err = 0;

	if (!r)
		return vkv__set_error(-EINVAL, "region_destroy: NULL region");
	ctx = r->ctx;
	pthread_mutex_lock(&ctx->lock);
	for (pp = &ctx->regions; *pp && *pp != r; pp = &(*pp)->next)
		;
	if (*pp)
		*pp = r->next;
	ctx->nregions--;
	/* Unlinked: the worker cannot find it again; wait for it to leave. */
	while (r->worker_in)
		pthread_cond_wait(&ctx->cond, &ctx->lock);
	for (uint32_t s = 0; s < r->cfg.max_slots; s++) {
		struct vkv_slot *sl = &r->slots[s];

		vkv__slot_lock(r, s);
		if (sl->state == VKV_SLOT_EVICTED && ctx->tier_discard)
			ctx->tier_discard(r, s);
		if (slot_release_all(r, s) && !err)
			err = -EIO;
		if (sl->state == VKV_SLOT_ACTIVE || sl->state == VKV_SLOT_EVICTED)
			r->slots_active--;
		else if (sl->state == VKV_SLOT_CACHED)
			r->slots_cached--;
		sl->state = VKV_SLOT_NEVER;
		vkv__slot_unlock(r, s);
		free(sl->pages);
		sl->pages = NULL;
	}
	ctx->reserved_bytes -= r->reserved;
	vkv__ctx_publish(ctx);
	pthread_mutex_unlock(&ctx->lock);
	if (err)
		vkv__warn("region_destroy: an unmap failed; %llu bytes of address "
			  "space stay reserved", (unsigned long long)r->reserved);
	else
		ctx->backend.ops->unreserve(&ctx->backend, r->base, r->reserved);
	free(r->slots);
	free(r->queue);
	free(r);
	return err ? vkv__set_error(err, "region_destroy: unmap failed") : 0;
}

VKV_API int vkv_region_tensor(vkv_region *r, uint32_t layer, int kv,
			      struct vkv_tensor *out)
{
	if (!r || !out)
		return vkv__set_error(-EINVAL, "region_tensor: NULL argument");
	if (layer >= r->cfg.layers || (kv != VKV_K && kv != VKV_V))
		return vkv__set_error(-EINVAL, "region_tensor: layer %u kv %d out of range",
				      layer, kv);
	memset(out, 0, sizeof(*out));
	if (r->cfg.layout == VKV_LAYOUT_PER_LAYER)
		out->addr = r->base + (2ULL * layer + (unsigned)kv) * r->tensor_stride;
	else
		out->addr = r->base + (2ULL * layer + (unsigned)kv) * r->token_bytes;
	out->slot_stride = r->slot_stride;
	out->token_stride = r->tensor_token_bytes;
	out->head_stride = (uint64_t)r->cfg.head_dim * r->cfg.elem_size;
	out->elem_size = r->cfg.elem_size;
	return 0;
}

VKV_API int vkv_region_info(vkv_region *r, struct vkv_region_info *info)
{
	if (!r || !info)
		return vkv__set_error(-EINVAL, "region_info: NULL argument");
	memset(info, 0, sizeof(*info));
	pthread_mutex_lock(&r->ctx->lock);
	info->config = r->cfg;
	info->page_size = r->page_size;
	info->token_bytes = r->token_bytes;
	info->tokens_per_page = r->page_size / r->tensor_token_bytes;
	info->reserved_bytes = r->reserved;
	info->slots_active = r->slots_active;
	info->slots_cached = r->slots_cached;
	/* Distinct pages: a shared page is counted at the first sighting. */
	r->ctx->pass++;
	for (uint32_t s = 0; s < r->cfg.max_slots; s++) {
		const struct vkv_slot *sl = &r->slots[s];

		for (uint64_t i = 0; i < sl->mapped * r->ntensors; i++) {
			struct vkv_page *pg = sl->pages[i];

			if (pg->seen == r->ctx->pass)
				continue;
			pg->seen = r->ctx->pass;
			info->committed_bytes += r->page_size;
		}
	}
	pthread_mutex_unlock(&r->ctx->lock);
	return 0;
}

/* -------------------------------------------------------------------- slots */

static void slot_activate(struct vkv_region *r, uint32_t s)
{
	struct vkv_slot *sl = &r->slots[s];

	if (sl->state == VKV_SLOT_CACHED) {
		for (uint64_t i = 0; i < sl->mapped * r->ntensors; i++)
			vkv__page_activate(r->ctx, sl->pages[i], true);
		r->slots_cached--;
	}
	sl->state = VKV_SLOT_ACTIVE;
	sl->last_len = 0;
	sl->want = 0;
	r->slots_active++;
}

/*
 * A freed slot about to be reused must not keep pages that other slots
 * still map (a prefix it shared): its new request writes from token 0 and
 * would overwrite the other slots' data. Unmap its pages from the first
 * shared one on, so that they come back private when the slot grows again.
 * Lock held, slot cached and not busy; drops the lock around the unmap.
 */
static int slot_unshare(struct vkv_region *r, uint32_t s)
{
	struct vkv_ctx *ctx = r->ctx;
	struct vkv_slot *sl = &r->slots[s];
	uint64_t first = sl->mapped, mapped = sl->mapped;
	int err;

	for (uint64_t i = 0; i < mapped * r->ntensors; i++) {
		if (sl->pages[i]->refs > 1) {
			first = i / r->ntensors;
			break;
		}
	}
	if (first == mapped)
		return 0;
	sl->busy = true;
	pthread_mutex_unlock(&ctx->lock);
	if (sl->has_fence)
		ctx->backend.ops->fence_wait(&ctx->backend, sl->fence);
	err = vkv__slot_unmap_range(r, s, first, mapped);
	pthread_mutex_lock(&ctx->lock);
	if (!err) {
		vkv__slot_drop_pages(r, s, first, mapped);
		sl->mapped = first;
		struct vkv_stats_segment *st = vkv__stats_begin();
		st->unmaps += (mapped - first) * r->ntensors;
		vkv__stats_end();
	}
	vkv__slot_unlock(r, s);
	return err;
}

VKV_API int vkv_slot_alloc(vkv_region *r, uint64_t hint_tokens, uint32_t *slot)
{
	int err;

	uint64_t hint;
	int64_t best = -1, most = -1, fresh = -1;

	if (!r || !slot)
		return vkv__set_error(-EINVAL, "slot_alloc: NULL argument");
	hint = vkv__pages_for(r, hint_tokens < r->cfg.max_context ?
					 hint_tokens : r->cfg.max_context);
	pthread_mutex_lock(&r->ctx->lock);
	for (uint32_t s = 0; s < r->cfg.max_slots; s++) {
		const struct vkv_slot *sl = &r->slots[s];

		if (sl->busy)
			continue;
		if (sl->state == VKV_SLOT_NEVER) {
			if (fresh < 0)
				fresh = s;
			continue;
		}
		if (sl->state != VKV_SLOT_CACHED)
			continue;
		if (sl->mapped >= hint &&
		    (best < 0 || sl->mapped < r->slots[best].mapped))
			best = s;
		if (most < 0 || sl->mapped > r->slots[most].mapped)
			most = s;
	}
	if (best < 0)
		best = most >= 0 ? most : fresh;
	if (best < 0) {
		pthread_mutex_unlock(&r->ctx->lock);
		return vkv__set_error(-ENOSPC, "slot_alloc: all %u slots are allocated",
				      r->cfg.max_slots);
	}
	err = r->slots[best].state == VKV_SLOT_CACHED ?
		      slot_unshare(r, (uint32_t)best) : 0;
	if (!err) {
		slot_activate(r, (uint32_t)best);
		vkv__ctx_publish(r->ctx);
	}
	pthread_mutex_unlock(&r->ctx->lock);
	if (!err)
		*slot = (uint32_t)best;
	return err;
}

VKV_API int vkv_slot_alloc_at(vkv_region *r, uint32_t slot)
{
	int err;

	if (!r)
		return vkv__set_error(-EINVAL, "slot_alloc_at: NULL region");
	pthread_mutex_lock(&r->ctx->lock);
	err = check_slot(r, slot);
	if (!err) {
		wait_not_busy(r, slot);
		if (r->slots[slot].state == VKV_SLOT_ACTIVE ||
		    r->slots[slot].state == VKV_SLOT_EVICTED)
			err = vkv__set_error(-EBUSY, "slot %u is already allocated", slot);
	}
	if (!err && r->slots[slot].state == VKV_SLOT_CACHED)
		err = slot_unshare(r, slot);
	if (!err) {
		slot_activate(r, slot);
		vkv__ctx_publish(r->ctx);
	}
	pthread_mutex_unlock(&r->ctx->lock);
	return err;
}

VKV_API int vkv_slot_free(vkv_region *r, uint32_t slot)
{
	struct vkv_ctx *ctx;
	struct vkv_slot *sl;
	int err;

	if (!r)
		return vkv__set_error(-EINVAL, "slot_free: NULL region");
	ctx = r->ctx;
	pthread_mutex_lock(&ctx->lock);
	err = check_slot(r, slot);
	if (err)
		goto out;
	wait_not_busy(r, slot);
	sl = &r->slots[slot];
	if (sl->state == VKV_SLOT_EVICTED) {
		if (ctx->tier_discard)
			ctx->tier_discard(r, slot);
		sl->state = VKV_SLOT_ACTIVE;
	}
	if (sl->state != VKV_SLOT_ACTIVE) {
		err = vkv__set_error(-EINVAL, "slot_free: slot %u is not allocated "
				     "(double free?)", slot);
		goto out;
	}
	if (sl->mapped) {
		/* Pages stay mapped; remember what the engine may still be
		 * reading from them so that a later unmap waits for it. */
		if (sl->has_fence)
			ctx->backend.ops->fence_drop(&ctx->backend, sl->fence);
		sl->has_fence = ctx->backend.ops->fence_record(&ctx->backend,
							       &sl->fence) == 0;
		for (uint64_t i = 0; i < sl->mapped * r->ntensors; i++)
			vkv__page_activate(ctx, sl->pages[i], false);
		sl->state = VKV_SLOT_CACHED;
		r->slots_cached++;
	} else {
		sl->state = VKV_SLOT_NEVER;
	}
	sl->freed_at = ++ctx->clock;
	sl->want = 0;
	r->slots_active--;
	vkv__ctx_publish(ctx);
out:
	pthread_mutex_unlock(&ctx->lock);
	return err;
}

VKV_API int vkv_slot_ensure(vkv_region *r, uint32_t slot, uint64_t tokens)
{
	int err;

	if (!r)
		return vkv__set_error(-EINVAL, "slot_ensure: NULL region");
	pthread_mutex_lock(&r->ctx->lock);
	err = promote_evicted(r, slot, true);
	if (!err)
		err = check_active(r, slot);
	if (!err)
		err = check_tokens(r, tokens);
	if (!err)
		err = slot_grow(r, slot, vkv__pages_for(r, tokens), false);
	if (!err) {
		r->slots[slot].last_len = tokens;
		r->slots[slot].used_at = r->ctx->tick;
	}
	vkv__ctx_publish(r->ctx);
	pthread_mutex_unlock(&r->ctx->lock);
	return err;
}

/* Queue a look-ahead target for the worker (lock held). */
static void queue_lookahead(struct vkv_region *r, uint32_t s, uint64_t want)
{
	struct vkv_slot *sl = &r->slots[s];

	if (want > r->slot_pages)
		want = r->slot_pages;
	if (want <= sl->mapped || want <= sl->want)
		return;
	sl->want = want;
	if (!sl->queued) {
		sl->queued = true;
		r->queue[r->queue_len++] = s;
	}
}

VKV_API int vkv_slot_prefetch(vkv_region *r, uint32_t slot, uint64_t tokens)
{
	int err;

	if (!r)
		return vkv__set_error(-EINVAL, "slot_prefetch: NULL region");
	pthread_mutex_lock(&r->ctx->lock);
	if (slot < r->cfg.max_slots && r->slots[slot].state == VKV_SLOT_EVICTED &&
	    r->ctx->tier_promote) {
		/* Restore in the background; the tokens follow at the step. */
		err = promote_evicted(r, slot, false);
		pthread_mutex_unlock(&r->ctx->lock);
		return err;
	}
	err = check_active(r, slot);
	if (!err)
		err = check_tokens(r, tokens);
	if (!err && !r->ctx->worker_on) {
		err = slot_grow(r, slot, vkv__pages_for(r, tokens), false);
	} else if (!err) {
		queue_lookahead(r, slot, vkv__pages_for(r, tokens));
		vkv__ctx_kick(r->ctx);
	}
	pthread_mutex_unlock(&r->ctx->lock);
	return err;
}

VKV_API int vkv_step(vkv_region *r, const uint32_t *slots, const uint64_t *lens,
		     size_t n)
{
	uint64_t t0 = vkv__now_ns();
	struct vkv_ctx *ctx;
	bool queued = false;
	size_t pinned = 0;
	int err = 0;

	if (!r || (n && (!slots || !lens)))
		return vkv__set_error(-EINVAL, "step: NULL argument");
	ctx = r->ctx;
	pthread_mutex_lock(&ctx->lock);
	ctx->tick++;
	/* Validate everything first: bad input changes nothing (but slots
	 * that automatic tiering brought back stay back). The batch's slots
	 * are pinned: making room for one never demotes another. */
	for (size_t i = 0; i < n && !err; i++) {
		err = promote_evicted(r, slots[i], true);
		if (!err)
			err = check_active(r, slots[i]);
		if (!err)
			err = check_tokens(r, lens[i]);
		if (err) {
			vkv__prefix_error(err, "step: batch entry %zu", i);
			break;
		}
		r->slots[slots[i]].pins++;
		r->slots[slots[i]].used_at = ctx->tick;
		pinned++;
	}
	/* Lengths first: a commit below that must take pages from active
	 * slots' surplus then sees this batch's needs, not the last one's. */
	for (size_t i = 0; i < n && !err; i++)
		r->slots[slots[i]].last_len = lens[i];
	for (size_t i = 0; i < n && !err; i++) {
		struct vkv_slot *sl = &r->slots[slots[i]];
		uint64_t need = vkv__pages_for(r, lens[i]);

		if (sl->mapped < need) {
			err = slot_grow(r, slots[i], need, false);
			if (err) {
				vkv__prefix_error(err, "step: slot %u, %llu tokens",
						  slots[i], (unsigned long long)lens[i]);
				break;
			}
		}
		if (ctx->worker_on) {
			uint64_t ahead = lens[i] + r->lookahead;

			if (ahead > r->cfg.max_context)
				ahead = r->cfg.max_context;
			queue_lookahead(r, slots[i], vkv__pages_for(r, ahead));
			queued = queued || sl->queued;
		}
	}
	if (queued)
		vkv__ctx_kick(ctx);
	for (size_t i = 0; i < pinned; i++)
		r->slots[slots[i]].pins--;
	vkv__ctx_publish(ctx);
	pthread_mutex_unlock(&ctx->lock);
	vkv__stats_step(vkv__now_ns() - t0);
	return err;
}

bool vkv__region_lookahead(struct vkv_region *r)
{
	uint32_t s;
	struct vkv_slot *sl;

	if (!r->queue_len)
		return false;
	s = r->queue[0];
	memmove(r->queue, r->queue + 1, --r->queue_len * sizeof(*r->queue));
	sl = &r->slots[s];
	sl->queued = false;
	if (sl->state == VKV_SLOT_ACTIVE && sl->want > sl->mapped) {
		/* slot_grow may drop the lock: keep destroy out meanwhile. */
		r->worker_in++;
		slot_grow(r, s, sl->want, true); /* errors: step retries, reports */
		if (--r->worker_in == 0)
			pthread_cond_broadcast(&r->ctx->cond);
	}
	return true;
}

VKV_API int vkv_slot_share_prefix(vkv_region *r, uint32_t dst, uint32_t src,
				  uint64_t tokens)
{
	struct vkv_ctx *ctx;
	struct vkv_slot *d, *sr;
	struct vkv_page **saved;
	uint64_t full, rem, old, keep, low;
	int err;

	if (!r)
		return vkv__set_error(-EINVAL, "share_prefix: NULL region");
	ctx = r->ctx;
	pthread_mutex_lock(&ctx->lock);
	err = check_active(r, dst);
	if (!err)
		err = check_active(r, src);
	if (!err)
		err = check_tokens(r, tokens);
	if (!err && dst == src)
		err = vkv__set_error(-EINVAL, "share_prefix: dst and src are both slot %u", dst);
	if (err || tokens == 0)
		goto out;
	d = &r->slots[dst];
	sr = &r->slots[src];
	full = tokens * r->tensor_token_bytes / r->page_size;
	rem = tokens * r->tensor_token_bytes - full * r->page_size;
	lock_two(r, dst, src);
	if (sr->mapped < vkv__pages_for(r, tokens)) {
		err = vkv__set_error(-EINVAL, "share_prefix: src slot %u backs fewer "
				     "than %llu tokens", src, (unsigned long long)tokens);
		goto unbusy;
	}
	old = d->mapped;
	keep = old > full ? old : full;
	low = old < full ? old : full;
	err = slot_reserve_table(r, d, keep);
	saved = err ? NULL : malloc((low ? low : 1) * r->ntensors * sizeof(*saved));
	if (!err && !saved)
		err = vkv__set_error(-ENOMEM, "share_prefix: out of host memory");
	if (err)
		goto unbusy;
	/* dst's table points at src's pages for [0, full) so that map_range
	 * maps them; its own old pages are kept aside to drop afterwards. */
	if (low) /* d->pages may still be NULL: memcpy must not see it */
		memcpy(saved, d->pages, low * r->ntensors * sizeof(*saved));
	pthread_mutex_unlock(&ctx->lock);
	if (d->has_fence)
		ctx->backend.ops->fence_wait(&ctx->backend, d->fence);
	err = vkv__slot_unmap_range(r, dst, 0, low);
	if (!err) {
		if (full)
			memcpy(d->pages, sr->pages, full * r->ntensors * sizeof(*saved));
		err = vkv__slot_map_range(r, dst, 0, full);
		if (err) {
			/* dst lost its prefix: give back all it held. */
			if (low)
				memcpy(d->pages, saved, low * r->ntensors * sizeof(*saved));
			vkv__slot_unmap_range(r, dst, low, old);
		}
	}
	pthread_mutex_lock(&ctx->lock);
	if (!err) {
		for (uint64_t i = 0; i < low * r->ntensors; i++)
			if (vkv__page_unref(ctx, saved[i], true))
				vkv__pool_put(&ctx->pool, &saved[i], 1);
		for (uint64_t i = 0; i < full * r->ntensors; i++)
			vkv__page_ref(ctx, d->pages[i], true);
		r->pages_mapped += (keep - old) * r->ntensors;
		d->mapped = keep;
		/* The prefix is data now: reclaim must not trim it. */
		if (d->last_len < tokens)
			d->last_len = tokens;
	} else {
		vkv__slot_drop_pages(r, dst, 0, old);
		d->mapped = 0;
	}
	free(saved);
unbusy:
	vkv__slot_unlock(r, dst);
	vkv__slot_unlock(r, src);
	if (err || !rem)
		goto out;
	/* The partial page: dst's own page, then a copy of the bytes. */
	err = slot_grow(r, dst, full + 1, false);
	if (err)
		goto out;
	lock_two(r, dst, src);
	pthread_mutex_unlock(&ctx->lock);
	for (uint32_t t = 0; t < r->ntensors && !err; t++)
		err = ctx->backend.ops->copy_dd(&ctx->backend,
						vkv__page_addr(r, dst, t, full),
						vkv__page_addr(r, src, t, full), rem);
	pthread_mutex_lock(&ctx->lock);
	vkv__slot_unlock(r, dst);
	vkv__slot_unlock(r, src);
out:
	if (!err)
		vkv__ctx_publish(ctx);
	pthread_mutex_unlock(&ctx->lock);
	return err;
}

VKV_API int vkv_slot_info(vkv_region *r, uint32_t slot, struct vkv_slot_info *info)
{
	int err;

	if (!r || !info)
		return vkv__set_error(-EINVAL, "slot_info: NULL argument");
	memset(info, 0, sizeof(*info));
	pthread_mutex_lock(&r->ctx->lock);
	err = check_slot(r, slot);
	if (!err) {
		const struct vkv_slot *sl = &r->slots[slot];

		info->allocated = sl->state == VKV_SLOT_ACTIVE ||
				  sl->state == VKV_SLOT_EVICTED;
		info->tier = sl->state == VKV_SLOT_EVICTED ? sl->tier : 0;
		info->backed_tokens = vkv__tokens_in(r, sl->mapped);
		info->pages = sl->mapped * r->ntensors;
		for (uint64_t i = 0; i < info->pages; i++)
			info->shared_pages += sl->pages[i]->refs > 1;
		info->last_len = sl->last_len;
	}
	pthread_mutex_unlock(&r->ctx->lock);
	return err;
}

/* Validate a host copy and return the slot's backing check (lock held). */
static int check_copy(struct vkv_region *r, uint32_t slot, uint32_t layer, int kv,
		      uint64_t first, uint64_t count, const void *buf)
{
	uint64_t end;
	int err = check_active(r, slot);

	if (err)
		return err;
	if (!buf || layer >= r->cfg.layers || (kv != VKV_K && kv != VKV_V))
		return vkv__set_error(-EINVAL, "slot copy: bad layer/kv/buffer");
	if (__builtin_add_overflow(first, count, &end) || end > r->cfg.max_context)
		return vkv__set_error(-E2BIG, "slot copy: tokens beyond max_context");
	if (end > vkv__tokens_in(r, r->slots[slot].mapped))
		return vkv__set_error(-ERANGE, "slot copy: tokens [%llu, %llu) of slot %u "
				      "are not backed",
				      (unsigned long long)first,
				      (unsigned long long)end, slot);
	return 0;
}

static int copy_rows(struct vkv_region *r, uint32_t slot, uint32_t layer, int kv,
		     uint64_t first, uint64_t count, void *buf, bool to_slot)
{
	struct vkv_backend *b = &r->ctx->backend;
	struct vkv_tensor t;
	uint64_t addr, tb = r->token_bytes;
	int err = 0;

	vkv_region_tensor(r, layer, kv, &t);
	addr = t.addr + slot * t.slot_stride + first * t.token_stride;
	if (t.token_stride == tb)
		return to_slot ? b->ops->copy_from_host(b, addr, buf, count * tb)
			       : b->ops->copy_to_host(b, buf, addr, count * tb);
	for (uint64_t i = 0; i < count && !err; i++) {
		uint8_t *h = (uint8_t *)buf + i * tb;
		uint64_t a = addr + i * t.token_stride;

		err = to_slot ? b->ops->copy_from_host(b, a, h, tb)
			      : b->ops->copy_to_host(b, h, a, tb);
	}
	return err;
}

static int slot_copy(struct vkv_region *r, uint32_t slot, uint32_t layer, int kv,
		     uint64_t first, uint64_t count, void *buf, bool to_slot)
{
	struct vkv_ctx *ctx = r->ctx;
	int err;

	pthread_mutex_lock(&ctx->lock);
	err = check_slot(r, slot);
	if (!err) {
		/* Busy for the copy: no reclaim or eviction unmaps under it. */
		vkv__slot_lock(r, slot);
		err = check_copy(r, slot, layer, kv, first, count, buf);
		if (err)
			vkv__slot_unlock(r, slot);
	}
	pthread_mutex_unlock(&ctx->lock);
	if (err)
		return err;
	if (count)
		err = copy_rows(r, slot, layer, kv, first, count, buf, to_slot);
	pthread_mutex_lock(&ctx->lock);
	vkv__slot_unlock(r, slot);
	pthread_mutex_unlock(&ctx->lock);
	return err;
}

VKV_API int vkv_slot_write(vkv_region *r, uint32_t slot, uint32_t layer, int kv,
			   uint64_t first, uint64_t count, const void *src)
{
	if (!r)
		return vkv__set_error(-EINVAL, "slot_write: NULL region");
	return slot_copy(r, slot, layer, kv, first, count, (void *)src, true);
}

VKV_API int vkv_slot_read(vkv_region *r, uint32_t slot, uint32_t layer, int kv,
			  uint64_t first, uint64_t count, void *dst)
{
	if (!r)
		return vkv__set_error(-EINVAL, "slot_read: NULL region");
	return slot_copy(r, slot, layer, kv, first, count, dst, false);
}
