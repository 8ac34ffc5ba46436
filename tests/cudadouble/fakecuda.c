// SPDX-License-Identifier: MIT
/*
 * fakecuda.c - a CUDA driver test double: our own libcuda.so.1.
 *
 * CI machines have no GPU, yet the cuda backend's logic (granularity,
 * reserve/map/unmap/access ordering, rollback on failure, fences, contexts on
 * every thread) must be exercised there. This library implements the driver
 * calls libvkv uses with host memory behind them, and checks their arguments
 * at least as strictly as the real driver, so that a logic bug in a caller
 * fails here instead of on the first GPU it meets.
 *
 * How it works:
 *   device memory      one memfd (sparse, 2 x VKV_FAKECUDA_MEM); a
 *                      cuMemCreate allocation is a run of granules in it,
 *                      filled with a poison byte (0xCB) because the real
 *                      driver gives no zeroed memory either
 *   cuMemAddressReserve  mmap(PROT_NONE) aligned as asked
 *   cuMemMap           mmap(MAP_FIXED | MAP_SHARED) of the allocation's piece
 *                      of the memfd with no access: one allocation mapped at
 *                      two addresses aliases, as on the GPU
 *   cuMemSetAccess     mprotect
 *   cuMemUnmap         an anonymous PROT_NONE mapping back over the range
 *   device pointers    are host pointers; copies are memcpy after checking
 *                      that the device side is mapped with the access needed
 *   streams, events    always complete (work is done when the call returns)
 *   kernels            cuModuleGetFunction finds a host function the test
 *                      exports (see fakecuda.h); cuLaunchKernel calls it
 *
 * Strictness (each violation returns CUDA_ERROR_INVALID_VALUE unless noted):
 *   - every call but cuDriverGetVersion, cuGetErrorName/String and
 *     cuGetProcAddress before cuInit: CUDA_ERROR_NOT_INITIALIZED
 *   - memory, stream, event, module and copy calls without a current
 *     context (or with a primary context whose last reference was released):
 *     CUDA_ERROR_INVALID_CONTEXT
 *   - sizes, addresses and offsets of VMM calls not multiples of the
 *     granularity; a map outside one reservation, over a mapped page, or
 *     beyond the allocation; an unmap or access change that does not cover
 *     whole mappings exactly; freeing a reservation that still holds
 *     mappings or was not reserved with that size
 *   - cuMemRelease of a handle that is still mapped (the real driver defers
 *     the release until the last unmap; VKV_FAKECUDA_DEFER_RELEASE=1 does
 *     that too, the default treats it as the caller bug it is in libvkv)
 *   - copies and memsets whose device side is not mapped with the access
 *     they need
 *   - unknown stream, event, module or function handles:
 *     CUDA_ERROR_INVALID_HANDLE
 *
 * Environment (read at the first call, again on vkv_fakecuda_reload()):
 *   VKV_FAKECUDA_DEVICES=N         devices (default 1, at most 8); 0 makes
 *                                  cuInit fail with CUDA_ERROR_NO_DEVICE
 *   VKV_FAKECUDA_GRANULARITY=SIZE  allocation granularity (default 2M; a
 *                                  power of two >= 4K; K/M/G suffixes)
 *   VKV_FAKECUDA_MEM=SIZE          device memory (default 8G); cuMemCreate
 *                                  beyond it: CUDA_ERROR_OUT_OF_MEMORY
 *   VKV_FAKECUDA_NO_VMM=1          the device lacks virtual memory
 *                                  management (attribute 0, VMM calls fail
 *                                  with CUDA_ERROR_NOT_SUPPORTED)
 *   VKV_FAKECUDA_DEFER_RELEASE=1   real-driver cuMemRelease semantics
 *   VKV_FAKECUDA_DRIVER_VERSION=N  what cuDriverGetVersion says (default:
 *                                  the cuda.h this was built with)
 *   VKV_FAKECUDA_VERBOSE=1         say on stderr why each call failed
 *   VKV_FAKECUDA_FAIL=SPEC[,SPEC]  fault injection, SPEC being
 *                                  FUNC:N[:every][:ERROR]
 *       fail the Nth call (1-based, counted per process) of driver
 *       function FUNC (its plain name: cuMemCreate, cuMemMap, ...), or with
 *       `every` the Nth and all later ones, returning ERROR: a CUDA_ERROR_*
 *       name or a number, default CUDA_ERROR_OUT_OF_MEMORY. Examples:
 *         VKV_FAKECUDA_FAIL=cuMemCreate:3
 *         VKV_FAKECUDA_FAIL=cuMemMap:2:every:CUDA_ERROR_UNKNOWN
 *         VKV_FAKECUDA_FAIL=cuMemSetAccess:1:1,cuInit:1:999
 *       A failed call changes nothing.
 *
 * Extending: add the function to FK_FUNCS, write it with the
 * fk_enter()/fk_leave() bracket, and cuGetProcAddress hands it out.
 */
#include <cuda.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "fakecuda.h"

#define FK_API __attribute__((visibility("default")))
#define FK_MAX_DEVICES 8
#define FK_HOST_PAGE 4096ULL
#define FK_POISON 0xCB

/* Every driver function the double implements (plain names). */
#define FK_FUNCS(X)                                                           \
	X(cuInit)                                                             \
	X(cuDriverGetVersion)                                                 \
	X(cuGetErrorName)                                                     \
	X(cuGetErrorString)                                                   \
	X(cuGetProcAddress)                                                   \
	X(cuDeviceGet)                                                        \
	X(cuDeviceGetCount)                                                   \
	X(cuDeviceGetName)                                                    \
	X(cuDeviceGetAttribute)                                               \
	X(cuDeviceTotalMem)                                                   \
	X(cuDeviceGetPCIBusId)                                                \
	X(cuDevicePrimaryCtxRetain)                                           \
	X(cuDevicePrimaryCtxRelease)                                          \
	X(cuCtxSetCurrent)                                                    \
	X(cuCtxGetCurrent)                                                    \
	X(cuCtxSynchronize)                                                   \
	X(cuMemGetAllocationGranularity)                                      \
	X(cuMemAddressReserve)                                                \
	X(cuMemAddressFree)                                                   \
	X(cuMemCreate)                                                        \
	X(cuMemRelease)                                                       \
	X(cuMemMap)                                                           \
	X(cuMemUnmap)                                                         \
	X(cuMemSetAccess)                                                     \
	X(cuMemGetInfo)                                                       \
	X(cuMemcpyDtoD)                                                       \
	X(cuMemcpyDtoH)                                                       \
	X(cuMemcpyHtoD)                                                       \
	X(cuMemcpyDtoDAsync)                                                  \
	X(cuMemcpyDtoHAsync)                                                  \
	X(cuMemcpyHtoDAsync)                                                  \
	X(cuMemcpyAsync)                                                      \
	X(cuMemsetD8)                                                         \
	X(cuStreamCreate)                                                     \
	X(cuStreamDestroy)                                                    \
	X(cuStreamSynchronize)                                                \
	X(cuEventCreate)                                                      \
	X(cuEventRecord)                                                      \
	X(cuEventSynchronize)                                                 \
	X(cuEventDestroy)                                                     \
	X(cuEventElapsedTime)                                                 \
	X(cuMemHostRegister)                                                  \
	X(cuMemHostUnregister)                                                \
	X(cuMemAllocHost)                                                     \
	X(cuMemFreeHost)                                                      \
	X(cuModuleLoadData)                                                   \
	X(cuModuleUnload)                                                     \
	X(cuModuleGetFunction)                                                \
	X(cuLaunchKernel)

enum fk_fn {
#define FK_ENUM(fn) FK_##fn,
	FK_FUNCS(FK_ENUM)
#undef FK_ENUM
	FK_COUNT
};

static const char *const fk_names[FK_COUNT] = {
#define FK_NAME(fn) #fn,
	FK_FUNCS(FK_NAME)
#undef FK_NAME
};

/* Error codes by name: what cuGetErrorName knows and VKV_FAKECUDA_FAIL
 * accepts. Kept to codes every CUDA 11+ cuda.h defines. */
#define FK_ERRORS(X)                                                          \
	X(CUDA_SUCCESS, "no error")                                           \
	X(CUDA_ERROR_INVALID_VALUE, "invalid argument")                       \
	X(CUDA_ERROR_OUT_OF_MEMORY, "out of memory")                          \
	X(CUDA_ERROR_NOT_INITIALIZED, "initialization error")                 \
	X(CUDA_ERROR_DEINITIALIZED, "driver shutting down")                   \
	X(CUDA_ERROR_NO_DEVICE, "no CUDA-capable device is detected")         \
	X(CUDA_ERROR_INVALID_DEVICE, "invalid device ordinal")                \
	X(CUDA_ERROR_INVALID_IMAGE, "device kernel image is invalid")         \
	X(CUDA_ERROR_INVALID_CONTEXT, "invalid device context")               \
	X(CUDA_ERROR_MAP_FAILED, "mapping of buffer object failed")           \
	X(CUDA_ERROR_ALREADY_MAPPED, "resource already mapped")               \
	X(CUDA_ERROR_NOT_MAPPED, "resource not mapped")                       \
	X(CUDA_ERROR_ECC_UNCORRECTABLE, "uncorrectable ECC error encountered") \
	X(CUDA_ERROR_INVALID_HANDLE, "invalid resource handle")               \
	X(CUDA_ERROR_NOT_FOUND, "named symbol not found")                     \
	X(CUDA_ERROR_NOT_READY, "device not ready")                           \
	X(CUDA_ERROR_ILLEGAL_ADDRESS, "an illegal memory access was encountered") \
	X(CUDA_ERROR_LAUNCH_FAILED, "unspecified launch failure")             \
	X(CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED,                          \
	  "part or all of the requested memory range is already mapped")      \
	X(CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED,                              \
	  "pointer does not correspond to a registered memory region")        \
	X(CUDA_ERROR_NOT_PERMITTED, "operation not permitted")                \
	X(CUDA_ERROR_NOT_SUPPORTED, "operation not supported")                \
	X(CUDA_ERROR_UNKNOWN, "unknown error")

struct fk_error_name {
	CUresult code;
	const char *name;
	const char *text;
};

static const struct fk_error_name fk_errors[] = {
#define FK_ERR(code, text) { code, #code, text },
	FK_ERRORS(FK_ERR)
#undef FK_ERR
};

/* Handles. The struct tags complete cuda.h's opaque types. */
#define FK_MAGIC_CTX 0x78746366u
#define FK_MAGIC_STREAM 0x6d727473u
#define FK_MAGIC_EVENT 0x746e7665u
#define FK_MAGIC_MODULE 0x646f6d66u
#define FK_MAGIC_FUNC 0x636e7566u

struct CUctx_st {
	uint32_t magic;
	int dev;
};

struct CUstream_st {
	uint32_t magic;
	unsigned flags;
};

struct CUevent_st {
	uint32_t magic;
	unsigned flags;
	bool recorded;
	struct timespec when;
};

struct CUfunc_st {
	uint32_t magic;
	vkv_fakecuda_kernel_fn fn;
	struct CUfunc_st *next; /* the module's list */
};

struct CUmod_st {
	uint32_t magic;
	struct CUfunc_st *funcs;
};

/* A physical allocation: granules [first, first + count) of the memfd. */
struct fk_alloc {
	bool live;
	bool release_pending; /* released while mapped (DEFER_RELEASE) */
	uint32_t gen;         /* bumps on release: stale handles fail */
	uint64_t first;       /* granule index */
	uint64_t size;        /* bytes */
	uint64_t maps;        /* live mappings of it */
};

struct fk_range {
	uint64_t va;
	uint64_t size;
};

/* A mapping made by cuMemMap; kept sorted by va. */
struct fk_map {
	uint64_t va;
	uint64_t size;
	uint32_t alloc; /* index in allocs */
	int prot;       /* PROT_* set by cuMemSetAccess */
};

/* A growable array of T. */
#define FK_VEC(T)          \
	struct {           \
		T *v;      \
		size_t n;  \
		size_t cap; \
	}

struct fk_config {
	int devices;
	uint64_t granularity;
	uint64_t mem;
	bool no_vmm;
	bool defer_release;
	bool verbose;
	int driver_version;
};

struct fk_fault {
	bool armed;
	bool every;
	unsigned long nth;
	CUresult code;
};

/* All state, under fk_lock. */
static pthread_mutex_t fk_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t fk_once = PTHREAD_ONCE_INIT;
static struct fk_config cfg;
static struct fk_fault faults[FK_COUNT];
static unsigned long calls[FK_COUNT];
static uint64_t faults_fired;
static bool initialized;                /* cuInit succeeded */
static struct CUctx_st ctxs[FK_MAX_DEVICES];
static uint64_t primary_refs[FK_MAX_DEVICES];
static int memfd = -1;
static uint8_t *granule_used;           /* one byte per granule of memfd */
static uint64_t ngranules;
static uint64_t granule_hint;           /* next-fit start */
static uint64_t mem_used;
static FK_VEC(struct fk_alloc) allocs;
static FK_VEC(struct fk_range) resvs;
static FK_VEC(struct fk_map) maps;
static FK_VEC(struct fk_range) host_allocs;
static FK_VEC(struct fk_range) host_regs;
static FK_VEC(struct CUstream_st *) streams;
static FK_VEC(struct CUevent_st *) events;
static FK_VEC(struct CUmod_st *) modules;

static __thread struct CUctx_st *cur_ctx;

#define FK_PUSH(vec, item)                                                    \
	(((vec).n < (vec).cap || fk_grow((void **)&(vec).v, &(vec).cap,       \
					 sizeof(*(vec).v))) ?                 \
		 ((vec).v[(vec).n++] = (item), true) :                        \
		 false)

#define FK_REMOVE(vec, i)                                                     \
	memmove(&(vec).v[i], &(vec).v[(i) + 1],                               \
		((vec).n - (i)-1) * sizeof(*(vec).v)),                        \
		(vec).n--

static bool fk_grow(void **v, size_t *cap, size_t elem)
{
	size_t ncap = *cap ? *cap * 2 : 16;
	void *n = realloc(*v, ncap * elem);

	if (!n)
		return false;
	*v = n;
	*cap = ncap;
	return true;
}

/* ------------------------------------------------------------ configuration */

static void fk_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fk_log(const char *fmt, ...)
{
	va_list ap;

	if (!cfg.verbose)
		return;
	va_start(ap, fmt);
	fputs("fakecuda: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

static CUresult fk_bad(CUresult res, const char *call, const char *why)
{
	fk_log("%s: %d: %s", call, (int)res, why);
	return res;
}

static bool parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (!s || !*s)
		return false;
	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s)
		return false;
	switch (*end) {
	case 'k': case 'K': v <<= 10; end++; break;
	case 'm': case 'M': v <<= 20; end++; break;
	case 'g': case 'G': v <<= 30; end++; break;
	default: break;
	}
	if (*end == 'i' || *end == 'B')
		end += (*end == 'i' && end[1] == 'B') ? 2 : 1;
	if (*end)
		return false;
	*out = v;
	return true;
}

static uint64_t env_size(const char *name, uint64_t def)
{
	const char *s = getenv(name);
	uint64_t v;

	if (!s || !*s)
		return def;
	if (!parse_size(s, &v)) {
		fprintf(stderr, "fakecuda: warning: %s=%s is not a size; using %llu\n",
			name, s, (unsigned long long)def);
		return def;
	}
	return v;
}

static bool env_flag(const char *name)
{
	const char *s = getenv(name);

	return s && *s && strcmp(s, "0") != 0;
}

static bool parse_error(const char *s, CUresult *out)
{
	char *end;
	long v;

	for (size_t i = 0; i < sizeof(fk_errors) / sizeof(fk_errors[0]); i++) {
		if (!strcmp(s, fk_errors[i].name)) {
			*out = fk_errors[i].code;
			return true;
		}
	}
	v = strtol(s, &end, 0);
	if (end == s || *end || v <= 0)
		return false;
	*out = (CUresult)v;
	return true;
}

/* One SPEC of VKV_FAKECUDA_FAIL: FUNC:N[:every][:ERROR]. */
static void parse_fault(char *spec)
{
	char *save = NULL, *tok;
	struct fk_fault f = { .armed = true, .code = CUDA_ERROR_OUT_OF_MEMORY };
	int fn = -1;

	tok = strtok_r(spec, ":", &save);
	for (int i = 0; tok && i < FK_COUNT; i++)
		if (!strcmp(tok, fk_names[i]))
			fn = i;
	if (fn < 0)
		goto bad;
	tok = strtok_r(NULL, ":", &save);
	if (!tok || (f.nth = strtoul(tok, NULL, 10)) == 0)
		goto bad;
	while ((tok = strtok_r(NULL, ":", &save))) {
		if (!strcmp(tok, "every"))
			f.every = true;
		else if (!parse_error(tok, &f.code))
			goto bad;
	}
	faults[fn] = f;
	return;
bad:
	fprintf(stderr, "fakecuda: warning: ignoring bad VKV_FAKECUDA_FAIL entry (FUNC:N[:every][:ERROR])\n");
}

static void load_faults(void)
{
	const char *s = getenv("VKV_FAKECUDA_FAIL");
	char *copy, *save = NULL, *spec;

	memset(faults, 0, sizeof(faults));
	memset(calls, 0, sizeof(calls));
	if (!s || !*s)
		return;
	copy = strdup(s);
	if (!copy)
		return;
	for (spec = strtok_r(copy, ", ", &save); spec;
	     spec = strtok_r(NULL, ", ", &save))
		parse_fault(spec);
	free(copy);
}

static void load_geometry(void)
{
	uint64_t g = env_size("VKV_FAKECUDA_GRANULARITY", 2ULL << 20);
	uint64_t d = env_size("VKV_FAKECUDA_DEVICES", 1);
	const char *v = getenv("VKV_FAKECUDA_DRIVER_VERSION");

	if (g < FK_HOST_PAGE || (g & (g - 1))) {
		fprintf(stderr, "fakecuda: warning: granularity %llu is not a power of two >= 4K; using 2M\n",
			(unsigned long long)g);
		g = 2ULL << 20;
	}
	cfg.granularity = g;
	cfg.devices = d > FK_MAX_DEVICES ? FK_MAX_DEVICES : (int)d;
	cfg.mem = env_size("VKV_FAKECUDA_MEM", 8ULL << 30) / g * g;
	cfg.no_vmm = env_flag("VKV_FAKECUDA_NO_VMM");
	cfg.driver_version = v && *v ? atoi(v) : CUDA_VERSION;
	for (int i = 0; i < FK_MAX_DEVICES; i++)
		ctxs[i] = (struct CUctx_st){ FK_MAGIC_CTX, i };
	if (memfd >= 0) {
		close(memfd);
		memfd = -1;
	}
	free(granule_used);
	granule_used = NULL;
	ngranules = granule_hint = 0;
}

static void load_config(void)
{
	load_geometry();
	cfg.defer_release = env_flag("VKV_FAKECUDA_DEFER_RELEASE");
	cfg.verbose = env_flag("VKV_FAKECUDA_VERBOSE");
	load_faults();
}

/* --------------------------------------------------------- entry and exit */

enum fk_need { FK_NEED_NOTHING, FK_NEED_INIT, FK_NEED_CTX };

static bool ctx_usable(void)
{
	return cur_ctx && primary_refs[cur_ctx->dev] > 0;
}

/*
 * Start a call: take the lock, count it, check what it needs and fire an
 * injected failure. On CUDA_SUCCESS the caller holds fk_lock and must call
 * fk_leave(); on anything else the lock is already dropped.
 */
static CUresult fk_enter(enum fk_fn fn, enum fk_need need)
{
	struct fk_fault *f = &faults[fn];
	CUresult res = CUDA_SUCCESS;
	unsigned long n;

	pthread_once(&fk_once, load_config);
	pthread_mutex_lock(&fk_lock);
	n = ++calls[fn];
	if (need >= FK_NEED_INIT && !initialized)
		res = fk_bad(CUDA_ERROR_NOT_INITIALIZED, fk_names[fn],
			     "cuInit has not succeeded");
	else if (need >= FK_NEED_CTX && !ctx_usable())
		res = fk_bad(CUDA_ERROR_INVALID_CONTEXT, fk_names[fn],
			     "no current context on this thread");
	else if (f->armed && (n == f->nth || (f->every && n > f->nth))) {
		faults_fired++;
		res = fk_bad(f->code, fk_names[fn], "injected failure");
	}
	if (res != CUDA_SUCCESS)
		pthread_mutex_unlock(&fk_lock);
	return res;
}

static CUresult fk_leave(CUresult res)
{
	pthread_mutex_unlock(&fk_lock);
	return res;
}

/* --------------------------------------------------------- init, devices */

FK_API CUresult cuInit(unsigned int flags)
{
	CUresult res = fk_enter(FK_cuInit, FK_NEED_NOTHING);

	if (res)
		return res;
	if (flags)
		res = fk_bad(CUDA_ERROR_INVALID_VALUE, "cuInit", "flags must be 0");
	else if (cfg.devices == 0)
		res = fk_bad(CUDA_ERROR_NO_DEVICE, "cuInit", "no devices");
	else
		initialized = true;
	return fk_leave(res);
}

FK_API CUresult cuDriverGetVersion(int *version)
{
	CUresult res = fk_enter(FK_cuDriverGetVersion, FK_NEED_NOTHING);

	if (res)
		return res;
	if (!version)
		return fk_leave(CUDA_ERROR_INVALID_VALUE);
	*version = cfg.driver_version;
	return fk_leave(CUDA_SUCCESS);
}

FK_API CUresult cuGetErrorName(CUresult error, const char **str)
{
	for (size_t i = 0; i < sizeof(fk_errors) / sizeof(fk_errors[0]); i++) {
		if (fk_errors[i].code == error) {
			*str = fk_errors[i].name;
			return CUDA_SUCCESS;
		}
	}
	*str = NULL;
	return CUDA_ERROR_INVALID_VALUE;
}

FK_API CUresult cuGetErrorString(CUresult error, const char **str)
{
	for (size_t i = 0; i < sizeof(fk_errors) / sizeof(fk_errors[0]); i++) {
		if (fk_errors[i].code == error) {
			*str = fk_errors[i].text;
			return CUDA_SUCCESS;
		}
	}
	*str = NULL;
	return CUDA_ERROR_INVALID_VALUE;
}

static CUresult check_dev(CUdevice dev, const char *call)
{
	if (dev < 0 || dev >= cfg.devices)
		return fk_bad(CUDA_ERROR_INVALID_DEVICE, call, "no such device");
	return CUDA_SUCCESS;
}

FK_API CUresult cuDeviceGet(CUdevice *dev, int ordinal)
{
	CUresult res = fk_enter(FK_cuDeviceGet, FK_NEED_INIT);

	if (res)
		return res;
	if (!dev)
		return fk_leave(CUDA_ERROR_INVALID_VALUE);
	res = check_dev(ordinal, "cuDeviceGet");
	if (!res)
		*dev = ordinal;
	return fk_leave(res);
}

FK_API CUresult cuDeviceGetCount(int *count)
{
	CUresult res = fk_enter(FK_cuDeviceGetCount, FK_NEED_INIT);

	if (res)
		return res;
	if (!count)
		return fk_leave(CUDA_ERROR_INVALID_VALUE);
	*count = cfg.devices;
	return fk_leave(CUDA_SUCCESS);
}

FK_API CUresult cuDeviceGetName(char *name, int len, CUdevice dev)
{
	CUresult res = fk_enter(FK_cuDeviceGetName, FK_NEED_INIT);

	if (res)
		return res;
	if (!name || len <= 0)
		return fk_leave(CUDA_ERROR_INVALID_VALUE);
	res = check_dev(dev, "cuDeviceGetName");
	if (!res)
		snprintf(name, (size_t)len, "vkv fake GPU %d", dev);
	return fk_leave(res);
}

static int attribute(CUdevice_attribute attr, CUdevice dev)
{
	switch (attr) {
	case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: return 9;
	case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: return 0;
	case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: return 132;
	case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: return 1024;
	case CU_DEVICE_ATTRIBUTE_WARP_SIZE: return 32;
	case CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING: return 1;
	case CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY: return 1;
	case CU_DEVICE_ATTRIBUTE_PCI_BUS_ID: return 0x10 + dev;
	case CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED:
		return !cfg.no_vmm;
	case CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED:
		return !cfg.no_vmm;
	default: return 0;
	}
}

FK_API CUresult cuDeviceGetAttribute(int *value, CUdevice_attribute attr,
				     CUdevice dev)
{
	CUresult res = fk_enter(FK_cuDeviceGetAttribute, FK_NEED_INIT);

	if (res)
		return res;
	if (!value || attr <= 0 || attr >= CU_DEVICE_ATTRIBUTE_MAX)
		return fk_leave(fk_bad(CUDA_ERROR_INVALID_VALUE,
				       "cuDeviceGetAttribute", "bad attribute"));
	res = check_dev(dev, "cuDeviceGetAttribute");
	if (!res)
		*value = attribute(attr, dev);
	return fk_leave(res);
}

FK_API CUresult cuDeviceTotalMem(size_t *bytes, CUdevice dev)
{
	CUresult res = fk_enter(FK_cuDeviceTotalMem, FK_NEED_INIT);

	if (res)
		return res;
	if (!bytes)
		return fk_leave(CUDA_ERROR_INVALID_VALUE);
	res = check_dev(dev, "cuDeviceTotalMem");
	if (!res)
		*bytes = cfg.mem;
	return fk_leave(res);
}

FK_API CUresult cuDeviceGetPCIBusId(char *bus_id, int len, CUdevice dev)
{
	CUresult res = fk_enter(FK_cuDeviceGetPCIBusId, FK_NEED_INIT);

	if (res)
		return res;
	if (!bus_id || len <= 0)
		return fk_leave(CUDA_ERROR_INVALID_VALUE);
	res = check_dev(dev, "cuDeviceGetPCIBusId");
	if (!res)
		snprintf(bus_id, (size_t)len, "0000:%02x:00.0", 0x10 + dev);
	return fk_leave(res);
}

/* ---------------------------------------------------------------- contexts */

FK_API CUresult cuDevicePrimaryCtxRetain(CUcontext *ctx, CUdevice dev)
{
	CUresult res = fk_enter(FK_cuDevicePrimaryCtxRetain, FK_NEED_INIT);

	if (res)
		return res;
	if (!ctx)
		return fk_leave(CUDA_ERROR_INVALID_VALUE);
	res = check_dev(dev, "cuDevicePrimaryCtxRetain");
	if (!res) {
		primary_refs[dev]++;
		*ctx = &ctxs[dev];
	}
	return fk_leave(res);
}

FK_API CUresult cuDevicePrimaryCtxRelease(CUdevice dev)
{
	CUresult res = fk_enter(FK_cuDevicePrimaryCtxRelease, FK_NEED_INIT);

	if (res)
		return res;
	res = check_dev(dev, "cuDevicePrimaryCtxRelease");
	if (!res && primary_refs[dev] == 0)
		res = fk_bad(CUDA_ERROR_INVALID_CONTEXT,
			     "cuDevicePrimaryCtxRelease", "not retained");
	if (!res)
		primary_refs[dev]--;
	return fk_leave(res);
}

static bool is_ctx(CUcontext ctx)
{
	for (int i = 0; i < cfg.devices; i++)
		if (ctx == &ctxs[i])
			return true;
	return false;
}

FK_API CUresult cuCtxSetCurrent(CUcontext ctx)
{
	CUresult res = fk_enter(FK_cuCtxSetCurrent, FK_NEED_INIT);

	if (res)
		return res;
	if (ctx && !is_ctx(ctx))
		return fk_leave(fk_bad(CUDA_ERROR_INVALID_CONTEXT,
				       "cuCtxSetCurrent", "unknown context"));
	cur_ctx = ctx;
	return fk_leave(CUDA_SUCCESS);
}

FK_API CUresult cuCtxGetCurrent(CUcontext *ctx)
{
	CUresult res = fk_enter(FK_cuCtxGetCurrent, FK_NEED_INIT);

	if (res)
		return res;
	if (!ctx)
		return fk_leave(CUDA_ERROR_INVALID_VALUE);
	*ctx = cur_ctx;
	return fk_leave(CUDA_SUCCESS);
}

FK_API CUresult cuCtxSynchronize(void)
{
	CUresult res = fk_enter(FK_cuCtxSynchronize, FK_NEED_CTX);

	return res ? res : fk_leave(CUDA_SUCCESS);
}

/*
 * The ABI that a CUDA 13 driver's cuGetProcAddress("cuCtxSynchronize",
 * version >= 13000) hands out: it takes the context (NULL: the current
 * one). A caller that declares it as cuda.h's cuCtxSynchronize(void)
 * passes garbage, which the real driver answers with
 * CUDA_ERROR_CONTEXT_IS_DESTROYED; so does this.
 */
static CUresult fk_ctx_synchronize_v13000(CUcontext ctx)
{
	CUresult res = fk_enter(FK_cuCtxSynchronize, FK_NEED_INIT);

	if (res)
		return res;
	if (ctx && !is_ctx(ctx))
		return fk_leave(fk_bad(CUDA_ERROR_CONTEXT_IS_DESTROYED,
				       "cuCtxSynchronize_v2", "not a context"));
	if (!ctx && !cur_ctx)
		return fk_leave(CUDA_ERROR_INVALID_CONTEXT);
	return fk_leave(CUDA_SUCCESS);
}

/* ----------------------------------------------------- physical allocations */

static CUresult check_prop(const CUmemAllocationProp *prop, const char *call)
{
	if (!prop)
		return fk_bad(CUDA_ERROR_INVALID_VALUE, call, "prop is NULL");
	if (prop->type != CU_MEM_ALLOCATION_TYPE_PINNED)
		return fk_bad(CUDA_ERROR_INVALID_VALUE, call, "type is not PINNED");
	if (prop->location.type != CU_MEM_LOCATION_TYPE_DEVICE ||
	    prop->location.id < 0 || prop->location.id >= cfg.devices)
		return fk_bad(CUDA_ERROR_INVALID_DEVICE, call,
			      "location is not a device of ours");
	if (cfg.no_vmm)
		return fk_bad(CUDA_ERROR_NOT_SUPPORTED, call, "no VMM support");
	return CUDA_SUCCESS;
}

FK_API CUresult cuMemGetAllocationGranularity(size_t *granularity,
					      const CUmemAllocationProp *prop,
					      CUmemAllocationGranularity_flags option)
{
	CUresult res = fk_enter(FK_cuMemGetAllocationGranularity, FK_NEED_INIT);

	if (res)
		return res;
	if (!granularity || (option != CU_MEM_ALLOC_GRANULARITY_MINIMUM &&
			     option != CU_MEM_ALLOC_GRANULARITY_RECOMMENDED))
		return fk_leave(CUDA_ERROR_INVALID_VALUE);
	res = check_prop(prop, "cuMemGetAllocationGranularity");
	if (!res)
		*granularity = cfg.granularity;
	return fk_leave(res);
}

static bool gran_aligned(uint64_t v)
{
	return (v & (cfg.granularity - 1)) == 0;
}

/* The memfd and its granule map, created on first use. */
static CUresult ensure_memfd(void)
{
	uint64_t file = cfg.mem * 2;

	if (memfd >= 0)
		return CUDA_SUCCESS;
	ngranules = file / cfg.granularity;
	granule_used = calloc(ngranules ? ngranules : 1, 1);
	memfd = memfd_create("fakecuda-vram", MFD_CLOEXEC);
	if (!granule_used || memfd < 0 || ftruncate(memfd, (off_t)file) != 0) {
		free(granule_used);
		granule_used = NULL;
		if (memfd >= 0)
			close(memfd);
		memfd = -1;
		return fk_bad(CUDA_ERROR_OUT_OF_MEMORY, "cuMemCreate",
			      "host memfd unavailable");
	}
	return CUDA_SUCCESS;
}

/* Next-fit search for `count` free granules; UINT64_MAX when none. */
static uint64_t find_granules(uint64_t count)
{
	for (uint64_t pass = 0; pass < 2; pass++) {
		uint64_t start = pass ? 0 : granule_hint;
		uint64_t run = 0;

		for (uint64_t i = start; i < ngranules; i++) {
			run = granule_used[i] ? 0 : run + 1;
			if (run == count)
				return i + 1 - count;
		}
	}
	return UINT64_MAX;
}

static void poison(uint64_t off, uint64_t size)
{
	void *p = mmap(NULL, size, PROT_WRITE, MAP_SHARED, memfd, (off_t)off);

	if (p == MAP_FAILED)
		return;
	memset(p, FK_POISON, size);
	munmap(p, size);
}

static CUmemGenericAllocationHandle handle_of(uint32_t idx)
{
	return ((uint64_t)allocs.v[idx].gen << 32) | (idx + 1);
}

static struct fk_alloc *alloc_of(CUmemGenericAllocationHandle h, uint32_t *idx)
{
	uint64_t i = (h & 0xffffffffu) - 1;

	if ((h & 0xffffffffu) == 0 || i >= allocs.n || !allocs.v[i].live ||
	    allocs.v[i].release_pending || allocs.v[i].gen != (uint32_t)(h >> 32))
		return NULL;
	if (idx)
		*idx = (uint32_t)i;
	return &allocs.v[i];
}

static uint32_t free_alloc_slot(void)
{
	for (uint32_t i = 0; i < allocs.n; i++)
		if (!allocs.v[i].live)
			return i;
	return UINT32_MAX;
}

FK_API CUresult cuMemCreate(CUmemGenericAllocationHandle *handle, size_t size,
			    const CUmemAllocationProp *prop,
			    unsigned long long flags)
{
	CUresult res = fk_enter(FK_cuMemCreate, FK_NEED_CTX);
	uint64_t first, count;
	uint32_t idx;

	if (res)
		return res;
	res = check_prop(prop, "cuMemCreate");
	if (res)
		return fk_leave(res);
	if (!handle || size == 0 || !gran_aligned(size) || flags)
		return fk_leave(fk_bad(CUDA_ERROR_INVALID_VALUE, "cuMemCreate",
				       "size not a multiple of the granularity, or flags"));
	if (mem_used + size > cfg.mem)
		return fk_leave(fk_bad(CUDA_ERROR_OUT_OF_MEMORY, "cuMemCreate",
				       "device memory exhausted"));
	res = ensure_memfd();
	if (res)
		return fk_leave(res);
	count = size / cfg.granularity;
	first = find_granules(count);
	if (first == UINT64_MAX)
		return fk_leave(fk_bad(CUDA_ERROR_OUT_OF_MEMORY, "cuMemCreate",
				       "device memory fragmented"));
	idx = free_alloc_slot();
	if (idx == UINT32_MAX) {
		if (!FK_PUSH(allocs, ((struct fk_alloc){ 0 })))
			return fk_leave(CUDA_ERROR_OUT_OF_MEMORY);
		idx = (uint32_t)allocs.n - 1;
	}
	memset(granule_used + first, 1, count);
	granule_hint = first + count;
	mem_used += size;
	allocs.v[idx] = (struct fk_alloc){ .live = true,
					   .gen = allocs.v[idx].gen,
					   .first = first,
					   .size = size };
	poison(first * cfg.granularity, size);
	*handle = handle_of(idx);
	return fk_leave(CUDA_SUCCESS);
}

static void free_alloc(struct fk_alloc *a)
{
	uint64_t off = a->first * cfg.granularity;

	fallocate(memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
		  (off_t)a->size);
	memset(granule_used + a->first, 0, a->size / cfg.granularity);
	mem_used -= a->size;
	a->live = false;
	a->release_pending = false;
	a->gen++;
}

FK_API CUresult cuMemRelease(CUmemGenericAllocationHandle handle)
{
	CUresult res = fk_enter(FK_cuMemRelease, FK_NEED_CTX);
	struct fk_alloc *a;

	if (res)
		return res;
	a = alloc_of(handle, NULL);
	if (!a)
		return fk_leave(fk_bad(CUDA_ERROR_INVALID_VALUE, "cuMemRelease",
				       "unknown or released handle"));
	if (a->maps && !cfg.defer_release)
		return fk_leave(fk_bad(CUDA_ERROR_INVALID_VALUE, "cuMemRelease",
				       "handle is still mapped"));
	if (a->maps)
		a->release_pending = true;
	else
		free_alloc(a);
	return fk_leave(CUDA_SUCCESS);
}

/* ------------------------------------------------------ virtual addresses */

/* Index of the reservation holding [va, va + size), or -1. */
static long resv_holding(uint64_t va, uint64_t size)
{
	for (size_t i = 0; i < resvs.n; i++) {
		struct fk_range *r = &resvs.v[i];

		if (va >= r->va && size <= r->size && va - r->va <= r->size - size)
			return (long)i;
	}
	return -1;
}

FK_API CUresult cuMemAddressReserve(CUdeviceptr *ptr, size_t size,
				    size_t alignment, CUdeviceptr addr,
				    unsigned long long flags)
{
	CUresult res = fk_enter(FK_cuMemAddressReserve, FK_NEED_CTX);
	uint64_t align, span;
	uint8_t *p, *start;

	(void)addr; /* only a hint */
	if (res)
		return res;
	if (cfg.no_vmm)
		return fk_leave(fk_bad(CUDA_ERROR_NOT_SUPPORTED,
				       "cuMemAddressReserve", "no VMM support"));
	if (!ptr || size == 0 || !gran_aligned(size) || flags ||
	    (alignment & (alignment - 1)))
		return fk_leave(fk_bad(CUDA_ERROR_INVALID_VALUE,
				       "cuMemAddressReserve",
				       "size not a multiple of the granularity, bad alignment or flags"));
	align = alignment > cfg.granularity ? alignment : cfg.granularity;
	if (__builtin_add_overflow(size, align, &span))
		return fk_leave(CUDA_ERROR_OUT_OF_MEMORY);
	p = mmap(NULL, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		 -1, 0);
	if (p == MAP_FAILED)
		return fk_leave(fk_bad(CUDA_ERROR_OUT_OF_MEMORY,
				       "cuMemAddressReserve", "mmap failed"));
	start = (uint8_t *)(((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1));
	if (start > p)
		munmap(p, (size_t)(start - p));
	if (start + size < p + span)
		munmap(start + size, (size_t)(p + span - (start + size)));
	if (!FK_PUSH(resvs, ((struct fk_range){ (uintptr_t)start, size }))) {
		munmap(start, size);
		return fk_leave(CUDA_ERROR_OUT_OF_MEMORY);
	}
	*ptr = (CUdeviceptr)(uintptr_t)start;
	return fk_leave(CUDA_SUCCESS);
}

/* First mapping whose end is above va (maps are sorted and disjoint). */
static size_t map_at_or_after(uint64_t va)
{
	size_t lo = 0, hi = maps.n;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (maps.v[mid].va + maps.v[mid].size <= va)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static bool overlaps_mapping(uint64_t va, uint64_t size)
{
	size_t i = map_at_or_after(va);

	return i < maps.n && maps.v[i].va < va + size;
}

/* The mappings [*first, *last) tile [va, va + size) exactly. */
static bool whole_mappings(uint64_t va, uint64_t size, size_t *first,
			   size_t *last)
{
	size_t i = map_at_or_after(va);
	uint64_t cur = va;

	*first = i;
	while (cur < va + size) {
		if (i >= maps.n || maps.v[i].va != cur ||
		    maps.v[i].size > va + size - cur)
			return false;
		cur += maps.v[i].size;
		i++;
	}
	*last = i;
	return size > 0;
}

FK_API CUresult cuMemAddressFree(CUdeviceptr ptr, size_t size)
{
	CUresult res = fk_enter(FK_cuMemAddressFree, FK_NEED_CTX);
	long r;

	if (res)
		return res;
	r = resv_holding(ptr, size);
	if (r < 0 || resvs.v[r].va != ptr || resvs.v[r].size != size)
		return fk_leave(fk_bad(CUDA_ERROR_INVALID_VALUE, "cuMemAddressFree",
				       "not a reservation of this size"));
	if (overlaps_mapping(ptr, size))
		return fk_leave(fk_bad(CUDA_ERROR_INVALID_VALUE, "cuMemAddressFree",
				       "reservation still holds mappings"));
	munmap((void *)(uintptr_t)ptr, size);
	FK_REMOVE(resvs, (size_t)r);
	return fk_leave(CUDA_SUCCESS);
}

FK_API CUresult cuMemMap(CUdeviceptr ptr, size_t size, size_t offset,
			 CUmemGenericAllocationHandle handle,
			 unsigned long long flags)
{
	CUresult res = fk_enter(FK_cuMemMap, FK_NEED_CTX);
	struct fk_map m = { .va = ptr, .size = size, .prot = PROT_NONE };
	struct fk_alloc *a;
	size_t at;
	void *p;

	if (res)
		return res;
	a = alloc_of(handle, &m.alloc);
	if (!a)
		return fk_leave(fk_bad(CUDA_ERROR_INVALID_VALUE, "cuMemMap",
				       "unknown or released handle"));
	if (size == 0 || !gran_aligned(ptr) || !gran_aligned(size) ||
	    !gran_aligned(offset) || flags || offset > a->size ||
	    size > a->size - offset)
		return fk_leave(fk_bad(CUDA_ERROR_INVALID_VALUE, "cuMemMap",
				       "unaligned, beyond the allocation, or flags"));
	if (resv_holding(ptr, size) < 0)
		return fk_leave(fk_bad(CUDA_ERROR_INVALID_VALUE, "cuMemMap",
				       "range is not inside one reservation"));
	if (overlaps_mapping(ptr, size))
		return fk_leave(fk_bad(CUDA_ERROR_INVALID_VALUE, "cuMemMap",
				       "range is already mapped"));
	at = map_at_or_after(ptr);
	if (maps.n == maps.cap &&
	    !fk_grow((void **)&maps.v, &maps.cap, sizeof(*maps.v)))
		return fk_leave(CUDA_ERROR_OUT_OF_MEMORY);
	p = mmap((void *)(uintptr_t)ptr, size, PROT_NONE, MAP_SHARED | MAP_FIXED,
		 memfd, (off_t)(a->first * cfg.granularity + offset));
	if (p == MAP_FAILED)
		return fk_leave(fk_bad(CUDA_ERROR_OUT_OF_MEMORY, "cuMemMap",
				       "mmap failed"));
	memmove(&maps.v[at + 1], &maps.v[at], (maps.n - at) * sizeof(*maps.v));
	maps.v[at] = m;
	maps.n++;
	a->maps++;
	return fk_leave(CUDA_SUCCESS);
}

FK_API CUresult cuMemUnmap(CUdeviceptr ptr, size_t size)
{
	CUresult res = fk_enter(FK_cuMemUnmap, FK_NEED_CTX);
	size_t first, last;
	void *p;

	if (res)
		return res;
	if (!gran_aligned(ptr) || !gran_aligned(size) ||
	    !whole_mappings(ptr, size, &first, &last))
		return fk_leave(fk_bad(CUDA_ERROR_INVALID_VALUE, "cuMemUnmap",
				       "range is not made of whole mappings"));
	p = mmap((void *)(uintptr_t)ptr, size, PROT_NONE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return fk_leave(fk_bad(CUDA_ERROR_UNKNOWN, "cuMemUnmap",
				       "mmap failed"));
	for (size_t i = first; i < last; i++) {
		struct fk_alloc *a = &allocs.v[maps.v[i].alloc];

		if (--a->maps == 0 && a->release_pending)
			free_alloc(a);
	}
	memmove(&maps.v[first], &maps.v[last], (maps.n - last) * sizeof(*maps.v));
	maps.n -= last - first;
	return fk_leave(CUDA_SUCCESS);
}

static int prot_of(CUmemAccess_flags flags)
{
	switch (flags) {
	case CU_MEM_ACCESS_FLAGS_PROT_NONE: return PROT_NONE;
	case CU_MEM_ACCESS_FLAGS_PROT_READ: return PROT_READ;
	case CU_MEM_ACCESS_FLAGS_PROT_READWRITE: return PROT_READ | PROT_WRITE;
	default: return -1;
	}
}

FK_API CUresult cuMemSetAccess(CUdeviceptr ptr, size_t size,
			       const CUmemAccessDesc *desc, size_t count)
{
	CUresult res = fk_enter(FK_cuMemSetAccess, FK_NEED_CTX);
	size_t first, last;
	int prot = PROT_NONE;

	if (res)
		return res;
	if (!desc || count == 0)
		return fk_leave(fk_bad(CUDA_ERROR_INVALID_VALUE, "cuMemSetAccess",
				       "no descriptors"));
	for (size_t i = 0; i < count; i++) {
		int p = prot_of(desc[i].flags);

		if (desc[i].location.type != CU_MEM_LOCATION_TYPE_DEVICE ||
		    desc[i].location.id < 0 || desc[i].location.id >= cfg.devices ||
		    p < 0)
			return fk_leave(fk_bad(CUDA_ERROR_INVALID_VALUE,
					       "cuMemSetAccess", "bad descriptor"));
		prot |= p;
	}
	if (!gran_aligned(ptr) || !gran_aligned(size) ||
	    !whole_mappings(ptr, size, &first, &last))
		return fk_leave(fk_bad(CUDA_ERROR_INVALID_VALUE, "cuMemSetAccess",
				       "range is not made of whole mappings"));
	if (mprotect((void *)(uintptr_t)ptr, size, prot) != 0)
		return fk_leave(fk_bad(CUDA_ERROR_UNKNOWN, "cuMemSetAccess",
				       "mprotect failed"));
	for (size_t i = first; i < last; i++)
		maps.v[i].prot = prot;
	return fk_leave(CUDA_SUCCESS);
}

FK_API CUresult cuMemGetInfo(size_t *free_bytes, size_t *total)
{
	CUresult res = fk_enter(FK_cuMemGetInfo, FK_NEED_CTX);

	if (res)
		return res;
	if (!free_bytes || !total)
		return fk_leave(CUDA_ERROR_INVALID_VALUE);
	*free_bytes = cfg.mem - mem_used;
	*total = cfg.mem;
	return fk_leave(CUDA_SUCCESS);
}

/* ------------------------------------------------------------------ copies */

static bool in_ranges(const struct fk_range *v, size_t n, uint64_t p,
		      uint64_t size)
{
	for (size_t i = 0; i < n; i++)
		if (p >= v[i].va && size <= v[i].size &&
		    p - v[i].va <= v[i].size - size)
			return true;
	return false;
}

/* Is [p, p + size) inside some reservation? (else: host memory, for UVA) */
static bool is_device_va(uint64_t p, uint64_t size)
{
	for (size_t i = 0; i < resvs.n; i++)
		if (p < resvs.v[i].va + resvs.v[i].size && p + size > resvs.v[i].va)
			return true;
	return false;
}

/*
 * Device memory [p, p + size) may be accessed with `prot`: every byte is
 * mapped with at least that access. Pinned host memory is device
 * accessible too (unified addressing).
 */
static CUresult check_device(uint64_t p, uint64_t size, int prot,
			     const char *call)
{
	uint64_t cur = p;
	size_t i;

	if (size == 0)
		return CUDA_SUCCESS;
	if (p + size < p)
		return fk_bad(CUDA_ERROR_INVALID_VALUE, call, "range wraps");
	if (in_ranges(host_allocs.v, host_allocs.n, p, size) ||
	    in_ranges(host_regs.v, host_regs.n, p, size))
		return CUDA_SUCCESS;
	if (resv_holding(p, size) < 0)
		return fk_bad(CUDA_ERROR_INVALID_VALUE, call,
			      "not device memory (outside every reservation)");
	for (i = map_at_or_after(p); cur < p + size; i++) {
		if (i >= maps.n || maps.v[i].va > cur)
			return fk_bad(CUDA_ERROR_INVALID_VALUE, call,
				      "touches an unmapped page");
		if ((maps.v[i].prot & prot) != prot)
			return fk_bad(CUDA_ERROR_INVALID_VALUE, call,
				      "touches a page without that access");
		cur = maps.v[i].va + maps.v[i].size;
	}
	return CUDA_SUCCESS;
}

static CUresult check_stream(CUstream s, const char *call)
{
	if (s == NULL || s == CU_STREAM_LEGACY || s == CU_STREAM_PER_THREAD)
		return CUDA_SUCCESS;
	for (size_t i = 0; i < streams.n; i++)
		if (streams.v[i] == s)
			return CUDA_SUCCESS;
	return fk_bad(CUDA_ERROR_INVALID_HANDLE, call, "unknown stream");
}

/* The common body of every copy: check both sides, then copy. */
static CUresult copy(enum fk_fn fn, uint64_t dst, int dst_dev, uint64_t src,
		     int src_dev, size_t n, CUstream s)
{
	CUresult res = fk_enter(fn, FK_NEED_CTX);
	const char *call = fk_names[fn];

	if (res)
		return res;
	if ((n && (!dst || !src)))
		return fk_leave(fk_bad(CUDA_ERROR_INVALID_VALUE, call, "NULL"));
	res = check_stream(s, call);
	if (!res && dst_dev)
		res = check_device(dst, n, PROT_READ | PROT_WRITE, call);
	if (!res && src_dev)
		res = check_device(src, n, PROT_READ, call);
	if (!res && n)
		memmove((void *)(uintptr_t)dst, (const void *)(uintptr_t)src, n);
	return fk_leave(res);
}

#define HOSTPTR(p) ((uint64_t)(uintptr_t)(p))

FK_API CUresult cuMemcpyDtoD(CUdeviceptr dst, CUdeviceptr src, size_t n)
{
	return copy(FK_cuMemcpyDtoD, dst, 1, src, 1, n, NULL);
}

FK_API CUresult cuMemcpyDtoH(void *dst, CUdeviceptr src, size_t n)
{
	return copy(FK_cuMemcpyDtoH, HOSTPTR(dst), 0, src, 1, n, NULL);
}

FK_API CUresult cuMemcpyHtoD(CUdeviceptr dst, const void *src, size_t n)
{
	return copy(FK_cuMemcpyHtoD, dst, 1, HOSTPTR(src), 0, n, NULL);
}

FK_API CUresult cuMemcpyDtoDAsync(CUdeviceptr dst, CUdeviceptr src, size_t n,
				  CUstream s)
{
	return copy(FK_cuMemcpyDtoDAsync, dst, 1, src, 1, n, s);
}

FK_API CUresult cuMemcpyDtoHAsync(void *dst, CUdeviceptr src, size_t n,
				  CUstream s)
{
	return copy(FK_cuMemcpyDtoHAsync, HOSTPTR(dst), 0, src, 1, n, s);
}

FK_API CUresult cuMemcpyHtoDAsync(CUdeviceptr dst, const void *src, size_t n,
				  CUstream s)
{
	return copy(FK_cuMemcpyHtoDAsync, dst, 1, HOSTPTR(src), 0, n, s);
}

/* Unified addressing: a side inside a reservation is device memory and is
 * checked, anything else is host memory. */
FK_API CUresult cuMemcpyAsync(CUdeviceptr dst, CUdeviceptr src, size_t n,
			      CUstream s)
{
	int dd, sd;

	pthread_once(&fk_once, load_config);
	pthread_mutex_lock(&fk_lock);
	dd = is_device_va(dst, n);
	sd = is_device_va(src, n);
	pthread_mutex_unlock(&fk_lock);
	return copy(FK_cuMemcpyAsync, dst, dd, src, sd, n, s);
}

FK_API CUresult cuMemsetD8(CUdeviceptr dst, unsigned char value, size_t n)
{
	CUresult res = fk_enter(FK_cuMemsetD8, FK_NEED_CTX);

	if (res)
		return res;
	res = check_device(dst, n, PROT_READ | PROT_WRITE, "cuMemsetD8");
	if (!res && n)
		memset((void *)(uintptr_t)dst, value, n);
	return fk_leave(res);
}

/* ------------------------------------------------------- streams, events */

FK_API CUresult cuStreamCreate(CUstream *s, unsigned int flags)
{
	CUresult res = fk_enter(FK_cuStreamCreate, FK_NEED_CTX);
	struct CUstream_st *st;

	if (res)
		return res;
	if (!s || (flags & ~(unsigned)CU_STREAM_NON_BLOCKING))
		return fk_leave(CUDA_ERROR_INVALID_VALUE);
	st = malloc(sizeof(*st));
	if (!st)
		return fk_leave(CUDA_ERROR_OUT_OF_MEMORY);
	*st = (struct CUstream_st){ FK_MAGIC_STREAM, flags };
	if (!FK_PUSH(streams, st)) {
		free(st);
		return fk_leave(CUDA_ERROR_OUT_OF_MEMORY);
	}
	*s = st;
	return fk_leave(CUDA_SUCCESS);
}

FK_API CUresult cuStreamDestroy(CUstream s)
{
	CUresult res = fk_enter(FK_cuStreamDestroy, FK_NEED_CTX);

	if (res)
		return res;
	for (size_t i = 0; i < streams.n; i++) {
		if (streams.v[i] == s) {
			FK_REMOVE(streams, i);
			free(s);
			return fk_leave(CUDA_SUCCESS);
		}
	}
	return fk_leave(fk_bad(CUDA_ERROR_INVALID_HANDLE, "cuStreamDestroy",
			       "unknown stream"));
}

FK_API CUresult cuStreamSynchronize(CUstream s)
{
	CUresult res = fk_enter(FK_cuStreamSynchronize, FK_NEED_CTX);

	if (res)
		return res;
	return fk_leave(check_stream(s, "cuStreamSynchronize"));
}

static long event_index(CUevent e)
{
	for (size_t i = 0; i < events.n; i++)
		if (events.v[i] == e)
			return (long)i;
	return -1;
}

FK_API CUresult cuEventCreate(CUevent *e, unsigned int flags)
{
	CUresult res = fk_enter(FK_cuEventCreate, FK_NEED_CTX);
	struct CUevent_st *ev;

	if (res)
		return res;
	if (!e || (flags & ~(unsigned)(CU_EVENT_BLOCKING_SYNC |
				       CU_EVENT_DISABLE_TIMING |
				       CU_EVENT_INTERPROCESS)))
		return fk_leave(CUDA_ERROR_INVALID_VALUE);
	ev = calloc(1, sizeof(*ev));
	if (!ev)
		return fk_leave(CUDA_ERROR_OUT_OF_MEMORY);
	ev->magic = FK_MAGIC_EVENT;
	ev->flags = flags;
	if (!FK_PUSH(events, ev)) {
		free(ev);
		return fk_leave(CUDA_ERROR_OUT_OF_MEMORY);
	}
	*e = ev;
	return fk_leave(CUDA_SUCCESS);
}

FK_API CUresult cuEventRecord(CUevent e, CUstream s)
{
	CUresult res = fk_enter(FK_cuEventRecord, FK_NEED_CTX);

	if (res)
		return res;
	if (event_index(e) < 0)
		return fk_leave(fk_bad(CUDA_ERROR_INVALID_HANDLE, "cuEventRecord",
				       "unknown event"));
	res = check_stream(s, "cuEventRecord");
	if (!res) {
		e->recorded = true;
		clock_gettime(CLOCK_MONOTONIC, &e->when);
	}
	return fk_leave(res);
}

FK_API CUresult cuEventSynchronize(CUevent e)
{
	CUresult res = fk_enter(FK_cuEventSynchronize, FK_NEED_CTX);

	if (res)
		return res;
	if (event_index(e) < 0)
		res = fk_bad(CUDA_ERROR_INVALID_HANDLE, "cuEventSynchronize",
			     "unknown event");
	return fk_leave(res);
}

FK_API CUresult cuEventDestroy(CUevent e)
{
	CUresult res = fk_enter(FK_cuEventDestroy, FK_NEED_CTX);
	long i;

	if (res)
		return res;
	i = event_index(e);
	if (i < 0)
		return fk_leave(fk_bad(CUDA_ERROR_INVALID_HANDLE, "cuEventDestroy",
				       "unknown event"));
	FK_REMOVE(events, (size_t)i);
	free(e);
	return fk_leave(CUDA_SUCCESS);
}

FK_API CUresult cuEventElapsedTime(float *ms, CUevent start, CUevent end)
{
	CUresult res = fk_enter(FK_cuEventElapsedTime, FK_NEED_CTX);

	if (res)
		return res;
	if (!ms)
		return fk_leave(CUDA_ERROR_INVALID_VALUE);
	if (event_index(start) < 0 || event_index(end) < 0 ||
	    ((start->flags | end->flags) & CU_EVENT_DISABLE_TIMING))
		return fk_leave(fk_bad(CUDA_ERROR_INVALID_HANDLE,
				       "cuEventElapsedTime",
				       "unknown event or timing disabled"));
	if (!start->recorded || !end->recorded)
		return fk_leave(CUDA_ERROR_NOT_READY);
	*ms = (float)((double)(end->when.tv_sec - start->when.tv_sec) * 1e3 +
		      (double)(end->when.tv_nsec - start->when.tv_nsec) / 1e6);
	return fk_leave(CUDA_SUCCESS);
}

/* ------------------------------------------------------------ host memory */

static long range_starting(const struct fk_range *v, size_t n, uint64_t p)
{
	for (size_t i = 0; i < n; i++)
		if (v[i].va == p)
			return (long)i;
	return -1;
}

FK_API CUresult cuMemHostRegister(void *p, size_t size, unsigned int flags)
{
	CUresult res = fk_enter(FK_cuMemHostRegister, FK_NEED_CTX);
	uint64_t va = HOSTPTR(p);

	(void)flags;
	if (res)
		return res;
	if (!p || size == 0)
		return fk_leave(CUDA_ERROR_INVALID_VALUE);
	for (size_t i = 0; i < host_regs.n; i++)
		if (va < host_regs.v[i].va + host_regs.v[i].size &&
		    va + size > host_regs.v[i].va)
			return fk_leave(fk_bad(CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED,
					       "cuMemHostRegister",
					       "overlaps a registered range"));
	if (!FK_PUSH(host_regs, ((struct fk_range){ va, size })))
		return fk_leave(CUDA_ERROR_OUT_OF_MEMORY);
	return fk_leave(CUDA_SUCCESS);
}

FK_API CUresult cuMemHostUnregister(void *p)
{
	CUresult res = fk_enter(FK_cuMemHostUnregister, FK_NEED_CTX);
	long i;

	if (res)
		return res;
	i = range_starting(host_regs.v, host_regs.n, HOSTPTR(p));
	if (i < 0)
		return fk_leave(fk_bad(CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED,
				       "cuMemHostUnregister", "not registered"));
	FK_REMOVE(host_regs, (size_t)i);
	return fk_leave(CUDA_SUCCESS);
}

FK_API CUresult cuMemAllocHost(void **pp, size_t size)
{
	CUresult res = fk_enter(FK_cuMemAllocHost, FK_NEED_CTX);
	size_t rounded = (size + FK_HOST_PAGE - 1) & ~(FK_HOST_PAGE - 1);
	void *p;

	if (res)
		return res;
	if (!pp || size == 0)
		return fk_leave(CUDA_ERROR_INVALID_VALUE);
	p = aligned_alloc(FK_HOST_PAGE, rounded);
	if (!p)
		return fk_leave(CUDA_ERROR_OUT_OF_MEMORY);
	if (!FK_PUSH(host_allocs, ((struct fk_range){ HOSTPTR(p), size }))) {
		free(p);
		return fk_leave(CUDA_ERROR_OUT_OF_MEMORY);
	}
	*pp = p;
	return fk_leave(CUDA_SUCCESS);
}

FK_API CUresult cuMemFreeHost(void *p)
{
	CUresult res = fk_enter(FK_cuMemFreeHost, FK_NEED_CTX);
	long i;

	if (res)
		return res;
	i = range_starting(host_allocs.v, host_allocs.n, HOSTPTR(p));
	if (i < 0)
		return fk_leave(fk_bad(CUDA_ERROR_INVALID_VALUE, "cuMemFreeHost",
				       "not from cuMemAllocHost"));
	FK_REMOVE(host_allocs, (size_t)i);
	free(p);
	return fk_leave(CUDA_SUCCESS);
}

/* ---------------------------------------------------------------- kernels */

static long module_index(CUmodule m)
{
	for (size_t i = 0; i < modules.n; i++)
		if (modules.v[i] == m)
			return (long)i;
	return -1;
}

FK_API CUresult cuModuleLoadData(CUmodule *m, const void *image)
{
	CUresult res = fk_enter(FK_cuModuleLoadData, FK_NEED_CTX);
	struct CUmod_st *mod;

	if (res)
		return res;
	if (!m || !image)
		return fk_leave(CUDA_ERROR_INVALID_VALUE);
	mod = calloc(1, sizeof(*mod));
	if (!mod)
		return fk_leave(CUDA_ERROR_OUT_OF_MEMORY);
	mod->magic = FK_MAGIC_MODULE;
	if (!FK_PUSH(modules, mod)) {
		free(mod);
		return fk_leave(CUDA_ERROR_OUT_OF_MEMORY);
	}
	*m = mod;
	return fk_leave(CUDA_SUCCESS);
}

FK_API CUresult cuModuleUnload(CUmodule m)
{
	CUresult res = fk_enter(FK_cuModuleUnload, FK_NEED_CTX);
	long i;

	if (res)
		return res;
	i = module_index(m);
	if (i < 0)
		return fk_leave(fk_bad(CUDA_ERROR_INVALID_HANDLE, "cuModuleUnload",
				       "unknown module"));
	FK_REMOVE(modules, (size_t)i);
	while (m->funcs) {
		struct CUfunc_st *f = m->funcs;

		m->funcs = f->next;
		free(f);
	}
	free(m);
	return fk_leave(CUDA_SUCCESS);
}

FK_API CUresult cuModuleGetFunction(CUfunction *f, CUmodule m, const char *name)
{
	CUresult res = fk_enter(FK_cuModuleGetFunction, FK_NEED_CTX);
	char sym[256];
	struct CUfunc_st *fn;
	void *p;

	if (res)
		return res;
	if (!f || !name)
		return fk_leave(CUDA_ERROR_INVALID_VALUE);
	if (module_index(m) < 0)
		return fk_leave(fk_bad(CUDA_ERROR_INVALID_HANDLE,
				       "cuModuleGetFunction", "unknown module"));
	snprintf(sym, sizeof(sym), VKV_FAKECUDA_KERNEL_PREFIX "%s", name);
	p = dlsym(RTLD_DEFAULT, sym);
	if (!p)
		return fk_leave(fk_bad(CUDA_ERROR_NOT_FOUND, "cuModuleGetFunction",
				       "no host function for that kernel"));
	fn = calloc(1, sizeof(*fn));
	if (!fn)
		return fk_leave(CUDA_ERROR_OUT_OF_MEMORY);
	fn->magic = FK_MAGIC_FUNC;
	memcpy(&fn->fn, &p, sizeof(p));
	fn->next = m->funcs;
	m->funcs = fn;
	*f = fn;
	return fk_leave(CUDA_SUCCESS);
}

static bool is_function(CUfunction f)
{
	for (size_t i = 0; i < modules.n; i++)
		for (struct CUfunc_st *x = modules.v[i]->funcs; x; x = x->next)
			if (x == f)
				return true;
	return false;
}

FK_API CUresult cuLaunchKernel(CUfunction f, unsigned int gx, unsigned int gy,
			       unsigned int gz, unsigned int bx, unsigned int by,
			       unsigned int bz, unsigned int shared,
			       CUstream s, void **params, void **extra)
{
	CUresult res = fk_enter(FK_cuLaunchKernel, FK_NEED_CTX);
	struct vkv_fakecuda_launch l = { { gx, gy, gz }, { bx, by, bz }, shared,
					 params };
	vkv_fakecuda_kernel_fn fn;

	if (res)
		return res;
	if (!is_function(f))
		return fk_leave(fk_bad(CUDA_ERROR_INVALID_HANDLE, "cuLaunchKernel",
				       "unknown function"));
	if (!gx || !gy || !gz || !bx || !by || !bz || (uint64_t)bx * by * bz > 1024 ||
	    (params && extra))
		return fk_leave(fk_bad(CUDA_ERROR_INVALID_VALUE, "cuLaunchKernel",
				       "bad geometry or both params and extra"));
	res = check_stream(s, "cuLaunchKernel");
	fn = f->fn;
	fk_leave(res);
	if (!res)
		fn(&l); /* outside the lock: the kernel may call the driver */
	return res;
}

/* ------------------------------------------------------------ proc address */

struct fk_proc {
	const char *name;
	void *fn;
};

static const struct fk_proc fk_procs[] = {
#define FK_PROC(fn) { #fn, (void *)fn },
	FK_FUNCS(FK_PROC)
#undef FK_PROC
};

FK_API CUresult cuGetProcAddress(const char *symbol, void **pfn, int version,
				 cuuint64_t flags,
				 CUdriverProcAddressQueryResult *status)
{
	CUresult res = fk_enter(FK_cuGetProcAddress, FK_NEED_NOTHING);

	(void)flags;
	if (res)
		return res;
	if (!symbol || !pfn)
		return fk_leave(CUDA_ERROR_INVALID_VALUE);
	/* as a CUDA 13 driver: the newest ABI at the version asked for */
	if (!strcmp(symbol, "cuCtxSynchronize") && version >= 13000) {
		*pfn = (void *)fk_ctx_synchronize_v13000;
		if (status)
			*status = CU_GET_PROC_ADDRESS_SUCCESS;
		return fk_leave(CUDA_SUCCESS);
	}
	for (size_t i = 0; i < sizeof(fk_procs) / sizeof(fk_procs[0]); i++) {
		if (!strcmp(symbol, fk_procs[i].name)) {
			*pfn = fk_procs[i].fn;
			if (status)
				*status = CU_GET_PROC_ADDRESS_SUCCESS;
			return fk_leave(CUDA_SUCCESS);
		}
	}
	*pfn = NULL;
	if (status)
		*status = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
	return fk_leave(CUDA_ERROR_NOT_FOUND);
}

/* ----------------------------------------------------------------- control */

FK_API void vkv_fakecuda_stats(struct vkv_fakecuda_stats *st)
{
	pthread_once(&fk_once, load_config);
	pthread_mutex_lock(&fk_lock);
	memset(st, 0, sizeof(*st));
	for (size_t i = 0; i < allocs.n; i++) {
		if (allocs.v[i].live) {
			st->allocs++;
			st->alloc_bytes += allocs.v[i].size;
		}
	}
	st->reservations = resvs.n;
	for (size_t i = 0; i < resvs.n; i++)
		st->reserved_bytes += resvs.v[i].size;
	st->mappings = maps.n;
	for (size_t i = 0; i < maps.n; i++)
		st->mapped_bytes += maps.v[i].size;
	st->streams = streams.n;
	st->events = events.n;
	st->host_allocs = host_allocs.n;
	st->host_registered = host_regs.n;
	st->modules = modules.n;
	for (int i = 0; i < FK_MAX_DEVICES; i++)
		st->primary_refs += primary_refs[i];
	st->faults_fired = faults_fired;
	pthread_mutex_unlock(&fk_lock);
}

FK_API int vkv_fakecuda_reload(void)
{
	int err = 0;

	pthread_once(&fk_once, load_config);
	pthread_mutex_lock(&fk_lock);
	if (mem_used == 0 && resvs.n == 0 && maps.n == 0)
		load_geometry();
	else
		err = -EBUSY;
	cfg.defer_release = env_flag("VKV_FAKECUDA_DEFER_RELEASE");
	cfg.verbose = env_flag("VKV_FAKECUDA_VERBOSE");
	load_faults();
	faults_fired = 0;
	pthread_mutex_unlock(&fk_lock);
	return err;
}

FK_API unsigned long vkv_fakecuda_calls(const char *name)
{
	unsigned long n = 0;

	pthread_once(&fk_once, load_config);
	pthread_mutex_lock(&fk_lock);
	for (int i = 0; i < FK_COUNT; i++)
		if (!strcmp(name, fk_names[i]))
			n = calls[i];
	pthread_mutex_unlock(&fk_lock);
	return n;
}
