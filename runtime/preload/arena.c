// SPDX-License-Identifier: MIT
/*
 * arena.c - the LD_PRELOAD shim's arena allocator (design: arena.h).
 *
 * Records (blocks, fences), the per-chunk arrays and the hash of used
 * blocks live in anonymous mmap memory that the arena manages itself: the
 * shim runs inside programs that may be in the middle of malloc, or that
 * replace malloc, and it must never allocate through libc.
 *
 * Invariants:
 *   - the blocks of a heap tile [lo, hi) in address order; no two free
 *     blocks are neighbours (frees coalesce at once);
 *   - refs[c] is the number of used or pending blocks touching chunk c;
 *     refs[c] > 0 implies chunk c is mapped; a mapped chunk with refs 0 is
 *     on the idle list and counted in c.idle;
 *   - c.in_use + c.pending + (bytes of free blocks) == c.reserved.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "arena.h"

enum block_state { B_FREE, B_USED, B_PENDING };

/* cstate bits */
#define C_MAPPED 0x1u
#define C_IDLE 0x2u
#define C_NEW 0x4u /* mapped by the map_range() in progress */

/* A fence shared by the pending blocks cut from one freed block. */
struct vkv_arena_fence {
	uint64_t token;
	uint32_t refs;
	bool done;
};

struct vkv_arena_block {
	uint64_t addr, size; /* size: a multiple of VKV_ARENA_ALIGN */
	uint64_t req;        /* used: bytes asked for */
	struct vkv_arena_block *prev, *next;   /* address order in the heap */
	struct vkv_arena_block *lprev, *lnext; /* bin (free) or pending list */
	struct vkv_arena_block *hnext;         /* hash chain (used) */
	struct vkv_arena_fence *fence;         /* pending */
	uint64_t stream;                       /* pending: freed on it */
	uint16_t bin;
	uint8_t state;
	uint8_t heap;
};

struct vkv_arena_slab {
	struct vkv_arena_slab *next;
	size_t bytes;
};

_Static_assert(sizeof(struct vkv_arena_fence) <= sizeof(struct vkv_arena_block),
	       "a fence fits in a record");

#define NODE_BYTES sizeof(struct vkv_arena_block)
#define SLAB_BYTES (256u * 1024u)
#define SCAN_MAX 64        /* blocks a best-fit search looks at per bin */
#define REAP_STREAMS 16    /* streams remembered as busy during one reap */
#define HASH_START 1024u

/* ---------------------------------------------------------- record memory */

static void *sys_map(size_t bytes)
{
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

static void *node_get(struct vkv_arena *a)
{
	void *n = a->node_free;

	if (!n) {
		struct vkv_arena_slab *s = sys_map(SLAB_BYTES);
		char *p, *end;

		if (!s)
			return NULL;
		s->next = a->slabs;
		s->bytes = SLAB_BYTES;
		a->slabs = s;
		end = (char *)s + SLAB_BYTES;
		for (p = (char *)s + 64; p + NODE_BYTES <= end; p += NODE_BYTES) {
			*(void **)p = a->node_free;
			a->node_free = p;
		}
		n = a->node_free;
	}
	a->node_free = *(void **)n;
	memset(n, 0, NODE_BYTES);
	return n;
}

static void node_put(struct vkv_arena *a, void *n)
{
	*(void **)n = a->node_free;
	a->node_free = n;
}

/* ------------------------------------------------------------------ hash */

static uint64_t hash_slot(const struct vkv_arena *a, uint64_t addr)
{
	unsigned bits = (unsigned)__builtin_ctzll(a->hash_cap);

	return ((addr >> 9) * 0x9E3779B97F4A7C15ULL) >> (64 - bits);
}

/* Double the table; keeps the old one when memory is short (chains just
 * get longer). */
static void hash_grow(struct vkv_arena *a)
{
	uint64_t old_cap = a->hash_cap;
	struct vkv_arena_block **old = a->hash, **nh;

	nh = sys_map(old_cap * 2 * sizeof(*nh));
	if (!nh)
		return;
	a->hash = nh;
	a->hash_cap = old_cap * 2;
	for (uint64_t i = 0; i < old_cap; i++) {
		struct vkv_arena_block *b = old[i], *next;

		for (; b; b = next) {
			uint64_t s = hash_slot(a, b->addr);

			next = b->hnext;
			b->hnext = nh[s];
			nh[s] = b;
		}
	}
	munmap(old, old_cap * sizeof(*old));
}

static void hash_insert(struct vkv_arena *a, struct vkv_arena_block *b)
{
	uint64_t s;

	if (a->hash_n >= a->hash_cap)
		hash_grow(a);
	s = hash_slot(a, b->addr);
	b->hnext = a->hash[s];
	a->hash[s] = b;
	a->hash_n++;
}

static struct vkv_arena_block *hash_find(const struct vkv_arena *a,
					 uint64_t addr)
{
	struct vkv_arena_block *b;

	if (addr < a->base || addr - a->base >= a->size)
		return NULL;
	for (b = a->hash[hash_slot(a, addr)]; b; b = b->hnext)
		if (b->addr == addr)
			return b;
	return NULL;
}

static struct vkv_arena_block *hash_remove(struct vkv_arena *a, uint64_t addr)
{
	struct vkv_arena_block **pp, *b;

	if (addr < a->base || addr - a->base >= a->size)
		return NULL;
	for (pp = &a->hash[hash_slot(a, addr)]; (b = *pp); pp = &b->hnext) {
		if (b->addr == addr) {
			*pp = b->hnext;
			b->hnext = NULL;
			a->hash_n--;
			return b;
		}
	}
	return NULL;
}

/* ------------------------------------------------------------------ bins */

static unsigned bin_of(uint64_t size)
{
	unsigned fl = 63u - (unsigned)__builtin_clzll(size);
	unsigned b = (fl - 9u) * 8u + (unsigned)((size >> (fl - 3u)) & 7u);

	return b < VKV_ARENA_BINS ? b : VKV_ARENA_BINS - 1;
}

static void bin_insert(struct vkv_arena_heap *h, struct vkv_arena_block *b)
{
	unsigned i = bin_of(b->size);

	b->bin = (uint16_t)i;
	b->lprev = NULL;
	b->lnext = h->bins[i];
	if (b->lnext)
		b->lnext->lprev = b;
	h->bins[i] = b;
	h->binmap[i / 64] |= 1ULL << (i % 64);
}

static void bin_remove(struct vkv_arena_heap *h, struct vkv_arena_block *b)
{
	if (b->lprev) {
		b->lprev->lnext = b->lnext;
	} else {
		h->bins[b->bin] = b->lnext;
		if (!b->lnext)
			h->binmap[b->bin / 64] &= ~(1ULL << (b->bin % 64));
	}
	if (b->lnext)
		b->lnext->lprev = b->lprev;
	b->lprev = b->lnext = NULL;
}

/* The smallest block of the list that holds size (lowest address among
 * equals), looking at no more than SCAN_MAX of them. */
static struct vkv_arena_block *best_in(struct vkv_arena_block *b, uint64_t size)
{
	struct vkv_arena_block *best = NULL;

	for (unsigned n = 0; b && n < SCAN_MAX; b = b->lnext, n++) {
		if (b->size < size)
			continue;
		if (!best || b->size < best->size ||
		    (b->size == best->size && b->addr < best->addr))
			best = b;
	}
	return best;
}

static struct vkv_arena_block *find_fit(struct vkv_arena_heap *h, uint64_t size)
{
	unsigned i = bin_of(size), from = i + 1;
	struct vkv_arena_block *b = best_in(h->bins[i], size);

	if (b)
		return b;
	/* Every block of a higher bin is larger than size. */
	for (unsigned w = from / 64; w < (VKV_ARENA_BINS + 63) / 64; w++) {
		uint64_t m = h->binmap[w];

		if (w == from / 64)
			m &= ~0ULL << (from % 64);
		if (m)
			return best_in(h->bins[w * 64 + (unsigned)__builtin_ctzll(m)],
				       size);
	}
	return NULL;
}

/* --------------------------------------------------------------- blocks */

/* Cut b to `size` bytes; the rest becomes a new block right after it, in
 * the same state. NULL when no record is left. */
static struct vkv_arena_block *split(struct vkv_arena *a,
				     struct vkv_arena_block *b, uint64_t size)
{
	struct vkv_arena_block *r = node_get(a);

	if (!r)
		return NULL;
	r->addr = b->addr + size;
	r->size = b->size - size;
	r->state = b->state;
	r->heap = b->heap;
	r->prev = b;
	r->next = b->next;
	if (b->next)
		b->next->prev = r;
	b->next = r;
	b->size = size;
	return r;
}

/* Absorb next into b (both leave their lists first). */
static void merge_next(struct vkv_arena *a, struct vkv_arena_block *b)
{
	struct vkv_arena_block *n = b->next;

	b->size += n->size;
	b->next = n->next;
	if (n->next)
		n->next->prev = b;
	node_put(a, n);
}

/* b is on no list and touches no chunk any more: make it free, coalesce. */
static void make_free(struct vkv_arena *a, struct vkv_arena_block *b)
{
	struct vkv_arena_heap *h = &a->heaps[b->heap];

	b->state = B_FREE;
	b->req = 0;
	if (b->prev && b->prev->state == B_FREE) {
		struct vkv_arena_block *p = b->prev;

		bin_remove(h, p);
		merge_next(a, p);
		b = p;
	}
	if (b->next && b->next->state == B_FREE) {
		bin_remove(h, b->next);
		merge_next(a, b);
	}
	bin_insert(h, b);
}

/* --------------------------------------------------------------- chunks */

static uint64_t chunk_of(const struct vkv_arena *a, uint64_t addr)
{
	return (addr - a->base) >> a->chunk_shift;
}

static uint64_t chunk_addr(const struct vkv_arena *a, uint64_t c)
{
	return a->base + (c << a->chunk_shift);
}

static void idle_unlink(struct vkv_arena *a, uint64_t c)
{
	uint32_t p = a->iprev[c], n = a->inext[c];

	if (p)
		a->inext[p - 1] = n;
	else
		a->idle_head = n;
	if (n)
		a->iprev[n - 1] = p;
	else
		a->idle_tail = p;
	a->iprev[c] = a->inext[c] = 0;
	a->cstate[c] &= (uint8_t)~C_IDLE;
	a->c.idle -= a->chunk;
}

static void idle_append(struct vkv_arena *a, uint64_t c)
{
	uint32_t me = (uint32_t)c + 1;

	a->iprev[c] = a->idle_tail;
	a->inext[c] = 0;
	if (a->idle_tail)
		a->inext[a->idle_tail - 1] = me;
	else
		a->idle_head = me;
	a->idle_tail = me;
	a->cstate[c] |= C_IDLE;
	a->c.idle += a->chunk;
}

static void unmap_chunks(struct vkv_arena *a, uint64_t c, uint64_t n)
{
	a->ops->unmap(a->priv, chunk_addr(a, c), n, &a->handles[c]);
	for (uint64_t i = c; i < c + n; i++)
		a->cstate[i] = 0;
	a->c.mapped -= n * a->chunk;
	a->c.chunks -= n;
	a->c.unmaps += n;
}

/* Undo the maps of the map_range() that failed, over [c0, end). */
static void unmap_new(struct vkv_arena *a, uint64_t c0, uint64_t end)
{
	for (uint64_t c = c0; c < end;) {
		uint64_t e = c;

		if (!(a->cstate[c] & C_NEW)) {
			c++;
			continue;
		}
		while (e + 1 < end && (a->cstate[e + 1] & C_NEW))
			e++;
		unmap_chunks(a, c, e - c + 1);
		a->c.unmaps -= e - c + 1; /* a rollback, not an unmap */
		a->c.maps -= e - c + 1;
		c = e + 1;
	}
}

/* Map every unmapped chunk of [c0, c1], in runs; all or nothing. */
static int map_range(struct vkv_arena *a, uint64_t c0, uint64_t c1)
{
	uint64_t c = c0;
	int err = 0;

	while (c <= c1) {
		uint64_t e = c;

		if (a->cstate[c] & C_MAPPED) {
			c++;
			continue;
		}
		while (e + 1 <= c1 && !(a->cstate[e + 1] & C_MAPPED))
			e++;
		err = a->ops->map(a->priv, chunk_addr(a, c), e - c + 1,
				  &a->handles[c]);
		if (err) {
			unmap_new(a, c0, c);
			return err;
		}
		for (uint64_t i = c; i <= e; i++)
			a->cstate[i] = C_MAPPED | C_NEW;
		a->c.mapped += (e - c + 1) * a->chunk;
		a->c.chunks += e - c + 1;
		a->c.maps += e - c + 1;
		c = e + 1;
	}
	for (c = c0; c <= c1; c++)
		a->cstate[c] &= (uint8_t)~C_NEW;
	if (a->c.mapped > a->c.peak_mapped)
		a->c.peak_mapped = a->c.mapped;
	return 0;
}

/* A used or pending block now touches [addr, addr + size). */
static int chunks_get(struct vkv_arena *a, uint64_t addr, uint64_t size)
{
	uint64_t c0 = chunk_of(a, addr), c1 = chunk_of(a, addr + size - 1);
	int err = map_range(a, c0, c1);

	if (err)
		return err;
	for (uint64_t c = c0; c <= c1; c++)
		if (a->refs[c]++ == 0 && (a->cstate[c] & C_IDLE))
			idle_unlink(a, c);
	return 0;
}

static void chunks_put(struct vkv_arena *a, uint64_t addr, uint64_t size)
{
	uint64_t c0 = chunk_of(a, addr), c1 = chunk_of(a, addr + size - 1);

	for (uint64_t c = c0; c <= c1; c++)
		if (--a->refs[c] == 0)
			idle_append(a, c);
}

uint64_t vkv__arena_trim(struct vkv_arena *a, uint64_t keep)
{
	uint64_t freed = 0;

	while (a->c.idle > keep && a->idle_head) {
		uint64_t c = a->idle_head - 1;

		idle_unlink(a, c);
		unmap_chunks(a, c, 1);
		freed += a->chunk;
	}
	return freed;
}

/* ------------------------------------------------------- pending blocks */

static void pend_link_after(struct vkv_arena *a, struct vkv_arena_block *at,
			    struct vkv_arena_block *b)
{
	b->lprev = at;
	b->lnext = at ? at->lnext : a->pend_head;
	if (b->lnext)
		b->lnext->lprev = b;
	else
		a->pend_tail = b;
	if (at)
		at->lnext = b;
	else
		a->pend_head = b;
}

static void pend_unlink(struct vkv_arena *a, struct vkv_arena_block *b)
{
	if (b->lprev)
		b->lprev->lnext = b->lnext;
	else
		a->pend_head = b->lnext;
	if (b->lnext)
		b->lnext->lprev = b->lprev;
	else
		a->pend_tail = b->lprev;
	b->lprev = b->lnext = NULL;
}

static void fence_unref(struct vkv_arena *a, struct vkv_arena_fence *f)
{
	if (--f->refs == 0) {
		a->ops->fence_put(a->priv, f->token);
		node_put(a, f);
	}
}

static void release_pending(struct vkv_arena *a, struct vkv_arena_block *b)
{
	pend_unlink(a, b);
	a->c.pending -= b->size;
	fence_unref(a, b->fence);
	b->fence = NULL;
	chunks_put(a, b->addr, b->size);
	make_free(a, b);
}

static bool stream_in(const uint64_t *v, unsigned n, uint64_t s)
{
	for (unsigned i = 0; i < n; i++)
		if (v[i] == s)
			return true;
	return false;
}

/*
 * Fences of one stream complete in the order they were recorded, so once
 * one of a stream's fences is not done, its later ones are not asked.
 */
void vkv__arena_reap(struct vkv_arena *a, bool wait)
{
	uint64_t busy[REAP_STREAMS];
	unsigned nbusy = 0;
	struct vkv_arena_block *b, *next;

	for (b = a->pend_head; b; b = next) {
		struct vkv_arena_fence *f = b->fence;

		next = b->lnext;
		if (!f->done) {
			if (wait) {
				a->ops->fence_wait(a->priv, f->token);
				a->c.fence_waits++;
			} else if (stream_in(busy, nbusy, b->stream)) {
				continue;
			} else if (!a->ops->fence_done(a->priv, f->token)) {
				if (nbusy < REAP_STREAMS)
					busy[nbusy++] = b->stream;
				continue;
			}
			f->done = true;
		}
		release_pending(a, b);
	}
}

/* The smallest block freed on `stream` that holds size, in that heap. */
static struct vkv_arena_block *pending_fit(struct vkv_arena *a, unsigned heap,
					   uint64_t size, uint64_t stream)
{
	struct vkv_arena_block *b, *best = NULL;

	for (b = a->pend_head; b; b = b->lnext)
		if (b->stream == stream && b->heap == heap && b->size >= size &&
		    (!best || b->size < best->size))
			best = b;
	return best;
}

/* Hand out the first `size` bytes of pending block b; the rest stays
 * pending on the same fence. Stream order makes the reuse safe. */
static int take_pending(struct vkv_arena *a, struct vkv_arena_block *b,
			uint64_t size)
{
	uint64_t old_addr = b->addr, old_size = b->size;

	if (b->size > size) {
		struct vkv_arena_block *r = split(a, b, size);

		if (!r)
			return -ENOMEM;
		r->stream = b->stream;
		r->fence = b->fence;
		r->fence->refs++;
		pend_link_after(a, b, r);
		/* Chunks touched by both halves gain a reference; all are
		 * mapped already, so neither call can fail. */
		chunks_get(a, b->addr, b->size);
		chunks_get(a, r->addr, r->size);
		chunks_put(a, old_addr, old_size);
	}
	pend_unlink(a, b);
	a->c.pending -= b->size;
	fence_unref(a, b->fence);
	b->fence = NULL;
	return 0;
}

/* ------------------------------------------------------------ allocation */

/* Best fit in heap h, mapping what it touches. */
static int alloc_fit(struct vkv_arena *a, unsigned heap, uint64_t size,
		     struct vkv_arena_block **out)
{
	struct vkv_arena_heap *h = &a->heaps[heap];
	struct vkv_arena_block *b = find_fit(h, size);
	int err;

	if (!b)
		return -ENOSPC;
	bin_remove(h, b);
	if (b->size > size) {
		struct vkv_arena_block *r = split(a, b, size);

		if (!r) {
			bin_insert(h, b);
			return -ENOMEM;
		}
		bin_insert(h, r);
	}
	err = chunks_get(a, b->addr, b->size);
	if (err) {
		make_free(a, b);
		return err;
	}
	*out = b;
	return 0;
}

/* Try heap `heap`, then (small requests) the large heap. */
static int alloc_any(struct vkv_arena *a, unsigned heap, uint64_t size,
		     struct vkv_arena_block **out)
{
	int err = alloc_fit(a, heap, size, out);

	if (err == -ENOSPC && heap == 0)
		err = alloc_fit(a, 1, size, out);
	return err;
}

int vkv__arena_alloc(struct vkv_arena *a, uint64_t size, uint64_t stream,
		     uint64_t *addr)
{
	struct vkv_arena_block *b = NULL;
	uint64_t rs;
	unsigned heap;
	int err;

	if (size == 0 || size > a->size)
		return size ? -ENOSPC : -EINVAL;
	rs = (size + VKV_ARENA_ALIGN - 1) & ~(VKV_ARENA_ALIGN - 1);
	heap = rs <= a->small_max ? 0 : 1;
	if (a->pend_head)
		vkv__arena_reap(a, false);
	if (stream != VKV_ARENA_NO_STREAM && a->pend_head) {
		b = pending_fit(a, heap, rs, stream);
		if (b && take_pending(a, b, rs))
			b = NULL;
	}
	err = b ? 0 : alloc_any(a, heap, rs, &b);
	if (err == -ENOMEM || err == -ENOSPC) {
		/* Short: wait for stream-ordered frees, give idle chunks back,
		 * and try once more. */
		if (a->pend_head)
			vkv__arena_reap(a, true);
		vkv__arena_trim(a, 0);
		err = alloc_any(a, heap, rs, &b);
	}
	if (err)
		return err;
	b->state = B_USED;
	b->req = size;
	hash_insert(a, b);
	a->c.in_use += b->size;
	a->c.requested += size;
	a->c.allocs++;
	if (a->c.in_use > a->c.peak_in_use)
		a->c.peak_in_use = a->c.in_use;
	if (a->c.requested > a->c.peak_requested)
		a->c.peak_requested = a->c.requested;
	*addr = b->addr;
	return 0;
}

bool vkv__arena_owns(const struct vkv_arena *a, uint64_t addr)
{
	return hash_find(a, addr) != NULL;
}

static struct vkv_arena_block *take_used(struct vkv_arena *a, uint64_t addr)
{
	struct vkv_arena_block *b = hash_remove(a, addr);

	if (b) {
		a->c.in_use -= b->size;
		a->c.requested -= b->req;
		a->c.frees++;
	}
	return b;
}

int vkv__arena_free(struct vkv_arena *a, uint64_t addr)
{
	struct vkv_arena_block *b = take_used(a, addr);

	if (!b)
		return -ENOENT;
	chunks_put(a, b->addr, b->size);
	make_free(a, b);
	if (a->c.idle > a->idle_max)
		vkv__arena_trim(a, a->idle_max);
	return 0;
}

int vkv__arena_free_async(struct vkv_arena *a, uint64_t addr, uint64_t stream,
			  uint64_t fence)
{
	struct vkv_arena_block *b = hash_find(a, addr);
	struct vkv_arena_fence *f;

	if (!b) {
		a->ops->fence_put(a->priv, fence);
		return -ENOENT;
	}
	f = node_get(a);
	if (!f) {
		/* No record for the fence: wait for it and free now. */
		a->ops->fence_wait(a->priv, fence);
		a->ops->fence_put(a->priv, fence);
		return vkv__arena_free(a, addr);
	}
	take_used(a, addr);
	f->token = fence;
	f->refs = 1;
	b->state = B_PENDING;
	b->stream = stream;
	b->fence = f;
	b->req = 0;
	pend_link_after(a, a->pend_tail, b);
	a->c.pending += b->size;
	return 0;
}

int vkv__arena_range(const struct vkv_arena *a, uint64_t addr, uint64_t *base,
		     uint64_t *size)
{
	const struct vkv_arena_block *b = hash_find(a, addr);

	if (addr < a->base || addr - a->base >= a->size)
		return -ENOENT;
	for (unsigned h = 0; !b && h < 2; h++) {
		const struct vkv_arena_heap *hp = &a->heaps[h];

		if (addr < hp->lo || addr >= hp->hi)
			continue;
		for (b = hp->first; b && b->addr <= addr; b = b->next)
			if (b->state == B_USED && addr - b->addr < b->req)
				break;
		if (b && (b->addr > addr || b->state != B_USED))
			b = NULL;
	}
	if (!b)
		return -ENOENT;
	*base = b->addr;
	*size = b->req;
	return 0;
}

uint64_t vkv__arena_largest_free(const struct vkv_arena *a)
{
	uint64_t best = 0;

	for (unsigned h = 0; h < 2; h++) {
		const struct vkv_arena_block *b;

		for (b = a->heaps[h].first; b; b = b->next) {
			uint64_t run = 0, cur = b->addr, end = b->addr + b->size;

			if (b->state != B_FREE)
				continue;
			while (cur < end) {
				uint64_t c = chunk_of(a, cur);
				uint64_t next = chunk_addr(a, c + 1);

				if (next > end)
					next = end;
				run = (a->cstate[c] & C_MAPPED) ? run + (next - cur) : 0;
				if (run > best)
					best = run;
				cur = next;
			}
		}
	}
	return best;
}

/* -------------------------------------------------------- setup, teardown */

static int heap_init(struct vkv_arena *a, unsigned i, uint64_t lo, uint64_t hi)
{
	struct vkv_arena_heap *h = &a->heaps[i];
	struct vkv_arena_block *b = node_get(a);

	if (!b)
		return -ENOMEM;
	h->lo = lo;
	h->hi = hi;
	b->addr = lo;
	b->size = hi - lo;
	b->heap = (uint8_t)i;
	h->first = b;
	bin_insert(h, b);
	return 0;
}

static size_t chunk_array_bytes(uint64_t n)
{
	return (size_t)n * (sizeof(uint64_t) + 3 * sizeof(uint32_t) + 1);
}

static void free_records(struct vkv_arena *a)
{
	while (a->slabs) {
		struct vkv_arena_slab *s = a->slabs;

		a->slabs = s->next;
		munmap(s, s->bytes);
	}
	if (a->handles)
		munmap(a->handles, chunk_array_bytes(a->nchunks));
	if (a->hash)
		munmap(a->hash, a->hash_cap * sizeof(*a->hash));
	memset(a, 0, sizeof(*a));
}

int vkv__arena_init(struct vkv_arena *a, uint64_t base, uint64_t size,
		    uint64_t chunk, uint64_t small_max, uint64_t idle_max,
		    const struct vkv_arena_ops *ops, void *priv)
{
	uint64_t small_span;
	char *p;

	memset(a, 0, sizeof(*a));
	if (!chunk || (chunk & (chunk - 1)) || chunk < VKV_ARENA_ALIGN ||
	    base % chunk || size % chunk || size / chunk < 4 ||
	    size / chunk > UINT32_MAX - 1 || !ops)
		return -EINVAL;
	a->base = base;
	a->size = size;
	a->chunk = chunk;
	a->chunk_shift = (unsigned)__builtin_ctzll(chunk);
	a->small_max = small_max;
	a->idle_max = idle_max;
	a->ops = ops;
	a->priv = priv;
	a->nchunks = size / chunk;
	a->c.reserved = size;
	p = sys_map(chunk_array_bytes(a->nchunks));
	a->hash = sys_map(HASH_START * sizeof(*a->hash));
	if (!p || !a->hash)
		goto nomem;
	a->hash_cap = HASH_START;
	a->handles = (uint64_t *)p;
	a->refs = (uint32_t *)(a->handles + a->nchunks);
	a->iprev = a->refs + a->nchunks;
	a->inext = a->iprev + a->nchunks;
	a->cstate = (uint8_t *)(a->inext + a->nchunks);
	small_span = size / 4 / chunk * chunk;
	if (heap_init(a, 0, base, base + small_span) ||
	    heap_init(a, 1, base + small_span, base + size))
		goto nomem;
	return 0;
nomem:
	if (p && !a->handles)
		munmap(p, chunk_array_bytes(a->nchunks));
	free_records(a);
	return -ENOMEM;
}

void vkv__arena_fini(struct vkv_arena *a)
{
	while (a->pend_head) {
		struct vkv_arena_block *b = a->pend_head;

		pend_unlink(a, b);
		fence_unref(a, b->fence);
	}
	for (uint64_t c = 0; c < a->nchunks; c++)
		if (a->cstate[c] & C_MAPPED)
			unmap_chunks(a, c, 1);
	free_records(a);
}

void vkv__arena_abandon(struct vkv_arena *a)
{
	free_records(a);
}

/* ------------------------------------------------------------ invariants */

#define BAD(...) (snprintf(why, len, __VA_ARGS__), -EFAULT)

static int check_heap(const struct vkv_arena *a, unsigned h, uint32_t *refs,
		      uint64_t *sums, char *why, size_t len)
{
	const struct vkv_arena_heap *hp = &a->heaps[h];
	const struct vkv_arena_block *b, *prev = NULL;
	uint64_t at = hp->lo, nfree = 0, nbinned = 0;

	for (b = hp->first; b; prev = b, b = b->next) {
		if (b->addr != at || b->prev != prev || b->heap != h)
			return BAD("heap %u: block at 0x%llx breaks the tiling", h,
				   (unsigned long long)b->addr);
		if (!b->size || b->size % VKV_ARENA_ALIGN)
			return BAD("block at 0x%llx: size %llu", (unsigned long long)b->addr,
				   (unsigned long long)b->size);
		at += b->size;
		if (b->state == B_FREE) {
			nfree++;
			if (prev && prev->state == B_FREE)
				return BAD("free neighbours at 0x%llx not coalesced",
					   (unsigned long long)b->addr);
			if (b->bin != bin_of(b->size))
				return BAD("free block at 0x%llx in the wrong bin",
					   (unsigned long long)b->addr);
			continue;
		}
		sums[b->state] += b->size;
		if (b->state == B_USED && hash_find(a, b->addr) != b)
			return BAD("used block at 0x%llx not in the hash",
				   (unsigned long long)b->addr);
		if (b->state == B_PENDING && (!b->fence || !b->fence->refs))
			return BAD("pending block at 0x%llx without a fence",
				   (unsigned long long)b->addr);
		for (uint64_t c = chunk_of(a, b->addr); c <= chunk_of(a, at - 1); c++)
			refs[c]++;
	}
	if (at != hp->hi)
		return BAD("heap %u ends at 0x%llx, not 0x%llx", h,
			   (unsigned long long)at, (unsigned long long)hp->hi);
	for (unsigned i = 0; i < VKV_ARENA_BINS; i++) {
		bool set = hp->binmap[i / 64] & (1ULL << (i % 64));

		if (set != (hp->bins[i] != NULL))
			return BAD("heap %u: bitmap and bin %u disagree", h, i);
		for (b = hp->bins[i]; b; b = b->lnext)
			nbinned++;
	}
	if (nbinned != nfree)
		return BAD("heap %u: %llu free blocks, %llu in bins", h,
			   (unsigned long long)nfree, (unsigned long long)nbinned);
	return 0;
}

static int check_chunks(const struct vkv_arena *a, const uint32_t *refs,
			char *why, size_t len)
{
	uint64_t mapped = 0, idle = 0, n = 0;

	for (uint64_t c = 0; c < a->nchunks; c++) {
		bool m = a->cstate[c] & C_MAPPED, i = a->cstate[c] & C_IDLE;

		if (refs[c] != a->refs[c])
			return BAD("chunk %llu: %u references recorded, %u real",
				   (unsigned long long)c, a->refs[c], refs[c]);
		if ((refs[c] && !m) || (i != (m && !refs[c])))
			return BAD("chunk %llu: state %#x with %u references",
				   (unsigned long long)c, a->cstate[c], refs[c]);
		mapped += m;
	}
	for (uint32_t c = a->idle_head; c; c = a->inext[c - 1]) {
		if (!(a->cstate[c - 1] & C_IDLE) || ++n > a->nchunks)
			return BAD("idle list broken at chunk %u", c - 1);
		idle++;
	}
	if (mapped * a->chunk != a->c.mapped || mapped != a->c.chunks ||
	    idle * a->chunk != a->c.idle)
		return BAD("counters: mapped %llu chunks %llu idle %llu; real %llu, %llu",
			   (unsigned long long)a->c.mapped, (unsigned long long)a->c.chunks,
			   (unsigned long long)a->c.idle, (unsigned long long)mapped,
			   (unsigned long long)idle);
	return 0;
}

int vkv__arena_check(const struct vkv_arena *a, char *why, size_t len)
{
	uint64_t sums[3] = { 0, 0, 0 }, npend = 0;
	size_t bytes = (size_t)a->nchunks * sizeof(uint32_t);
	uint32_t *refs = sys_map(bytes);
	const struct vkv_arena_block *b;
	int err;

	if (!refs)
		return BAD("no memory for the check");
	err = check_heap(a, 0, refs, sums, why, len);
	if (!err)
		err = check_heap(a, 1, refs, sums, why, len);
	if (!err)
		err = check_chunks(a, refs, why, len);
	munmap(refs, bytes);
	if (err)
		return err;
	for (b = a->pend_head; b; b = b->lnext)
		if (b->state != B_PENDING || ++npend > a->hash_n + a->nchunks * 64)
			return BAD("pending list broken");
	if (sums[B_USED] != a->c.in_use || sums[B_PENDING] != a->c.pending)
		return BAD("counters: in use %llu pending %llu; real %llu, %llu",
			   (unsigned long long)a->c.in_use, (unsigned long long)a->c.pending,
			   (unsigned long long)sums[B_USED],
			   (unsigned long long)sums[B_PENDING]);
	return 0;
}
