// SPDX-License-Identifier: MIT
/*
 * pool.c - the page pool: physical pages created ahead of need.
 *
 * Creating a physical page (cuMemCreate, fallocate) is the expensive half
 * of committing memory, so the pool keeps a free list of created but
 * unmapped pages. The context's worker calls vkv__pool_balance() to keep
 * that list between the low and the high watermark; the engine's thread
 * only creates pages itself when the list runs dry. A byte budget caps
 * pages_total, creations in flight included, so two threads creating at
 * once cannot overshoot it.
 *
 * The pool never calls the backend with its lock held: creation and
 * release are slow, and the engine's thread must not wait behind the
 * worker for a lock.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static int cmp_page_phys(const void *a, const void *b)
{
	vkv_phys x = (*(struct vkv_page *const *)a)->phys;
	vkv_phys y = (*(struct vkv_page *const *)b)->phys;

	return x < y ? -1 : x > y;
}

void vkv__pages_sort_phys(const struct vkv_backend *b, struct vkv_page **pages,
			  size_t n)
{
	if (n > 1 && (b->kind == VKV_BACKEND_HOST || b->kind == VKV_BACKEND_KMOD))
		qsort(pages, n, sizeof(*pages), cmp_page_phys);
}

int vkv__pool_init(struct vkv_pool *p, struct vkv_backend *b, uint64_t budget,
		   uint64_t low, uint64_t high)
{
	memset(p, 0, sizeof(*p));
	p->backend = b;
	p->page_size = b->page_size;
	p->budget_pages = budget / b->page_size;
	if (budget && p->budget_pages == 0)
		return vkv__set_error(-EINVAL,
				      "budget %llu is smaller than one page (%llu)",
				      (unsigned long long)budget,
				      (unsigned long long)b->page_size);
	p->low_pages = low / b->page_size;
	p->high_pages = high / b->page_size;
	if (p->high_pages < p->low_pages)
		p->high_pages = p->low_pages;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->created, NULL);
	return 0;
}

/* Stats for pages released (n) of which free_n were on the free list. */
static void count_released(struct vkv_pool *p, uint64_t n, uint64_t free_n)
{
	struct vkv_stats_segment *s = vkv__stats_begin();

	s->pages_released += n;
	s->committed_bytes -= n * p->page_size;
	s->pages_free -= free_n;
	vkv__stats_end();
}

static void release_pages(struct vkv_pool *p, struct vkv_page **pages, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		p->backend->ops->page_release(p->backend, pages[i]->phys);
		free(pages[i]);
	}
}

uint64_t vkv__pool_drain(struct vkv_pool *p)
{
	struct vkv_page **list;
	uint64_t n;

	pthread_mutex_lock(&p->lock);
	list = p->free;
	n = p->pages_free;
	p->free = NULL;
	p->free_cap = 0;
	p->pages_free = 0;
	p->pages_total -= n;
	p->returns++;
	pthread_mutex_unlock(&p->lock);
	release_pages(p, list, n);
	free(list);
	if (n)
		count_released(p, n, n);
	return n;
}

void vkv__pool_fini(struct vkv_pool *p)
{
	vkv__pool_drain(p);
	if (p->pages_total)
		vkv__warn("pool destroyed with %llu pages still mapped",
			  (unsigned long long)p->pages_total);
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->created);
}

uint64_t vkv__pool_headroom(struct vkv_pool *p)
{
	uint64_t used;

	if (!p->budget_pages)
		return UINT64_MAX;
	used = p->pages_total + p->pages_creating;
	return used >= p->budget_pages ? 0 : p->budget_pages - used;
}

/* Grow the free stack so that it can hold `n` more pages (lock held). */
static int free_reserve(struct vkv_pool *p, uint64_t n)
{
	uint64_t cap = p->free_cap ? p->free_cap : 64;
	struct vkv_page **f;

	if (p->pages_free + n <= p->free_cap)
		return 0;
	while (cap < p->pages_free + n)
		cap *= 2;
	f = realloc(p->free, cap * sizeof(*f));
	if (!f)
		return -ENOMEM;
	p->free = f;
	p->free_cap = cap;
	return 0;
}

/* Create n pages without the lock; all or nothing. */
static int create_pages(struct vkv_pool *p, struct vkv_page **out, size_t n)
{
	struct vkv_backend *b = p->backend;
	size_t i;
	int err = 0;

	for (i = 0; i < n; i++) {
		out[i] = calloc(1, sizeof(**out));
		if (!out[i]) {
			err = vkv__set_error(-ENOMEM, "pool: out of host memory");
			break;
		}
		err = b->ops->page_create(b, &out[i]->phys);
		if (err) {
			free(out[i]);
			break;
		}
	}
	if (err)
		release_pages(p, out, i);
	return err;
}

static void count_created(struct vkv_pool *p, uint64_t n, uint64_t free_delta)
{
	struct vkv_stats_segment *s = vkv__stats_begin();

	s->pages_created += n;
	s->committed_bytes += n * p->page_size;
	if (s->committed_bytes > s->peak_committed)
		s->peak_committed = s->committed_bytes;
	s->pages_free += free_delta;
	vkv__stats_end();
}

int vkv__pool_get(struct vkv_pool *p, struct vkv_page **out, size_t n)
{
	uint64_t take, missing;
	int err;

	pthread_mutex_lock(&p->lock);
	for (;;) {
		take = n < p->pages_free ? n : p->pages_free;
		missing = n - take;
		if (missing <= vkv__pool_headroom(p) || !p->pages_creating)
			break;
		/* The worker is creating pages the budget counts already:
		 * they are ours as soon as they land. */
		pthread_cond_wait(&p->created, &p->lock);
	}
	if (missing > vkv__pool_headroom(p)) {
		uint64_t cap = p->budget_pages, used = p->pages_total;
		struct vkv_stats_segment *s;

		pthread_mutex_unlock(&p->lock);
		s = vkv__stats_begin();
		s->enomem++;
		vkv__stats_end();
		return vkv__set_error(-ENOMEM,
				      "pool budget of %llu pages exhausted (%llu created, %llu more needed)",
				      (unsigned long long)cap,
				      (unsigned long long)used,
				      (unsigned long long)missing);
	}
	p->pages_free -= take;
	if (take)
		memcpy(out, p->free + p->pages_free, take * sizeof(*out));
	p->pages_creating += missing;
	pthread_mutex_unlock(&p->lock);

	err = missing ? create_pages(p, out + take, missing) : 0;

	pthread_mutex_lock(&p->lock);
	p->pages_creating -= missing;
	pthread_cond_broadcast(&p->created);
	if (err && take && free_reserve(p, take) != 0) {
		/* Cannot even remember them: release them. */
		p->pages_total -= take;
		pthread_mutex_unlock(&p->lock);
		release_pages(p, out, take);
		count_released(p, take, take);
		return err;
	}
	if (err) {
		if (take)
			memcpy(p->free + p->pages_free, out, take * sizeof(*out));
		p->pages_free += take;
		take = 0;
	} else {
		p->pages_total += missing;
	}
	pthread_mutex_unlock(&p->lock);
	if (!err)
		count_created(p, missing, -(uint64_t)take);
	return err;
}

uint64_t vkv__pool_returns(struct vkv_pool *p)
{
	uint64_t r;

	pthread_mutex_lock(&p->lock);
	r = p->returns;
	pthread_mutex_unlock(&p->lock);
	return r;
}

void vkv__pool_put(struct vkv_pool *p, struct vkv_page *const *pages, size_t n)
{
	size_t kept = n;

	if (n == 0)
		return;
	pthread_mutex_lock(&p->lock);
	if (free_reserve(p, n) != 0) {
		/* No room to remember them: release them instead. */
		p->pages_total -= n;
		kept = 0;
	} else {
		memcpy(p->free + p->pages_free, pages, n * sizeof(*pages));
		p->pages_free += n;
	}
	p->returns++;
	pthread_mutex_unlock(&p->lock);
	if (!kept) {
		release_pages(p, (struct vkv_page **)pages, n);
		count_released(p, n, 0);
		return;
	}
	count_created(p, 0, kept);
}

bool vkv__pool_needs_balance(struct vkv_pool *p)
{
	bool need;

	pthread_mutex_lock(&p->lock);
	need = (p->pages_free < p->low_pages && vkv__pool_headroom(p) > 0) ||
	       p->pages_free > p->high_pages;
	pthread_mutex_unlock(&p->lock);
	return need;
}

/* Create pages in small batches so that the engine's thread, which may
 * need the lock between batches, never waits long. */
#define BALANCE_BATCH 8

bool vkv__pool_balance(struct vkv_pool *p)
{
	struct vkv_page *batch[BALANCE_BATCH];
	uint64_t n = 0, h;
	bool grow;

	pthread_mutex_lock(&p->lock);
	grow = p->pages_free < p->low_pages;
	if (grow) {
		n = p->low_pages - p->pages_free;
		h = vkv__pool_headroom(p);
		n = n < h ? n : h;
		n = n < BALANCE_BATCH ? n : BALANCE_BATCH;
		p->pages_creating += n;
	} else if (p->pages_free > p->high_pages) {
		n = p->pages_free - p->high_pages;
		n = n < BALANCE_BATCH ? n : BALANCE_BATCH;
		p->pages_free -= n;
		p->pages_total -= n;
		memcpy(batch, p->free + p->pages_free, n * sizeof(*batch));
		p->returns++;
	}
	pthread_mutex_unlock(&p->lock);
	if (n == 0)
		return false;

	if (!grow) {
		release_pages(p, batch, n);
		count_released(p, n, n);
		return true;
	}
	int err = create_pages(p, batch, n);

	pthread_mutex_lock(&p->lock);
	p->pages_creating -= n;
	pthread_cond_broadcast(&p->created);
	if (!err && free_reserve(p, n) == 0) {
		memcpy(p->free + p->pages_free, batch, n * sizeof(*batch));
		p->pages_free += n;
		p->pages_total += n;
		p->returns++;
	} else if (!err) {
		pthread_mutex_unlock(&p->lock);
		release_pages(p, batch, n);
		count_created(p, n, 0);
		count_released(p, n, 0);
		return false;
	}
	pthread_mutex_unlock(&p->lock);
	if (err) {
		/* The device is full: stop refilling until pages come back. */
		vkv__debug("pool refill stopped: %s", vkv_last_error());
		return false;
	}
	count_created(p, n, n);
	return true;
}
