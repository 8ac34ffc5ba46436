// SPDX-License-Identifier: MIT
/*
 * cuda_driver.c - loading the CUDA driver at run time (see cuda_driver.h).
 *
 * Lookup order for each entry point: cuGetProcAddress_v2 (CUDA 12+ drivers)
 * or cuGetProcAddress (11.3+), asked for the version of the cuda.h we were
 * built with, so that the driver hands out the entry point whose ABI matches
 * our declarations (and the legacy default stream semantics, since we do
 * not build with per-thread default streams); then dlsym of the versioned
 * name the header maps to (cuMemGetInfo_v2); then dlsym of the plain name.
 *
 * Except where cuda.h's plain declaration keeps an older ABI than the
 * newest one at its version: CUDA 13.0 added cuCtxSynchronize_v2(CUcontext)
 * but cuda.h's cuCtxSynchronize is still the 2.0 one, taking nothing, and
 * cuGetProcAddress at 13000 hands out the new one. Such entries are asked
 * for at the version of their ABI (pinned_version below; found on an H200
 * with driver 580: cuCtxSynchronize failed with CONTEXT_IS_DESTROYED, the
 * context argument being whatever the register held).
 * tests/check_cuda_abi.sh compares the table with cudaTypedefs.h so that
 * the next such change is caught at build time.
 *
 * The result, good or bad, is computed once (pthread_once) and kept for the
 * life of the process; the library handle is never closed, because the
 * driver cannot be unloaded safely while anything may still call it.
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "cuda_driver.h"
#include "internal.h"

#ifdef VKV_HAVE_CUDA

#define CU_STR2(x) #x
#define CU_STR(x) CU_STR2(x)

/* Name for cuGetProcAddress, name after cuda.h's mapping, field offset. */
struct cu_entry {
	const char *name;
	const char *versioned;
	size_t offset;
};

#define VKV_CU_ENTRY(fn) { #fn, CU_STR(fn), offsetof(struct vkv_cu, fn) },
static const struct cu_entry cu_entries[] = { VKV_CU_FUNCS(VKV_CU_ENTRY) };
#undef VKV_CU_ENTRY

typedef CUresult (*getproc_v2_fn)(const char *, void **, int, cuuint64_t,
				  CUdriverProcAddressQueryResult *);
typedef CUresult (*getproc_v1_fn)(const char *, void **, int, cuuint64_t);

static pthread_once_t cu_once = PTHREAD_ONCE_INIT;
static struct vkv_cu cu_table;
static const struct vkv_cu *cu_loaded; /* &cu_table once usable */
static int cu_load_err;                /* why not, as -errno */
static char cu_load_detail[200];       /* and the detail */

/* Remember a load failure for every later caller of vkv__cu(). */
static void load_failed(int err, const char *fmt, ...) VKV_PRINTF(2, 3);
static void load_failed(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cu_load_detail, sizeof(cu_load_detail), fmt, ap);
	va_end(ap);
	cu_load_err = err;
}

/* The cuGetProcAddress version of an entry whose declaration in cuda.h is
 * older than the newest ABI of that name (see the top of this file). */
static int pinned_version(const char *name)
{
	static const struct {
		const char *name;
		int version;
	} pins[] = {
		{ "cuCtxSynchronize", 2000 }, /* not _v13000 (CUcontext ctx) */
	};

	for (size_t i = 0; i < sizeof(pins) / sizeof(pins[0]); i++)
		if (!strcmp(pins[i].name, name))
			return pins[i].version;
	return CUDA_VERSION;
}

static void *lookup(void *lib, getproc_v2_fn gp2, getproc_v1_fn gp1,
		    const struct cu_entry *e)
{
	CUdriverProcAddressQueryResult st;
	int version = pinned_version(e->name);
	void *p = NULL;

	if (gp2 && gp2(e->name, &p, version, CU_GET_PROC_ADDRESS_DEFAULT,
		       &st) == CUDA_SUCCESS && st == CU_GET_PROC_ADDRESS_SUCCESS &&
	    p)
		return p;
	p = NULL;
	if (!gp2 && gp1 &&
	    gp1(e->name, &p, version, CU_GET_PROC_ADDRESS_DEFAULT) ==
		    CUDA_SUCCESS &&
	    p)
		return p;
	p = dlsym(lib, e->versioned);
	if (!p)
		p = dlsym(lib, e->name);
	return p;
}

static void load_driver(void)
{
	const char *lib_name = "libcuda.so.1";
	getproc_v2_fn gp2;
	getproc_v1_fn gp1;
	CUresult res;
	void *lib;

	lib = dlopen(lib_name, RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		load_failed(-ENODEV, "dlopen %s: %s", lib_name, dlerror());
		return;
	}
	gp2 = (getproc_v2_fn)dlsym(lib, "cuGetProcAddress_v2");
	gp1 = (getproc_v1_fn)dlsym(lib, "cuGetProcAddress");
	for (size_t i = 0; i < sizeof(cu_entries) / sizeof(cu_entries[0]); i++) {
		const struct cu_entry *e = &cu_entries[i];
		void *p = lookup(lib, gp2, gp1, e);

		if (!p) {
			load_failed(-ENODEV, "%s: driver lacks %s (too old?)",
				    lib_name, e->name);
			return;
		}
		memcpy((char *)&cu_table + e->offset, &p, sizeof(p));
	}
	res = cu_table.cuInit(0);
	if (res != CUDA_SUCCESS) {
		load_failed(vkv__cu_errno(res) == -EIO ? -EIO : -ENODEV,
			    "cuInit: %s (%d)", vkv__cu_result_name(res), (int)res);
		return;
	}
	res = cu_table.cuDriverGetVersion(&cu_table.driver_version);
	if (res != CUDA_SUCCESS) {
		load_failed(-EIO, "cuDriverGetVersion: %s (%d)",
			    vkv__cu_result_name(res), (int)res);
		return;
	}
	vkv__debug("cuda driver %d.%d loaded (built against %d.%d)",
		   cu_table.driver_version / 1000,
		   cu_table.driver_version % 1000 / 10, CUDA_VERSION / 1000,
		   CUDA_VERSION % 1000 / 10);
	__atomic_store_n(&cu_loaded, &cu_table, __ATOMIC_RELEASE);
}

int vkv__cu_load(const struct vkv_cu **out)
{
	const struct vkv_cu *cu;

	pthread_once(&cu_once, load_driver);
	cu = __atomic_load_n(&cu_loaded, __ATOMIC_ACQUIRE);
	*out = cu;
	if (cu)
		return 0;
	return vkv__set_error(cu_load_err ? cu_load_err : -ENODEV, "%s",
			      cu_load_detail);
}

const struct vkv_cu *vkv__cu(void)
{
	const struct vkv_cu *cu;

	vkv__cu_load(&cu);
	return cu;
}

const char *vkv__cu_result_name(CUresult res)
{
	static __thread char buf[32];
	const char *name = NULL;
	const struct vkv_cu *cu = __atomic_load_n(&cu_loaded, __ATOMIC_ACQUIRE);

	/* During loading the table is complete before cuInit is called. */
	if (!cu && cu_table.cuGetErrorName)
		cu = &cu_table;
	if (cu && cu->cuGetErrorName(res, &name) == CUDA_SUCCESS && name)
		return name;
	snprintf(buf, sizeof(buf), "CUDA_ERROR_%d", (int)res);
	return buf;
}

int vkv__cu_errno(CUresult res)
{
	switch (res) {
	case CUDA_SUCCESS:
		return 0;
	case CUDA_ERROR_OUT_OF_MEMORY:
		return -ENOMEM;
	case CUDA_ERROR_INVALID_VALUE:
		return -EINVAL;
	case CUDA_ERROR_NO_DEVICE:
	case CUDA_ERROR_INVALID_DEVICE:
		return -ENODEV;
	default:
		return -EIO;
	}
}

int vkv__cu_error(CUresult res, const char *call)
{
	int err = vkv__cu_errno(res);

	if (err)
		vkv__set_error(err, "%s: %s (%d)", call, vkv__cu_result_name(res),
			       (int)res);
	return err;
}

#endif /* VKV_HAVE_CUDA */
