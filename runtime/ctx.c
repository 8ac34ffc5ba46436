// SPDX-License-Identifier: MIT
/*
 * ctx.c - contexts: one backend, one pool, one worker, many regions.
 *
 * The worker is what takes map work off the engine's critical path. It
 * serves, in this order: look-ahead commits queued by vkv_step and
 * vkv_slot_prefetch, the pool's watermarks (create pages below low, release
 * above high), and deferred reclamation (when the pool is short and the
 * budget is spent, unmap pages that freed slots still cache, least recently
 * freed first), then sleeps until kicked.
 *
 * Page accounting lives here too: a page's refs counts the slots mapping
 * it, arefs those of them that are allocated; the context keeps how many
 * distinct pages are mapped, in use and shared, for stats and info.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

/* ---------------------------------------------------------- page accounting */

void vkv__page_ref(struct vkv_ctx *ctx, struct vkv_page *pg, bool active)
{
	if (pg->refs == 0)
		ctx->pages_mapped++;
	else if (pg->refs == 1)
		ctx->pages_shared++;
	pg->refs++;
	if (active)
		vkv__page_activate(ctx, pg, true);
}

bool vkv__page_unref(struct vkv_ctx *ctx, struct vkv_page *pg, bool active)
{
	if (active)
		vkv__page_activate(ctx, pg, false);
	pg->refs--;
	if (pg->refs == 1)
		ctx->pages_shared--;
	else if (pg->refs == 0)
		ctx->pages_mapped--;
	return pg->refs == 0;
}

void vkv__page_activate(struct vkv_ctx *ctx, struct vkv_page *pg, bool on)
{
	if (on) {
		if (pg->arefs++ == 0)
			ctx->pages_in_use++;
	} else {
		if (--pg->arefs == 0)
			ctx->pages_in_use--;
	}
}

/* ----------------------------------------------------------------- reclaim */

/* The worker's thread: its commits are look-ahead, never worth taking
 * pages from active slots for. */
static __thread bool in_worker;

/*
 * Next slot to take pages from (lock held): the least recently freed slot
 * that caches pages; with `active`, else the allocated slot holding the
 * most pages beyond its last length (look-ahead and what a reused slot
 * brought along), which the engine has not written. *keep: pages to keep.
 */
static struct vkv_region *pick_victim(struct vkv_ctx *ctx, bool active,
				      uint32_t *slot, uint64_t *keep)
{
	struct vkv_region *best = NULL;
	uint64_t oldest = UINT64_MAX, most = 0;

	for (struct vkv_region *r = ctx->regions; r; r = r->next) {
		if (!r->slots_cached)
			continue;
		for (uint32_t s = 0; s < r->cfg.max_slots; s++) {
			const struct vkv_slot *sl = &r->slots[s];

			if (sl->state != VKV_SLOT_CACHED || sl->busy ||
			    !sl->mapped || sl->freed_at >= oldest)
				continue;
			oldest = sl->freed_at;
			best = r;
			*slot = s;
			*keep = 0;
		}
	}
	if (best || !active)
		return best;
	for (struct vkv_region *r = ctx->regions; r; r = r->next) {
		for (uint32_t s = 0; s < r->cfg.max_slots; s++) {
			const struct vkv_slot *sl = &r->slots[s];
			uint64_t need = vkv__pages_for(r, sl->last_len);

			if (sl->state != VKV_SLOT_ACTIVE || sl->busy ||
			    sl->mapped <= need ||
			    (sl->mapped - need) * r->ntensors <= most)
				continue;
			most = (sl->mapped - need) * r->ntensors;
			best = r;
			*slot = s;
			*keep = need;
		}
	}
	return best;
}

uint64_t vkv__ctx_reclaim(struct vkv_ctx *ctx, uint64_t want)
{
	uint64_t freed = 0, n = 0, keep = 0;
	struct vkv_region *r;
	uint32_t s;

	while (freed < want && (r = pick_victim(ctx, !in_worker, &s, &keep))) {
		struct vkv_slot *sl = &r->slots[s];
		uint64_t mapped = sl->mapped;
		int err;

		/* Shrink first: from here on nobody (a step's fast path, a
		 * copy) may count [keep, mapped) as backed. */
		sl->busy = true;
		sl->mapped = keep;
		pthread_mutex_unlock(&ctx->lock);
		if (sl->has_fence)
			ctx->backend.ops->fence_wait(&ctx->backend, sl->fence);
		err = vkv__slot_unmap_range(r, s, keep, mapped);
		pthread_mutex_lock(&ctx->lock);
		if (err) {
			vkv__warn("reclaim: unmapping slot %u failed: %s", s,
				  vkv_last_error());
			sl->mapped = mapped;
			vkv__slot_unlock(r, s);
			break;
		}
		freed += vkv__slot_drop_pages(r, s, keep, mapped);
		n += (mapped - keep) * r->ntensors;
		if (sl->want > keep)
			sl->want = keep; /* no look-ahead back into it */
		if (!keep && sl->has_fence) {
			ctx->backend.ops->fence_drop(&ctx->backend, sl->fence);
			sl->has_fence = false;
		}
		if (!keep && sl->state == VKV_SLOT_CACHED) {
			sl->state = VKV_SLOT_NEVER;
			r->slots_cached--;
		}
		vkv__slot_unlock(r, s);
	}
	if (n) {
		struct vkv_stats_segment *st = vkv__stats_begin();
		st->reclaims += n;
		st->unmaps += n;
		vkv__stats_end();
		vkv__ctx_publish(ctx);
	}
	return freed;
}

/* ------------------------------------------------------------------ worker */

void vkv__ctx_kick(struct vkv_ctx *ctx)
{
	ctx->kick = true;
	pthread_cond_signal(&ctx->wake);
}

/* One round of look-ahead work; restarts from the list head after each
 * slot because the list may change while the lock is dropped. */
static bool lookahead_round(struct vkv_ctx *ctx)
{
	bool did = false;

again:
	for (struct vkv_region *r = ctx->regions; r; r = r->next) {
		if (vkv__region_lookahead(r)) {
			did = true;
			goto again;
		}
	}
	return did;
}

/* Keep the pool's watermark with cached pages when the budget is spent. */
static bool reclaim_round(struct vkv_ctx *ctx)
{
	struct vkv_pool *p = &ctx->pool;
	uint64_t short_by = 0, want;

	pthread_mutex_lock(&p->lock);
	/* Ahead of need the worker frees at most an eighth of the budget: a
	 * pool_low near the budget (the 8 MiB default is 2048 pages of 4 KiB)
	 * would have it demote every idle slot in every round, moving KV to
	 * a lower tier that nobody needed the room of. */
	want = p->low_pages;
	if (p->budget_pages && want > p->budget_pages / 8)
		want = p->budget_pages / 8;
	if (p->pages_free < want && vkv__pool_headroom(p) == 0)
		short_by = want - p->pages_free;
	pthread_mutex_unlock(&p->lock);
	if (!short_by)
		return false;
	if (vkv__ctx_reclaim(ctx, short_by) > 0)
		return true;
	/* Automatic tiering: demote idle slots, least recently used first. */
	return ctx->tier_demote && ctx->tier_demote(ctx, short_by) > 0;
}

/* Do everything there is to do once; lock held. */
static bool work_round(struct vkv_ctx *ctx)
{
	bool did = lookahead_round(ctx);

	pthread_mutex_unlock(&ctx->lock);
	while (vkv__pool_balance(&ctx->pool))
		did = true;
	pthread_mutex_lock(&ctx->lock);
	return reclaim_round(ctx) || did;
}

static void *worker_main(void *arg)
{
	struct vkv_ctx *ctx = arg;

	in_worker = true;
	pthread_mutex_lock(&ctx->lock);
	while (!ctx->stop) {
		ctx->worker_busy = true;
		ctx->kick = false;
		/* work_round drops the lock: a stop or a kick may have come
		 * meanwhile, and its signal found nobody waiting */
		if (work_round(ctx) || ctx->kick || ctx->stop)
			continue;
		ctx->worker_busy = false;
		pthread_cond_broadcast(&ctx->cond);
		pthread_cond_wait(&ctx->wake, &ctx->lock);
	}
	ctx->worker_busy = false;
	pthread_cond_broadcast(&ctx->cond);
	pthread_mutex_unlock(&ctx->lock);
	return NULL;
}

VKV_API int vkv_ctx_quiesce(vkv_ctx *ctx)
{
	if (!ctx)
		return vkv__set_error(-EINVAL, "ctx_quiesce: NULL context");
	pthread_mutex_lock(&ctx->lock);
	if (!ctx->worker_on) {
		while (work_round(ctx))
			;
	} else {
		vkv__ctx_kick(ctx);
		while (ctx->kick || ctx->worker_busy)
			pthread_cond_wait(&ctx->cond, &ctx->lock);
	}
	pthread_mutex_unlock(&ctx->lock);
	return 0;
}

static void publish_gauges(struct vkv_ctx *ctx, const struct vkv_ctx_gauges *g);

/* ----------------------------------------------------------------- context */

VKV_API void vkv_ctx_config_init(struct vkv_ctx_config *cfg)
{
	if (!cfg)
		return;
	memset(cfg, 0, sizeof(*cfg));
	cfg->struct_size = sizeof(*cfg);
	cfg->backend = (enum vkv_backend_kind)vkv__opt_enum(VKV_OPT_BACKEND);
	cfg->device = (int)vkv__opt_i64(VKV_OPT_DEVICE);
	cfg->unbacked = (enum vkv_unbacked)vkv__opt_enum(VKV_OPT_UNBACKED);
	cfg->page_size = vkv__opt_u64(VKV_OPT_PAGE_SIZE);
	cfg->budget = vkv__opt_u64(VKV_OPT_BUDGET);
	cfg->pool_low = vkv__opt_u64(VKV_OPT_POOL_LOW);
	cfg->pool_high = vkv__opt_u64(VKV_OPT_POOL_HIGH);
	if (vkv__opt_enum(VKV_OPT_WORKER) == 0)
		cfg->flags |= VKV_CTX_NO_WORKER;
	if (vkv__opt_enum(VKV_OPT_STATS) == 0)
		cfg->flags |= VKV_CTX_NO_STATS;
}

static int check_config(const struct vkv_ctx_config *cfg)
{
	if (!cfg)
		return vkv__set_error(-EINVAL, "ctx_create: NULL config");
	if (cfg->struct_size < sizeof(*cfg))
		return vkv__set_error(-EINVAL, "ctx_create: struct_size %u < %zu "
				      "(use vkv_ctx_config_init)",
				      cfg->struct_size, sizeof(*cfg));
	if ((unsigned)cfg->backend >= VKV_BACKEND_COUNT)
		return vkv__set_error(-EINVAL, "ctx_create: unknown backend %d",
				      cfg->backend);
	if ((unsigned)cfg->unbacked >= VKV_UNBACKED_COUNT)
		return vkv__set_error(-EINVAL, "ctx_create: unknown unbacked mode %d",
				      cfg->unbacked);
	if (cfg->flags & ~(VKV_CTX_NO_WORKER | VKV_CTX_NO_STATS))
		return vkv__set_error(-EINVAL, "ctx_create: unknown flags 0x%x",
				      cfg->flags);
	if (cfg->page_size & (cfg->page_size - 1))
		return vkv__set_error(-EINVAL, "ctx_create: page size %llu is not a "
				      "power of two",
				      (unsigned long long)cfg->page_size);
	return 0;
}

VKV_API int vkv_ctx_create(const struct vkv_ctx_config *cfg, vkv_ctx **out)
{
	struct vkv_ctx *ctx;
	int err;

	if (!out)
		return vkv__set_error(-EINVAL, "ctx_create: NULL out");
	err = check_config(cfg);
	if (err)
		return err;
	ctx = calloc(1, sizeof(*ctx));
	if (!ctx)
		return vkv__set_error(-ENOMEM, "ctx_create: out of host memory");
	ctx->cfg = *cfg;
	err = vkv__backend_open(&ctx->backend, cfg);
	if (err)
		goto err_free;
	ctx->cfg.backend = ctx->backend.kind;
	ctx->cfg.page_size = ctx->backend.page_size;
	err = vkv__pool_init(&ctx->pool, &ctx->backend, cfg->budget,
			     cfg->pool_low, cfg->pool_high);
	if (err)
		goto err_backend;
	pthread_mutex_init(&ctx->lock, NULL);
	pthread_cond_init(&ctx->cond, NULL);
	pthread_cond_init(&ctx->wake, NULL);
	err = vkv__tier_ctx_init(ctx);
	if (err)
		goto err_pool;
	if (!(cfg->flags & VKV_CTX_NO_STATS))
		vkv__stats_open(ctx->backend.kind, ctx->backend.detail,
				ctx->backend.page_size);
	{
		struct vkv_stats_segment *s = vkv__stats_begin();
		s->contexts++;
		vkv__stats_end();
	}
	pthread_mutex_lock(&ctx->lock);
	vkv__ctx_publish(ctx);
	pthread_mutex_unlock(&ctx->lock);
	if (!(cfg->flags & VKV_CTX_NO_WORKER)) {
		/* set before the worker runs: it shares a word with the
		 * flags the worker reads under the lock */
		ctx->worker_on = true;
		err = pthread_create(&ctx->worker, NULL, worker_main, ctx);
		if (err) {
			ctx->worker_on = false;
			vkv__warn("cannot start the worker (%s); working inline",
				  strerror(err));
		} else {
			ctx->cfg.flags &= ~VKV_CTX_NO_WORKER;
		}
	}
	if (!ctx->worker_on)
		ctx->cfg.flags |= VKV_CTX_NO_WORKER;
	*out = ctx;
	return 0;

err_pool:
	pthread_cond_destroy(&ctx->cond);
	pthread_cond_destroy(&ctx->wake);
	pthread_mutex_destroy(&ctx->lock);
	vkv__pool_fini(&ctx->pool);
err_backend:
	ctx->backend.ops->close(&ctx->backend);
err_free:
	free(ctx);
	return err;
}

VKV_API int vkv_ctx_destroy(vkv_ctx *ctx)
{
	if (!ctx)
		return vkv__set_error(-EINVAL, "ctx_destroy: NULL context");
	pthread_mutex_lock(&ctx->lock);
	if (ctx->regions) {
		uint32_t n = ctx->nregions;

		pthread_mutex_unlock(&ctx->lock);
		return vkv__set_error(-EBUSY, "ctx_destroy: %u regions still exist", n);
	}
	ctx->stop = true;
	pthread_cond_signal(&ctx->wake);
	pthread_mutex_unlock(&ctx->lock);
	if (ctx->worker_on)
		pthread_join(ctx->worker, NULL);
	vkv__tier_ctx_fini(ctx);
	vkv__pool_fini(&ctx->pool);
	{
		/* Take back everything this context published. */
		static const struct vkv_ctx_gauges none;
		struct vkv_stats_segment *s;

		publish_gauges(ctx, &none);
		s = vkv__stats_begin();
		s->contexts--;
		vkv__stats_end();
	}
	ctx->backend.ops->close(&ctx->backend);
	pthread_cond_destroy(&ctx->cond);
	pthread_cond_destroy(&ctx->wake);
	pthread_mutex_destroy(&ctx->lock);
	free(ctx);
	return 0;
}

VKV_API int vkv_ctx_info(vkv_ctx *ctx, struct vkv_ctx_info *info)
{
	if (!ctx || !info)
		return vkv__set_error(-EINVAL, "ctx_info: NULL argument");
	memset(info, 0, sizeof(*info));
	pthread_mutex_lock(&ctx->lock);
	info->backend = ctx->backend.kind;
	info->unbacked = ctx->backend.unbacked;
	info->device = ctx->backend.device;
	info->worker = ctx->worker_on;
	info->page_size = ctx->backend.page_size;
	info->budget = ctx->pool.budget_pages * ctx->backend.page_size;
	info->pool_low = ctx->pool.low_pages * ctx->backend.page_size;
	info->pool_high = ctx->pool.high_pages * ctx->backend.page_size;
	info->pages_mapped = ctx->pages_mapped;
	info->reserved_bytes = ctx->reserved_bytes;
	pthread_mutex_lock(&ctx->pool.lock);
	info->pages_total = ctx->pool.pages_total;
	info->pages_free = ctx->pool.pages_free;
	pthread_mutex_unlock(&ctx->pool.lock);
	pthread_mutex_unlock(&ctx->lock);
	snprintf(info->backend_name, sizeof(info->backend_name), "%s",
		 vkv_backend_name(info->backend));
	snprintf(info->backend_detail, sizeof(info->backend_detail), "%s",
		 ctx->backend.detail);
	return 0;
}

VKV_API int vkv_ctx_set_stream(vkv_ctx *ctx, void *stream)
{
	int err;

	if (!ctx)
		return vkv__set_error(-EINVAL, "ctx_set_stream: NULL context");
	pthread_mutex_lock(&ctx->lock);
	err = ctx->backend.ops->set_stream(&ctx->backend, stream);
	if (!err)
		ctx->stream = stream;
	pthread_mutex_unlock(&ctx->lock);
	return err;
}

VKV_API int vkv_ctx_trim(vkv_ctx *ctx, uint64_t *freed)
{
	uint64_t pages;

	if (!ctx)
		return vkv__set_error(-EINVAL, "ctx_trim: NULL context");
	pthread_mutex_lock(&ctx->lock);
	vkv__ctx_reclaim(ctx, UINT64_MAX);
	pthread_mutex_unlock(&ctx->lock);
	pages = vkv__pool_drain(&ctx->pool);
	pthread_mutex_lock(&ctx->lock);
	vkv__ctx_publish(ctx);
	pthread_mutex_unlock(&ctx->lock);
	if (freed)
		*freed = pages * ctx->backend.page_size;
	return 0;
}

/* ------------------------------------------------------------------- stats */

static void publish_gauges(struct vkv_ctx *ctx, const struct vkv_ctx_gauges *g)
{
	struct vkv_stats_segment *s = vkv__stats_begin();
	const struct vkv_ctx_gauges *o = &ctx->pub;

	/* Unsigned wrap-around makes "+ new - old" right in both directions. */
	s->reserved_bytes += g->reserved - o->reserved;
	s->in_use_bytes += g->in_use - o->in_use;
	s->cached_bytes += g->cached - o->cached;
	s->pages_shared += g->shared - o->shared;
	s->regions += g->regions - o->regions;
	s->slots_active += g->slots_active - o->slots_active;
	s->slots_cached += g->slots_cached - o->slots_cached;
	s->budget += g->budget - o->budget;
	vkv__stats_end();
	ctx->pub = *g;
}

void vkv__ctx_publish(struct vkv_ctx *ctx)
{
	struct vkv_ctx_gauges g = { 0 };
	uint64_t ps = ctx->backend.page_size;

	g.reserved = ctx->reserved_bytes;
	g.in_use = ctx->pages_in_use * ps;
	g.cached = (ctx->pages_mapped - ctx->pages_in_use) * ps;
	g.shared = ctx->pages_shared;
	g.regions = ctx->nregions;
	for (struct vkv_region *r = ctx->regions; r; r = r->next) {
		g.slots_active += r->slots_active;
		g.slots_cached += r->slots_cached;
	}
	g.budget = ctx->pool.budget_pages * ps;
	if (memcmp(&g, &ctx->pub, sizeof(g)))
		publish_gauges(ctx, &g);
}
