// SPDX-License-Identifier: MIT
/*
 * preload.h - internals of libvkv_preload.so, the LD_PRELOAD shim.
 *
 * The shim makes an unmodified CUDA program allocate device memory from
 * vkv arenas (arena.h): one virtual reservation per device, backed chunk by
 * chunk through the VMM calls, with a process limit and stats. It works at
 * the driver level, so that programs using the runtime API (cudaMalloc,
 * PyTorch), the driver API, or a statically linked runtime are all covered
 * and nothing is counted twice:
 *
 *   exports        cuMemAlloc_v2 & co. for programs linked against libcuda
 *   interpose.c    dlsym and cuGetProcAddress(_v2): the CUDA runtime finds
 *                  the driver with dlopen + dlsym("cuGetProcAddress_v2") and
 *                  then asks cuGetProcAddress for every entry point; both
 *                  answers are swapped for our wrappers where they are the
 *                  driver functions we serve
 *   real.c         the real driver functions, found through the real dlsym
 *   serve.c        the served calls, per-device arenas, limit, stats
 *   preload.c      one-time initialisation, logging, recursion guard, fork
 *
 * Rules that every file follows:
 *   - nothing is allocated through libc before initialisation, and the
 *     arenas never use malloc at all (mmap);
 *   - a served call that meets anything it does not handle (no context, no
 *     VMM support on the device, a stream being captured, a pointer that is
 *     not ours) passes the call to the driver untouched;
 *   - a call that re-enters the shim on the same thread (the driver or our
 *     own initialisation calling dlsym) goes straight to the driver.
 */
#ifndef VKV_PRELOAD_H
#define VKV_PRELOAD_H

#include <cuda.h>
#include <stdbool.h>
#include <stdint.h>

#include "internal.h"

#define VKV_PRELOAD_API __attribute__((visibility("default")))
#define VKV_PRELOAD_MAX_DEVICES 32

/* ------------------------------------------------------------------ real.c */

typedef CUresult (*vkv_getproc_v2_fn)(const char *, void **, int, cuuint64_t,
				      CUdriverProcAddressQueryResult *);
typedef CUresult (*vkv_getproc_v1_fn)(const char *, void **, int, cuuint64_t);

/*
 * The driver functions the shim calls, by field, declared type and exact
 * exported symbol (the ABI we need, whatever cuda.h maps names to).
 */
#define VKV_PRELOAD_REAL(X)                                                   \
	X(mem_alloc, cuMemAlloc_v2, "cuMemAlloc_v2")                          \
	X(mem_alloc_pitch, cuMemAllocPitch_v2, "cuMemAllocPitch_v2")          \
	X(mem_free, cuMemFree_v2, "cuMemFree_v2")                             \
	X(mem_alloc_async, cuMemAllocAsync, "cuMemAllocAsync")                \
	X(mem_alloc_async_ptsz, cuMemAllocAsync, "cuMemAllocAsync_ptsz")      \
	X(mem_free_async, cuMemFreeAsync, "cuMemFreeAsync")                   \
	X(mem_free_async_ptsz, cuMemFreeAsync, "cuMemFreeAsync_ptsz")         \
	X(mem_get_info, cuMemGetInfo_v2, "cuMemGetInfo_v2")                   \
	X(mem_get_address_range, cuMemGetAddressRange_v2,                     \
	  "cuMemGetAddressRange_v2")                                          \
	X(ctx_get_device, cuCtxGetDevice, "cuCtxGetDevice")                   \
	X(ctx_synchronize, cuCtxSynchronize, "cuCtxSynchronize")              \
	X(device_total_mem, cuDeviceTotalMem_v2, "cuDeviceTotalMem_v2")       \
	X(device_get_attribute, cuDeviceGetAttribute, "cuDeviceGetAttribute") \
	X(granularity, cuMemGetAllocationGranularity,                         \
	  "cuMemGetAllocationGranularity")                                    \
	X(address_reserve, cuMemAddressReserve, "cuMemAddressReserve")        \
	X(address_free, cuMemAddressFree, "cuMemAddressFree")                 \
	X(mem_create, cuMemCreate, "cuMemCreate")                             \
	X(mem_release, cuMemRelease, "cuMemRelease")                          \
	X(mem_map, cuMemMap, "cuMemMap")                                      \
	X(mem_unmap, cuMemUnmap, "cuMemUnmap")                                \
	X(mem_set_access, cuMemSetAccess, "cuMemSetAccess")                   \
	X(event_create, cuEventCreate, "cuEventCreate")                       \
	X(event_record, cuEventRecord, "cuEventRecord")                       \
	X(event_query, cuEventQuery, "cuEventQuery")                          \
	X(event_synchronize, cuEventSynchronize, "cuEventSynchronize")        \
	X(event_destroy, cuEventDestroy_v2, "cuEventDestroy_v2")              \
	X(stream_synchronize, cuStreamSynchronize, "cuStreamSynchronize")     \
	X(stream_is_capturing, cuStreamIsCapturing, "cuStreamIsCapturing")

#define VKV_PRELOAD_REAL_FIELD(field, decl, sym) __typeof__(decl) *field;

struct vkv_preload_real {
	void *lib;                     /* libcuda.so.1 */
	vkv_getproc_v2_fn getproc_v2;  /* NULL on drivers before 12.0 */
	vkv_getproc_v1_fn getproc_v1;
	VKV_PRELOAD_REAL(VKV_PRELOAD_REAL_FIELD)
};

#undef VKV_PRELOAD_REAL_FIELD

/* Filled by vkv__preload_init(); read-only afterwards. A field is NULL when
 * the driver lacks that function (or there is no driver). */
extern struct vkv_preload_real vkv__real;

/* dlopen libcuda.so.1 (the one already loaded, if any) and fill vkv__real.
 * -ENODEV without a driver. Called once, under the init lock. */
int vkv__preload_resolve(void);
/* The real dlsym, and dlsym(RTLD_NEXT, name) as seen from `caller`. */
void *vkv__real_dlsym(void *handle, const char *name);
void *vkv__dlsym_next(const void *caller, const char *name);

/* --------------------------------------------------------------- preload.c */

/* Whether the shim serves allocations (VKV_PRELOAD=1 and a driver). */
extern bool vkv__preload_on;

/*
 * Enter the shim from an exported entry point: initialise on first use,
 * then return true when the call should be served (and must be paired with
 * vkv__preload_leave), false when it must go to the driver untouched
 * (disabled, re-entered, initialising).
 */
bool vkv__preload_enter(void);
void vkv__preload_leave(void);
/* Initialise (idempotent); false while this thread is inside the shim. */
bool vkv__preload_ready(void);

/* "vkv: preload: ..." to stderr or VKV_PRELOAD_LOG, honouring VKV_LOG
 * (0 warnings, 1 debug). Allocates nothing. */
void vkv__preload_log(int debug, const char *fmt, ...) VKV_PRINTF(2, 3);

/* ----------------------------------------------------------------- serve.c */

/* The wrappers interpose.c hands out in place of the driver's. */
CUresult vkv__serve_alloc(CUdeviceptr *dptr, size_t bytes);
CUresult vkv__serve_alloc_pitch(CUdeviceptr *dptr, size_t *pitch, size_t width,
				size_t height, unsigned int elem);
CUresult vkv__serve_free(CUdeviceptr p);
CUresult vkv__serve_alloc_async(CUdeviceptr *dptr, size_t bytes, CUstream s);
CUresult vkv__serve_alloc_async_ptsz(CUdeviceptr *dptr, size_t bytes,
				     CUstream s);
CUresult vkv__serve_free_async(CUdeviceptr p, CUstream s);
CUresult vkv__serve_free_async_ptsz(CUdeviceptr p, CUstream s);
CUresult vkv__serve_get_info(size_t *free_bytes, size_t *total);
CUresult vkv__serve_address_range(CUdeviceptr *base, size_t *size,
				  CUdeviceptr p);

/* fork: hold every device lock across it; the child forgets the arenas
 * (its CUDA state is not the parent's). */
void vkv__serve_fork_prepare(void);
void vkv__serve_fork_parent(void);
void vkv__serve_fork_child(void);

/* ------------------------------------------------------------- interpose.c */

/* Our wrapper for a function pointer the driver handed out, or p itself. */
void *vkv__preload_swap(void *p);
/* Learn the driver's pointers to swap (once; asks the driver's
 * cuGetProcAddress, so it runs at initialisation, before any fork). */
void vkv__preload_swaps_init(void);

#endif /* VKV_PRELOAD_H */
