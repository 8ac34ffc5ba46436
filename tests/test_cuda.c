// SPDX-License-Identifier: MIT
/*
 * test_cuda.c - Check suite for the cuda backend and the CUDA driver loader,
 * run against the CUDA driver test double (tests/cudadouble/, found through
 * LD_LIBRARY_PATH).
 *
 * Three levels: the loader's table and its error translation; the backend
 * contract straight on the ops (reserve, map, unmap, aliasing, copies,
 * fences, contexts on other threads, zero mode, rollback after injected
 * driver failures); and the public API on VKV_BACKEND=cuda (both layouts,
 * sharing, injected failures, no device). After every test the double is
 * asked what it still holds: anything left is a leak.
 *
 * The device memory of the double is host memory, so the tests also look
 * through device pointers directly. Tests that need a process of their own
 * (no device: the driver is loaded once per process) re-run this program
 * with an argument, so they work without Check's fork mode too (valgrind).
 *
 * Against a real driver (a GPU machine, LD_LIBRARY_PATH not pointing at the
 * double) the same program proves the backend for real: the contract and
 * API tests run, reading device memory with cuMemcpyDtoH; what needs the
 * double (fault injection, leak counters, several devices) is skipped.
 * Without any usable driver it exits 77.
 */
#include <check.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cuda_driver.h"
#include "fakecuda.h"
#include "internal.h"
#include "vkv_check.h"
#include "vkv.h"

extern char **environ;

#define MIB (1ULL << 20)


/* ------------------------------------------------------- the double's side */

static const char *self_path; /* argv[0]: /proc/self/exe is valgrind's */
static bool fake;             /* libcuda.so.1 is the double */
static vkv_fakecuda_stats_fn fk_stats_fn;
static vkv_fakecuda_reload_fn fk_reload_fn;
static vkv_fakecuda_calls_fn fk_calls_fn;

/* Find the double's controls; false against a real driver. */
static bool find_double(void)
{
	void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);

	if (!h)
		return false;
	fk_stats_fn = (vkv_fakecuda_stats_fn)dlsym(h, "vkv_fakecuda_stats");
	fk_reload_fn = (vkv_fakecuda_reload_fn)dlsym(h, "vkv_fakecuda_reload");
	fk_calls_fn = (vkv_fakecuda_calls_fn)dlsym(h, "vkv_fakecuda_calls");
	return fk_stats_fn && fk_reload_fn && fk_calls_fn;
}

/* What the double holds must be `val` (checked only on the double). */
#define FK_EXPECT(field, val)                                                 \
	do {                                                                  \
		if (fake)                                                     \
			ck_assert_uint_eq(fk_stats().field, (val));           \
	} while (0)

/* Tests that need the double's fault injection end here on a real GPU. */
#define NEEDS_DOUBLE()                                                        \
	do {                                                                  \
		if (!fake)                                                    \
			return;                                               \
	} while (0)

static struct vkv_fakecuda_stats fk_stats(void)
{
	struct vkv_fakecuda_stats st;

	fk_stats_fn(&st);
	return st;
}

/* Arm a fault plan (NULL: none) with fresh call counters. */
static void fk_fail(const char *plan)
{
	ck_assert(fake);
	if (plan)
		setenv("VKV_FAKECUDA_FAIL", plan, 1);
	else
		unsetenv("VKV_FAKECUDA_FAIL");
	fk_reload_fn();
}

/* Every test starts from the default double and must leave it empty. */
static void setup(void)
{
	ck_assert_ptr_nonnull(vkv__cu());
	/* Without fork mode an earlier test's context may still be current. */
	vkv__cu()->cuCtxSetCurrent(NULL);
	if (!fake)
		return;
	unsetenv("VKV_FAKECUDA_GRANULARITY");
	unsetenv("VKV_FAKECUDA_MEM");
	unsetenv("VKV_FAKECUDA_DEVICES");
	unsetenv("VKV_FAKECUDA_NO_VMM");
	fk_fail(NULL);
	vkv__fault_reset();
}

static void assert_nothing_held(void)
{
	struct vkv_fakecuda_stats st;

	if (!fake)
		return;
	st = fk_stats();

	ck_assert_uint_eq(st.allocs, 0);
	ck_assert_uint_eq(st.reservations, 0);
	ck_assert_uint_eq(st.mappings, 0);
	ck_assert_uint_eq(st.events, 0);
	ck_assert_uint_eq(st.streams, 0);
	ck_assert_uint_eq(st.primary_refs, 0);
}

/* ------------------------------------------------------------- backend ops */

static int open_backend(struct vkv_backend *b, enum vkv_unbacked unbacked,
			uint64_t page_size, int device)
{
	struct vkv_ctx_config cfg;

	vkv_ctx_config_init(&cfg);
	cfg.backend = VKV_BACKEND_CUDA;
	cfg.unbacked = unbacked;
	cfg.page_size = page_size;
	cfg.device = device;
	return vkv__backend_open(b, &cfg);
}

static const struct vkv_backend_ops *ops(struct vkv_backend *b)
{
	return b->ops;
}

static void fill(uint8_t *buf, size_t n, uint8_t seed)
{
	for (size_t i = 0; i < n; i++)
		buf[i] = (uint8_t)(seed + i * 7 + (i >> 12));
}

static bool holds(struct vkv_backend *b, uint64_t addr, size_t n, uint8_t seed)
{
	uint8_t *want = malloc(n), *got = malloc(n);
	bool same;

	fill(want, n, seed);
	ck_assert_int_eq(ops(b)->copy_to_host(b, got, addr, n), 0);
	same = memcmp(want, got, n) == 0;
	free(want);
	free(got);
	return same;
}

/* Read device memory behind the backend's back (works on unbacked pages in
 * zero mode, where copy_to_host has no reason to be called). */
static void dev_read(void *dst, uint64_t src, size_t n)
{
	const struct vkv_cu *cu = vkv__cu();
	CUcontext c;

	ck_assert_int_eq(cu->cuDevicePrimaryCtxRetain(&c, 0), CUDA_SUCCESS);
	ck_assert_int_eq(cu->cuCtxSetCurrent(c), CUDA_SUCCESS);
	ck_assert_int_eq(cu->cuMemcpyDtoH(dst, src, n), CUDA_SUCCESS);
	ck_assert_int_eq(cu->cuDevicePrimaryCtxRelease(0), CUDA_SUCCESS);
}

static bool dev_equals(uint64_t addr, const void *want, size_t n)
{
	uint8_t *got = malloc(n);
	bool same;

	dev_read(got, addr, n);
	same = memcmp(got, want, n) == 0;
	free(got);
	return same;
}

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

static bool dev_zero(uint64_t addr, size_t n)
{
	uint8_t *got = malloc(n);
	bool zero;

	dev_read(got, addr, n);
	zero = all_zero(got, n);
	free(got);
	return zero;
}

START_TEST(loader_table_and_errors)
{
	const struct vkv_cu *cu = vkv__cu();
	const char *name = NULL;

	ck_assert_ptr_nonnull(cu);
	if (fake)
		ck_assert_int_eq(cu->driver_version, CUDA_VERSION);
	ck_assert_ptr_nonnull(cu->cuMemMap);
	ck_assert_int_eq(cu->cuGetErrorName(CUDA_ERROR_OUT_OF_MEMORY, &name), CUDA_SUCCESS);
	ck_assert_str_eq(name, "CUDA_ERROR_OUT_OF_MEMORY");
	ck_assert_int_eq(vkv__cu_error(CUDA_SUCCESS, "cuMemMap"), 0);
	ck_assert_int_eq(vkv__cu_error(CUDA_ERROR_OUT_OF_MEMORY, "cuMemMap"), -ENOMEM);
	ck_assert_str_eq(vkv_last_error(), "cuMemMap: CUDA_ERROR_OUT_OF_MEMORY (2)");
	ck_assert_int_eq(vkv__cu_error(CUDA_ERROR_INVALID_VALUE, "x"), -EINVAL);
	ck_assert_int_eq(vkv__cu_error(CUDA_ERROR_NO_DEVICE, "x"), -ENODEV);
	ck_assert_int_eq(vkv__cu_error(CUDA_ERROR_INVALID_DEVICE, "x"), -ENODEV);
	ck_assert_int_eq(vkv__cu_error(CUDA_ERROR_ILLEGAL_ADDRESS, "x"), -EIO);
	ck_assert_int_eq(vkv__cu_error((CUresult)12345, "cuFoo"), -EIO);
	ck_assert_str_eq(vkv_last_error(), "cuFoo: CUDA_ERROR_12345 (12345)");
	/* cuGetProcAddress gave the entry points cuda.h's names map to. */
	if (fake) {
		void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);

		ck_assert_ptr_nonnull(h);
		ck_assert_ptr_eq((void *)cu->cuMemGetInfo, dlsym(h, "cuMemGetInfo_v2"));
		ck_assert_ptr_eq((void *)cu->cuMemcpyDtoH, dlsym(h, "cuMemcpyDtoH_v2"));
		ck_assert_ptr_eq((void *)cu->cuMemMap, dlsym(h, "cuMemMap"));
		dlclose(h);
	}
}
END_TEST

/* The double refuses what the real driver refuses, so caller bugs show. */
START_TEST(double_is_strict)
{
	const struct vkv_cu *cu = vkv__cu();
	CUmemAllocationProp prop = { .type = CU_MEM_ALLOCATION_TYPE_PINNED,
				     .location = { CU_MEM_LOCATION_TYPE_DEVICE, 0 } };
	CUmemAccessDesc rw = { prop.location, CU_MEM_ACCESS_FLAGS_PROT_READWRITE };
	CUmemGenericAllocationHandle h, h2;
	const size_t g = 2 * MIB;
	CUdeviceptr va;
	CUcontext ctx;
	uint8_t byte = 0;

	NEEDS_DOUBLE();
	/* No current context. */
	ck_assert_int_eq(cu->cuMemCreate(&h, g, &prop, 0), CUDA_ERROR_INVALID_CONTEXT);
	ck_assert_int_eq(cu->cuDevicePrimaryCtxRetain(&ctx, 0), CUDA_SUCCESS);
	ck_assert_int_eq(cu->cuCtxSetCurrent(ctx), CUDA_SUCCESS);
	/* Sizes and addresses off the granularity. */
	ck_assert_int_eq(cu->cuMemCreate(&h, g + 4096, &prop, 0), CUDA_ERROR_INVALID_VALUE);
	ck_assert_int_eq(cu->cuMemAddressReserve(&va, g / 2, 0, 0, 0), CUDA_ERROR_INVALID_VALUE);
	ck_assert_int_eq(cu->cuMemCreate(&h, g, &prop, 0), CUDA_SUCCESS);
	ck_assert_int_eq(cu->cuMemCreate(&h2, 2 * g, &prop, 0), CUDA_SUCCESS);
	ck_assert_int_eq(cu->cuMemAddressReserve(&va, 4 * g, g, 0, 0), CUDA_SUCCESS);
	ck_assert_int_eq(cu->cuMemMap(va + 4096, g, 0, h, 0), CUDA_ERROR_INVALID_VALUE);
	/* Beyond the allocation, beyond the reservation. */
	ck_assert_int_eq(cu->cuMemMap(va, 2 * g, 0, h, 0), CUDA_ERROR_INVALID_VALUE);
	ck_assert_int_eq(cu->cuMemMap(va + 3 * g, 2 * g, 0, h2, 0), CUDA_ERROR_INVALID_VALUE);
	/* Over a mapping; an unmap or access change splitting a mapping. */
	ck_assert_int_eq(cu->cuMemMap(va, 2 * g, 0, h2, 0), CUDA_SUCCESS);
	ck_assert_int_eq(cu->cuMemMap(va + g, g, 0, h, 0), CUDA_ERROR_INVALID_VALUE);
	ck_assert_int_eq(cu->cuMemUnmap(va, g), CUDA_ERROR_INVALID_VALUE);
	ck_assert_int_eq(cu->cuMemSetAccess(va, g, &rw, 1), CUDA_ERROR_INVALID_VALUE);
	/* No access yet: copies are refused. */
	ck_assert_int_eq(cu->cuMemcpyHtoD(va, &byte, 1), CUDA_ERROR_INVALID_VALUE);
	ck_assert_int_eq(cu->cuMemMap(va + 2 * g, g, 0, h, 0), CUDA_SUCCESS);
	/* One access change and one unmap may span several mappings. */
	ck_assert_int_eq(cu->cuMemSetAccess(va, 3 * g, &rw, 1), CUDA_SUCCESS);
	ck_assert_int_eq(cu->cuMemcpyHtoD(va + 3 * g - 1, &byte, 1), CUDA_SUCCESS);
	ck_assert_int_eq(cu->cuMemcpyHtoD(va + 3 * g - 1, &byte, 2), CUDA_ERROR_INVALID_VALUE);
	/* Releasing a mapped handle, freeing a reservation with mappings. */
	ck_assert_int_eq(cu->cuMemRelease(h), CUDA_ERROR_INVALID_VALUE);
	ck_assert_int_eq(cu->cuMemAddressFree(va, 4 * g), CUDA_ERROR_INVALID_VALUE);
	ck_assert_int_eq(cu->cuMemUnmap(va, 3 * g), CUDA_SUCCESS);
	ck_assert_int_eq(cu->cuMemAddressFree(va, 2 * g), CUDA_ERROR_INVALID_VALUE);
	ck_assert_int_eq(cu->cuMemAddressFree(va, 4 * g), CUDA_SUCCESS);
	ck_assert_int_eq(cu->cuMemRelease(h), CUDA_SUCCESS);
	/* Stale handles. */
	ck_assert_int_eq(cu->cuMemRelease(h), CUDA_ERROR_INVALID_VALUE);
	ck_assert_int_eq(cu->cuMemRelease(h2), CUDA_SUCCESS);
	ck_assert_int_eq(cu->cuStreamDestroy((CUstream)&byte), CUDA_ERROR_INVALID_HANDLE);
	ck_assert_int_eq(cu->cuDevicePrimaryCtxRelease(0), CUDA_SUCCESS);
	ck_assert_int_eq(cu->cuDevicePrimaryCtxRelease(0), CUDA_ERROR_INVALID_CONTEXT);
	/* The released context is not usable any more. */
	ck_assert_int_eq(cu->cuMemCreate(&h, g, &prop, 0), CUDA_ERROR_INVALID_CONTEXT);
	assert_nothing_held();
}
END_TEST

START_TEST(backend_open_page_sizes)
{
	struct vkv_backend b;

	OK(open_backend(&b, VKV_UNBACKED_FAULT, 0, 0));
	ck_assert_uint_eq(b.page_size, 2 * MIB); /* every GPU so far */
	ck_assert_str_eq(ops(&b)->name, "cuda");
	ck_assert_msg(!fake || strstr(b.detail, "fake GPU 0 sm_90 2.0 MiB"),
		      "detail '%s'", b.detail);
	ops(&b)->close(&b);
	OK(open_backend(&b, VKV_UNBACKED_FAULT, 8 * MIB, 0));
	ck_assert_uint_eq(b.page_size, 8 * MIB);
	ops(&b)->close(&b);
	/* Not a multiple of the granularity, not a power of two. */
	FAILS(open_backend(&b, VKV_UNBACKED_FAULT, 1 * MIB, 0), -EINVAL);
	ck_assert_ptr_nonnull(strstr(vkv_last_error(), "granularity"));
	FAILS(open_backend(&b, VKV_UNBACKED_FAULT, 6 * MIB, 0), -EINVAL);
	FAILS(open_backend(&b, VKV_UNBACKED_FAULT, 0, 1000), -ENODEV);
	FAILS(open_backend(&b, VKV_UNBACKED_FAULT, 0, -1), -ENODEV);
	NEEDS_DOUBLE();
	FAILS(open_backend(&b, VKV_UNBACKED_FAULT, 0, 1), -ENODEV);
	/* The granularity is queried, not assumed. */
	setenv("VKV_FAKECUDA_GRANULARITY", "64K", 1);
	ck_assert_int_eq(fk_reload_fn(), 0);
	OK(open_backend(&b, VKV_UNBACKED_FAULT, 0, 0));
	ck_assert_uint_eq(b.page_size, 64 << 10);
	ops(&b)->close(&b);
	/* A device without VMM is not usable. */
	setenv("VKV_FAKECUDA_NO_VMM", "1", 1);
	ck_assert_int_eq(fk_reload_fn(), 0);
	FAILS(open_backend(&b, VKV_UNBACKED_FAULT, 0, 0), -ENODEV);
	assert_nothing_held();
}
END_TEST

START_TEST(backend_open_failures_leave_nothing)
{
	static const char *const plans[] = {
		"cuDevicePrimaryCtxRetain:1",
		"cuCtxSetCurrent:1",
		"cuMemGetAllocationGranularity:1:CUDA_ERROR_UNKNOWN",
	};
	struct vkv_backend b;

	NEEDS_DOUBLE();
	for (size_t i = 0; i < sizeof(plans) / sizeof(plans[0]); i++) {
		fk_fail(plans[i]);
		ck_assert_int_lt(open_backend(&b, VKV_UNBACKED_FAULT, 0, 0), 0);
		ck_assert_ptr_null(b.ops);
		assert_nothing_held();
	}
	/* Zero mode makes its page at open: every step of that can fail. */
	static const char *const zplans[] = {
		"cuMemCreate:1", "cuMemAddressReserve:1", "cuMemMap:1",
		"cuMemSetAccess:1", "cuMemsetD8:1:CUDA_ERROR_UNKNOWN",
		"cuMemSetAccess:2:CUDA_ERROR_UNKNOWN",
	};
	for (size_t i = 0; i < sizeof(zplans) / sizeof(zplans[0]); i++) {
		fk_fail(zplans[i]);
		ck_assert_int_lt(open_backend(&b, VKV_UNBACKED_ZERO, 0, 0), 0);
		assert_nothing_held();
	}
}
END_TEST

START_TEST(backend_reserve_map_copy_unmap)
{
	struct vkv_backend b;
	uint64_t ps, addr, size;
	vkv_phys pg[3];
	uint8_t *buf;

	OK(open_backend(&b, VKV_UNBACKED_FAULT, 0, 0));
	ps = b.page_size;
	size = 8 * ps;
	FAILS(ops(&b)->reserve(&b, ps + 4096, &addr), -EINVAL);
	OK(ops(&b)->reserve(&b, size, &addr));
	ck_assert_uint_eq(addr % ps, 0);
	for (int i = 0; i < 3; i++)
		OK(ops(&b)->page_create(&b, &pg[i]));
	OK(ops(&b)->map_pages(&b, addr + 2 * ps, pg, 3));
	FK_EXPECT(mappings, 3);
	/* One access change for the whole run. */
	ck_assert(!fake || fk_calls_fn("cuMemSetAccess") == 1);
	buf = malloc(3 * ps);
	fill(buf, 3 * ps, 1);
	OK(ops(&b)->copy_from_host(&b, addr + 2 * ps, buf, 3 * ps));
	ck_assert(holds(&b, addr + 2 * ps, 3 * ps, 1));
	ck_assert(dev_equals(addr + 2 * ps, buf, 3 * ps));
	if (fake) {
		/* Unbacked memory is not copied from. (Not tried on a GPU: a
		 * faulting copy can poison the context.) */
		ck_assert_int_ne(ops(&b)->copy_to_host(&b, buf, addr, ps), 0);
		/* Mapping over a mapped page is refused, changes nothing. */
		ck_assert_int_ne(ops(&b)->map_pages(&b, addr + 4 * ps, pg, 1), 0);
		FK_EXPECT(mappings, 3);
	}
	OK(ops(&b)->unmap_pages(&b, addr + 2 * ps, 3));
	FK_EXPECT(mappings, 0);
	/* Pages keep their contents across unmap and map elsewhere. */
	OK(ops(&b)->map_pages(&b, addr + 5 * ps, pg, 3));
	ck_assert(holds(&b, addr + 5 * ps, 3 * ps, 1));
	OK(ops(&b)->unmap_pages(&b, addr + 5 * ps, 3));
	for (int i = 0; i < 3; i++)
		ops(&b)->page_release(&b, pg[i]);
	OK(ops(&b)->unreserve(&b, addr, size));
	ops(&b)->close(&b);
	free(buf);
	assert_nothing_held();
}
END_TEST

START_TEST(backend_one_page_two_addresses)
{
	struct vkv_backend b;
	uint64_t ps, a, c;
	vkv_phys pg;
	uint8_t *buf;

	OK(open_backend(&b, VKV_UNBACKED_FAULT, 0, 0));
	ps = b.page_size;
	OK(ops(&b)->reserve(&b, 2 * ps, &a));
	OK(ops(&b)->reserve(&b, 4 * ps, &c));
	OK(ops(&b)->page_create(&b, &pg));
	OK(ops(&b)->map_pages(&b, a + ps, &pg, 1));
	OK(ops(&b)->map_pages(&b, c + 3 * ps, &pg, 1));
	buf = malloc(ps);
	fill(buf, ps, 42);
	OK(ops(&b)->copy_from_host(&b, a + ps, buf, ps));
	ck_assert(holds(&b, c + 3 * ps, ps, 42));
	/* Device to device, into the alias's other half. */
	OK(ops(&b)->copy_dd(&b, c + 3 * ps + ps / 2, a + ps, ps / 2));
	ck_assert(holds(&b, a + ps, ps / 2, 42));
	ck_assert(dev_equals(a + ps + ps / 2, buf, ps / 2));
	/* A mapped page cannot be released (the pool never does that). */
	OK(ops(&b)->unmap_pages(&b, a + ps, 1));
	ck_assert(holds(&b, c + 3 * ps, ps / 2, 42));
	OK(ops(&b)->unmap_pages(&b, c + 3 * ps, 1));
	ops(&b)->page_release(&b, pg);
	OK(ops(&b)->unreserve(&b, a, 2 * ps));
	OK(ops(&b)->unreserve(&b, c, 4 * ps));
	ops(&b)->close(&b);
	free(buf);
	assert_nothing_held();
}
END_TEST

/* An injected failure at every step of map_pages leaves the range
 * unbacked, and the same call succeeds afterwards. */
START_TEST(backend_map_failure_rolls_back)
{
	static const char *const plans[] = {
		"cuMemMap:1", "cuMemMap:3", "cuMemMap:4:CUDA_ERROR_UNKNOWN",
		"cuMemSetAccess:1", "cuMemSetAccess:1:CUDA_ERROR_INVALID_VALUE",
		"cuCtxSetCurrent:1",
	};
	static const int want[] = { -ENOMEM, -ENOMEM, -EIO, -ENOMEM, -EINVAL, -ENOMEM };
	struct vkv_backend b;
	uint64_t ps, addr;
	vkv_phys pg[4];

	NEEDS_DOUBLE();
	OK(open_backend(&b, VKV_UNBACKED_FAULT, 0, 0));
	ps = b.page_size;
	OK(ops(&b)->reserve(&b, 4 * ps, &addr));
	for (int i = 0; i < 4; i++)
		OK(ops(&b)->page_create(&b, &pg[i]));
	for (size_t i = 0; i < sizeof(plans) / sizeof(plans[0]); i++) {
		/* No context on this thread, so cuCtxSetCurrent is called. */
		vkv__cu()->cuCtxSetCurrent(NULL);
		fk_fail(plans[i]);
		FAILS(ops(&b)->map_pages(&b, addr, pg, 4), want[i]);
		ck_assert_msg(strstr(vkv_last_error(), "cu") == vkv_last_error(),
			      "detail '%s'", vkv_last_error());
		FK_EXPECT(mappings, 0);
		fk_fail(NULL);
		OK(ops(&b)->map_pages(&b, addr, pg, 4));
		OK(ops(&b)->unmap_pages(&b, addr, 4));
	}
	/* The runtime's own hook fails before the driver is called. */
	setenv("VKV_FAULT_MAP", "1", 1);
	vkv__fault_reset();
	FAILS(ops(&b)->map_pages(&b, addr, pg, 4), -ENOMEM);
	unsetenv("VKV_FAULT_MAP");
	FK_EXPECT(mappings, 0);
	for (int i = 0; i < 4; i++)
		ops(&b)->page_release(&b, pg[i]);
	OK(ops(&b)->unreserve(&b, addr, 4 * ps));
	ops(&b)->close(&b);
	assert_nothing_held();
}
END_TEST

START_TEST(backend_page_create_failure)
{
	struct vkv_backend b;
	vkv_phys pg[3];

	NEEDS_DOUBLE();
	setenv("VKV_FAKECUDA_MEM", "4M", 1);
	ck_assert_int_eq(fk_reload_fn(), 0);
	OK(open_backend(&b, VKV_UNBACKED_FAULT, 0, 0));
	OK(ops(&b)->page_create(&b, &pg[0]));
	OK(ops(&b)->page_create(&b, &pg[1]));
	/* Device memory exhausted. */
	FAILS(ops(&b)->page_create(&b, &pg[2]), -ENOMEM);
	ck_assert_str_eq(vkv_last_error(), "cuMemCreate: CUDA_ERROR_OUT_OF_MEMORY (2)");
	FK_EXPECT(allocs, 2);
	ops(&b)->page_release(&b, pg[1]);
	fk_fail("cuMemCreate:1:CUDA_ERROR_UNKNOWN");
	FAILS(ops(&b)->page_create(&b, &pg[1]), -EIO);
	OK(ops(&b)->page_create(&b, &pg[1]));
	ops(&b)->page_release(&b, pg[0]);
	ops(&b)->page_release(&b, pg[1]);
	ops(&b)->close(&b);
	assert_nothing_held();
}
END_TEST

START_TEST(backend_zero_mode)
{
	struct vkv_backend b;
	uint64_t ps, addr;
	vkv_phys pg[2];
	uint8_t *buf;

	OK(open_backend(&b, VKV_UNBACKED_ZERO, 0, 0));
	ps = b.page_size;
	/* The zero page exists from open on. */
	FK_EXPECT(allocs, 1);
	OK(ops(&b)->reserve(&b, 4 * ps, &addr));
	FK_EXPECT(mappings, 4);
	ck_assert(dev_zero(addr, 4 * ps));
	buf = malloc(2 * ps);
	OK(ops(&b)->copy_to_host(&b, buf, addr + ps, ps));
	ck_assert(all_zero(buf, ps));
	/* The zero page is read-only for the device. (Not tried on a GPU: a
	 * faulting copy can poison the context.) */
	if (fake)
		ck_assert_int_ne(ops(&b)->copy_from_host(&b, addr, buf, 16), 0);
	OK(ops(&b)->page_create(&b, &pg[0]));
	OK(ops(&b)->page_create(&b, &pg[1]));
	OK(ops(&b)->map_pages(&b, addr + ps, pg, 2));
	FK_EXPECT(mappings, 4);
	fill(buf, 2 * ps, 5);
	OK(ops(&b)->copy_from_host(&b, addr + ps, buf, 2 * ps));
	ck_assert(holds(&b, addr + ps, 2 * ps, 5));
	ck_assert(dev_zero(addr, ps));
	ck_assert(dev_zero(addr + 3 * ps, ps));
	OK(ops(&b)->unmap_pages(&b, addr + ps, 2));
	ck_assert(dev_zero(addr, 4 * ps));
	if (fake) {
		/* A failed map in zero mode leaves zero pages behind it. */
		fk_fail("cuMemSetAccess:1");
		FAILS(ops(&b)->map_pages(&b, addr + ps, pg, 2), -ENOMEM);
		fk_fail("cuMemMap:2");
		FAILS(ops(&b)->map_pages(&b, addr + ps, pg, 2), -ENOMEM);
		fk_fail(NULL);
		FK_EXPECT(mappings, 4);
		ck_assert(dev_zero(addr, 4 * ps));
		/* Unmapping a run: one access change for it. */
		OK(ops(&b)->map_pages(&b, addr + ps, pg, 2));
		fk_fail(NULL);
		OK(ops(&b)->unmap_pages(&b, addr + ps, 2));
		ck_assert_uint_eq(fk_calls_fn("cuMemSetAccess"), 1);
		/* A page that fails to unmap keeps its page; the others are
		 * zero again, and a retry finishes the job. */
		OK(ops(&b)->map_pages(&b, addr + ps, pg, 2));
		fk_fail("cuMemUnmap:1:CUDA_ERROR_UNKNOWN");
		FAILS(ops(&b)->unmap_pages(&b, addr + ps, 2), -EIO);
		ck_assert(holds(&b, addr + ps, ps, 5));
		ck_assert(dev_zero(addr + 2 * ps, ps));
		fk_fail(NULL);
		OK(ops(&b)->unmap_pages(&b, addr + ps, 1));
		FK_EXPECT(mappings, 4);
		ck_assert(dev_zero(addr, 4 * ps));
	}
	OK(ops(&b)->map_pages(&b, addr, pg, 2));
	OK(ops(&b)->unmap_pages(&b, addr, 2));
	ck_assert(dev_zero(addr, 4 * ps));
	for (int i = 0; i < 2; i++)
		ops(&b)->page_release(&b, pg[i]);
	OK(ops(&b)->unreserve(&b, addr, 4 * ps));
	FK_EXPECT(mappings, 0);
	if (fake) {
		/* A reserve whose zero mapping fails leaves nothing either. */
		fk_fail("cuMemMap:3");
		FAILS(ops(&b)->reserve(&b, 4 * ps, &addr), -ENOMEM);
		FK_EXPECT(reservations, 0);
		FK_EXPECT(mappings, 0);
	}
	ops(&b)->close(&b);
	free(buf);
	assert_nothing_held();
}
END_TEST

START_TEST(backend_fences_and_streams)
{
	struct vkv_backend b;
	vkv_fence f1, f2;
	CUstream s;

	OK(open_backend(&b, VKV_UNBACKED_FAULT, 0, 0));
	OK(ops(&b)->fence_record(&b, &f1));
	ck_assert_uint_ne(f1, 0);
	OK(ops(&b)->fence_wait(&b, f1));
	ops(&b)->fence_drop(&b, f1);
	FK_EXPECT(events, 0);
	/* On an engine stream. */
	ck_assert_int_eq(vkv__cu()->cuStreamCreate(&s, 0), CUDA_SUCCESS);
	OK(ops(&b)->set_stream(&b, s));
	OK(ops(&b)->fence_record(&b, &f1));
	OK(ops(&b)->fence_record(&b, &f2));
	ops(&b)->fence_drop(&b, f1);
	OK(ops(&b)->fence_wait(&b, f2));
	ops(&b)->fence_drop(&b, f2);
	OK(ops(&b)->set_stream(&b, NULL));
	ck_assert_int_eq(vkv__cu()->cuStreamDestroy(s), CUDA_SUCCESS);
	if (fake) {
		/* A failed record leaves no event. */
		fk_fail("cuEventRecord:1:CUDA_ERROR_UNKNOWN");
		FAILS(ops(&b)->fence_record(&b, &f1), -EIO);
		FK_EXPECT(events, 0);
	}
	ops(&b)->close(&b);
	assert_nothing_held();
}
END_TEST

struct thread_job {
	struct vkv_backend *b;
	uint64_t addr;
	vkv_phys page;
	int err;
};

/* A fresh thread has no current context: the backend must set one. */
static void *map_on_thread(void *arg)
{
	struct thread_job *j = arg;
	uint8_t byte = 0x5a;

	j->err = ops(j->b)->map_pages(j->b, j->addr, &j->page, 1);
	if (!j->err)
		j->err = ops(j->b)->copy_from_host(j->b, j->addr, &byte, 1);
	return NULL;
}

START_TEST(backend_context_on_every_thread)
{
	struct vkv_backend b;
	struct thread_job j = { .b = &b };
	CUcontext other, cur;
	pthread_t t;

	int ndev = 0;

	if (fake) {
		setenv("VKV_FAKECUDA_DEVICES", "2", 1);
		ck_assert_int_eq(fk_reload_fn(), 0);
	}
	ck_assert_int_eq(vkv__cu()->cuDeviceGetCount(&ndev), CUDA_SUCCESS);
	OK(open_backend(&b, VKV_UNBACKED_FAULT, 0, 0));
	OK(ops(&b)->reserve(&b, b.page_size, &j.addr));
	OK(ops(&b)->page_create(&b, &j.page));
	ck_assert_int_eq(pthread_create(&t, NULL, map_on_thread, &j), 0);
	pthread_join(t, NULL);
	OK(j.err);
	ck_assert(dev_equals(j.addr, "\x5a", 1));
	/* A thread working in another context gets it back. */
	if (ndev < 2) {
		OK(ops(&b)->unmap_pages(&b, j.addr, 1));
		goto out;
	}
	ck_assert_int_eq(vkv__cu()->cuDevicePrimaryCtxRetain(&other, 1), CUDA_SUCCESS);
	ck_assert_int_eq(vkv__cu()->cuCtxSetCurrent(other), CUDA_SUCCESS);
	OK(ops(&b)->unmap_pages(&b, j.addr, 1));
	ck_assert_int_eq(vkv__cu()->cuCtxGetCurrent(&cur), CUDA_SUCCESS);
	ck_assert_ptr_eq(cur, other);
	ck_assert_int_eq(vkv__cu()->cuDevicePrimaryCtxRelease(1), CUDA_SUCCESS);
	ck_assert_int_eq(vkv__cu()->cuCtxSetCurrent(NULL), CUDA_SUCCESS);
out:
	ops(&b)->page_release(&b, j.page);
	OK(ops(&b)->unreserve(&b, j.addr, b.page_size));
	ops(&b)->close(&b);
	assert_nothing_held();
}
END_TEST

/* -------------------------------------------------------------- public API */

static vkv_ctx *cuda_ctx(enum vkv_unbacked unbacked, uint64_t budget)
{
	struct vkv_ctx_config cfg;
	vkv_ctx *ctx = NULL;

	vkv_ctx_config_init(&cfg);
	cfg.backend = VKV_BACKEND_CUDA;
	cfg.unbacked = unbacked;
	cfg.budget = budget;
	/* Deterministic driver call counts: no background page creation. */
	cfg.flags |= VKV_CTX_NO_WORKER | VKV_CTX_NO_STATS;
	cfg.pool_low = 0;
	cfg.pool_high = 0;
	OK(vkv_ctx_create(&cfg, &ctx));
	return ctx;
}

static vkv_region *region(vkv_ctx *ctx, enum vkv_layout layout)
{
	struct vkv_region_config rc;
	vkv_region *r = NULL;

	vkv_region_config_init(&rc);
	rc.layers = 2;
	rc.kv_heads = 4;
	rc.head_dim = 128;
	rc.elem_size = 2; /* 1 KiB per token per K or V: 2048 tokens a page */
	rc.max_slots = 4;
	rc.max_context = 8192;
	rc.layout = layout;
	OK(vkv_region_create(ctx, &rc, &r));
	return r;
}

static uint8_t tok_byte(uint32_t seed, uint32_t layer, int kv, uint64_t tok,
			uint64_t i)
{
	return (uint8_t)(seed * 31 + layer * 7 + (unsigned)kv * 3 + tok * 13 + i);
}

static void write_tokens(vkv_region *r, uint32_t s, uint32_t seed,
			 uint64_t first, uint64_t n)
{
	struct vkv_region_info ri;
	uint8_t *buf;

	OK(vkv_region_info(r, &ri));
	buf = malloc(n * ri.token_bytes);
	for (uint32_t l = 0; l < ri.config.layers; l++)
		for (int kv = 0; kv < 2; kv++) {
			for (uint64_t t = 0; t < n; t++)
				for (uint64_t i = 0; i < ri.token_bytes; i++)
					buf[t * ri.token_bytes + i] =
						tok_byte(seed, l, kv, first + t, i);
			OK(vkv_slot_write(r, s, l, kv, first, n, buf));
		}
	free(buf);
}

static bool tokens_hold(vkv_region *r, uint32_t s, uint32_t seed,
			uint64_t first, uint64_t n)
{
	struct vkv_region_info ri;
	bool good = true;
	uint8_t *buf;

	OK(vkv_region_info(r, &ri));
	buf = malloc(n * ri.token_bytes);
	for (uint32_t l = 0; l < ri.config.layers && good; l++)
		for (int kv = 0; kv < 2 && good; kv++) {
			OK(vkv_slot_read(r, s, l, kv, first, n, buf));
			for (uint64_t t = 0; t < n && good; t++)
				for (uint64_t i = 0; i < ri.token_bytes && good; i++)
					good = buf[t * ri.token_bytes + i] ==
					       tok_byte(seed, l, kv, first + t, i);
		}
	free(buf);
	return good;
}

static void api_roundtrip(enum vkv_layout layout)
{
	vkv_ctx *ctx = cuda_ctx(VKV_UNBACKED_FAULT, 0);
	vkv_region *r = region(ctx, layout);
	struct vkv_ctx_info ci;
	struct vkv_slot_info si;
	struct vkv_tensor t;
	uint32_t a, c, slots[2];
	uint64_t lens[2];

	OK(vkv_ctx_info(ctx, &ci));
	ck_assert_int_eq(ci.backend, VKV_BACKEND_CUDA);
	ck_assert_str_eq(ci.backend_name, "cuda");
	ck_assert_uint_eq(ci.page_size, 2 * MIB);
	OK(vkv_slot_alloc(r, 0, &a));
	OK(vkv_slot_alloc(r, 0, &c));
	OK(vkv_slot_ensure(r, a, 3000));
	write_tokens(r, a, 1, 0, 3000);
	/* Grow through step, for both slots. */
	slots[0] = a, lens[0] = 5000;
	slots[1] = c, lens[1] = 100;
	OK(vkv_step(r, slots, lens, 2));
	write_tokens(r, a, 1, 3000, 2000);
	write_tokens(r, c, 2, 0, 100);
	ck_assert(tokens_hold(r, a, 1, 0, 5000));
	ck_assert(tokens_hold(r, c, 2, 0, 100));
	/* The tensor pointer reaches the same bytes as vkv_slot_read. */
	OK(vkv_region_tensor(r, 1, VKV_V, &t));
	{
		uint8_t byte;

		dev_read(&byte, t.addr + a * t.slot_stride + 4321 * t.token_stride + 5, 1);
		ck_assert_uint_eq(byte, tok_byte(1, 1, VKV_V, 4321, 5));
	}
	/* Share a's first 4500 tokens into c (full pages mapped, the partial
	 * one copied), then free a: c keeps them. */
	OK(vkv_slot_share_prefix(r, c, a, 4500));
	OK(vkv_slot_info(r, c, &si));
	ck_assert_uint_gt(si.shared_pages, 0);
	ck_assert(tokens_hold(r, c, 1, 0, 4500));
	OK(vkv_slot_free(r, a));
	OK(vkv_ctx_trim(ctx, NULL));
	ck_assert(tokens_hold(r, c, 1, 0, 4500));
	OK(vkv_slot_free(r, c));
	OK(vkv_region_destroy(r));
	OK(vkv_ctx_destroy(ctx));
	assert_nothing_held();
}

START_TEST(api_per_layer)
{
	api_roundtrip(VKV_LAYOUT_PER_LAYER);
}
END_TEST

START_TEST(api_all_layers)
{
	api_roundtrip(VKV_LAYOUT_ALL_LAYERS);
}
END_TEST

START_TEST(api_with_worker)
{
	struct vkv_ctx_config cfg;
	vkv_ctx *ctx;
	vkv_region *r;
	uint32_t s;

	vkv_ctx_config_init(&cfg);
	cfg.backend = VKV_BACKEND_CUDA;
	cfg.flags |= VKV_CTX_NO_STATS;
	cfg.pool_low = 4 * 2 * MIB;
	cfg.pool_high = 16 * 2 * MIB;
	OK(vkv_ctx_create(&cfg, &ctx));
	r = region(ctx, VKV_LAYOUT_PER_LAYER);
	OK(vkv_slot_alloc(r, 0, &s));
	for (uint64_t n = 500; n <= 8000; n += 500) {
		OK(vkv_step(r, &s, &n, 1));
		write_tokens(r, s, 3, n - 500, 500);
	}
	OK(vkv_ctx_quiesce(ctx));
	ck_assert(tokens_hold(r, s, 3, 0, 8000));
	OK(vkv_slot_free(r, s));
	OK(vkv_region_destroy(r));
	OK(vkv_ctx_destroy(ctx));
	assert_nothing_held();
}
END_TEST

/* The Nth cuMemCreate runs out of memory: -ENOMEM, what was backed stays
 * backed, nothing leaks, and the same call works once memory is back. */
START_TEST(api_nth_create_oom)
{
	struct vkv_slot_info si;
	struct vkv_ctx_info ci;
	vkv_region *r;
	vkv_ctx *ctx;
	uint32_t s;

	NEEDS_DOUBLE();
	ctx = cuda_ctx(VKV_UNBACKED_FAULT, 0);
	r = region(ctx, VKV_LAYOUT_PER_LAYER);

	OK(vkv_slot_alloc(r, 0, &s));
	OK(vkv_slot_ensure(r, s, 1000)); /* 4 pages: one per tensor */
	write_tokens(r, s, 4, 0, 1000);
	fk_fail("cuMemCreate:3");
	FAILS(vkv_slot_ensure(r, s, 5000), -ENOMEM);
	ck_assert_ptr_nonnull(strstr(vkv_strerror(-ENOMEM), "CUDA_ERROR_OUT_OF_MEMORY"));
	OK(vkv_slot_info(r, s, &si));
	ck_assert_uint_eq(si.backed_tokens, 2048);
	ck_assert(tokens_hold(r, s, 4, 0, 1000));
	/* The double holds exactly what the pool says it has. */
	OK(vkv_ctx_info(ctx, &ci));
	FK_EXPECT(allocs, ci.pages_total);
	FK_EXPECT(mappings, si.pages);
	OK(vkv_slot_ensure(r, s, 5000));
	write_tokens(r, s, 4, 1000, 4000);
	ck_assert(tokens_hold(r, s, 4, 0, 5000));
	OK(vkv_slot_free(r, s));
	OK(vkv_region_destroy(r));
	OK(vkv_ctx_destroy(ctx));
	assert_nothing_held();
}
END_TEST

/* Real device memory running out (no injection): the double's size. */
START_TEST(api_device_memory_exhausted)
{
	vkv_ctx *ctx;
	vkv_region *r;
	struct vkv_slot_info si;
	uint32_t s;

	NEEDS_DOUBLE();

	setenv("VKV_FAKECUDA_MEM", "16M", 1); /* 8 pages */
	ck_assert_int_eq(fk_reload_fn(), 0);
	ctx = cuda_ctx(VKV_UNBACKED_FAULT, 0);
	r = region(ctx, VKV_LAYOUT_PER_LAYER);
	OK(vkv_slot_alloc(r, 0, &s));
	OK(vkv_slot_ensure(r, s, 4000)); /* 2 pages x 4 tensors */
	FAILS(vkv_slot_ensure(r, s, 5000), -ENOMEM);
	OK(vkv_slot_info(r, s, &si));
	ck_assert_uint_eq(si.backed_tokens, 4096);
	OK(vkv_slot_free(r, s));
	OK(vkv_region_destroy(r));
	OK(vkv_ctx_destroy(ctx));
	assert_nothing_held();
}
END_TEST

/* A map or access failure in the driver leaves no partial mapping. */
START_TEST(api_map_failures)
{
	static const char *const plans[] = {
		"cuMemMap:2", "cuMemMap:4:CUDA_ERROR_UNKNOWN",
		"cuMemSetAccess:1:CUDA_ERROR_UNKNOWN", "cuMemSetAccess:2",
	};
	vkv_ctx *ctx = cuda_ctx(VKV_UNBACKED_FAULT, 0);
	vkv_region *r = region(ctx, VKV_LAYOUT_PER_LAYER);
	struct vkv_slot_info si;
	uint32_t s;

	NEEDS_DOUBLE();

	OK(vkv_slot_alloc(r, 0, &s));
	for (size_t i = 0; i < sizeof(plans) / sizeof(plans[0]); i++) {
		OK(vkv_slot_ensure(r, s, 100));
		write_tokens(r, s, 6, 0, 100);
		fk_fail(plans[i]);
		ck_assert_int_lt(vkv_slot_ensure(r, s, 6000), 0);
		fk_fail(NULL);
		OK(vkv_slot_info(r, s, &si));
		FK_EXPECT(mappings, si.pages);
		ck_assert_uint_ge(si.backed_tokens, 100);
		ck_assert(tokens_hold(r, s, 6, 0, 100));
		OK(vkv_slot_ensure(r, s, 6000));
		OK(vkv_slot_info(r, s, &si));
		FK_EXPECT(mappings, si.pages);
		OK(vkv_slot_free(r, s));
		OK(vkv_ctx_trim(ctx, NULL));
		FK_EXPECT(mappings, 0);
		OK(vkv_slot_alloc(r, 0, &s));
	}
	OK(vkv_slot_free(r, s));
	OK(vkv_region_destroy(r));
	OK(vkv_ctx_destroy(ctx));
	assert_nothing_held();
}
END_TEST

START_TEST(api_zero_mode)
{
	vkv_ctx *ctx = cuda_ctx(VKV_UNBACKED_ZERO, 0);
	vkv_region *r = region(ctx, VKV_LAYOUT_ALL_LAYERS);
	struct vkv_region_info ri;
	struct vkv_tensor t;
	uint64_t p, span;
	uint32_t s;

	OK(vkv_region_info(r, &ri));
	OK(vkv_slot_alloc(r, 0, &s));
	OK(vkv_region_tensor(r, 0, VKV_K, &t));
	p = t.addr + s * t.slot_stride;
	span = 8192 * t.token_stride - 4096;
	ck_assert(dev_zero(p, span));
	OK(vkv_slot_ensure(r, s, 700));
	write_tokens(r, s, 8, 0, 700);
	ck_assert(tokens_hold(r, s, 8, 0, 700));
	ck_assert(!dev_zero(p, 2));
	OK(vkv_slot_free(r, s));
	OK(vkv_ctx_trim(ctx, NULL));
	ck_assert(dev_zero(p, span));
	OK(vkv_region_destroy(r));
	OK(vkv_ctx_destroy(ctx));
	assert_nothing_held();
}
END_TEST

/* Run this program again with `arg` and extra environment; its status. */
static int run_child(const char *arg, const char *env1, const char *env2)
{
	char *argv[] = { (char *)"test_cuda", (char *)arg, NULL };
	size_t n = 0;
	char **envp;
	pid_t pid;
	int st;

	while (environ[n])
		n++;
	envp = calloc(n + 3, sizeof(*envp));
	memcpy(envp, environ, n * sizeof(*envp));
	envp[n] = (char *)env1;
	envp[n + 1] = (char *)env2;
	ck_assert_int_eq(posix_spawn(&pid, self_path, NULL, NULL, argv, envp), 0);
	free(envp);
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* In the child: auto falls back to host, cuda fails with -ENODEV (no
 * driver, no device) or -EIO (broken driver: `broken`). */
static int child_no_device(bool broken)
{
	struct vkv_ctx_config cfg;
	struct vkv_ctx_info ci;
	vkv_ctx *ctx = NULL;
	int err;

	vkv_ctx_config_init(&cfg);
	cfg.flags |= VKV_CTX_NO_STATS;
	cfg.backend = VKV_BACKEND_CUDA;
	err = vkv_ctx_create(&cfg, &ctx);
	if (err != (broken ? -EIO : -ENODEV)) {
		fprintf(stderr, "cuda without a device: %d (%s)\n", err, vkv_strerror(err));
		return 1;
	}
	fprintf(stderr, "child: cuda backend refused: %s\n", vkv_strerror(err));
	cfg.backend = VKV_BACKEND_AUTO;
	err = vkv_ctx_create(&cfg, &ctx);
	if (err || vkv_ctx_info(ctx, &ci) || ci.backend != VKV_BACKEND_HOST) {
		fprintf(stderr, "auto without a device: %d (%s)\n", err, vkv_strerror(err));
		return 1;
	}
	return vkv_ctx_destroy(ctx) ? 1 : 0;
}

START_TEST(api_no_device_falls_back)
{
	int st;

	NEEDS_DOUBLE();
	ck_assert_int_eq(run_child("--no-device", "VKV_FAKECUDA_DEVICES=0",
				   "VKV_LOG=quiet"), 0);
	/* No libcuda.so.1 at all (77: a real driver is installed here). */
	st = run_child("--no-driver", "LD_LIBRARY_PATH=/nonexistent", "VKV_LOG=quiet");
	ck_assert_msg(st == 0 || st == 77, "child: %d", st);
	/* A driver whose cuInit fails oddly is a warning, then host. */
	ck_assert_int_eq(run_child("--broken-driver", "VKV_FAKECUDA_FAIL=cuInit:1:999",
				   "VKV_LOG=quiet"), 0);
}
END_TEST


static Suite *cuda_suite(void)
{
	Suite *s = suite_create("cuda");
	TCase *tc;

	tc = tcase_create("backend");
	tcase_add_checked_fixture(tc, setup, NULL);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, loader_table_and_errors);
	tcase_add_test(tc, double_is_strict);
	tcase_add_test(tc, backend_open_page_sizes);
	tcase_add_test(tc, backend_open_failures_leave_nothing);
	tcase_add_test(tc, backend_reserve_map_copy_unmap);
	tcase_add_test(tc, backend_one_page_two_addresses);
	tcase_add_test(tc, backend_map_failure_rolls_back);
	tcase_add_test(tc, backend_page_create_failure);
	tcase_add_test(tc, backend_zero_mode);
	tcase_add_test(tc, backend_fences_and_streams);
	tcase_add_test(tc, backend_context_on_every_thread);
	suite_add_tcase(s, tc);

	tc = tcase_create("api");
	tcase_add_checked_fixture(tc, setup, NULL);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, api_per_layer);
	tcase_add_test(tc, api_all_layers);
	tcase_add_test(tc, api_with_worker);
	tcase_add_test(tc, api_nth_create_oom);
	tcase_add_test(tc, api_device_memory_exhausted);
	tcase_add_test(tc, api_map_failures);
	tcase_add_test(tc, api_zero_mode);
	tcase_add_test(tc, api_no_device_falls_back);
	suite_add_tcase(s, tc);
	return s;
}

int main(int argc, char **argv)
{
	self_path = argv[0];
	if (argc > 1 && !strcmp(argv[1], "--no-device"))
		return child_no_device(false);
	if (argc > 1 && !strcmp(argv[1], "--broken-driver"))
		return child_no_device(true);
	if (argc > 1 && !strcmp(argv[1], "--no-driver"))
		return dlopen("libcuda.so.1", RTLD_NOW) ? 77 : child_no_device(false);
	fake = find_double();
	if (!fake && !vkv__cu()) {
		printf("test_cuda: SKIP: no usable CUDA driver (%s); for the test "
		       "double set LD_LIBRARY_PATH to build/tests/cudadouble\n",
		       vkv_last_error());
		return 77;
	}
	if (!fake) {
		printf("test_cuda: real driver %d: the contract and API tests "
		       "run, fault injection and leak checks are skipped\n",
		       vkv__cu()->driver_version);
		/* This process has initialised the driver (vkv__cu() above),
		 * and a child forked after cuInit cannot use CUDA: the tests
		 * run in this process, one after another. */
		setenv("CK_FORK", "no", 1);
	}
	return vkv_check_run(cuda_suite());
}
