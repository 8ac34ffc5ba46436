// SPDX-License-Identifier: MIT
/*
 * interpose.c - every symbol libvkv_preload.so exports, and the swapping
 * of driver function pointers for ours.
 *
 * A program reaches the driver's allocation calls in three ways, and the
 * shim sits in each:
 *   1. linked against libcuda: the dynamic linker binds cuMemAlloc_v2 & co.
 *      to the definitions below, because LD_PRELOAD objects come first;
 *   2. dlsym on a libcuda handle (what the CUDA runtime, static or shared,
 *      does for cuGetProcAddress_v2): our dlsym asks glibc's, and when the
 *      answer is a driver function we serve, returns our wrapper instead;
 *   3. cuGetProcAddress(_v2) (how the runtime finds everything else): ours
 *      calls the driver's with the caller's symbol, version and flags
 *      unchanged and swaps the answer the same way. Asked for
 *      cuGetProcAddress itself, it hands out itself.
 *
 * The swap is by pointer identity: the driver's answer is replaced only
 * when it is exactly the function whose ABI a wrapper implements (found by
 * exact symbol name, and by asking the driver's cuGetProcAddress for the
 * version we were built with, default and per-thread-stream flavours).
 * Answers for older ABIs (cuMemAlloc of CUDA 3.1 and earlier, 32-bit
 * sizes) or functions we do not serve are returned untouched, whatever
 * cudaVersion and flags the caller used.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stddef.h>
#include <string.h>

#include "preload.h"

/* Declared by cuda.h only for driver builders. */
VKV_PRELOAD_API CUresult cuMemAllocAsync_ptsz(CUdeviceptr *dptr, size_t bytes,
					      CUstream s);
VKV_PRELOAD_API CUresult cuMemFreeAsync_ptsz(CUdeviceptr p, CUstream s);
VKV_PRELOAD_API CUresult vkv_preload_getproc_v1(const char *symbol, void **pfn,
						int version, cuuint64_t flags)
	__asm__("cuGetProcAddress");
VKV_PRELOAD_API void *vkv_preload_dlsym(void *handle, const char *name);
VKV_PRELOAD_API void *vkv_preload_dlsym_old(void *handle, const char *name);

/* ------------------------------------------------------- exported calls */

VKV_PRELOAD_API CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytes)
{
	return vkv__serve_alloc(dptr, bytes);
}

VKV_PRELOAD_API CUresult cuMemAllocPitch_v2(CUdeviceptr *dptr, size_t *pitch,
					    size_t width, size_t height,
					    unsigned int elem)
{
	return vkv__serve_alloc_pitch(dptr, pitch, width, height, elem);
}

VKV_PRELOAD_API CUresult cuMemFree_v2(CUdeviceptr p)
{
	return vkv__serve_free(p);
}

VKV_PRELOAD_API CUresult cuMemAllocAsync(CUdeviceptr *dptr, size_t bytes,
					 CUstream s)
{
	return vkv__serve_alloc_async(dptr, bytes, s);
}

VKV_PRELOAD_API CUresult cuMemAllocAsync_ptsz(CUdeviceptr *dptr, size_t bytes,
					      CUstream s)
{
	return vkv__serve_alloc_async_ptsz(dptr, bytes, s);
}

VKV_PRELOAD_API CUresult cuMemFreeAsync(CUdeviceptr p, CUstream s)
{
	return vkv__serve_free_async(p, s);
}

VKV_PRELOAD_API CUresult cuMemFreeAsync_ptsz(CUdeviceptr p, CUstream s)
{
	return vkv__serve_free_async_ptsz(p, s);
}

VKV_PRELOAD_API CUresult cuMemGetInfo_v2(size_t *free_bytes, size_t *total)
{
	return vkv__serve_get_info(free_bytes, total);
}

VKV_PRELOAD_API CUresult cuMemGetAddressRange_v2(CUdeviceptr *base,
						 size_t *size, CUdeviceptr p)
{
	return vkv__serve_address_range(base, size, p);
}

VKV_PRELOAD_API CUresult cuGetProcAddress_v2(const char *symbol, void **pfn,
					     int version, cuuint64_t flags,
					     CUdriverProcAddressQueryResult *status)
{
	CUresult res;

	vkv__preload_ready();
	if (!vkv__real.getproc_v2)
		return CUDA_ERROR_NOT_FOUND;
	res = vkv__real.getproc_v2(symbol, pfn, version, flags, status);
	if (res == CUDA_SUCCESS && pfn && *pfn)
		*pfn = vkv__preload_swap(*pfn);
	return res;
}

VKV_PRELOAD_API CUresult vkv_preload_getproc_v1(const char *symbol, void **pfn,
						int version, cuuint64_t flags)
{
	CUresult res;

	vkv__preload_ready();
	if (!vkv__real.getproc_v1)
		return CUDA_ERROR_NOT_FOUND;
	res = vkv__real.getproc_v1(symbol, pfn, version, flags);
	if (res == CUDA_SUCCESS && pfn && *pfn)
		*pfn = vkv__preload_swap(*pfn);
	return res;
}

/* --------------------------------------------------------------- the swap */

struct swap {
	void *real;
	void *ours;
};

/* The driver's allocation calls that have a wrapper, and the wrapper. */
struct served {
	const char *base;   /* name for cuGetProcAddress */
	size_t real_off;    /* in vkv__real: default flavour */
	size_t ptsz_off;    /* per-thread-stream flavour, or SIZE_MAX */
	void *ours, *ours_ptsz;
};

#define REAL_OFF(f) offsetof(struct vkv_preload_real, f)
#define FN(f) ((void *)(f))

static const struct served served[] = {
	{ "cuMemAlloc", REAL_OFF(mem_alloc), SIZE_MAX, FN(cuMemAlloc_v2), NULL },
	{ "cuMemAllocPitch", REAL_OFF(mem_alloc_pitch), SIZE_MAX,
	  FN(cuMemAllocPitch_v2), NULL },
	{ "cuMemFree", REAL_OFF(mem_free), SIZE_MAX, FN(cuMemFree_v2), NULL },
	{ "cuMemAllocAsync", REAL_OFF(mem_alloc_async),
	  REAL_OFF(mem_alloc_async_ptsz), FN(cuMemAllocAsync),
	  FN(cuMemAllocAsync_ptsz) },
	{ "cuMemFreeAsync", REAL_OFF(mem_free_async),
	  REAL_OFF(mem_free_async_ptsz), FN(cuMemFreeAsync),
	  FN(cuMemFreeAsync_ptsz) },
	{ "cuMemGetInfo", REAL_OFF(mem_get_info), SIZE_MAX,
	  FN(cuMemGetInfo_v2), NULL },
	{ "cuMemGetAddressRange", REAL_OFF(mem_get_address_range), SIZE_MAX,
	  FN(cuMemGetAddressRange_v2), NULL },
};

#define NSERVED (sizeof(served) / sizeof(served[0]))
/* Per served call: dlsym and getproc answers, default and per-thread
 * flavours; plus cuGetProcAddress v1 and v2, by symbol and as the driver
 * hands itself out. */
#define NSWAPS (NSERVED * 4 + 4)

static struct swap swaps[NSWAPS];
static size_t nswaps;
static pthread_once_t swaps_once = PTHREAD_ONCE_INIT;

static void *real_at(size_t off)
{
	void *p;

	if (off == SIZE_MAX)
		return NULL;
	memcpy(&p, (const char *)&vkv__real + off, sizeof(p));
	return p;
}

static void add_swap(void *real, void *ours)
{
	if (!real || !ours || real == ours)
		return;
	for (size_t i = 0; i < nswaps; i++)
		if (swaps[i].real == real)
			return;
	if (nswaps < NSWAPS)
		swaps[nswaps++] = (struct swap){ real, ours };
}

static void *getproc_ask(const char *name, int version, cuuint64_t flags)
{
	CUdriverProcAddressQueryResult st;
	void *p = NULL;

	if (vkv__real.getproc_v2 &&
	    vkv__real.getproc_v2(name, &p, version, flags, &st) == CUDA_SUCCESS)
		return p;
	return NULL;
}

static void *getproc_answer(const char *name, cuuint64_t flags)
{
	return getproc_ask(name, CUDA_VERSION, flags);
}

static void *getproc_at(const char *name, int version)
{
	return getproc_ask(name, version, CU_GET_PROC_ADDRESS_DEFAULT);
}

static void build_swaps(void)
{
	void *p;

	memcpy(&p, &vkv__real.getproc_v2, sizeof(p));
	add_swap(p, FN(cuGetProcAddress_v2));
	memcpy(&p, &vkv__real.getproc_v1, sizeof(p));
	add_swap(p, FN(vkv_preload_getproc_v1));
	/* What the driver hands out for itself, in case it is not the symbol. */
	add_swap(getproc_at("cuGetProcAddress", 12000), FN(cuGetProcAddress_v2));
	add_swap(getproc_at("cuGetProcAddress", 11030), FN(vkv_preload_getproc_v1));
	for (size_t i = 0; i < NSERVED; i++) {
		const struct served *s = &served[i];
		void *ptsz_ours = s->ours_ptsz ? s->ours_ptsz : s->ours;

		add_swap(real_at(s->real_off), s->ours);
		add_swap(real_at(s->ptsz_off), ptsz_ours);
		add_swap(getproc_answer(s->base, CU_GET_PROC_ADDRESS_DEFAULT),
			 s->ours);
		add_swap(getproc_answer(s->base,
					CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM),
			 ptsz_ours);
	}
}

void vkv__preload_swaps_init(void)
{
	pthread_once(&swaps_once, build_swaps);
}

void *vkv__preload_swap(void *p)
{
	if (!vkv__preload_ready() || !vkv__preload_on)
		return p;
	vkv__preload_swaps_init();
	for (size_t i = 0; i < nswaps; i++)
		if (swaps[i].real == p)
			return swaps[i].ours;
	return p;
}

/* ------------------------------------------------------------------ dlsym */

static bool served_symbol(const char *name)
{
	static const char *const names[] = {
		"cuGetProcAddress", "cuGetProcAddress_v2", "cuMemAlloc_v2",
		"cuMemAllocPitch_v2", "cuMemFree_v2", "cuMemAllocAsync",
		"cuMemAllocAsync_ptsz", "cuMemFreeAsync", "cuMemFreeAsync_ptsz",
		"cuMemGetInfo_v2", "cuMemGetAddressRange_v2",
	};

	if (!name || name[0] != 'c' || name[1] != 'u')
		return false;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (!strcmp(name, names[i]))
			return true;
	return false;
}

static void *lookup(void *handle, const char *name, const void *caller)
{
	void *p = handle == RTLD_NEXT ? vkv__dlsym_next(caller, name)
				      : vkv__real_dlsym(handle, name);

	return p && served_symbol(name) ? vkv__preload_swap(p) : p;
}

/* Both versions behave the same; glibc's two differ only in age. */
VKV_PRELOAD_API void *vkv_preload_dlsym(void *handle, const char *name)
{
	return lookup(handle, name, __builtin_return_address(0));
}

VKV_PRELOAD_API void *vkv_preload_dlsym_old(void *handle, const char *name)
{
	return lookup(handle, name, __builtin_return_address(0));
}

__asm__(".symver vkv_preload_dlsym, dlsym@@GLIBC_2.34");
__asm__(".symver vkv_preload_dlsym_old, dlsym@GLIBC_2.2.5");
