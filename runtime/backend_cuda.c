// SPDX-License-Identifier: MIT
/*
 * backend_cuda.c - the cuda backend: the VMM contract on GPU memory.
 *
 * reserve   = cuMemAddressReserve, aligned to the page size
 * page      = cuMemCreate: one pinned allocation of page_size bytes on the
 *             context's device (page_size is a multiple of the driver's
 *             minimum granularity, queried, never assumed)
 * map       = cuMemMap of each page, then ONE cuMemSetAccess (read/write for
 *             the device) over the whole run: access changes are the
 *             expensive part, and the driver accepts a range spanning
 *             several mappings
 * unmap     = cuMemUnmap of each page (the driver only unmaps whole
 *             mappings, so never one call over pages mapped separately)
 * release   = cuMemRelease
 * copies    = cuMemcpy*Async on the engine's stream, then a synchronize of
 *             that stream: ordered after the engine's kernels, synchronous
 *             for the caller, as the contract says. A batch (copy_batch,
 *             the DRAM tier's pages) queues every copy, then waits once;
 *             VKV_TIER_COPY=kernel makes it one launch of the range-copy
 *             kernel (kernels/) instead of one cuMemcpyAsync per page
 * fences    = CUevents recorded on the stream given by set_stream (NULL =
 *             the legacy default stream)
 *
 * Zero mode (VKV_UNBACKED_ZERO): one zero-filled page is created at open and
 * mapped read-only at every unbacked page of every reservation, so kernels
 * that over-read to a tile boundary see zeros. unmap_pages() puts it back,
 * map_pages() takes it away first. Cost warning: that is one cuMemMap per
 * page of virtual space at reserve time and page-table memory on the GPU
 * for all of it; use it for reservations of moderate size.
 *
 * Contexts: every call makes the device's primary context current on the
 * calling thread (the engine's or the worker's). When the thread had no
 * context the primary context stays current (cheap next time); when it had
 * another one, that one is made current again before returning.
 *
 * No partial state: every multi-step call undoes its earlier steps when a
 * later one fails, and returns the first driver error.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_driver.h"
#include "internal.h"
#include "kernels.h"

#ifdef VKV_HAVE_CUDA

struct cuda_priv {
	const struct vkv_cu *cu;
	CUdevice dev;
	CUcontext ctx;             /* the device's primary context (retained) */
	CUmemAllocationProp prop;  /* pinned on dev */
	CUmemAccessDesc rw;        /* read/write for dev */
	CUmemAccessDesc zero_acc;  /* read-only (read/write where refused) */
	CUmemGenericAllocationHandle zero; /* zero mode's page, else 0 */
	pthread_mutex_t lock;
	CUstream stream;           /* the engine's stream (lock) */
	int copy_mode;             /* VKV_TIER_COPY: 1 async, 2 kernel */
#ifdef VKV_HAVE_KERNELS
	struct vkv_kern *kern;     /* range copies; opened on first use (lock) */
	bool kern_failed;          /* ... and that failed: async from then on */
#endif
};

static struct cuda_priv *priv(struct vkv_backend *b)
{
	return b->priv;
}

/* Make p's context current on this thread; *prev is what to restore. */
static int ctx_enter(struct cuda_priv *p, CUcontext *prev)
{
	CUcontext cur = NULL;

	if (p->cu->cuCtxGetCurrent(&cur) == CUDA_SUCCESS && cur == p->ctx) {
		*prev = p->ctx;
		return 0;
	}
	*prev = cur;
	return VKV_CU_CALL(p->cu, cuCtxSetCurrent, p->ctx);
}

static void ctx_leave(struct cuda_priv *p, CUcontext prev)
{
	if (prev && prev != p->ctx)
		p->cu->cuCtxSetCurrent(prev);
}

static CUstream engine_stream(struct cuda_priv *p)
{
	CUstream s;

	pthread_mutex_lock(&p->lock);
	s = p->stream;
	pthread_mutex_unlock(&p->lock);
	return s;
}

/* ------------------------------------------------------ mapping primitives */

static bool zero_mode(struct vkv_backend *b)
{
	return b->unbacked == VKV_UNBACKED_ZERO;
}

/* Map the zero page at n pages from addr (unbacked -> zero). */
static int map_zero(struct vkv_backend *b, uint64_t addr, size_t n)
{
	struct cuda_priv *p = priv(b);
	uint64_t ps = b->page_size;
	size_t i;
	int err = 0;

	for (i = 0; i < n && !err; i++)
		err = VKV_CU_CALL(p->cu, cuMemMap, addr + i * ps, ps, 0, p->zero, 0);
	if (err) {
		i--; /* page i failed; [0, i) are mapped */
		goto undo;
	}
	err = VKV_CU_CALL(p->cu, cuMemSetAccess, addr, n * ps, &p->zero_acc, 1);
	if (!err)
		return 0;
undo:
	while (i--)
		p->cu->cuMemUnmap(addr + i * ps, ps);
	return err;
}

/* cuMemUnmap of n separately mapped pages; tries them all, returns (and
 * records the detail of) the first error. */
static int unmap_each(struct vkv_backend *b, uint64_t addr, size_t n)
{
	struct cuda_priv *p = priv(b);
	int first = 0;

	for (size_t i = 0; i < n; i++) {
		CUresult res = p->cu->cuMemUnmap(addr + i * b->page_size,
						 b->page_size);

		if (res != CUDA_SUCCESS && !first)
			first = vkv__cu_error(res, "cuMemUnmap");
	}
	return first;
}

/*
 * Mapped pages -> the unbacked state of this backend. In zero mode each run
 * of pages that unmapped cleanly gets the zero page back with one access
 * change; a page whose unmap fails is skipped (and reported), the rest are
 * still done.
 */
static int to_unbacked(struct vkv_backend *b, uint64_t addr, size_t n)
{
	uint64_t ps = b->page_size;
	size_t i = 0, start;
	int err = 0, first = 0;

	if (!zero_mode(b))
		return unmap_each(b, addr, n);
	while (i < n) {
		start = i;
		while (i < n && !(err = unmap_each(b, addr + i * ps, 1)))
			i++;
		if (i > start) {
			int zerr = map_zero(b, addr + start * ps, i - start);

			if (zerr && !first)
				first = zerr;
		}
		if (i < n) {
			if (!first)
				first = err;
			i++;
		}
	}
	return first;
}

/* --------------------------------------------------------------- open/close */

/* Create the zero page: map it once read/write, clear it, unmap it. Also
 * learn whether the device takes read-only access. */
static int make_zero_page(struct vkv_backend *b)
{
	struct cuda_priv *p = priv(b);
	const struct vkv_cu *cu = p->cu;
	uint64_t ps = b->page_size;
	CUdeviceptr va;
	CUresult res;
	int err;

	err = VKV_CU_CALL(cu, cuMemCreate, &p->zero, ps, &p->prop, 0);
	if (err)
		return err;
	err = VKV_CU_CALL(cu, cuMemAddressReserve, &va, ps, ps, 0, 0);
	if (err)
		goto release;
	err = VKV_CU_CALL(cu, cuMemMap, va, ps, 0, p->zero, 0);
	if (err)
		goto unreserve;
	err = VKV_CU_CALL(cu, cuMemSetAccess, va, ps, &p->rw, 1);
	if (!err)
		err = VKV_CU_CALL(cu, cuMemsetD8, va, 0, ps);
	if (!err)
		err = VKV_CU_CALL(cu, cuCtxSynchronize);
	if (err)
		goto unmap;
	p->zero_acc = p->rw;
	p->zero_acc.flags = CU_MEM_ACCESS_FLAGS_PROT_READ;
	res = cu->cuMemSetAccess(va, ps, &p->zero_acc, 1);
	if (res == CUDA_ERROR_INVALID_VALUE || res == CUDA_ERROR_NOT_SUPPORTED) {
		vkv__warn("cuda: device refuses read-only mappings (%s); the zero "
			  "page is writable, a stray write changes what unbacked "
			  "memory reads", vkv__cu_result_name(res));
		p->zero_acc = p->rw;
	} else if ((err = vkv__cu_error(res, "cuMemSetAccess"))) {
		goto unmap;
	}
	cu->cuMemUnmap(va, ps);
	cu->cuMemAddressFree(va, ps);
	return 0;
unmap:
	cu->cuMemUnmap(va, ps);
unreserve:
	cu->cuMemAddressFree(va, ps);
release:
	cu->cuMemRelease(p->zero);
	p->zero = 0;
	return err;
}

/* The device, usable for VMM? -ENODEV (with the reason) when not. */
static int find_device(struct cuda_priv *p, int ordinal)
{
	int count = 0, vmm = 0, err;

	err = VKV_CU_CALL(p->cu, cuDeviceGetCount, &count);
	if (err)
		return err;
	if (ordinal < 0 || ordinal >= count)
		return vkv__set_error(-ENODEV, "cuda: no device %d (%d present)",
				      ordinal, count);
	err = VKV_CU_CALL(p->cu, cuDeviceGet, &p->dev, ordinal);
	if (!err)
		err = VKV_CU_CALL(p->cu, cuDeviceGetAttribute, &vmm,
				  CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED,
				  p->dev);
	if (!err && !vmm)
		err = vkv__set_error(-ENODEV, "cuda: device %d lacks virtual "
				     "memory management", ordinal);
	return err;
}

/* Page size: cfg's or the granularity; a power-of-two multiple of it. */
static int choose_page_size(struct cuda_priv *p, uint64_t want, uint64_t *out)
{
	size_t gran = 0;
	uint64_t ps;
	int err;

	err = VKV_CU_CALL(p->cu, cuMemGetAllocationGranularity, &gran, &p->prop,
			  CU_MEM_ALLOC_GRANULARITY_MINIMUM);
	if (err)
		return err;
	if (gran == 0 || (gran & (gran - 1)))
		return vkv__set_error(-EIO, "cuda: odd granularity %zu", gran);
	ps = want ? want : gran;
	if (ps % gran || (ps & (ps - 1)))
		return vkv__set_error(-EINVAL,
				      "cuda: page size %llu is not a power-of-two "
				      "multiple of the device granularity %zu",
				      (unsigned long long)ps, gran);
	*out = ps;
	return 0;
}

static void describe(struct vkv_backend *b, struct cuda_priv *p)
{
	char name[96] = "GPU", size[32];
	const char *n = name;
	int major = 0, minor = 0;

	p->cu->cuDeviceGetName(name, sizeof(name), p->dev);
	p->cu->cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, p->dev);
	p->cu->cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, p->dev);
	if (!strncmp(n, "NVIDIA ", 7))
		n += 7;
	snprintf(b->detail, sizeof(b->detail), "%.36s sm_%d%d %s", n, major,
		 minor, vkv__fmt_size(size, sizeof(size), b->page_size));
}

static int cuda_open(struct vkv_backend *b, const struct vkv_ctx_config *cfg)
{
	struct cuda_priv *p;
	CUcontext prev;
	int err;

	p = calloc(1, sizeof(*p));
	if (!p)
		return vkv__set_error(-ENOMEM, "cuda backend: out of memory");
	err = vkv__cu_load(&p->cu);
	if (err)
		goto free_priv;
	err = find_device(p, cfg->device);
	if (err)
		goto free_priv;
	err = VKV_CU_CALL(p->cu, cuDevicePrimaryCtxRetain, &p->ctx, p->dev);
	if (err)
		goto free_priv;
	err = ctx_enter(p, &prev);
	if (err)
		goto release_ctx;
	p->prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
	p->prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
	p->prop.location.id = p->dev;
	p->rw.location = p->prop.location;
	p->rw.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
	err = choose_page_size(p, cfg->page_size, &b->page_size);
	if (err)
		goto leave;
	b->priv = p;
	if (zero_mode(b)) {
		err = make_zero_page(b);
		if (err)
			goto leave;
	}
	pthread_mutex_init(&p->lock, NULL);
	p->copy_mode = vkv__opt_enum(VKV_OPT_TIER_COPY) == 2 ? 2 : 1;
	describe(b, p);
	ctx_leave(p, prev);
	vkv__debug("cuda backend: %s, driver %d", b->detail,
		   p->cu->driver_version);
	return 0;
leave:
	b->priv = NULL;
	ctx_leave(p, prev);
release_ctx:
	p->cu->cuDevicePrimaryCtxRelease(p->dev);
free_priv:
	free(p);
	return err;
}

static void cuda_close(struct vkv_backend *b)
{
	struct cuda_priv *p = priv(b);
	CUcontext prev;

	if (!p)
		return;
	if (p->zero && ctx_enter(p, &prev) == 0) {
		p->cu->cuMemRelease(p->zero);
		ctx_leave(p, prev);
	}
#ifdef VKV_HAVE_KERNELS
	if (p->kern)
		vkv__kern_close(p->kern);
#endif
	p->cu->cuDevicePrimaryCtxRelease(p->dev);
	pthread_mutex_destroy(&p->lock);
	free(p);
	b->priv = NULL;
}

/* --------------------------------------------------------- address space */

static int cuda_reserve(struct vkv_backend *b, uint64_t size, uint64_t *addr)
{
	struct cuda_priv *p = priv(b);
	CUdeviceptr va;
	CUcontext prev;
	int err;

	if (size == 0 || size % b->page_size)
		return vkv__set_error(-EINVAL, "reserve: bad size %llu",
				      (unsigned long long)size);
	err = ctx_enter(p, &prev);
	if (err)
		return err;
	err = VKV_CU_CALL(p->cu, cuMemAddressReserve, &va, size, b->page_size,
			  0, 0);
	if (err)
		goto out;
	if (zero_mode(b)) {
		err = map_zero(b, va, size / b->page_size);
		if (err) {
			p->cu->cuMemAddressFree(va, size);
			goto out;
		}
	}
	*addr = va;
out:
	ctx_leave(p, prev);
	return err;
}

static int cuda_unreserve(struct vkv_backend *b, uint64_t addr, uint64_t size)
{
	struct cuda_priv *p = priv(b);
	CUcontext prev;
	int err;

	err = ctx_enter(p, &prev);
	if (err)
		return err;
	if (zero_mode(b))
		err = unmap_each(b, addr, size / b->page_size);
	if (!err)
		err = VKV_CU_CALL(p->cu, cuMemAddressFree, addr, size);
	ctx_leave(p, prev);
	return err;
}

/* ------------------------------------------------------------------- pages */

static int cuda_page_create(struct vkv_backend *b, vkv_phys *page)
{
	struct cuda_priv *p = priv(b);
	CUmemGenericAllocationHandle h;
	CUcontext prev;
	int err;

	if (vkv__fault_hit(VKV_FAULT_PAGE_CREATE))
		return vkv__set_error(-ENOMEM, "page_create: injected failure (VKV_FAULT_PAGE_CREATE)");
	err = ctx_enter(p, &prev);
	if (err)
		return err;
	err = VKV_CU_CALL(p->cu, cuMemCreate, &h, b->page_size, &p->prop, 0);
	if (!err)
		*page = h;
	ctx_leave(p, prev);
	return err;
}

static void cuda_page_release(struct vkv_backend *b, vkv_phys page)
{
	struct cuda_priv *p = priv(b);
	CUcontext prev;

	if (ctx_enter(p, &prev) != 0) {
		vkv__warn("cuda: cannot release a page: %s", vkv_last_error());
		return;
	}
	if (VKV_CU_CALL(p->cu, cuMemRelease, page) != 0)
		vkv__warn("cuda: %s", vkv_last_error());
	ctx_leave(p, prev);
}

static int map_run(struct vkv_backend *b, uint64_t addr, const vkv_phys *pages,
		   size_t n)
{
	struct cuda_priv *p = priv(b);
	uint64_t ps = b->page_size;
	size_t i;
	int err;

	for (i = 0; i < n; i++) {
		uint64_t a = addr + i * ps;

		if (zero_mode(b)) {
			err = unmap_each(b, a, 1);
			if (err)
				goto undo;
		}
		err = VKV_CU_CALL(p->cu, cuMemMap, a, ps, 0, pages[i], 0);
		if (err) {
			if (zero_mode(b))
				map_zero(b, a, 1);
			goto undo;
		}
	}
	err = VKV_CU_CALL(p->cu, cuMemSetAccess, addr, n * ps, &p->rw, 1);
	if (!err)
		return 0;
undo:
	/* Keep the first error's detail over the undo's. */
	{
		char detail[256];

		snprintf(detail, sizeof(detail), "%s", vkv_last_error());
		to_unbacked(b, addr, i);
		vkv__set_error(err, "%s", detail);
	}
	return err;
}

static int cuda_map_pages(struct vkv_backend *b, uint64_t addr,
			  const vkv_phys *pages, size_t n)
{
	struct cuda_priv *p = priv(b);
	CUcontext prev;
	int err;

	if (n == 0)
		return 0;
	if (vkv__fault_hit(VKV_FAULT_MAP))
		return vkv__set_error(-ENOMEM, "map: injected failure (VKV_FAULT_MAP)");
	err = ctx_enter(p, &prev);
	if (err)
		return err;
	err = map_run(b, addr, pages, n);
	ctx_leave(p, prev);
	return err;
}

static int cuda_unmap_pages(struct vkv_backend *b, uint64_t addr, size_t n)
{
	struct cuda_priv *p = priv(b);
	CUcontext prev;
	int err;

	if (n == 0)
		return 0;
	err = ctx_enter(p, &prev);
	if (err)
		return err;
	err = to_unbacked(b, addr, n);
	ctx_leave(p, prev);
	return err;
}

/* ------------------------------------------------------------------ copies */

enum copy_dir { COPY_DD, COPY_DH, COPY_HD };

static int copy(struct vkv_backend *b, enum copy_dir dir, uint64_t dst,
		uint64_t src, uint64_t bytes)
{
	struct cuda_priv *p = priv(b);
	CUstream s = engine_stream(p);
	CUcontext prev;
	int err;

	if (bytes == 0)
		return 0;
	err = ctx_enter(p, &prev);
	if (err)
		return err;
	switch (dir) {
	case COPY_DD:
		err = VKV_CU_CALL(p->cu, cuMemcpyDtoDAsync, dst, src, bytes, s);
		break;
	case COPY_DH:
		err = VKV_CU_CALL(p->cu, cuMemcpyDtoHAsync, (void *)(uintptr_t)dst,
				  src, bytes, s);
		break;
	case COPY_HD:
		err = VKV_CU_CALL(p->cu, cuMemcpyHtoDAsync, dst,
				  (const void *)(uintptr_t)src, bytes, s);
		break;
	}
	if (!err)
		err = VKV_CU_CALL(p->cu, cuStreamSynchronize, s);
	ctx_leave(p, prev);
	return err;
}

static int cuda_copy_dd(struct vkv_backend *b, uint64_t dst, uint64_t src,
			uint64_t bytes)
{
	return copy(b, COPY_DD, dst, src, bytes);
}

static int cuda_copy_to_host(struct vkv_backend *b, void *dst, uint64_t src,
			     uint64_t bytes)
{
	return copy(b, COPY_DH, (uint64_t)(uintptr_t)dst, src, bytes);
}

static int cuda_copy_from_host(struct vkv_backend *b, uint64_t dst,
			       const void *src, uint64_t bytes)
{
	return copy(b, COPY_HD, dst, (uint64_t)(uintptr_t)src, bytes);
}

#ifdef VKV_HAVE_KERNELS
/* The range-copy kernel for batches, loaded on first use; NULL when it
 * cannot be (then batches fall back to async copies, said once). */
static struct vkv_kern *batch_kernel(struct cuda_priv *p)
{
	struct vkv_kern *k;

	pthread_mutex_lock(&p->lock);
	if (!p->kern && !p->kern_failed) {
		int err = vkv__kern_open(p->dev, &p->kern);

		if (err) {
			p->kern_failed = true;
			vkv__warn("VKV_TIER_COPY=kernel: the copy kernel is not usable (%s); "
				  "using cuMemcpyAsync per page", vkv_last_error());
		}
	}
	k = p->kern;
	pthread_mutex_unlock(&p->lock);
	return k;
}

static int batch_by_kernel(struct vkv_kern *k, CUstream s, bool to_host,
			   void *const *host, const uint64_t *dev, size_t n,
			   uint64_t bytes)
{
	struct vkv_kern_range *r;
	int err = 0;

	r = malloc(n * sizeof(*r));
	if (!r)
		return vkv__set_error(-ENOMEM, "cuda backend: out of memory");
	for (size_t i = 0; i < n; i++) {
		uint64_t h = (uint64_t)(uintptr_t)host[i];

		r[i] = (struct vkv_kern_range){ .dst = to_host ? h : dev[i],
						.src = to_host ? dev[i] : h,
						.bytes = bytes };
	}
	/* the launch takes at most UINT32_MAX ranges */
	for (size_t i = 0; i < n && !err; i += UINT32_MAX)
		err = vkv__kern_copy_ranges(k, s, r + i,
					    (uint32_t)(n - i < UINT32_MAX ? n - i : UINT32_MAX));
	free(r);
	return err;
}
#endif

static int cuda_copy_batch(struct vkv_backend *b, bool to_host, bool pinned,
			   void *const *host, const uint64_t *dev, size_t n,
			   uint64_t bytes, vkv_fence *done)
{
	struct cuda_priv *p = priv(b);
	CUstream s = engine_stream(p);
	CUcontext prev;
	int err = 0, werr;
	size_t i = 0;

	if (n == 0 || bytes == 0) {
		if (done)
			*done = 0;
		return 0;
	}
	err = ctx_enter(p, &prev);
	if (err)
		return err;
#ifdef VKV_HAVE_KERNELS
	/* the kernel touches host memory itself: only registered memory */
	if (p->copy_mode == 2 && pinned) {
		struct vkv_kern *k = batch_kernel(p);

		if (k) {
			err = batch_by_kernel(k, s, to_host, host, dev, n, bytes);
			i = n;
		}
	}
#else
	(void)pinned;
#endif
	for (; i < n && !err; i++)
		err = to_host ? VKV_CU_CALL(p->cu, cuMemcpyDtoHAsync, host[i],
					    dev[i], bytes, s)
			      : VKV_CU_CALL(p->cu, cuMemcpyHtoDAsync, dev[i],
					    host[i], bytes, s);
	if (!err && done) {
		CUevent ev;

		/* asynchronous: an event behind the copies is the fence */
		err = VKV_CU_CALL(p->cu, cuEventCreate, &ev, CU_EVENT_DISABLE_TIMING);
		if (!err) {
			err = VKV_CU_CALL(p->cu, cuEventRecord, ev, s);
			if (err)
				p->cu->cuEventDestroy(ev);
			else
				*done = (vkv_fence)(uintptr_t)ev;
		}
		if (!err) {
			ctx_leave(p, prev);
			return 0;
		}
	}
	/* wait: what was queued reads or writes the caller's memory */
	werr = VKV_CU_CALL(p->cu, cuStreamSynchronize, s);
	ctx_leave(p, prev);
	return err ? err : werr;
}

/* ------------------------------------------------------------------ fences */

static int cuda_fence_record(struct vkv_backend *b, vkv_fence *fence)
{
	struct cuda_priv *p = priv(b);
	CUstream s = engine_stream(p);
	CUcontext prev;
	CUevent ev;
	int err;

	err = ctx_enter(p, &prev);
	if (err)
		return err;
	err = VKV_CU_CALL(p->cu, cuEventCreate, &ev, CU_EVENT_DISABLE_TIMING);
	if (err)
		goto out;
	err = VKV_CU_CALL(p->cu, cuEventRecord, ev, s);
	if (err)
		p->cu->cuEventDestroy(ev);
	else
		*fence = (vkv_fence)(uintptr_t)ev;
out:
	ctx_leave(p, prev);
	return err;
}

/* Wait for the fence; it stays valid until fence_drop(). */
static int cuda_fence_wait(struct vkv_backend *b, vkv_fence fence)
{
	struct cuda_priv *p = priv(b);
	CUevent ev = (CUevent)(uintptr_t)fence;
	CUcontext prev;
	int err;

	if (!fence)
		return 0;
	err = ctx_enter(p, &prev);
	if (err)
		return err;
	err = VKV_CU_CALL(p->cu, cuEventSynchronize, ev);
	ctx_leave(p, prev);
	return err;
}

static void cuda_fence_drop(struct vkv_backend *b, vkv_fence fence)
{
	struct cuda_priv *p = priv(b);
	CUcontext prev;

	if (!fence || ctx_enter(p, &prev) != 0)
		return;
	p->cu->cuEventDestroy((CUevent)(uintptr_t)fence);
	ctx_leave(p, prev);
}

static int cuda_set_stream(struct vkv_backend *b, void *stream)
{
	struct cuda_priv *p = priv(b);

	pthread_mutex_lock(&p->lock);
	p->stream = (CUstream)stream;
	pthread_mutex_unlock(&p->lock);
	return 0;
}

static const struct vkv_backend_ops cuda_ops = {
	.name = "cuda",
	.open = cuda_open,
	.close = cuda_close,
	.reserve = cuda_reserve,
	.unreserve = cuda_unreserve,
	.page_create = cuda_page_create,
	.page_release = cuda_page_release,
	.map_pages = cuda_map_pages,
	.unmap_pages = cuda_unmap_pages,
	.copy_dd = cuda_copy_dd,
	.copy_to_host = cuda_copy_to_host,
	.copy_from_host = cuda_copy_from_host,
	.copy_batch = cuda_copy_batch,
	.fence_record = cuda_fence_record,
	.fence_wait = cuda_fence_wait,
	.fence_drop = cuda_fence_drop,
	.set_stream = cuda_set_stream,
};

const struct vkv_backend_ops *const vkv__backend_cuda_ops = &cuda_ops;

#else /* !VKV_HAVE_CUDA */

const struct vkv_backend_ops *const vkv__backend_cuda_ops = NULL;

#endif /* VKV_HAVE_CUDA */
