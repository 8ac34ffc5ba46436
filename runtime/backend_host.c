// SPDX-License-Identifier: MIT
/*
 * backend_host.c - the host backend: the VMM contract on ordinary memory.
 *
 * reserve   = mmap(PROT_NONE) (or PROT_READ of private anonymous memory in
 *             zero mode: reads then hit the kernel's one shared zero page)
 * page      = a page-sized piece of one memfd, allocated with fallocate so
 *             that running out of memory is an error at creation, not a
 *             SIGBUS at first touch
 * map       = mmap(MAP_FIXED | MAP_SHARED) of that piece; one piece mapped at
 *             two addresses aliases, which is what prefix sharing needs
 * unmap     = the reservation's anonymous mapping put back over the range
 * release   = fallocate(PUNCH_HOLE): the memory goes back to the kernel
 *
 * 2 MiB pages come from a hugetlb memfd while the system's reserved huge
 * pages last, then from an ordinary memfd (transparent huge pages on shmem
 * where the administrator allows them): a reservation smaller than the
 * pool caps nothing. A page is an offset in one of the two files, the file
 * in the offset's top bits (HOST_FILE_HUGETLB). Runs of pages with
 * consecutive offsets in one file are mapped with one mmap call.
 *
 * Cost warning: every run of non-consecutive pages is one VMA; with 4 KiB
 * pages a large cache can reach vm.max_map_count (65530 by default), which
 * mmap reports as ENOMEM and we report as -ENOMEM with that hint.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/memfd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

#define HOST_SMALL_PAGE (4ULL << 10)
#define HOST_HUGE_PAGE (2ULL << 20)
#define HOST_DEFAULT_PAGE HOST_HUGE_PAGE

/* One memfd and its offset allocator. */
struct host_file {
	int fd;                   /* -1: none */
	uint64_t file_size;       /* ftruncate'd size (lock) */
	uint64_t next_off;        /* never-used offsets start here (lock) */
	/* Released offsets for reuse, a FIFO: [free_head, nfree) of
	 * free_offs. First in, first out keeps the order pages were
	 * released in, so a slot that takes back what a slot gave keeps
	 * consecutive offsets and is mapped with one mmap per run (a stack
	 * would reverse them: one mmap per page). (lock) */
	uint64_t *free_offs;
	uint64_t free_head, nfree, free_cap; /* (lock) */
};

/* The file of a page: ordinary memfd offsets as they are, hugetlb ones
 * with this bit (far above any file size). */
#define HOST_FILE_HUGETLB (1ULL << 62)

struct host_priv {
	pthread_mutex_t lock;
	struct host_file shm;     /* ordinary memfd, always there */
	struct host_file huge;    /* hugetlb memfd, 2 MiB pages only */
	/* The hugetlb file had no page to give: go to shm until one of ours
	 * comes back (lock). Another process's release goes unnoticed. */
	bool huge_dry;
	bool huge_warned;         /* (lock) */
};

/* ------------------------------------------- shared by host-memory backends */

static int host_reserve_prot(const struct vkv_backend *b)
{
	return b->unbacked == VKV_UNBACKED_ZERO ? PROT_READ : PROT_NONE;
}

/* Try to allocate (and free again) one page of fd, to learn whether
 * hugetlb pages are really available. */
static bool probe_fd(int fd, uint64_t page)
{
	if (ftruncate(fd, (off_t)page) != 0)
		return false;
	if (fallocate(fd, 0, 0, (off_t)page) != 0)
		return false;
	fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t)page);
	return true;
}

static int host_open(struct vkv_backend *b, const struct vkv_ctx_config *cfg)
{
	struct host_priv *hp;
	uint64_t page = cfg->page_size ? cfg->page_size : HOST_DEFAULT_PAGE;
	int err;

	if (page != HOST_SMALL_PAGE && page != HOST_HUGE_PAGE)
		return vkv__set_error(-EINVAL,
				      "host backend: page size %llu must be 4K or 2M",
				      (unsigned long long)page);
	hp = calloc(1, sizeof(*hp));
	if (!hp)
		return vkv__set_error(-ENOMEM, "host backend: out of memory");
	hp->huge.fd = -1;
	if (page == HOST_HUGE_PAGE) {
		hp->huge.fd = memfd_create("vkv-pool-huge", MFD_CLOEXEC | MFD_HUGETLB |
							    MFD_HUGE_2MB);
		if (hp->huge.fd >= 0 && !probe_fd(hp->huge.fd, page)) {
			close(hp->huge.fd);
			hp->huge.fd = -1;
		}
	}
	hp->shm.fd = memfd_create("vkv-pool", MFD_CLOEXEC);
	if (hp->shm.fd < 0) {
		err = -errno;
		if (hp->huge.fd >= 0)
			close(hp->huge.fd);
		free(hp);
		return vkv__set_error(err, "host backend: memfd_create: %s",
				      strerror(-err));
	}
	pthread_mutex_init(&hp->lock, NULL);
	b->priv = hp;
	b->page_size = page;
	snprintf(b->detail, sizeof(b->detail), "memfd %s%s",
		 page == HOST_HUGE_PAGE ? "2 MiB" : "4 KiB",
		 page == HOST_SMALL_PAGE ? "" :
		 hp->huge.fd >= 0	 ? " (hugetlb, then THP advised)" :
					   " (THP advised)");
	return 0;
}

static void host_close(struct vkv_backend *b)
{
	struct host_priv *hp = b->priv;

	if (!hp)
		return;
	close(hp->shm.fd);
	if (hp->huge.fd >= 0)
		close(hp->huge.fd);
	pthread_mutex_destroy(&hp->lock);
	free(hp->shm.free_offs);
	free(hp->huge.free_offs);
	free(hp);
	b->priv = NULL;
}

int vkv__hostmem_reserve(struct vkv_backend *b, uint64_t size, uint64_t *addr)
{
	uint64_t align = b->page_size, span;
	uint8_t *p, *start;

	if (size == 0 || size % b->page_size)
		return vkv__set_error(-EINVAL, "reserve: bad size %llu",
				      (unsigned long long)size);
	if (__builtin_add_overflow(size, align, &span))
		return vkv__set_error(-EOVERFLOW, "reserve: size overflows");
	p = mmap(NULL, span, host_reserve_prot(b),
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return vkv__set_error(-ENOMEM, "reserve: mmap of %llu bytes: %s",
				      (unsigned long long)span, strerror(errno));
	start = (uint8_t *)(((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1));
	if (start > p)
		munmap(p, (size_t)(start - p));
	if (start + size < p + span)
		munmap(start + size, (size_t)(p + span - (start + size)));
	if (b->page_size == HOST_HUGE_PAGE)
		madvise(start, size, MADV_HUGEPAGE);
	*addr = (uint64_t)(uintptr_t)start;
	return 0;
}

int vkv__hostmem_unreserve(struct vkv_backend *b, uint64_t addr, uint64_t size)
{
	(void)b;
	if (munmap((void *)(uintptr_t)addr, size) != 0)
		return vkv__set_error(-errno, "unreserve: munmap: %s",
				      strerror(errno));
	return 0;
}

/* Next offset for a new page: a released one, or fresh space (lock). */
static int take_offset(struct host_file *f, uint64_t page, uint64_t *off)
{
	uint64_t want;

	if (f->free_head < f->nfree) {
		*off = f->free_offs[f->free_head++];
		if (f->free_head == f->nfree)
			f->free_head = f->nfree = 0;
		return 0;
	}
	*off = f->next_off;
	if (f->next_off + page > f->file_size) {
		/* Grow the (sparse) file geometrically: ftruncate is cheap,
		 * but not free, and memory is only used once fallocated. */
		want = f->file_size ? f->file_size * 2 : 256 * page;
		if (ftruncate(f->fd, (off_t)want) != 0)
			return -errno;
		f->file_size = want;
	}
	f->next_off += page;
	return 0;
}

static int give_offset(struct host_file *f, uint64_t off)
{
	uint64_t *n;

	if (f->nfree == f->free_cap && f->free_head) {
		memmove(f->free_offs, f->free_offs + f->free_head,
			(f->nfree - f->free_head) * sizeof(*f->free_offs));
		f->nfree -= f->free_head;
		f->free_head = 0;
	}
	if (f->nfree == f->free_cap) {
		uint64_t cap = f->free_cap ? f->free_cap * 2 : 256;

		n = realloc(f->free_offs, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		f->free_offs = n;
		f->free_cap = cap;
	}
	f->free_offs[f->nfree++] = off;
	return 0;
}

/* A page of file f: an offset, then its memory (fallocate, which zeroes
 * and may be slow, outside the lock). -errno when there is none. */
static int file_page(struct host_priv *hp, struct host_file *f, uint64_t page,
		     uint64_t *off)
{
	int err, e;

	pthread_mutex_lock(&hp->lock);
	err = take_offset(f, page, off);
	pthread_mutex_unlock(&hp->lock);
	if (err)
		return vkv__set_error(err, "page_create: ftruncate: %s",
				      strerror(-err));
	if (fallocate(f->fd, 0, (off_t)*off, (off_t)page) == 0)
		return 0;
	e = errno;
	pthread_mutex_lock(&hp->lock);
	give_offset(f, *off);
	pthread_mutex_unlock(&hp->lock);
	return vkv__set_error(e == ENOSPC ? -ENOMEM : -e,
			      "page_create: fallocate %llu bytes: %s",
			      (unsigned long long)page, strerror(e));
}

static int host_page_create(struct vkv_backend *b, vkv_phys *page)
{
	struct host_priv *hp = b->priv;
	uint64_t off;
	bool huge;
	int err;

	if (vkv__fault_hit(VKV_FAULT_PAGE_CREATE))
		return vkv__set_error(-ENOMEM, "page_create: injected failure (VKV_FAULT_PAGE_CREATE)");
	pthread_mutex_lock(&hp->lock);
	huge = hp->huge.fd >= 0 && !hp->huge_dry;
	pthread_mutex_unlock(&hp->lock);
	if (huge) {
		err = vkv__fault_hit(VKV_FAULT_HUGETLB)
			      ? vkv__set_error(-ENOMEM, "page_create: injected failure (VKV_FAULT_HUGETLB)")
			      : file_page(hp, &hp->huge, b->page_size, &off);
		if (!err) {
			*page = off | HOST_FILE_HUGETLB;
			return 0;
		}
		if (err != -ENOMEM)
			return err;
		pthread_mutex_lock(&hp->lock);
		hp->huge_dry = true;
		if (!hp->huge_warned) {
			hp->huge_warned = true;
			vkv__warn("host backend: the reserved hugetlb pages ran out; "
				  "further 2 MiB pages come from ordinary memory "
				  "(raise vm.nr_hugepages to keep them huge)");
		}
		pthread_mutex_unlock(&hp->lock);
	}
	err = file_page(hp, &hp->shm, b->page_size, &off);
	if (!err)
		*page = off;
	return err;
}

static void host_page_release(struct vkv_backend *b, vkv_phys page)
{
	struct host_priv *hp = b->priv;
	bool huge = page & HOST_FILE_HUGETLB;
	struct host_file *f = huge ? &hp->huge : &hp->shm;
	uint64_t off = page & ~HOST_FILE_HUGETLB;

	fallocate(f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		  (off_t)off, (off_t)b->page_size);
	pthread_mutex_lock(&hp->lock);
	if (give_offset(f, off) != 0)
		vkv__warn("host backend: lost track of a released page offset");
	if (huge)
		hp->huge_dry = false;
	pthread_mutex_unlock(&hp->lock);
}

int vkv__hostmem_unmap(struct vkv_backend *b, uint64_t addr, size_t n)
{
	void *want = (void *)(uintptr_t)addr, *p;
	size_t len = n * b->page_size;
	int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;

	p = mmap(want, len, host_reserve_prot(b), flags | MAP_FIXED, -1, 0);
	if (p != MAP_FAILED)
		return 0;
	if (errno != ENOMEM)
		return vkv__set_error(-errno, "unmap: mmap(MAP_FIXED) %zu pages: %s",
				      n, strerror(errno));
	/*
	 * At vm.max_map_count, replacing a mapping in place can fail because
	 * the replacement needs a new VMA before the old one goes. Removing
	 * first lowers the count, and the anonymous range put back merges
	 * with its neighbours. NOREPLACE: never clobber whoever took the hole.
	 */
	if (munmap(want, len) != 0)
		return vkv__set_error(-errno, "unmap: munmap %zu pages: %s", n,
				      strerror(errno));
	p = mmap(want, len, host_reserve_prot(b), flags | MAP_FIXED_NOREPLACE, -1, 0);
	if (p == want)
		return 0;
	if (p != MAP_FAILED)
		munmap(p, len);
	return vkv__set_error(-EIO, "unmap: cannot put the reservation back over "
			      "%zu pages (%s); the range is lost to vkv", n,
			      strerror(errno));
}

/* Map pages of fd (offsets; a host backend page's file bit is ignored,
 * and the kmod backend's offsets never have it) in runs of consecutive
 * offsets. */
int vkv__hostmem_map_fd(struct vkv_backend *b, int fd, uint64_t addr,
			const vkv_phys *pages, size_t n)
{
	uint64_t ps = b->page_size;
	size_t i = 0, run;
	void *p;
	int err;

	if (vkv__fault_hit(VKV_FAULT_MAP))
		return vkv__set_error(-ENOMEM, "map: injected failure (VKV_FAULT_MAP)");
	while (i < n) {
		for (run = 1; i + run < n && pages[i + run] == pages[i] + run * ps;
		     run++)
			;
		p = mmap((void *)(uintptr_t)(addr + i * ps), run * ps,
			 PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd,
			 (off_t)(pages[i] & ~HOST_FILE_HUGETLB));
		if (p == MAP_FAILED) {
			err = errno;
			if (i)
				vkv__hostmem_unmap(b, addr, i);
			return vkv__set_error(err == ENOMEM ? -ENOMEM :
					      err == EINVAL ? -EINVAL : -EIO,
					      "map: mmap(MAP_FIXED|MAP_SHARED) of %s offset 0x%llx: %s%s",
					      b->ops->name, (unsigned long long)pages[i],
					      strerror(err),
					      err == ENOMEM ? " (vm.max_map_count reached? try 2M pages)" : "");
		}
		i += run;
	}
	return 0;
}

/* Each run of pages of one file with one vkv__hostmem_map_fd call. */
static int host_map_pages(struct vkv_backend *b, uint64_t addr,
			  const vkv_phys *pages, size_t n)
{
	struct host_priv *hp = b->priv;
	size_t i = 0, run;
	int err;

	while (i < n) {
		uint64_t tag = pages[i] & HOST_FILE_HUGETLB;

		for (run = 1; i + run < n && (pages[i + run] & HOST_FILE_HUGETLB) == tag;
		     run++)
			;
		err = vkv__hostmem_map_fd(b, tag ? hp->huge.fd : hp->shm.fd,
					  addr + i * b->page_size, pages + i, run);
		if (err) {
			if (i)
				vkv__hostmem_unmap(b, addr, i);
			return err;
		}
		i += run;
	}
	return 0;
}

int vkv__hostmem_copy_dd(struct vkv_backend *b, uint64_t dst, uint64_t src,
			uint64_t bytes)
{
	(void)b;
	memmove((void *)(uintptr_t)dst, (const void *)(uintptr_t)src, bytes);
	return 0;
}

/*
 * Copies of a MiB or more (whole 2 MiB pages, NVMe blocks, a tier's batch
 * of pages: evictions and restorations, large slot reads and writes) are
 * bulk moves that do not fit a core's L2: they use streaming
 * (non-temporal) stores, which skip reading every destination line before
 * overwriting it and do not push the engine's working set out of the
 * caches. Measured on the development VM: about 1.6x memcpy's speed at
 * 2 MiB. glibc switches to such stores itself only above a threshold near
 * the L3's size, per call; it cannot know that a 2 MiB call is one of a
 * batch of hundreds.
 */
#define HOST_STREAM_MIN (1ULL << 20)

#if defined(__x86_64__) || defined(__SSE2__)
#include <emmintrin.h>

/* Streaming copy; the caller fences (copy_fence) before the data is used
 * by anyone else. */
static void copy_stream(void *dst, const void *src, uint64_t bytes)
{
	uint8_t *d = dst;
	const uint8_t *s = src;
	uint64_t head = (uint64_t)(-(uintptr_t)d & 15), n;

	if (head > bytes)
		head = bytes;
	memcpy(d, s, head);
	d += head;
	s += head;
	bytes -= head;
	for (n = bytes / 64; n; n--, d += 64, s += 64) {
		__m128i x0 = _mm_loadu_si128((const __m128i *)s);
		__m128i x1 = _mm_loadu_si128((const __m128i *)(s + 16));
		__m128i x2 = _mm_loadu_si128((const __m128i *)(s + 32));
		__m128i x3 = _mm_loadu_si128((const __m128i *)(s + 48));

		_mm_stream_si128((__m128i *)d, x0);
		_mm_stream_si128((__m128i *)(d + 16), x1);
		_mm_stream_si128((__m128i *)(d + 32), x2);
		_mm_stream_si128((__m128i *)(d + 48), x3);
	}
	memcpy(d, s, bytes % 64);
}

/* Streaming stores are weakly ordered: make them visible before whatever
 * the caller does next (unlock, publish, hand the pages over). */
static void copy_fence(void)
{
	_mm_sfence();
}
#else
static void copy_stream(void *dst, const void *src, uint64_t bytes)
{
	memcpy(dst, src, bytes);
}

static void copy_fence(void)
{
}
#endif

void vkv__copy_stream(void *dst, const void *src, uint64_t bytes)
{
	copy_stream(dst, src, bytes);
	copy_fence();
}

static void copy_bulk(void *dst, const void *src, uint64_t bytes)
{
	if (bytes < HOST_STREAM_MIN) {
		memcpy(dst, src, bytes);
		return;
	}
	copy_stream(dst, src, bytes);
	copy_fence();
}

int vkv__hostmem_copy_to_host(struct vkv_backend *b, void *dst, uint64_t src,
			     uint64_t bytes)
{
	(void)b;
	copy_bulk(dst, (const void *)(uintptr_t)src, bytes);
	return 0;
}

int vkv__hostmem_copy_from_host(struct vkv_backend *b, uint64_t dst,
			       const void *src, uint64_t bytes)
{
	(void)b;
	copy_bulk((void *)(uintptr_t)dst, src, bytes);
	return 0;
}

/* A tier's batch: streaming when the batch as a whole is bulk, so that
 * 4 KiB pages move as fast as 2 MiB ones; one fence for all of it. */
int vkv__hostmem_copy_batch(struct vkv_backend *b, bool to_host, bool pinned,
			    void *const *host, const uint64_t *dev, size_t n,
			    uint64_t bytes, vkv_fence *done)
{
	bool bulk = n * bytes >= HOST_STREAM_MIN;

	(void)b;
	(void)pinned;
	if (done)
		*done = 0; /* synchronous: finished on return */
	for (size_t i = 0; i < n; i++) {
		void *dst = to_host ? host[i] : (void *)(uintptr_t)dev[i];
		const void *src = to_host ? (const void *)(uintptr_t)dev[i] : host[i];

		if (bulk)
			copy_stream(dst, src, bytes);
		else
			memcpy(dst, src, bytes);
	}
	if (bulk)
		copy_fence();
	return 0;
}

/* Host engines compute synchronously: nothing is in flight at free time. */
int vkv__hostmem_fence_record(struct vkv_backend *b, vkv_fence *fence)
{
	(void)b;
	*fence = 0;
	return 0;
}

int vkv__hostmem_fence_wait(struct vkv_backend *b, vkv_fence fence)
{
	(void)b;
	(void)fence;
	return 0;
}

void vkv__hostmem_fence_drop(struct vkv_backend *b, vkv_fence fence)
{
	(void)b;
	(void)fence;
}

int vkv__hostmem_set_stream(struct vkv_backend *b, void *stream)
{
	(void)b;
	(void)stream;
	return 0;
}

const struct vkv_backend_ops vkv__backend_host_ops = {
	.name = "host",
	.open = host_open,
	.close = host_close,
	.reserve = vkv__hostmem_reserve,
	.unreserve = vkv__hostmem_unreserve,
	.page_create = host_page_create,
	.page_release = host_page_release,
	.map_pages = host_map_pages,
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
