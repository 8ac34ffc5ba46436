// SPDX-License-Identifier: MIT
/*
 * serve.c - the allocation calls the shim serves, one arena per device.
 *
 * A device's arena is set up on its first allocation: check that the
 * device has virtual memory management, ask its granularity and memory
 * size, reserve VKV_PRELOAD_VA bytes of virtual space (default twice the
 * device's memory) and hand the range to an arena (arena.h), whose chunks
 * are mapped here with cuMemCreate + cuMemMap + cuMemSetAccess. A device
 * where any of that fails is marked unusable and its calls pass through.
 *
 * Semantics kept from the driver:
 *   - cuMemFree synchronises the context before the block can be reused,
 *     as the driver's cuMemFree does;
 *   - cuMemFreeAsync records an event on the stream and the block waits
 *     for it (except for allocations on that same stream, which stream
 *     order already protects);
 *   - running into VKV_PRELOAD_LIMIT, or the device running out of memory,
 *     is CUDA_ERROR_OUT_OF_MEMORY and nothing else, after idle chunks were
 *     given back (on every device) and pending frees waited for: that is
 *     the code frameworks free their caches and retry on;
 *   - cuMemGetInfo reports the device's numbers with idle arena chunks
 *     counted as free, both capped by the limit.
 *
 * Locking: one mutex per device around its arena and event pool, taken
 * before the stats lock; never two device locks at once except in the
 * fork handlers (in index order). mapped_total is atomic.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "arena.h"
#include "preload.h"

#define SMALL_MAX (1ULL << 20) /* requests up to 1 MiB use the small heap */
#define PITCH_ALIGN 512u
#define EVENT_POOL 256         /* idle events kept per device */
#define SCAN_EVERY 256         /* operations between largest-free walks */

enum dev_state { DEV_UNTRIED, DEV_READY, DEV_UNUSABLE };

struct dev {
	pthread_mutex_t lock;
	int state;                /* enum dev_state; set under lock, read
				     with acquire outside it */
	CUdevice ordinal;         /* read-only once READY */
	uint64_t base, size;      /* the reservation; read-only once READY */
	uint64_t chunk;           /* granularity; read-only once READY */
	struct vkv_arena arena;   /* (lock) */
	CUevent events[EVENT_POOL]; /* idle events for fences (lock) */
	unsigned nevents;         /* (lock) */
	bool limit_hit;           /* a map failed on the limit (lock) */
	struct vkv_arena_counters pub; /* last published counters (lock) */
	uint64_t largest;         /* last largest-free walk (lock; read
				     relaxed by other devices' publishers) */
	unsigned since_scan;      /* (lock) */
};

static struct dev devs[VKV_PRELOAD_MAX_DEVICES] = {
	[0 ... VKV_PRELOAD_MAX_DEVICES - 1] = { .lock = PTHREAD_MUTEX_INITIALIZER },
};

static pthread_once_t options_once = PTHREAD_ONCE_INIT;
static uint64_t opt_limit, opt_idle, opt_va; /* read-only after options_once */
static bool opt_stats;

static uint64_t mapped_total; /* all devices (atomic) */
static uint64_t ooms;         /* (atomic) */
static uint64_t passthrough;  /* (atomic) */
static bool stats_stale;      /* child after fork: zero our stats first */

static void read_options(void)
{
	opt_limit = vkv__opt_u64(VKV_OPT_PRELOAD_LIMIT);
	opt_idle = vkv__opt_u64(VKV_OPT_PRELOAD_IDLE);
	opt_va = vkv__opt_u64(VKV_OPT_PRELOAD_VA);
	opt_stats = vkv__opt_enum(VKV_OPT_STATS) == 1;
}

/* ------------------------------------------------------- arena callbacks */

static CUmemAllocationProp chunk_prop(const struct dev *d)
{
	CUmemAllocationProp prop;

	memset(&prop, 0, sizeof(prop));
	prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
	prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
	prop.location.id = d->ordinal;
	return prop;
}

static void unmap_run(struct dev *d, uint64_t addr, uint64_t n,
		      const uint64_t *handles)
{
	for (uint64_t i = 0; i < n; i++) {
		vkv__real.mem_unmap(addr + i * d->chunk, d->chunk);
		vkv__real.mem_release(handles[i]);
	}
	__atomic_fetch_sub(&mapped_total, n * d->chunk, __ATOMIC_RELAXED);
}

static int dev_map(void *priv, uint64_t addr, uint64_t n, uint64_t *handles)
{
	struct dev *d = priv;
	uint64_t bytes = n * d->chunk;
	CUmemAllocationProp prop = chunk_prop(d);
	CUmemAccessDesc acc = { .location = prop.location,
				.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE };
	CUresult res = CUDA_SUCCESS;
	uint64_t i;

	if (__atomic_add_fetch(&mapped_total, bytes, __ATOMIC_RELAXED) > opt_limit &&
	    opt_limit) {
		__atomic_fetch_sub(&mapped_total, bytes, __ATOMIC_RELAXED);
		d->limit_hit = true;
		return -ENOMEM;
	}
	for (i = 0; i < n; i++) {
		CUmemGenericAllocationHandle h;

		res = vkv__real.mem_create(&h, d->chunk, &prop, 0);
		if (res)
			break;
		res = vkv__real.mem_map(addr + i * d->chunk, d->chunk, 0, h, 0);
		if (res) {
			vkv__real.mem_release(h);
			break;
		}
		handles[i] = h;
	}
	if (!res)
		res = vkv__real.mem_set_access(addr, bytes, &acc, 1);
	if (!res)
		return 0;
	/* Give back what this call made; mapped_total still counts all n. */
	unmap_run(d, addr, i, handles);
	__atomic_fetch_sub(&mapped_total, (n - i) * d->chunk, __ATOMIC_RELAXED);
	vkv__preload_log(1, "device %d: mapping %llu chunk(s) at 0x%llx: CUDA error %d",
			 d->ordinal, (unsigned long long)n,
			 (unsigned long long)addr, (int)res);
	return res == CUDA_ERROR_OUT_OF_MEMORY ? -ENOMEM : -EIO;
}

static void dev_unmap(void *priv, uint64_t addr, uint64_t n,
		      const uint64_t *handles)
{
	unmap_run(priv, addr, n, handles);
}

static CUevent event_of(uint64_t token)
{
	return (CUevent)(uintptr_t)token;
}

static bool fence_done(void *priv, uint64_t fence)
{
	(void)priv;
	return vkv__real.event_query(event_of(fence)) != CUDA_ERROR_NOT_READY;
}

static void fence_wait(void *priv, uint64_t fence)
{
	(void)priv;
	vkv__real.event_synchronize(event_of(fence));
}

static void fence_put(void *priv, uint64_t fence)
{
	struct dev *d = priv;

	if (d->nevents < EVENT_POOL)
		d->events[d->nevents++] = event_of(fence);
	else
		vkv__real.event_destroy(event_of(fence));
}

static const struct vkv_arena_ops dev_ops = {
	.map = dev_map,
	.unmap = dev_unmap,
	.fence_done = fence_done,
	.fence_wait = fence_wait,
	.fence_put = fence_put,
};

/* ---------------------------------------------------------------- stats */

/* Publish this device's changes (lock held). Totals are sums over
 * devices, so each device adds what changed since its last publish. */
static void publish(struct dev *d)
{
	const struct vkv_arena_counters *c = &d->arena.c, *p = &d->pub;
	struct vkv_stats_segment *s;
	struct vkv_stats_preload *pl;
	uint64_t largest = 0, slack;

	if (d->since_scan++ % SCAN_EVERY == 0)
		__atomic_store_n(&d->largest, vkv__arena_largest_free(&d->arena),
				 __ATOMIC_RELAXED);
	for (int i = 0; i < VKV_PRELOAD_MAX_DEVICES; i++) {
		uint64_t l = __atomic_load_n(&devs[i].largest, __ATOMIC_RELAXED);

		largest = l > largest ? l : largest;
	}
	s = vkv__stats_begin();
	pl = &s->preload;
	if (stats_stale) {
		memset(pl, 0, sizeof(*pl));
		stats_stale = false;
	}
	pl->reserved_bytes += c->reserved - p->reserved;
	pl->mapped_bytes += c->mapped - p->mapped;
	pl->in_use_bytes += c->requested - p->requested;
	pl->chunks += c->chunks - p->chunks;
	pl->pending_bytes += c->pending - p->pending;
	pl->idle_bytes += c->idle - p->idle;
	pl->allocs += c->allocs - p->allocs;
	pl->frees += c->frees - p->frees;
	if (pl->in_use_bytes > pl->peak_in_use)
		pl->peak_in_use = pl->in_use_bytes;
	if (pl->mapped_bytes > pl->peak_mapped)
		pl->peak_mapped = pl->mapped_bytes;
	pl->largest_free = largest;
	slack = pl->mapped_bytes - pl->idle_bytes - pl->pending_bytes;
	slack = slack > pl->in_use_bytes ? slack - pl->in_use_bytes : 0;
	pl->fragmentation_ppm = pl->mapped_bytes ?
		slack * 1000000 / pl->mapped_bytes : 0;
	pl->ooms = __atomic_load_n(&ooms, __ATOMIC_RELAXED);
	pl->passthrough = __atomic_load_n(&passthrough, __ATOMIC_RELAXED);
	pl->limit_bytes = opt_limit;
	vkv__stats_end();
	d->pub = *c;
}

/* Publish the process-wide event counters (no device lock needed). */
static void publish_events(void)
{
	struct vkv_stats_segment *s = vkv__stats_begin();

	s->preload.ooms = __atomic_load_n(&ooms, __ATOMIC_RELAXED);
	s->preload.passthrough = __atomic_load_n(&passthrough, __ATOMIC_RELAXED);
	vkv__stats_end();
}

static void count_pass(void)
{
	__atomic_fetch_add(&passthrough, 1, __ATOMIC_RELAXED);
	publish_events();
}

/* ---------------------------------------------------------------- devices */

static void unusable(struct dev *d, const char *why, CUresult res)
{
	vkv__preload_log(0, "device %d: %s (CUDA error %d); its allocations "
			 "go to the driver", d->ordinal, why, (int)res);
	__atomic_store_n(&d->state, DEV_UNUSABLE, __ATOMIC_RELEASE);
}

/* Reserve the device's range and set up its arena (lock held). */
static void dev_open(struct dev *d, CUdevice ordinal)
{
	CUmemAllocationProp prop;
	CUdeviceptr base = 0;
	size_t gran = 0, total = 0;
	uint64_t size;
	int vmm = 0;
	CUresult res;

	d->ordinal = ordinal;
	prop = chunk_prop(d);
	res = vkv__real.device_get_attribute(
		&vmm, CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED,
		ordinal);
	if (res || !vmm) {
		unusable(d, "no virtual memory management", res);
		return;
	}
	res = vkv__real.granularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM);
	if (!res)
		res = vkv__real.device_total_mem(&total, ordinal);
	if (res || !gran || (gran & (gran - 1))) {
		unusable(d, "cannot read granularity and memory size", res);
		return;
	}
	size = opt_va ? opt_va : 2 * (uint64_t)total;
	size = (size + gran - 1) / gran * gran;
	if (size < 16 * (uint64_t)gran)
		size = 16 * (uint64_t)gran;
	res = vkv__real.address_reserve(&base, size, gran, 0, 0);
	if (res) {
		unusable(d, "cannot reserve virtual address space", res);
		return;
	}
	if (vkv__arena_init(&d->arena, base, size, gran, SMALL_MAX, opt_idle,
			    &dev_ops, d)) {
		vkv__real.address_free(base, size);
		unusable(d, "no memory for the arena's records", CUDA_SUCCESS);
		return;
	}
	d->base = base;
	d->size = size;
	d->chunk = gran;
	memset(&d->pub, 0, sizeof(d->pub));
	if (opt_stats)
		vkv__stats_open(VKV_BACKEND_CUDA, "preload", gran);
	publish(d);
	vkv__preload_log(1, "device %d: arena of %llu MiB at 0x%llx, chunks of %llu KiB",
			 ordinal, (unsigned long long)(size >> 20),
			 (unsigned long long)base, (unsigned long long)(gran >> 10));
	__atomic_store_n(&d->state, DEV_READY, __ATOMIC_RELEASE);
}

/* The arena of the current context's device, opened on first use when
 * `open`; NULL when there is no context or the device has none. */
static struct dev *current_dev(bool open)
{
	CUdevice ord;
	struct dev *d;
	int state;

	pthread_once(&options_once, read_options);
	if (!vkv__real.ctx_get_device || vkv__real.ctx_get_device(&ord) ||
	    ord < 0 || ord >= VKV_PRELOAD_MAX_DEVICES)
		return NULL;
	d = &devs[ord];
	state = __atomic_load_n(&d->state, __ATOMIC_ACQUIRE);
	if (state == DEV_UNTRIED && open) {
		pthread_mutex_lock(&d->lock);
		if (d->state == DEV_UNTRIED)
			dev_open(d, ord);
		state = d->state;
		pthread_mutex_unlock(&d->lock);
	}
	return state == DEV_READY ? d : NULL;
}

/* The device whose reservation holds p, or NULL. */
static struct dev *owner_of(CUdeviceptr p)
{
	for (int i = 0; i < VKV_PRELOAD_MAX_DEVICES; i++) {
		struct dev *d = &devs[i];

		if (__atomic_load_n(&d->state, __ATOMIC_ACQUIRE) == DEV_READY &&
		    p >= d->base && p - d->base < d->size)
			return d;
	}
	return NULL;
}

/* Give every other device's idle chunks back (the limit is per process). */
static void trim_others(struct dev *self)
{
	for (int i = 0; i < VKV_PRELOAD_MAX_DEVICES; i++) {
		struct dev *d = &devs[i];

		if (d == self ||
		    __atomic_load_n(&d->state, __ATOMIC_ACQUIRE) != DEV_READY)
			continue;
		pthread_mutex_lock(&d->lock);
		if (vkv__arena_trim(&d->arena, 0))
			publish(d);
		pthread_mutex_unlock(&d->lock);
	}
}

static bool capturing(CUstream s)
{
	CUstreamCaptureStatus st = CU_STREAM_CAPTURE_STATUS_NONE;

	if (!vkv__real.stream_is_capturing)
		return false; /* a driver without capture */
	/* An error (such as an implicit capture dependency) means the driver
	 * has an opinion on this call: let it have it. */
	return vkv__real.stream_is_capturing(s, &st) != CUDA_SUCCESS ||
	       st != CU_STREAM_CAPTURE_STATUS_NONE;
}

/* ------------------------------------------------------------- allocation */

static int arena_alloc(struct dev *d, uint64_t bytes, uint64_t key,
		       uint64_t *addr)
{
	int err;

	pthread_mutex_lock(&d->lock);
	d->limit_hit = false;
	err = vkv__arena_alloc(&d->arena, bytes, key, addr);
	publish(d);
	pthread_mutex_unlock(&d->lock);
	return err;
}

/*
 * Serve an allocation from the current device's arena. Returns false when
 * the driver should have the call instead; else *res is the result.
 */
static bool serve_alloc(CUdeviceptr *dptr, uint64_t bytes, uint64_t key,
			CUresult *res)
{
	struct dev *d = current_dev(true);
	uint64_t addr = 0;
	int err;

	if (!d)
		return false;
	err = arena_alloc(d, bytes, key, &addr);
	if (err == -ENOMEM && opt_limit) {
		trim_others(d);
		err = arena_alloc(d, bytes, key, &addr);
	}
	switch (err) {
	case 0:
		*dptr = addr;
		*res = CUDA_SUCCESS;
		return true;
	case -ENOSPC: /* no hole in the range: the driver may still have room */
		if (!opt_limit)
			return false;
		/* Under a limit, memory from elsewhere would escape it. */
		__attribute__((fallthrough));
	case -ENOMEM:
		__atomic_fetch_add(&ooms, 1, __ATOMIC_RELAXED);
		publish_events();
		vkv__preload_log(1, "device %d: %llu bytes: out of memory%s",
				 d->ordinal, (unsigned long long)bytes,
				 d->limit_hit ? " (VKV_PRELOAD_LIMIT)" : "");
		*res = CUDA_ERROR_OUT_OF_MEMORY;
		return true;
	default:
		return false;
	}
}

/* The stream a call really uses: the legacy stream has two names, and a
 * _ptsz call's 0 is the per-thread stream. */
static CUstream real_stream(CUstream s, bool ptsz)
{
	if (!s)
		return ptsz ? CU_STREAM_PER_THREAD : NULL;
	return s == CU_STREAM_LEGACY ? NULL : s;
}

/* The arena's name for a stream: its handle, except that every thread's
 * per-thread stream is a different stream under one handle. */
static __thread char per_thread_stream __attribute__((tls_model("initial-exec")));

static uint64_t stream_key(CUstream s)
{
	if (s == CU_STREAM_PER_THREAD)
		return (uint64_t)(uintptr_t)&per_thread_stream;
	return (uint64_t)(uintptr_t)s;
}

#define PASS_CALL(fn, ...)                                                    \
	(vkv__real.fn ? vkv__real.fn(__VA_ARGS__) : CUDA_ERROR_NOT_INITIALIZED)

CUresult vkv__serve_alloc(CUdeviceptr *dptr, size_t bytes)
{
	CUresult res = CUDA_SUCCESS;

	if (vkv__preload_enter()) {
		bool done = dptr && bytes && !capturing(CU_STREAM_LEGACY) &&
			    serve_alloc(dptr, bytes, VKV_ARENA_NO_STREAM, &res);

		if (!done)
			count_pass();
		vkv__preload_leave();
		if (done)
			return res;
	}
	return PASS_CALL(mem_alloc, dptr, bytes);
}

CUresult vkv__serve_alloc_pitch(CUdeviceptr *dptr, size_t *pitch, size_t width,
				size_t height, unsigned int elem)
{
	CUresult res = CUDA_SUCCESS;

	if (vkv__preload_enter()) {
		size_t p = width <= SIZE_MAX - PITCH_ALIGN ?
			(width + PITCH_ALIGN - 1) / PITCH_ALIGN * PITCH_ALIGN : 0;
		bool done = dptr && pitch && p && height &&
			    (elem == 4 || elem == 8 || elem == 16) &&
			    p <= SIZE_MAX / height && !capturing(CU_STREAM_LEGACY) &&
			    serve_alloc(dptr, (uint64_t)p * height,
					VKV_ARENA_NO_STREAM, &res);

		if (done && res == CUDA_SUCCESS)
			*pitch = p;
		if (!done)
			count_pass();
		vkv__preload_leave();
		if (done)
			return res;
	}
	return PASS_CALL(mem_alloc_pitch, dptr, pitch, width, height, elem);
}

static bool serve_alloc_async(CUdeviceptr *dptr, size_t bytes, CUstream s,
			      CUresult *res)
{
	if (!dptr || !bytes || capturing(s))
		return false;
	return serve_alloc(dptr, bytes, stream_key(s), res);
}

CUresult vkv__serve_alloc_async(CUdeviceptr *dptr, size_t bytes, CUstream s)
{
	CUresult res = CUDA_SUCCESS;

	if (vkv__preload_enter()) {
		bool done = serve_alloc_async(dptr, bytes, real_stream(s, false),
					      &res);

		if (!done)
			count_pass();
		vkv__preload_leave();
		if (done)
			return res;
	}
	return PASS_CALL(mem_alloc_async, dptr, bytes, s);
}

CUresult vkv__serve_alloc_async_ptsz(CUdeviceptr *dptr, size_t bytes,
				     CUstream s)
{
	CUresult res = CUDA_SUCCESS;

	if (vkv__preload_enter()) {
		bool done = serve_alloc_async(dptr, bytes, real_stream(s, true),
					      &res);

		if (!done)
			count_pass();
		vkv__preload_leave();
		if (done)
			return res;
	}
	return PASS_CALL(mem_alloc_async_ptsz, dptr, bytes, s);
}

/* ------------------------------------------------------------------ frees */

/* Is p a block of d's arena right now? */
static bool is_ours(struct dev *d, CUdeviceptr p)
{
	bool mine;

	pthread_mutex_lock(&d->lock);
	mine = vkv__arena_owns(&d->arena, p);
	pthread_mutex_unlock(&d->lock);
	return mine;
}

static bool serve_free(CUdeviceptr p, CUresult *res)
{
	struct dev *d = owner_of(p);
	int err;

	if (!d || !is_ours(d, p))
		return false;
	/* cuMemFree waits for the device: work queued before it may still
	 * use the block. */
	vkv__real.ctx_synchronize();
	pthread_mutex_lock(&d->lock);
	err = vkv__arena_free(&d->arena, p);
	publish(d);
	pthread_mutex_unlock(&d->lock);
	*res = err ? CUDA_ERROR_INVALID_VALUE : CUDA_SUCCESS;
	return true;
}

CUresult vkv__serve_free(CUdeviceptr p)
{
	CUresult res = CUDA_SUCCESS;

	if (vkv__preload_enter()) {
		bool done = p && serve_free(p, &res);

		if (!done)
			count_pass();
		vkv__preload_leave();
		if (done)
			return res;
	}
	return PASS_CALL(mem_free, p);
}

static CUevent event_get(struct dev *d)
{
	CUevent ev = NULL;

	if (d->nevents)
		return d->events[--d->nevents];
	if (vkv__real.event_create(&ev, CU_EVENT_DISABLE_TIMING))
		return NULL;
	return ev;
}

/* Free p once the work queued on s so far has finished (lock held). */
static int free_ordered(struct dev *d, CUdeviceptr p, CUstream s)
{
	CUevent ev = event_get(d);

	if (ev && vkv__real.event_record(ev, s) == CUDA_SUCCESS)
		return vkv__arena_free_async(&d->arena, p, stream_key(s),
					     (uint64_t)(uintptr_t)ev);
	/* No event to be had (another context's stream?): wait instead. */
	if (ev)
		fence_put(d, (uint64_t)(uintptr_t)ev);
	if (vkv__real.stream_synchronize(s))
		vkv__real.ctx_synchronize();
	return vkv__arena_free(&d->arena, p);
}

static bool serve_free_async(CUdeviceptr p, CUstream s, CUresult *res)
{
	struct dev *d = owner_of(p);
	int err;

	if (!d || capturing(s))
		return false;
	pthread_mutex_lock(&d->lock);
	err = vkv__arena_owns(&d->arena, p) ? free_ordered(d, p, s) : -ENOENT;
	if (!err)
		publish(d);
	pthread_mutex_unlock(&d->lock);
	*res = CUDA_SUCCESS;
	return err == 0;
}

CUresult vkv__serve_free_async(CUdeviceptr p, CUstream s)
{
	CUresult res = CUDA_SUCCESS;

	if (vkv__preload_enter()) {
		bool done = p && serve_free_async(p, real_stream(s, false), &res);

		if (!done)
			count_pass();
		vkv__preload_leave();
		if (done)
			return res;
	}
	return PASS_CALL(mem_free_async, p, s);
}

CUresult vkv__serve_free_async_ptsz(CUdeviceptr p, CUstream s)
{
	CUresult res = CUDA_SUCCESS;

	if (vkv__preload_enter()) {
		bool done = p && serve_free_async(p, real_stream(s, true), &res);

		if (!done)
			count_pass();
		vkv__preload_leave();
		if (done)
			return res;
	}
	return PASS_CALL(mem_free_async_ptsz, p, s);
}

/* ---------------------------------------------------------------- queries */

static uint64_t idle_of(struct dev *d)
{
	uint64_t idle;

	pthread_mutex_lock(&d->lock);
	idle = d->arena.c.idle;
	pthread_mutex_unlock(&d->lock);
	return idle;
}

static void adjust_info(size_t *free_bytes, size_t *total)
{
	struct dev *cur = current_dev(false);
	uint64_t f = *free_bytes, idle_all = 0, used, room;

	for (int i = 0; i < VKV_PRELOAD_MAX_DEVICES; i++) {
		struct dev *d = &devs[i];
		uint64_t idle;

		if (__atomic_load_n(&d->state, __ATOMIC_ACQUIRE) != DEV_READY)
			continue;
		idle = idle_of(d);
		idle_all += idle;
		if (d == cur)
			f += idle; /* ours to give at once */
	}
	if (opt_limit) {
		used = __atomic_load_n(&mapped_total, __ATOMIC_RELAXED);
		used = used > idle_all ? used - idle_all : 0;
		room = opt_limit > used ? opt_limit - used : 0;
		if (*total > opt_limit)
			*total = opt_limit;
		if (f > room)
			f = room;
	}
	*free_bytes = f < *total ? f : *total;
}

CUresult vkv__serve_get_info(size_t *free_bytes, size_t *total)
{
	CUresult res = PASS_CALL(mem_get_info, free_bytes, total);

	if (res == CUDA_SUCCESS && free_bytes && total && vkv__preload_enter()) {
		adjust_info(free_bytes, total);
		vkv__preload_leave();
	}
	return res;
}

CUresult vkv__serve_address_range(CUdeviceptr *base, size_t *size,
				  CUdeviceptr p)
{
	if (vkv__preload_enter()) {
		struct dev *d = owner_of(p);
		uint64_t b = 0, s = 0;
		int err = -ENOENT;

		if (d) {
			pthread_mutex_lock(&d->lock);
			err = vkv__arena_range(&d->arena, p, &b, &s);
			pthread_mutex_unlock(&d->lock);
		}
		vkv__preload_leave();
		if (d) {
			if (err)
				return CUDA_ERROR_NOT_FOUND;
			if (base)
				*base = b;
			if (size)
				*size = s;
			return CUDA_SUCCESS;
		}
	}
	return PASS_CALL(mem_get_address_range, base, size, p);
}

/* ------------------------------------------------------------------ exit */

/* With VKV_LOG=debug, one line on what the shim did (the GPU checks read
 * it). Counters only: the driver may already be going away; and a device
 * whose lock another thread holds at exit is left out rather than waited
 * for. */
__attribute__((destructor)) static void summary(void)
{
	struct vkv_arena_counters sum;
	unsigned n = 0;

	if (vkv__opt_enum(VKV_OPT_LOG) < 2)
		return;
	memset(&sum, 0, sizeof(sum));
	for (int i = 0; i < VKV_PRELOAD_MAX_DEVICES; i++) {
		struct dev *d = &devs[i];

		if (__atomic_load_n(&d->state, __ATOMIC_ACQUIRE) != DEV_READY ||
		    pthread_mutex_trylock(&d->lock))
			continue;
		sum.allocs += d->arena.c.allocs;
		sum.frees += d->arena.c.frees;
		sum.peak_requested += d->arena.c.peak_requested;
		sum.peak_mapped += d->arena.c.peak_mapped;
		sum.maps += d->arena.c.maps;
		pthread_mutex_unlock(&d->lock);
		n++;
	}
	if (n)
		vkv__preload_log(1, "summary: %u device(s), %llu allocations served, "
				 "%llu frees, peak in use %llu bytes, peak mapped %llu "
				 "bytes, %llu chunk maps, %llu calls passed through, "
				 "%llu out of memory",
				 n, (unsigned long long)sum.allocs,
				 (unsigned long long)sum.frees,
				 (unsigned long long)sum.peak_requested,
				 (unsigned long long)sum.peak_mapped,
				 (unsigned long long)sum.maps,
				 (unsigned long long)__atomic_load_n(&passthrough, __ATOMIC_RELAXED),
				 (unsigned long long)__atomic_load_n(&ooms, __ATOMIC_RELAXED));
}

/* ------------------------------------------------------------------- fork */

void vkv__serve_fork_prepare(void)
{
	for (int i = 0; i < VKV_PRELOAD_MAX_DEVICES; i++)
		pthread_mutex_lock(&devs[i].lock);
}

void vkv__serve_fork_parent(void)
{
	for (int i = VKV_PRELOAD_MAX_DEVICES - 1; i >= 0; i--)
		pthread_mutex_unlock(&devs[i].lock);
}

/*
 * The child has a copy of our records but not the parent's CUDA state
 * (the driver does not survive fork): forget the arenas without calling
 * the driver; a child that uses CUDA afresh gets new ones.
 */
void vkv__serve_fork_child(void)
{
	for (int i = 0; i < VKV_PRELOAD_MAX_DEVICES; i++) {
		struct dev *d = &devs[i];

		pthread_mutex_init(&d->lock, NULL);
		if (d->state == DEV_READY)
			vkv__arena_abandon(&d->arena);
		d->state = DEV_UNTRIED;
		d->nevents = 0;
		d->largest = 0;
		d->since_scan = 0;
		memset(&d->pub, 0, sizeof(d->pub));
	}
	mapped_total = 0;
	ooms = 0;
	passthrough = 0;
	stats_stale = true;
}
