// SPDX-License-Identifier: GPL-2.0
/*
 * vkv_buf.c - buffers of vkv.ko: page allocation, charging against the
 * module's limits, purging and the shrinker that does it.
 *
 * See vkv.h for ownership and locking. Pages are order-0 pages or split
 * order-9 blocks, so each page carries its own reference count and can be
 * inserted into user page tables with vm_insert_pages().
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/mm.h>
#include <linux/nodemask.h>
#include <linux/sched/signal.h>
#include <linux/shrinker.h>
#include <linux/slab.h>
#include <linux/swap.h>
#include <linux/version.h>

#include "vkv.h"
#include "uapi/vkv_ioctl.h"

struct vkv_global vkv_stats;
/* Buffer state and the LRU; see vkv.h for what it covers. */
DEFINE_MUTEX(vkv_lock);
static LIST_HEAD(vkv_lru); /* purgeable buffers, oldest first (vkv_lock) */

/*
 * Every page is zeroed and charged to the caller's memory cgroup; a
 * failed allocation returns NULL instead of calling the OOM killer.
 */
#define VKV_GFP (GFP_HIGHUSER | __GFP_ZERO | __GFP_ACCOUNT | __GFP_NOWARN | \
		 __GFP_RETRY_MAYFAIL)
/* 2 MiB blocks are an opportunity, never worth hard reclaim. */
#define VKV_GFP_HUGE ((VKV_GFP & ~__GFP_RETRY_MAYFAIL) | __GFP_NORETRY)

static struct vkv_node_stats *vkv_node(int nid)
{
	return &vkv_stats.node[nid];
}

/* Add `sign` * pages[0..n) to the per-node byte counters. */
static void vkv_account_pages(struct page **pages, unsigned long n, long sign)
{
	unsigned long i = 0;

	while (i < n) {
		int nid = page_to_nid(pages[i]);
		unsigned long run = 1;

		while (i + run < n && page_to_nid(pages[i + run]) == nid)
			run++;
		atomic64_add(sign * (long)(run << PAGE_SHIFT),
			     &vkv_node(nid)->bytes);
		i += run;
	}
}

static void vkv_put_pages(struct page **pages, unsigned long n)
{
	unsigned long i;

	vkv_account_pages(pages, n, -1);
	for (i = 0; i < n; i++) {
		put_page(pages[i]);
		pages[i] = NULL;
	}
}

/*
 * Fill b->pages with zeroed pages on b's node: 2 MiB blocks first when
 * asked, single pages for the rest. All or nothing.
 */
static int vkv_fill_pages(struct vkv_buf *b, u32 *huge)
{
	int nid = b->node == NUMA_NO_NODE ? numa_mem_id() : b->node;
	gfp_t node_gfp = b->node == NUMA_NO_NODE ? 0 : __GFP_THISNODE;
	unsigned long i = 0, j;
	struct page *p;
	int ret;

	*huge = 0;
	while (i < b->nr_pages) {
		if (fatal_signal_pending(current))
			goto fail_intr;
		if ((b->flags & VKV_ALLOC_HUGE) &&
		    b->nr_pages - i >= VKV_HUGE_PAGES) {
			p = alloc_pages_node(nid, VKV_GFP_HUGE | node_gfp,
					     VKV_HUGE_ORDER);
			if (p) {
				split_page(p, VKV_HUGE_ORDER);
				for (j = 0; j < VKV_HUGE_PAGES; j++)
					b->pages[i + j] = p + j;
				atomic64_inc(&vkv_node(page_to_nid(p))->huge);
				i += VKV_HUGE_PAGES;
				(*huge)++;
				cond_resched();
				continue;
			}
		}
		p = alloc_pages_node(nid, VKV_GFP | node_gfp, 0);
		if (!p)
			goto fail_nomem;
		b->pages[i++] = p;
		if (!(i % 512))
			cond_resched();
	}
	vkv_account_pages(b->pages, b->nr_pages, 1);
	b->node_used = page_to_nid(b->pages[0]);
	return 0;

fail_nomem:
	atomic64_inc(&vkv_stats.failures);
	atomic64_inc(&vkv_node(nid)->failures);
	ret = -ENOMEM;
	goto put_pages;
fail_intr:
	ret = -EINTR;
put_pages:
	while (i--) {
		put_page(b->pages[i]);
		b->pages[i] = NULL;
	}
	return ret;
}

unsigned long vkv_limit_total(void)
{
	if (vkv_max_total)
		return vkv_max_total;
	return (totalram_pages() / 4 * 3) << PAGE_SHIFT;
}

unsigned long vkv_limit_file(void)
{
	return vkv_max_file ? vkv_max_file : vkv_limit_total();
}

/* Charge `bytes` to the module's and the file's limits. */
static int vkv_charge(struct vkv_file *f, u64 bytes)
{
	if (atomic64_add_return(bytes, &vkv_stats.bytes) > vkv_limit_total())
		goto undo_total;
	if (atomic64_add_return(bytes, &f->bytes) > vkv_limit_file())
		goto undo_file;
	return 0;

undo_file:
	atomic64_sub(bytes, &f->bytes);
undo_total:
	atomic64_sub(bytes, &vkv_stats.bytes);
	atomic64_inc(&vkv_stats.failures);
	return -EDQUOT;
}

static void vkv_uncharge(struct vkv_file *f, u64 bytes)
{
	atomic64_sub(bytes, &f->bytes);
	atomic64_sub(bytes, &vkv_stats.bytes);
}

int vkv_buf_create(struct vkv_file *f, u64 size, int node, u32 flags,
		   struct vkv_buf **out)
{
	u64 align = (flags & VKV_ALLOC_HUGE) ? VKV_HUGE_SIZE : PAGE_SIZE;
	struct vkv_buf *b;
	u64 bytes;
	int ret;

	if (!size || size > VKV_MAX_BUFFER_SIZE)
		return -EINVAL;
	bytes = round_up(size, align);
	b = kzalloc(sizeof(*b), GFP_KERNEL_ACCOUNT);
	if (!b)
		return -ENOMEM;
	kref_init(&b->ref);
	INIT_LIST_HEAD(&b->lru);
	b->owner = f;
	b->node = node;
	b->flags = flags;
	b->nr_pages = bytes >> PAGE_SHIFT;

	ret = vkv_charge(f, bytes);
	if (ret)
		goto free_buf;
	b->pages = kvcalloc(b->nr_pages, sizeof(*b->pages), GFP_KERNEL_ACCOUNT);
	if (!b->pages) {
		ret = -ENOMEM;
		goto uncharge;
	}
	ret = vkv_fill_pages(b, &b->huge);
	if (ret)
		goto free_array;

	atomic64_inc(&vkv_stats.buffers);
	atomic64_inc(&vkv_node(b->node_used)->buffers);
	atomic64_inc(&f->buffers);
	*out = b;
	return 0;

free_array:
	kvfree(b->pages);
uncharge:
	vkv_uncharge(f, bytes);
free_buf:
	kfree(b);
	return ret;
}

void vkv_buf_get(struct vkv_buf *b)
{
	kref_get(&b->ref);
}

/* Drop the pages of a purgeable, unmapped buffer (vkv_lock held). */
static void vkv_buf_purge_locked(struct vkv_buf *b)
{
	list_del_init(&b->lru);
	b->purgeable = false;
	atomic64_sub(b->nr_pages, &vkv_stats.purgeable_pages);
	vkv_put_pages(b->pages, b->nr_pages);
	vkv_uncharge(b->owner, (u64)b->nr_pages << PAGE_SHIFT);
	b->huge = 0;
	b->purged = true;
	atomic64_inc(&vkv_stats.purged);
	atomic64_inc(&vkv_node(b->node_used)->purged);
}

static void vkv_buf_release(struct kref *ref)
{
	struct vkv_buf *b = container_of(ref, struct vkv_buf, ref);

	mutex_lock(&vkv_lock);
	if (b->purgeable) {
		list_del_init(&b->lru);
		b->purgeable = false;
		atomic64_sub(b->nr_pages, &vkv_stats.purgeable_pages);
	}
	mutex_unlock(&vkv_lock);

	if (!b->purged) {
		vkv_put_pages(b->pages, b->nr_pages);
		vkv_uncharge(b->owner, (u64)b->nr_pages << PAGE_SHIFT);
	}
	atomic64_dec(&vkv_stats.buffers);
	atomic64_dec(&vkv_node(b->node_used)->buffers);
	atomic64_dec(&b->owner->buffers);
	kvfree(b->pages);
	kfree(b);
}

void vkv_buf_put(struct vkv_buf *b)
{
	kref_put(&b->ref, vkv_buf_release);
}

int vkv_buf_unpin(struct vkv_buf *b)
{
	int ret = 0;

	mutex_lock(&vkv_lock);
	if (b->pinning) {
		ret = -EBUSY;
	} else if (!b->purgeable && !b->purged) {
		b->purgeable = true;
		list_add_tail(&b->lru, &vkv_lru);
		atomic64_add(b->nr_pages, &vkv_stats.purgeable_pages);
	}
	mutex_unlock(&vkv_lock);
	return ret;
}

int vkv_buf_pin(struct vkv_buf *b)
{
	u64 bytes = (u64)b->nr_pages << PAGE_SHIFT;
	u32 huge;
	int ret;

	mutex_lock(&vkv_lock);
	if (b->pinning) {
		mutex_unlock(&vkv_lock);
		return -EBUSY;
	}
	if (!b->purged) {
		if (b->purgeable) {
			list_del_init(&b->lru);
			b->purgeable = false;
			atomic64_sub(b->nr_pages, &vkv_stats.purgeable_pages);
		}
		mutex_unlock(&vkv_lock);
		return 0;
	}
	/* Refill outside the lock; `pinning` keeps mmap and others away. */
	b->pinning = true;
	mutex_unlock(&vkv_lock);

	ret = vkv_charge(b->owner, bytes);
	if (!ret) {
		atomic64_dec(&vkv_node(b->node_used)->buffers);
		ret = vkv_fill_pages(b, &huge);
		atomic64_inc(&vkv_node(b->node_used)->buffers);
		if (ret)
			vkv_uncharge(b->owner, bytes);
	}

	mutex_lock(&vkv_lock);
	b->pinning = false;
	if (!ret) {
		b->purged = false;
		b->huge = huge;
	}
	mutex_unlock(&vkv_lock);
	return ret ? ret : 1;
}

/* Count the pages that reclaim got from us as progress. */
static void vkv_account_reclaimed(unsigned long pages)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 4, 0)
	mm_account_reclaimed_pages(pages);
#else
	if (current->reclaim_state)
		current->reclaim_state->reclaimed_slab += pages;
#endif
}

static unsigned long vkv_shrink_count(struct shrinker *s,
				      struct shrink_control *sc)
{
	long n = atomic64_read(&vkv_stats.purgeable_pages);

	return n > 0 ? n : SHRINK_EMPTY;
}

/* Purge unmapped purgeable buffers, least recently unpinned first. */
static unsigned long vkv_shrink_scan(struct shrinker *s,
				     struct shrink_control *sc)
{
	struct vkv_buf *b, *tmp;
	unsigned long freed = 0;

	if (!mutex_trylock(&vkv_lock))
		return SHRINK_STOP;
	list_for_each_entry_safe(b, tmp, &vkv_lru, lru) {
		if (freed >= sc->nr_to_scan)
			break;
		if (b->mapcount)
			continue;
		freed += b->nr_pages;
		vkv_buf_purge_locked(b);
	}
	mutex_unlock(&vkv_lock);
	if (!freed)
		return SHRINK_STOP;
	vkv_account_reclaimed(freed);
	pr_debug("shrinker purged %lu pages\n", freed);
	return freed;
}

#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 7, 0)
static struct shrinker *vkv_shrinker;

static int vkv_shrinker_init(void)
{
	vkv_shrinker = shrinker_alloc(0, "vkv");
	if (!vkv_shrinker)
		return -ENOMEM;
	vkv_shrinker->count_objects = vkv_shrink_count;
	vkv_shrinker->scan_objects = vkv_shrink_scan;
	vkv_shrinker->seeks = DEFAULT_SEEKS;
	shrinker_register(vkv_shrinker);
	return 0;
}

static void vkv_shrinker_exit(void)
{
	shrinker_free(vkv_shrinker);
}
#else
static struct shrinker vkv_shrinker = {
	.count_objects = vkv_shrink_count,
	.scan_objects = vkv_shrink_scan,
	.seeks = DEFAULT_SEEKS,
};

static int vkv_shrinker_init(void)
{
	return register_shrinker(&vkv_shrinker, "vkv");
}

static void vkv_shrinker_exit(void)
{
	unregister_shrinker(&vkv_shrinker);
}
#endif

int vkv_buf_init(void)
{
	int ret;

	vkv_stats.node = kcalloc(nr_node_ids, sizeof(*vkv_stats.node),
				 GFP_KERNEL);
	if (!vkv_stats.node)
		return -ENOMEM;
	ret = vkv_shrinker_init();
	if (ret)
		goto free_nodes;
	return 0;

free_nodes:
	kfree(vkv_stats.node);
	return ret;
}

void vkv_buf_exit(void)
{
	vkv_shrinker_exit();
	WARN_ON(!list_empty(&vkv_lru));
	WARN_ON(atomic64_read(&vkv_stats.bytes));
	kfree(vkv_stats.node);
}
