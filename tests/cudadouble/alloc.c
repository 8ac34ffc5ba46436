// SPDX-License-Identifier: MIT
/*
 * alloc.c - the CUDA driver test double's classic allocation calls.
 *
 * The LD_PRELOAD shim (runtime/preload/) serves cuMemAlloc_v2 and friends
 * from its own arenas and passes the rest to the driver: managed memory,
 * allocations made while a stream is being captured, frees of pointers it
 * does not own. For CI to check both halves, the double must implement
 * those calls too. They live here, beside fakecuda.c, and are built on the
 * double's own public VMM calls (cuMemAddressReserve + cuMemCreate +
 * cuMemMap + cuMemSetAccess), so an allocation is ordinary fake device
 * memory that the copy calls check like any other.
 *
 * What is here:
 *   cuMemAlloc_v2, cuMemAllocPitch_v2, cuMemFree_v2, cuMemGetAddressRange_v2,
 *   cuMemAllocManaged, cuMemAllocAsync, cuMemFreeAsync (and their _ptsz
 *   per-thread-stream variants), cuStreamBeginCapture_v2,
 *   cuStreamEndCapture, cuStreamIsCapturing, cuStreamGetCaptureInfo_v2/_v3,
 *   cuGraphDestroy, cuEventQuery, cuStreamQuery, cuCtxGetDevice, and
 *   cuGetProcAddress (v1 and _v2) in front of fakecuda.c's, which the build
 *   renames to vkv_fakecuda_getproc_core (mk/cuda.mk) so that the lookup
 *   finds these calls too, honouring the per-thread-stream flag and the
 *   requested version the way the real driver does.
 *
 * Semantics kept from the real driver: sizes of 0 and NULL out-pointers
 * are CUDA_ERROR_INVALID_VALUE; freeing an unknown pointer is
 * CUDA_ERROR_INVALID_VALUE; stream work completes at once unless the test
 * made the device "busy" (fakecuda_alloc.h), in which case event and stream
 * queries say CUDA_ERROR_NOT_READY. Allocation failures come from the VMM
 * calls underneath, so VKV_FAKECUDA_FAIL=cuMemCreate:N and VKV_FAKECUDA_MEM
 * reach these calls as well. The fault plan does not know these calls by
 * name.
 */
#include <cuda.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fakecuda_alloc.h"

#define FA_API __attribute__((visibility("default")))
#define FA_PITCH_ALIGN 512u
#define FA_MAX_DEVICES 8
#define FA_MAGIC_GRAPH 0x68707267u

enum fa_kind { FA_DEVICE, FA_MANAGED, FA_ASYNC };

struct fa_alloc {
	CUdeviceptr va;
	size_t size; /* reserved and mapped: a multiple of the granularity */
	size_t req;  /* what the caller asked for */
	CUmemGenericAllocationHandle handle;
	enum fa_kind kind;
};

struct fa_capture {
	CUstream stream;
	cuuint64_t id;
};

struct CUgraph_st {
	uint32_t magic;
};

/* All state below, under fa_lock. fa_lock is taken before fakecuda.c's
 * lock (the VMM calls take it), never the other way round. */
static pthread_mutex_t fa_lock = PTHREAD_MUTEX_INITIALIZER;
static struct fa_alloc *fa_allocs;
static size_t fa_n, fa_cap;
static struct fa_capture fa_captures[64];
static size_t fa_ncaptures;
static cuuint64_t fa_next_capture_id = 1;
static struct vkv_fakecuda_alloc_stats fa_st;
static int fa_busy;

/* Declarations of the names cuda.h only declares for driver builders. */
FA_API CUresult cuMemAllocAsync_ptsz(CUdeviceptr *dptr, size_t bytes, CUstream s);
FA_API CUresult cuMemFreeAsync_ptsz(CUdeviceptr dptr, CUstream s);
FA_API CUresult cuStreamIsCapturing_ptsz(CUstream s, CUstreamCaptureStatus *st);
FA_API CUresult cuStreamGetCaptureInfo_v2(CUstream s, CUstreamCaptureStatus *st,
					  cuuint64_t *id, CUgraph *graph,
					  const CUgraphNode **deps,
					  size_t *ndeps);
FA_API CUresult cuStreamGetCaptureInfo_v3_ptsz(
	CUstream s, CUstreamCaptureStatus *st, cuuint64_t *id, CUgraph *graph,
	const CUgraphNode **deps, const CUgraphEdgeData **edges, size_t *ndeps);
FA_API CUresult fa_getproc_v2(const char *symbol, void **pfn, int version,
			      cuuint64_t flags,
			      CUdriverProcAddressQueryResult *status)
	__asm__("cuGetProcAddress_v2");
FA_API CUresult fa_getproc_v1(const char *symbol, void **pfn, int version,
			      cuuint64_t flags) __asm__("cuGetProcAddress");
FA_API CUresult vkv_fakecuda_getproc_core(const char *symbol, void **pfn,
					  int version, cuuint64_t flags,
					  CUdriverProcAddressQueryResult *status);

/* The shim's fork test forks while other threads call in here. */
static void fa_fork_prepare(void)
{
	pthread_mutex_lock(&fa_lock);
}

static void fa_fork_release(void)
{
	pthread_mutex_unlock(&fa_lock);
}

__attribute__((constructor)) static void fa_init(void)
{
	pthread_atfork(fa_fork_prepare, fa_fork_release, fa_fork_release);
}

/* ---------------------------------------------------------------- devices */

FA_API CUresult cuCtxGetDevice(CUdevice *dev)
{
	CUcontext cur, primary;
	CUresult res;
	int n;

	if (!dev)
		return CUDA_ERROR_INVALID_VALUE;
	res = cuCtxGetCurrent(&cur);
	if (res)
		return res;
	if (!cur)
		return CUDA_ERROR_INVALID_CONTEXT;
	res = cuDeviceGetCount(&n);
	for (int i = 0; !res && i < n && i < FA_MAX_DEVICES; i++) {
		res = cuDevicePrimaryCtxRetain(&primary, i);
		if (res)
			break;
		cuDevicePrimaryCtxRelease(i);
		if (primary == cur) {
			*dev = i;
			return CUDA_SUCCESS;
		}
	}
	return res ? res : CUDA_ERROR_INVALID_CONTEXT;
}

/* ------------------------------------------------------------- allocations */

static CUresult map_new(CUdeviceptr *out, size_t req, size_t *size,
			CUmemGenericAllocationHandle *handle)
{
	CUmemAllocationProp prop = { .type = CU_MEM_ALLOCATION_TYPE_PINNED,
				     .location = { CU_MEM_LOCATION_TYPE_DEVICE, 0 } };
	CUmemAccessDesc acc = { .location = { CU_MEM_LOCATION_TYPE_DEVICE, 0 },
				.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE };
	CUdeviceptr va = 0;
	size_t g;
	CUdevice dev;
	CUresult res;

	res = cuCtxGetDevice(&dev);
	if (res)
		return res;
	prop.location.id = dev;
	acc.location.id = dev;
	res = cuMemGetAllocationGranularity(&g, &prop,
					    CU_MEM_ALLOC_GRANULARITY_MINIMUM);
	if (res)
		return res;
	*size = (req + g - 1) / g * g;
	res = cuMemAddressReserve(&va, *size, 0, 0, 0);
	if (res)
		return res;
	res = cuMemCreate(handle, *size, &prop, 0);
	if (res)
		goto unreserve;
	res = cuMemMap(va, *size, 0, *handle, 0);
	if (res)
		goto release;
	res = cuMemSetAccess(va, *size, &acc, 1);
	if (res)
		goto unmap;
	*out = va;
	return CUDA_SUCCESS;
unmap:
	cuMemUnmap(va, *size);
release:
	cuMemRelease(*handle);
unreserve:
	cuMemAddressFree(va, *size);
	return res;
}

static void unmap_old(const struct fa_alloc *a)
{
	cuMemUnmap(a->va, a->size);
	cuMemRelease(a->handle);
	cuMemAddressFree(a->va, a->size);
}

static uint64_t *kind_counter(enum fa_kind kind)
{
	switch (kind) {
	case FA_MANAGED: return &fa_st.managed;
	case FA_ASYNC: return &fa_st.async;
	default: return &fa_st.device;
	}
}

static CUresult alloc_kind(CUdeviceptr *dptr, size_t bytes, enum fa_kind kind)
{
	struct fa_alloc a = { .req = bytes, .kind = kind };
	CUresult res;

	pthread_mutex_lock(&fa_lock);
	fa_st.alloc_calls++;
	if (!dptr || bytes == 0) {
		res = CUDA_ERROR_INVALID_VALUE;
		goto out;
	}
	if (fa_n == fa_cap) {
		size_t ncap = fa_cap ? fa_cap * 2 : 64;
		struct fa_alloc *v = realloc(fa_allocs, ncap * sizeof(*v));

		if (!v) {
			res = CUDA_ERROR_OUT_OF_MEMORY;
			goto out;
		}
		fa_allocs = v;
		fa_cap = ncap;
	}
	res = map_new(&a.va, bytes, &a.size, &a.handle);
	if (res)
		goto out;
	fa_allocs[fa_n++] = a;
	fa_st.live++;
	fa_st.live_bytes += bytes;
	(*kind_counter(kind))++;
	*dptr = a.va;
out:
	pthread_mutex_unlock(&fa_lock);
	return res;
}

static CUresult free_ptr(CUdeviceptr p)
{
	CUresult res = CUDA_ERROR_INVALID_VALUE;

	pthread_mutex_lock(&fa_lock);
	fa_st.free_calls++;
	for (size_t i = 0; i < fa_n; i++) {
		if (fa_allocs[i].va != p)
			continue;
		unmap_old(&fa_allocs[i]);
		fa_st.live--;
		fa_st.live_bytes -= fa_allocs[i].req;
		(*kind_counter(fa_allocs[i].kind))--;
		fa_allocs[i] = fa_allocs[--fa_n];
		res = CUDA_SUCCESS;
		break;
	}
	if (res)
		fa_st.bad_frees++;
	pthread_mutex_unlock(&fa_lock);
	return res;
}

FA_API CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytes)
{
	return alloc_kind(dptr, bytes, FA_DEVICE);
}

FA_API CUresult cuMemAllocPitch_v2(CUdeviceptr *dptr, size_t *pitch,
				   size_t width, size_t height,
				   unsigned int elem)
{
	size_t p;
	CUresult res;

	/* as the real driver (seen on driver 580): the out-pointer is
	 * cleared even when the call fails */
	if (dptr)
		*dptr = 0;
	if (!dptr || !pitch || !width || !height ||
	    (elem != 4 && elem != 8 && elem != 16))
		return CUDA_ERROR_INVALID_VALUE;
	p = (width + FA_PITCH_ALIGN - 1) / FA_PITCH_ALIGN * FA_PITCH_ALIGN;
	res = alloc_kind(dptr, p * height, FA_DEVICE);
	if (!res)
		*pitch = p;
	return res;
}

FA_API CUresult cuMemAllocManaged(CUdeviceptr *dptr, size_t bytes,
				  unsigned int flags)
{
	if (flags != CU_MEM_ATTACH_GLOBAL && flags != CU_MEM_ATTACH_HOST)
		return CUDA_ERROR_INVALID_VALUE;
	return alloc_kind(dptr, bytes, FA_MANAGED);
}

/* cuMemFree(0) is what cudaFree(NULL) becomes: a no-op. */
FA_API CUresult cuMemFree_v2(CUdeviceptr p)
{
	return p ? free_ptr(p) : CUDA_SUCCESS;
}

FA_API CUresult cuMemGetAddressRange_v2(CUdeviceptr *base, size_t *size,
					CUdeviceptr p)
{
	CUresult res = CUDA_ERROR_NOT_FOUND;

	pthread_mutex_lock(&fa_lock);
	for (size_t i = 0; i < fa_n; i++) {
		if (p >= fa_allocs[i].va && p - fa_allocs[i].va < fa_allocs[i].req) {
			if (base)
				*base = fa_allocs[i].va;
			if (size)
				*size = fa_allocs[i].req;
			res = CUDA_SUCCESS;
			break;
		}
	}
	pthread_mutex_unlock(&fa_lock);
	return res;
}

/* ---------------------------------------------------------------- capture */

/* The per-thread default stream of a _ptsz call, written out. */
static CUstream ptsz(CUstream s)
{
	return s ? s : CU_STREAM_PER_THREAD;
}

static long capture_index(CUstream s)
{
	for (size_t i = 0; i < fa_ncaptures; i++)
		if (fa_captures[i].stream == s)
			return (long)i;
	return -1;
}

static bool is_capturing(CUstream s)
{
	bool on;

	pthread_mutex_lock(&fa_lock);
	on = capture_index(s) >= 0;
	pthread_mutex_unlock(&fa_lock);
	return on;
}

FA_API CUresult cuStreamBeginCapture_v2(CUstream s, CUstreamCaptureMode mode)
{
	CUresult res;

	(void)mode;
	if (!s || s == CU_STREAM_LEGACY || s == CU_STREAM_PER_THREAD)
		return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
	res = cuStreamSynchronize(s); /* validates the handle */
	if (res)
		return res;
	pthread_mutex_lock(&fa_lock);
	if (capture_index(s) >= 0)
		res = CUDA_ERROR_ILLEGAL_STATE;
	else if (fa_ncaptures == sizeof(fa_captures) / sizeof(fa_captures[0]))
		res = CUDA_ERROR_OUT_OF_MEMORY;
	else
		fa_captures[fa_ncaptures++] =
			(struct fa_capture){ s, fa_next_capture_id++ };
	fa_st.captures = fa_ncaptures;
	pthread_mutex_unlock(&fa_lock);
	return res;
}

FA_API CUresult cuStreamEndCapture(CUstream s, CUgraph *graph)
{
	struct CUgraph_st *g;
	long i;

	if (!graph)
		return CUDA_ERROR_INVALID_VALUE;
	g = malloc(sizeof(*g));
	if (!g)
		return CUDA_ERROR_OUT_OF_MEMORY;
	g->magic = FA_MAGIC_GRAPH;
	pthread_mutex_lock(&fa_lock);
	i = capture_index(s);
	if (i >= 0) {
		fa_captures[i] = fa_captures[--fa_ncaptures];
		fa_st.captures = fa_ncaptures;
		fa_st.graphs++;
	}
	pthread_mutex_unlock(&fa_lock);
	if (i < 0) {
		free(g);
		return CUDA_ERROR_ILLEGAL_STATE;
	}
	*graph = g;
	return CUDA_SUCCESS;
}

FA_API CUresult cuGraphDestroy(CUgraph g)
{
	if (!g || g->magic != FA_MAGIC_GRAPH)
		return CUDA_ERROR_INVALID_VALUE;
	g->magic = 0;
	free(g);
	pthread_mutex_lock(&fa_lock);
	fa_st.graphs--;
	pthread_mutex_unlock(&fa_lock);
	return CUDA_SUCCESS;
}

static CUresult capture_info(CUstream s, CUstreamCaptureStatus *st,
			     cuuint64_t *id)
{
	long i;

	if (!st)
		return CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&fa_lock);
	i = capture_index(s);
	*st = i >= 0 ? CU_STREAM_CAPTURE_STATUS_ACTIVE : CU_STREAM_CAPTURE_STATUS_NONE;
	if (id && i >= 0)
		*id = fa_captures[i].id;
	pthread_mutex_unlock(&fa_lock);
	return CUDA_SUCCESS;
}

FA_API CUresult cuStreamIsCapturing(CUstream s, CUstreamCaptureStatus *st)
{
	return capture_info(s, st, NULL);
}

FA_API CUresult cuStreamIsCapturing_ptsz(CUstream s, CUstreamCaptureStatus *st)
{
	return capture_info(ptsz(s), st, NULL);
}

static void no_graph(CUgraph *graph, const CUgraphNode **deps,
		     const CUgraphEdgeData **edges, size_t *ndeps)
{
	if (graph)
		*graph = NULL;
	if (deps)
		*deps = NULL;
	if (edges)
		*edges = NULL;
	if (ndeps)
		*ndeps = 0;
}

FA_API CUresult cuStreamGetCaptureInfo_v2(CUstream s, CUstreamCaptureStatus *st,
					  cuuint64_t *id, CUgraph *graph,
					  const CUgraphNode **deps, size_t *ndeps)
{
	no_graph(graph, deps, NULL, ndeps);
	return capture_info(s, st, id);
}

FA_API CUresult cuStreamGetCaptureInfo_v3(CUstream s, CUstreamCaptureStatus *st,
					  cuuint64_t *id, CUgraph *graph,
					  const CUgraphNode **deps,
					  const CUgraphEdgeData **edges,
					  size_t *ndeps)
{
	no_graph(graph, deps, edges, ndeps);
	return capture_info(s, st, id);
}

FA_API CUresult cuStreamGetCaptureInfo_v3_ptsz(
	CUstream s, CUstreamCaptureStatus *st, cuuint64_t *id, CUgraph *graph,
	const CUgraphNode **deps, const CUgraphEdgeData **edges, size_t *ndeps)
{
	return cuStreamGetCaptureInfo_v3(ptsz(s), st, id, graph, deps, edges,
					 ndeps);
}

/* ---------------------------------------------------- stream-ordered calls */

static CUresult alloc_async(CUdeviceptr *dptr, size_t bytes, CUstream s)
{
	CUresult res = cuStreamSynchronize(s); /* validates the handle */

	if (res)
		return res;
	if (is_capturing(s)) {
		pthread_mutex_lock(&fa_lock);
		fa_st.captured++;
		pthread_mutex_unlock(&fa_lock);
	}
	return alloc_kind(dptr, bytes, FA_ASYNC);
}

static CUresult free_async(CUdeviceptr p, CUstream s)
{
	CUresult res = cuStreamSynchronize(s);

	return res ? res : free_ptr(p);
}

FA_API CUresult cuMemAllocAsync(CUdeviceptr *dptr, size_t bytes, CUstream s)
{
	return alloc_async(dptr, bytes, s);
}

FA_API CUresult cuMemAllocAsync_ptsz(CUdeviceptr *dptr, size_t bytes, CUstream s)
{
	return alloc_async(dptr, bytes, ptsz(s));
}

FA_API CUresult cuMemFreeAsync(CUdeviceptr p, CUstream s)
{
	return free_async(p, s);
}

FA_API CUresult cuMemFreeAsync_ptsz(CUdeviceptr p, CUstream s)
{
	return free_async(p, ptsz(s));
}

/* ---------------------------------------------------------------- queries */

static CUresult busy_answer(void)
{
	return __atomic_load_n(&fa_busy, __ATOMIC_ACQUIRE) ? CUDA_ERROR_NOT_READY
							    : CUDA_SUCCESS;
}

FA_API CUresult cuEventQuery(CUevent e)
{
	CUresult res = cuEventSynchronize(e); /* validates the handle */

	return res ? res : busy_answer();
}

FA_API CUresult cuStreamQuery(CUstream s)
{
	CUresult res = cuStreamSynchronize(s);

	return res ? res : busy_answer();
}

/* ------------------------------------------------------------ proc address */

struct fa_proc {
	const char *name;
	void *fn;      /* default and legacy-stream lookups */
	void *fn_ptsz; /* CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM */
	int since;     /* oldest cudaVersion this ABI is handed out for */
};

#define FA_FN(f) ((void *)(f))

static const struct fa_proc fa_procs[] = {
	{ "cuMemAlloc", FA_FN(cuMemAlloc_v2), NULL, 3020 },
	{ "cuMemAllocPitch", FA_FN(cuMemAllocPitch_v2), NULL, 3020 },
	{ "cuMemFree", FA_FN(cuMemFree_v2), NULL, 3020 },
	{ "cuMemGetAddressRange", FA_FN(cuMemGetAddressRange_v2), NULL, 3020 },
	{ "cuMemAllocManaged", FA_FN(cuMemAllocManaged), NULL, 6000 },
	{ "cuMemAllocAsync", FA_FN(cuMemAllocAsync), FA_FN(cuMemAllocAsync_ptsz), 11020 },
	{ "cuMemFreeAsync", FA_FN(cuMemFreeAsync), FA_FN(cuMemFreeAsync_ptsz), 11020 },
	{ "cuStreamBeginCapture", FA_FN(cuStreamBeginCapture_v2), NULL, 10010 },
	{ "cuStreamEndCapture", FA_FN(cuStreamEndCapture), NULL, 10000 },
	{ "cuStreamIsCapturing", FA_FN(cuStreamIsCapturing), FA_FN(cuStreamIsCapturing_ptsz), 10000 },
	{ "cuStreamGetCaptureInfo", FA_FN(cuStreamGetCaptureInfo_v3), FA_FN(cuStreamGetCaptureInfo_v3_ptsz), 12030 },
	{ "cuStreamGetCaptureInfo", FA_FN(cuStreamGetCaptureInfo_v2), NULL, 11030 },
	{ "cuGraphDestroy", FA_FN(cuGraphDestroy), NULL, 10000 },
	{ "cuEventQuery", FA_FN(cuEventQuery), NULL, 2000 },
	{ "cuStreamQuery", FA_FN(cuStreamQuery), NULL, 2000 },
	{ "cuCtxGetDevice", FA_FN(cuCtxGetDevice), NULL, 2000 },
	{ "cuGetProcAddress", FA_FN(fa_getproc_v2), NULL, 12000 },
	{ "cuGetProcAddress", FA_FN(fa_getproc_v1), NULL, 11030 },
};

static void set_status(CUdriverProcAddressQueryResult *status,
		       CUdriverProcAddressQueryResult v)
{
	if (status)
		*status = v;
}

/*
 * The first entry of that name whose ABI the requested version covers
 * (entries of one name are newest first). A name known only in newer ABIs
 * is "version not sufficient", like the real driver says.
 */
FA_API CUresult fa_getproc_v2(const char *symbol, void **pfn, int version,
			      cuuint64_t flags,
			      CUdriverProcAddressQueryResult *status)
{
	bool known = false;

	if (!symbol || !pfn)
		return CUDA_ERROR_INVALID_VALUE;
	for (size_t i = 0; i < sizeof(fa_procs) / sizeof(fa_procs[0]); i++) {
		const struct fa_proc *p = &fa_procs[i];

		if (strcmp(symbol, p->name))
			continue;
		known = true;
		if (version < p->since)
			continue;
		*pfn = (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) &&
				       p->fn_ptsz ?
			       p->fn_ptsz :
			       p->fn;
		set_status(status, CU_GET_PROC_ADDRESS_SUCCESS);
		return CUDA_SUCCESS;
	}
	if (known) {
		*pfn = NULL;
		set_status(status, CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT);
		return CUDA_ERROR_NOT_FOUND;
	}
	return vkv_fakecuda_getproc_core(symbol, pfn, version, flags, status);
}

FA_API CUresult fa_getproc_v1(const char *symbol, void **pfn, int version,
			      cuuint64_t flags)
{
	return fa_getproc_v2(symbol, pfn, version, flags, NULL);
}

/* ----------------------------------------------------------------- control */

FA_API void vkv_fakecuda_alloc_stats(struct vkv_fakecuda_alloc_stats *st)
{
	pthread_mutex_lock(&fa_lock);
	*st = fa_st;
	pthread_mutex_unlock(&fa_lock);
}

FA_API void vkv_fakecuda_set_busy(int busy)
{
	__atomic_store_n(&fa_busy, busy ? 1 : 0, __ATOMIC_RELEASE);
}
