// SPDX-License-Identifier: MIT
/*
 * test_core.c - Check suite for the libvkv core through its public API:
 * contexts, regions, slots, step, prefix sharing, the pool's budget,
 * deferred reclamation, bad input, fault injection, stats and a threaded
 * stress test (run under TSan by `make SAN=tsan check`).
 *
 * The backend comes from VKV_BACKEND (default host), so the same suite
 * runs on the cuda backend against the CUDA driver test double and, inside
 * the kernel-module VM, on the kmod backend. Host pointers into the
 * tensors are only used when the backend's memory is host-addressable
 * (host, kmod, and the test double, whose device memory is host memory).
 */
#include <check.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "vkv_check.h"
#include "vkv.h"
#include "vkv_stats.h"


/* Page size for this run: VKV_TEST_PAGE (bytes), 0 = backend default. */
static uint64_t test_page(void)
{
	const char *s = getenv("VKV_TEST_PAGE");

	return s ? strtoull(s, NULL, 0) : 0;
}

static vkv_ctx *make_ctx(uint64_t budget, uint32_t flags)
{
	struct vkv_ctx_config cfg;
	vkv_ctx *ctx = NULL;

	vkv_ctx_config_init(&cfg);
	if (test_page())
		cfg.page_size = test_page();
	cfg.budget = budget;
	cfg.flags |= flags;
	OK(vkv_ctx_create(&cfg, &ctx));
	return ctx;
}

/* Tensor addresses the CPU may dereference: host and kmod memory, and
 * the CUDA driver test double's "device" memory; not a real GPU's. */
static bool cpu_addressable(vkv_ctx *ctx)
{
	struct vkv_ctx_info ci;
	void *lib;
	bool dbl;

	OK(vkv_ctx_info(ctx, &ci));
	if (ci.backend != VKV_BACKEND_CUDA)
		return true;
	lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
	dbl = lib && dlsym(lib, "vkv_fakecuda_calls");
	if (lib)
		dlclose(lib);
	return dbl;
}

static uint64_t ctx_page(vkv_ctx *ctx)
{
	struct vkv_ctx_info info;

	OK(vkv_ctx_info(ctx, &info));
	return info.page_size;
}

static vkv_region *make_region(vkv_ctx *ctx, enum vkv_layout layout,
			       uint32_t slots, uint64_t ctxlen)
{
	struct vkv_region_config rc;
	vkv_region *r = NULL;

	vkv_region_config_init(&rc);
	rc.layers = 3;
	rc.kv_heads = 2;
	rc.head_dim = 64;
	rc.elem_size = 2; /* 256 bytes per token per tensor */
	rc.max_slots = slots;
	rc.max_context = ctxlen;
	rc.layout = layout;
	OK(vkv_region_create(ctx, &rc, &r));
	return r;
}

/* A byte that depends on every coordinate, so misplaced data shows. */
static uint8_t pattern(uint32_t seed, uint32_t slot, uint32_t layer, int kv,
		       uint64_t tok, uint64_t byte)
{
	uint64_t x = seed * 0x9E3779B97F4A7C15ULL ^ (slot * 131u + layer * 7u +
						     (unsigned)kv) * 0x100000001B3ULL ^
		     tok * 0xC2B2AE3D27D4EB4FULL ^ byte * 0x165667B19E3779F9ULL;

	x ^= x >> 29;
	return (uint8_t)(x * 0xBF58476D1CE4E5B9ULL >> 56);
}

static void fill_slot(vkv_region *r, uint32_t slot, uint32_t seed,
		      uint64_t first, uint64_t count)
{
	struct vkv_region_info ri;
	uint8_t *buf;

	OK(vkv_region_info(r, &ri));
	buf = malloc(count * ri.token_bytes + 1);
	for (uint32_t l = 0; l < ri.config.layers; l++)
		for (int kv = 0; kv < 2; kv++) {
			for (uint64_t t = 0; t < count; t++)
				for (uint64_t b = 0; b < ri.token_bytes; b++)
					buf[t * ri.token_bytes + b] =
						pattern(seed, 0, l, kv, first + t, b);
			OK(vkv_slot_write(r, slot, l, kv, first, count, buf));
		}
	free(buf);
}

/* True when tokens [first, first+count) of slot hold seed's pattern. */
static bool check_slot(vkv_region *r, uint32_t slot, uint32_t seed,
		       uint64_t first, uint64_t count)
{
	struct vkv_region_info ri;
	uint8_t *buf;
	bool good = true;

	OK(vkv_region_info(r, &ri));
	buf = malloc(count * ri.token_bytes + 1);
	for (uint32_t l = 0; l < ri.config.layers && good; l++)
		for (int kv = 0; kv < 2 && good; kv++) {
			OK(vkv_slot_read(r, slot, l, kv, first, count, buf));
			for (uint64_t t = 0; t < count && good; t++)
				for (uint64_t b = 0; b < ri.token_bytes; b++)
					if (buf[t * ri.token_bytes + b] !=
					    pattern(seed, 0, l, kv, first + t, b)) {
						fprintf(stderr, "mismatch slot %u layer %u kv %d tok %llu byte %llu\n",
							slot, l, kv, (unsigned long long)(first + t),
							(unsigned long long)b);
						good = false;
						break;
					}
		}
	free(buf);
	return good;
}

/* ---------------------------------------------------------------- context */

START_TEST(ctx_create_info_destroy)
{
	vkv_ctx *ctx = make_ctx(0, 0);
	struct vkv_ctx_info info;

	OK(vkv_ctx_info(ctx, &info));
	ck_assert_uint_gt(info.page_size, 0);
	ck_assert_uint_eq(info.page_size & (info.page_size - 1), 0);
	ck_assert_int_ne(info.backend, VKV_BACKEND_AUTO);
	ck_assert_str_eq(info.backend_name, vkv_backend_name(info.backend));
	ck_assert_uint_eq(info.pages_mapped, 0);
	OK(vkv_ctx_destroy(ctx));
}
END_TEST

START_TEST(ctx_bad_config)
{
	struct vkv_ctx_config cfg;
	vkv_ctx *ctx = NULL;

	FAILS(vkv_ctx_create(NULL, &ctx), -EINVAL);
	vkv_ctx_config_init(&cfg);
	FAILS(vkv_ctx_create(&cfg, NULL), -EINVAL);
	cfg.struct_size = 8;
	FAILS(vkv_ctx_create(&cfg, &ctx), -EINVAL);
	ck_assert_msg(strstr(vkv_strerror(-EINVAL), "struct_size"), "%s",
		      vkv_strerror(-EINVAL));
	vkv_ctx_config_init(&cfg);
	cfg.backend = (enum vkv_backend_kind)99;
	FAILS(vkv_ctx_create(&cfg, &ctx), -EINVAL);
	vkv_ctx_config_init(&cfg);
	cfg.page_size = 3 << 12;
	FAILS(vkv_ctx_create(&cfg, &ctx), -EINVAL);
	vkv_ctx_config_init(&cfg);
	cfg.flags = 1u << 30;
	FAILS(vkv_ctx_create(&cfg, &ctx), -EINVAL);
	vkv_ctx_config_init(&cfg);
	cfg.unbacked = VKV_UNBACKED_COUNT;
	FAILS(vkv_ctx_create(&cfg, &ctx), -EINVAL);
	ck_assert_ptr_null(ctx);
	FAILS(vkv_ctx_destroy(NULL), -EINVAL);
}
END_TEST

START_TEST(ctx_destroy_busy_with_regions)
{
	vkv_ctx *ctx = make_ctx(0, 0);
	vkv_region *r = make_region(ctx, VKV_LAYOUT_PER_LAYER, 2, 64);

	FAILS(vkv_ctx_destroy(ctx), -EBUSY);
	OK(vkv_region_destroy(r));
	OK(vkv_ctx_destroy(ctx));
}
END_TEST

START_TEST(options_from_environment)
{
	struct vkv_ctx_config cfg;
	char *backend = getenv("VKV_BACKEND") ? strdup(getenv("VKV_BACKEND")) : NULL;

	setenv("VKV_BUDGET", "64M", 1);
	setenv("VKV_POOL_LOW", "1g", 1);
	setenv("VKV_UNBACKED", "zero", 1);
	setenv("VKV_WORKER", "0", 1);
	vkv_ctx_config_init(&cfg);
	ck_assert_uint_eq(cfg.budget, 64ULL << 20);
	ck_assert_uint_eq(cfg.pool_low, 1ULL << 30);
	ck_assert_int_eq(cfg.unbacked, VKV_UNBACKED_ZERO);
	ck_assert(cfg.flags & VKV_CTX_NO_WORKER);
	/* Bad values warn and fall back to the defaults. */
	setenv("VKV_BUDGET", "12X", 1);
	setenv("VKV_POOL_LOW", "-5", 1);
	setenv("VKV_UNBACKED", "maybe", 1);
	setenv("VKV_BACKEND", "tpu", 1);
	setenv("VKV_POOL_HIGH", "99999999999999999999999", 1);
	vkv_ctx_config_init(&cfg);
	ck_assert_uint_eq(cfg.budget, 0);
	ck_assert_uint_eq(cfg.pool_low, 8ULL << 20);
	ck_assert_uint_eq(cfg.pool_high, 64ULL << 20);
	ck_assert_int_eq(cfg.unbacked, VKV_UNBACKED_FAULT);
	ck_assert_int_eq(cfg.backend, VKV_BACKEND_AUTO);
	/* Without fork (valgrind) later tests share this environment. */
	unsetenv("VKV_BUDGET");
	unsetenv("VKV_POOL_LOW");
	unsetenv("VKV_POOL_HIGH");
	unsetenv("VKV_UNBACKED");
	unsetenv("VKV_WORKER");
	if (backend)
		setenv("VKV_BACKEND", backend, 1);
	else
		unsetenv("VKV_BACKEND");
	free(backend);
}
END_TEST

/* ----------------------------------------------------------------- region */

START_TEST(region_bad_config)
{
	vkv_ctx *ctx = make_ctx(0, 0);
	struct vkv_region_config rc;
	vkv_region *r = NULL;

	vkv_region_config_init(&rc);
	FAILS(vkv_region_create(ctx, &rc, &r), -EINVAL); /* all zero */
	rc.layers = rc.kv_heads = rc.head_dim = rc.max_slots = 1;
	rc.max_context = 16;
	OK(vkv_region_create(ctx, &rc, &r));
	OK(vkv_region_destroy(r));
	rc.elem_size = 3;
	FAILS(vkv_region_create(ctx, &rc, &r), -EINVAL);
	rc.elem_size = 2;
	rc.layout = VKV_LAYOUT_COUNT;
	FAILS(vkv_region_create(ctx, &rc, &r), -EINVAL);
	rc.layout = VKV_LAYOUT_PER_LAYER;
	rc.max_context = UINT64_MAX / 2;
	FAILS(vkv_region_create(ctx, &rc, &r), -EOVERFLOW);
	rc.max_context = 1ULL << 40; /* fits 64 bits, not the address space */
	rc.kv_heads = 64;
	FAILS(vkv_region_create(ctx, &rc, &r), -EOVERFLOW);
	rc.max_context = 16;
	rc.struct_size = 4;
	FAILS(vkv_region_create(ctx, &rc, &r), -EINVAL);
	FAILS(vkv_region_create(NULL, &rc, &r), -EINVAL);
	FAILS(vkv_region_destroy(NULL), -EINVAL);
	OK(vkv_ctx_destroy(ctx));
}
END_TEST

START_TEST(region_tensor_geometry)
{
	vkv_ctx *ctx = make_ctx(0, 0);
	uint64_t ps = ctx_page(ctx);
	vkv_region *a = make_region(ctx, VKV_LAYOUT_PER_LAYER, 4, 1000);
	vkv_region *b = make_region(ctx, VKV_LAYOUT_ALL_LAYERS, 4, 1000);
	struct vkv_tensor k0, v0, k1, t;
	struct vkv_region_info ri;

	OK(vkv_region_tensor(a, 0, VKV_K, &k0));
	OK(vkv_region_tensor(a, 0, VKV_V, &v0));
	OK(vkv_region_tensor(a, 1, VKV_K, &k1));
	ck_assert_uint_eq(k0.token_stride, 256);
	ck_assert_uint_eq(k0.head_stride, 128);
	ck_assert_uint_eq(k0.slot_stride % ps, 0);
	ck_assert_uint_ge(k0.slot_stride, 1000 * 256);
	ck_assert_uint_eq(v0.addr - k0.addr, 4 * k0.slot_stride);
	ck_assert_uint_eq(k1.addr - k0.addr, 8 * k0.slot_stride);
	ck_assert_uint_eq(k0.addr % ps, 0);
	OK(vkv_region_info(a, &ri));
	ck_assert_uint_eq(ri.reserved_bytes, 6 * 4 * k0.slot_stride);
	ck_assert_uint_eq(ri.token_bytes, 256);

	OK(vkv_region_tensor(b, 0, VKV_K, &k0));
	OK(vkv_region_tensor(b, 0, VKV_V, &v0));
	OK(vkv_region_tensor(b, 2, VKV_V, &t));
	ck_assert_uint_eq(k0.token_stride, 6 * 256);
	ck_assert_uint_eq(v0.addr - k0.addr, 256);
	ck_assert_uint_eq(t.addr - k0.addr, 5 * 256);
	ck_assert_uint_ge(k0.slot_stride, 1000 * 6 * 256);

	FAILS(vkv_region_tensor(a, 3, VKV_K, &t), -EINVAL);
	FAILS(vkv_region_tensor(a, 0, 2, &t), -EINVAL);
	OK(vkv_region_destroy(a));
	OK(vkv_region_destroy(b));
	OK(vkv_ctx_destroy(ctx));
}
END_TEST

/* ------------------------------------------------------- data integrity */

static void integrity(enum vkv_layout layout)
{
	vkv_ctx *ctx = make_ctx(0, 0);
	uint64_t ps = ctx_page(ctx);
	/* Enough context for several pages per slot at this page size. */
	uint64_t maxctx = 3 * ps / 256 + 100;
	vkv_region *r = make_region(ctx, layout, 3, maxctx);
	uint32_t s0, s1, s2;
	uint64_t lens[3];
	uint32_t ids[3];

	OK(vkv_slot_alloc(r, 0, &s0));
	OK(vkv_slot_alloc(r, 0, &s1));
	OK(vkv_slot_alloc(r, 0, &s2));
	/* Grow step by step across page boundaries, writing as we go. */
	uint64_t chunk = maxctx / 7 + 1;
	for (uint64_t len = 0; len < maxctx;) {
		uint64_t next = len + chunk < maxctx ? len + chunk : maxctx;

		ids[0] = s0, ids[1] = s1, ids[2] = s2;
		lens[0] = next, lens[1] = next / 2, lens[2] = next;
		OK(vkv_step(r, ids, lens, 3));
		fill_slot(r, s0, 1, len, next - len);
		fill_slot(r, s2, 3, len, next - len);
		len = next;
	}
	fill_slot(r, s1, 2, 0, maxctx / 2);
	ck_assert(check_slot(r, s0, 1, 0, maxctx));
	ck_assert(check_slot(r, s1, 2, 0, maxctx / 2));
	ck_assert(check_slot(r, s2, 3, 0, maxctx));

	/* Free, reuse (the cached pages come back), overwrite, verify. */
	OK(vkv_slot_free(r, s1));
	ck_assert(check_slot(r, s0, 1, 0, maxctx));
	uint32_t again;
	OK(vkv_slot_alloc(r, maxctx / 2, &again));
	ck_assert_uint_eq(again, s1);
	struct vkv_slot_info si;
	OK(vkv_slot_info(r, again, &si));
	ck_assert_uint_ge(si.backed_tokens, maxctx / 2);
	fill_slot(r, again, 4, 0, maxctx / 2);
	ck_assert(check_slot(r, again, 4, 0, maxctx / 2));
	ck_assert(check_slot(r, s2, 3, 0, maxctx));
	OK(vkv_region_destroy(r));
	OK(vkv_ctx_destroy(ctx));
}

START_TEST(integrity_per_layer)
{
	integrity(VKV_LAYOUT_PER_LAYER);
}
END_TEST

START_TEST(integrity_all_layers)
{
	integrity(VKV_LAYOUT_ALL_LAYERS);
}
END_TEST

/* Direct pointer access agrees with vkv_slot_read (host-addressable). */
START_TEST(tensor_pointer_aliases_slot_data)
{
	vkv_ctx *ctx = make_ctx(0, 0);
	vkv_region *r = make_region(ctx, VKV_LAYOUT_ALL_LAYERS, 2, 500);
	struct vkv_tensor t;
	uint32_t s;
	uint16_t val = 0xBEEF, back = 0;

	if (!cpu_addressable(ctx)) { /* a GPU's memory: test_cuda covers it */
		OK(vkv_region_destroy(r));
		OK(vkv_ctx_destroy(ctx));
		return;
	}
	OK(vkv_slot_alloc(r, 0, &s));
	OK(vkv_slot_ensure(r, s, 500));
	OK(vkv_region_tensor(r, 2, VKV_V, &t));
	uint8_t *p = (uint8_t *)(uintptr_t)(t.addr + s * t.slot_stride +
					     499 * t.token_stride + 1 * t.head_stride +
					     63 * t.elem_size);
	memcpy(p, &val, 2);
	uint8_t tok[256];
	OK(vkv_slot_read(r, s, 2, VKV_V, 499, 1, tok));
	memcpy(&back, tok + 128 + 126, 2);
	ck_assert_uint_eq(back, 0xBEEF);
	OK(vkv_region_destroy(r));
	OK(vkv_ctx_destroy(ctx));
}
END_TEST

/* A stray access to unbacked memory faults (default mode). */
START_TEST(unbacked_access_faults)
{
	vkv_ctx *ctx = make_ctx(0, 0);
	vkv_region *r = make_region(ctx, VKV_LAYOUT_PER_LAYER, 2, 100000);
	struct vkv_tensor t;
	uint32_t s;

	OK(vkv_slot_alloc(r, 0, &s));
	OK(vkv_slot_ensure(r, s, 10));
	OK(vkv_region_tensor(r, 0, VKV_K, &t));
	volatile uint8_t *p = (volatile uint8_t *)(uintptr_t)(t.addr + s * t.slot_stride +
							       99999 * t.token_stride);
	(void)*p; /* SIGSEGV expected */
}
END_TEST

START_TEST(unbacked_reads_zero_in_zero_mode)
{
	struct vkv_ctx_config cfg;
	vkv_ctx *ctx;
	struct vkv_tensor t;
	uint32_t s;

	vkv_ctx_config_init(&cfg);
	if (test_page())
		cfg.page_size = test_page();
	cfg.unbacked = VKV_UNBACKED_ZERO;
	OK(vkv_ctx_create(&cfg, &ctx));
	if (!cpu_addressable(ctx)) { /* test_cuda's backend_zero_mode */
		OK(vkv_ctx_destroy(ctx));
		return;
	}
	vkv_region *r = make_region(ctx, VKV_LAYOUT_PER_LAYER, 2, 100000);
	OK(vkv_slot_alloc(r, 0, &s));
	OK(vkv_region_tensor(r, 1, VKV_V, &t));
	const volatile uint8_t *p =
		(const volatile uint8_t *)(uintptr_t)(t.addr + s * t.slot_stride);
	ck_assert_uint_eq(p[0], 0);
	ck_assert_uint_eq(p[99999 * 256], 0);
	/* Map, dirty, free, reclaim: the range reads zero again. */
	OK(vkv_slot_ensure(r, s, 100));
	fill_slot(r, s, 9, 0, 100);
	ck_assert_uint_ne(p[0] | p[1] | p[2] | p[3], 0);
	OK(vkv_slot_free(r, s));
	OK(vkv_ctx_trim(ctx, NULL));
	ck_assert_uint_eq(p[0] | p[1] | p[2] | p[3], 0);
	OK(vkv_region_destroy(r));
	OK(vkv_ctx_destroy(ctx));
}
END_TEST

/* ------------------------------------------------------------ bad input */

START_TEST(slot_bad_input)
{
	vkv_ctx *ctx = make_ctx(0, 0);
	vkv_region *r = make_region(ctx, VKV_LAYOUT_PER_LAYER, 2, 64);
	uint32_t s, s2, x;
	uint8_t buf[256 * 64];

	FAILS(vkv_slot_free(r, 0), -EINVAL);    /* never allocated */
	FAILS(vkv_slot_free(r, 7), -EINVAL);    /* out of range */
	FAILS(vkv_slot_ensure(r, 1, 1), -EINVAL);
	OK(vkv_slot_alloc(r, 0, &s));
	OK(vkv_slot_alloc(r, 0, &s2));
	FAILS(vkv_slot_alloc(r, 0, &x), -ENOSPC);
	FAILS(vkv_slot_alloc_at(r, s), -EBUSY);
	FAILS(vkv_slot_alloc_at(r, 9), -EINVAL);
	FAILS(vkv_slot_ensure(r, s, 65), -E2BIG);
	FAILS(vkv_slot_ensure(r, 5, 1), -EINVAL);
	OK(vkv_slot_ensure(r, s, 0));
	OK(vkv_slot_ensure(r, s, 64));
	FAILS(vkv_slot_read(r, s2, 0, VKV_K, 0, 1, buf), -ERANGE); /* unbacked */
	FAILS(vkv_slot_read(r, s, 0, VKV_K, 60, 5, buf), -E2BIG);
	FAILS(vkv_slot_read(r, s, 0, VKV_K, UINT64_MAX, 2, buf), -E2BIG);
	FAILS(vkv_slot_read(r, s, 3, VKV_K, 0, 1, buf), -EINVAL);
	FAILS(vkv_slot_read(r, s, 0, 7, 0, 1, buf), -EINVAL);
	FAILS(vkv_slot_read(r, s, 0, VKV_K, 0, 1, NULL), -EINVAL);
	OK(vkv_slot_read(r, s, 0, VKV_K, 0, 64, buf));
	FAILS(vkv_slot_share_prefix(r, s, s, 4), -EINVAL);
	FAILS(vkv_slot_share_prefix(r, s2, s, 65), -E2BIG);
	FAILS(vkv_slot_share_prefix(r, s, s2, 4), -EINVAL); /* src unbacked */
	FAILS(vkv_slot_prefetch(r, s, 65), -E2BIG);
	FAILS(vkv_slot_info(r, 2, &(struct vkv_slot_info){ 0 }), -EINVAL);
	FAILS(vkv_slot_alloc(NULL, 0, &x), -EINVAL);
	FAILS(vkv_step(r, NULL, NULL, 1), -EINVAL);
	OK(vkv_step(r, NULL, NULL, 0));
	OK(vkv_slot_free(r, s));
	FAILS(vkv_slot_free(r, s), -EINVAL); /* double free */
	ck_assert_msg(strstr(vkv_strerror(-EINVAL), "double free"), "%s",
		      vkv_strerror(-EINVAL));
	OK(vkv_region_destroy(r));
	OK(vkv_ctx_destroy(ctx));
}
END_TEST

/* A bad entry anywhere in a batch changes nothing at all. */
START_TEST(step_bad_batch_changes_nothing)
{
	vkv_ctx *ctx = make_ctx(0, VKV_CTX_NO_WORKER);
	vkv_region *r = make_region(ctx, VKV_LAYOUT_PER_LAYER, 4, 4096);
	uint32_t a, b, ids[3];
	uint64_t lens[3];
	struct vkv_slot_info si;

	OK(vkv_slot_alloc(r, 0, &a));
	OK(vkv_slot_alloc(r, 0, &b));
	ids[0] = a, lens[0] = 100;
	ids[1] = 3, lens[1] = 5; /* not allocated */
	ids[2] = b, lens[2] = 100;
	FAILS(vkv_step(r, ids, lens, 3), -EINVAL);
	ck_assert_msg(strstr(vkv_last_error(), "batch entry 1"), "%s", vkv_last_error());
	OK(vkv_slot_info(r, a, &si));
	ck_assert_uint_eq(si.pages, 0);
	ids[1] = b, lens[1] = 4097;
	FAILS(vkv_step(r, ids, lens, 3), -E2BIG);
	OK(vkv_slot_info(r, a, &si));
	ck_assert_uint_eq(si.pages, 0);
	OK(vkv_region_destroy(r));
	OK(vkv_ctx_destroy(ctx));
}
END_TEST

/* ------------------------------------------------------- prefix sharing */

static void sharing(enum vkv_layout layout)
{
	vkv_ctx *ctx = make_ctx(0, VKV_CTX_NO_WORKER);
	uint64_t ps = ctx_page(ctx);
	struct vkv_region_info ri;
	vkv_region *r = make_region(ctx, layout, 4, 4 * ps / 256 + 8);

	OK(vkv_region_info(r, &ri));
	uint64_t tpp = ri.tokens_per_page;
	uint64_t prefix = 2 * tpp + tpp / 2; /* two full pages and a half */
	uint32_t src, dst, other;
	struct vkv_slot_info si, di;
	struct vkv_ctx_info ci;

	OK(vkv_slot_alloc(r, 0, &src));
	OK(vkv_slot_alloc(r, 0, &dst));
	OK(vkv_slot_ensure(r, src, prefix + 5));
	fill_slot(r, src, 11, 0, prefix + 5);
	/* dst already holds pages of its own: they must be replaced. */
	OK(vkv_slot_ensure(r, dst, tpp));
	fill_slot(r, dst, 12, 0, tpp);
	OK(vkv_ctx_info(ctx, &ci));
	uint64_t mapped_before = ci.pages_mapped;

	OK(vkv_slot_share_prefix(r, dst, src, prefix));
	ck_assert(check_slot(r, dst, 11, 0, prefix));
	OK(vkv_slot_info(r, src, &si));
	OK(vkv_slot_info(r, dst, &di));
	uint64_t ttb = layout == VKV_LAYOUT_ALL_LAYERS ? 6 * 256 : 256;
	uint64_t nt = layout == VKV_LAYOUT_ALL_LAYERS ? 1 : 6;
	uint64_t full = prefix * ttb / ps;
	ck_assert_uint_ge(full, 1);
	ck_assert_uint_eq(di.shared_pages, full * nt);
	ck_assert_uint_eq(si.shared_pages, full * nt);
	/* dst's own first page went back to the pool and one page of its own
	 * holds the copied partial page: distinct pages are unchanged. */
	OK(vkv_ctx_info(ctx, &ci));
	ck_assert_uint_eq(ci.pages_mapped, mapped_before);
	/* dst appends after the prefix; src's tokens past it are untouched. */
	OK(vkv_slot_ensure(r, dst, prefix + 5));
	fill_slot(r, dst, 13, prefix, 5);
	ck_assert(check_slot(r, src, 11, 0, prefix + 5));
	ck_assert(check_slot(r, dst, 13, prefix, 5));
	ck_assert(check_slot(r, dst, 11, 0, prefix));

	/* A third slot shares from dst: three mappings of the same pages. */
	OK(vkv_slot_alloc(r, 0, &other));
	OK(vkv_slot_share_prefix(r, other, dst, 2 * tpp));
	ck_assert(check_slot(r, other, 11, 0, 2 * tpp));

	/* Freeing and reclaiming src leaves both others intact. */
	OK(vkv_slot_free(r, src));
	OK(vkv_ctx_trim(ctx, NULL));
	ck_assert(check_slot(r, dst, 11, 0, prefix));
	ck_assert(check_slot(r, dst, 13, prefix, 5));
	ck_assert(check_slot(r, other, 11, 0, 2 * tpp));
	OK(vkv_slot_free(r, dst));
	OK(vkv_ctx_trim(ctx, NULL));
	ck_assert(check_slot(r, other, 11, 0, 2 * tpp));
	OK(vkv_slot_info(r, other, &si));
	ck_assert_uint_eq(si.shared_pages, 0);
	OK(vkv_slot_free(r, other));
	OK(vkv_ctx_trim(ctx, NULL));
	OK(vkv_ctx_info(ctx, &ci));
	ck_assert_uint_eq(ci.pages_mapped, 0);
	ck_assert_uint_eq(ci.pages_total, 0);
	OK(vkv_region_destroy(r));
	OK(vkv_ctx_destroy(ctx));
}

START_TEST(share_prefix_per_layer)
{
	sharing(VKV_LAYOUT_PER_LAYER);
}
END_TEST

START_TEST(share_prefix_all_layers)
{
	sharing(VKV_LAYOUT_ALL_LAYERS);
}
END_TEST

/* --------------------------------------------------- budget and reclaim */

START_TEST(budget_exhaustion_is_clean)
{
	vkv_ctx *ctx = make_ctx(0, 0);
	uint64_t ps = ctx_page(ctx);

	OK(vkv_ctx_destroy(ctx));
	/* 12 pages: slot a takes 6 (1 page x 6 tensors), b the other 6. */
	ctx = make_ctx(12 * ps, 0);
	vkv_region *r = make_region(ctx, VKV_LAYOUT_PER_LAYER, 4, 4 * ps / 256);
	uint64_t tpp = ps / 256;
	uint32_t a, b, c;
	struct vkv_ctx_info ci;
	struct vkv_slot_info si;

	OK(vkv_slot_alloc(r, 0, &a));
	OK(vkv_slot_alloc(r, 0, &b));
	OK(vkv_slot_alloc(r, 0, &c));
	OK(vkv_slot_ensure(r, a, tpp));
	fill_slot(r, a, 21, 0, tpp);
	OK(vkv_slot_ensure(r, b, tpp));
	fill_slot(r, b, 22, 0, tpp);
	FAILS(vkv_slot_ensure(r, c, 1), -ENOMEM);
	ck_assert_msg(strstr(vkv_strerror(-ENOMEM), "budget"), "%s",
		      vkv_strerror(-ENOMEM));
	FAILS(vkv_slot_ensure(r, a, tpp + 1), -ENOMEM);
	/* Nothing lost, nothing leaked, state consistent. */
	OK(vkv_slot_info(r, a, &si));
	ck_assert_uint_eq(si.backed_tokens, tpp);
	OK(vkv_slot_info(r, c, &si));
	ck_assert_uint_eq(si.pages, 0);
	ck_assert(check_slot(r, a, 21, 0, tpp));
	ck_assert(check_slot(r, b, 22, 0, tpp));
	OK(vkv_ctx_info(ctx, &ci));
	ck_assert_uint_eq(ci.pages_total, 12);
	ck_assert_uint_eq(ci.pages_mapped, 12);
	/* Freed pages stay cached, then are reclaimed for the next request. */
	OK(vkv_slot_free(r, b));
	OK(vkv_slot_info(r, b, &si));
	ck_assert_uint_eq(si.pages, 6);
	OK(vkv_slot_ensure(r, c, tpp));
	fill_slot(r, c, 23, 0, tpp);
	ck_assert(check_slot(r, a, 21, 0, tpp));
	ck_assert(check_slot(r, c, 23, 0, tpp));
	OK(vkv_slot_info(r, b, &si));
	ck_assert_uint_eq(si.pages, 0);
	OK(vkv_ctx_info(ctx, &ci));
	ck_assert_uint_le(ci.pages_total, 12);
	OK(vkv_region_destroy(r));
	OK(vkv_ctx_destroy(ctx));
}
END_TEST

/* Under a spent budget, pages an active slot holds beyond its length
 * (look-ahead, prefetch) are taken back before a commit fails. */
START_TEST(budget_trims_active_surplus)
{
	vkv_ctx *ctx = make_ctx(0, 0);
	uint64_t ps = ctx_page(ctx);

	OK(vkv_ctx_destroy(ctx));
	ctx = make_ctx(12 * ps, 0);
	uint64_t tpp = ps / 256;
	vkv_region *r = make_region(ctx, VKV_LAYOUT_PER_LAYER, 2, 4 * tpp);
	uint32_t a, b;
	struct vkv_slot_info si;

	OK(vkv_slot_alloc(r, 0, &a));
	OK(vkv_slot_alloc(r, 0, &b));
	OK(vkv_slot_ensure(r, a, tpp / 2));
	fill_slot(r, a, 61, 0, tpp / 2);
	OK(vkv_slot_prefetch(r, a, 2 * tpp)); /* all 12 pages */
	OK(vkv_ctx_quiesce(ctx));
	OK(vkv_slot_info(r, a, &si));
	ck_assert_uint_eq(si.pages, 12);
	OK(vkv_slot_ensure(r, b, tpp));
	fill_slot(r, b, 62, 0, tpp);
	OK(vkv_slot_info(r, a, &si));
	ck_assert_uint_eq(si.pages, 6);
	ck_assert(check_slot(r, a, 61, 0, tpp / 2));
	ck_assert(check_slot(r, b, 62, 0, tpp));
	/* What a holds for its length is never taken. */
	FAILS(vkv_slot_ensure(r, b, 2 * tpp), -ENOMEM);
	ck_assert(check_slot(r, a, 61, 0, tpp / 2));
	OK(vkv_region_destroy(r));
	OK(vkv_ctx_destroy(ctx));
}
END_TEST

START_TEST(deferred_reclamation_reuses_pages)
{
	vkv_ctx *ctx = make_ctx(0, VKV_CTX_NO_WORKER);
	vkv_region *r = make_region(ctx, VKV_LAYOUT_PER_LAYER, 4, 2000);
	uint32_t a, b;
	struct vkv_ctx_info ci;
	struct vkv_region_info ri;
	uint64_t freed = 0;

	OK(vkv_slot_alloc(r, 0, &a));
	OK(vkv_slot_ensure(r, a, 2000));
	OK(vkv_ctx_info(ctx, &ci));
	uint64_t total = ci.pages_total;
	OK(vkv_slot_free(r, a));
	OK(vkv_region_info(r, &ri));
	ck_assert_uint_eq(ri.slots_cached, 1);
	ck_assert_uint_eq(ri.slots_active, 0);
	/* A request that fits gets the cached slot: no page is created. */
	OK(vkv_slot_alloc(r, 1500, &b));
	ck_assert_uint_eq(a, b);
	OK(vkv_slot_ensure(r, b, 1500));
	OK(vkv_ctx_info(ctx, &ci));
	ck_assert_uint_eq(ci.pages_total, total);
	OK(vkv_slot_free(r, b));
	OK(vkv_ctx_trim(ctx, &freed));
	ck_assert_uint_eq(freed, total * ci.page_size);
	OK(vkv_ctx_info(ctx, &ci));
	ck_assert_uint_eq(ci.pages_total, 0);
	OK(vkv_region_info(r, &ri));
	ck_assert_uint_eq(ri.slots_cached, 0);
	ck_assert_uint_eq(ri.committed_bytes, 0);
	OK(vkv_region_destroy(r));
	OK(vkv_ctx_destroy(ctx));
}
END_TEST

/* Mappings (lines of /proc/self/maps) that overlap [lo, hi). */
/* Free hugetlb pages of the default size, from /proc/meminfo. */
static uint64_t hugetlb_free(void)
{
	unsigned long long n = 0;
	char line[256];
	FILE *f = fopen("/proc/meminfo", "r");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		sscanf(line, "HugePages_Free: %llu", &n);
	fclose(f);
	return n;
}

static unsigned vmas_in(uint64_t lo, uint64_t hi)
{
	FILE *f = fopen("/proc/self/maps", "r");
	unsigned long long a, b;
	char line[512];
	unsigned n = 0;

	ck_assert_ptr_nonnull(f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%llx-%llx", &a, &b) == 2 && a < hi && b > lo)
			n++;
	fclose(f);
	return n;
}

/*
 * A slot's new pages are given out tensor by tensor in physical order, so
 * on host memory each tensor's range is one run, mapped with one call and
 * one VMA. Interleaving them (K0 V0 K1 V1 ...) made every page its own
 * VMA: 32 here, and vm.max_map_count (65530) reached at ~256 MiB of 4 KiB
 * pages.
 */
START_TEST(grow_maps_each_tensor_in_one_run)
{
	vkv_ctx *ctx = make_ctx(0, VKV_CTX_NO_WORKER);
	struct vkv_ctx_info ci;
	uint64_t ps = ctx_page(ctx), tokens;
	unsigned extra = 0;
	bool switched;
	vkv_region *r;
	uint32_t s;

	OK(vkv_ctx_info(ctx, &ci));
	/* host only: cuda has no CPU mappings to count, and /dev/vkv
	 * buffers need not sit at consecutive offsets */
	if (ci.backend != VKV_BACKEND_HOST) {
		OK(vkv_ctx_destroy(ctx));
		return;
	}
	tokens = 32 * ps / 256; /* 32 pages of each of the 6 tensors */
	r = make_region(ctx, VKV_LAYOUT_PER_LAYER, 2, tokens);
	OK(vkv_slot_alloc(r, 0, &s));
	OK(vkv_slot_ensure(r, s, tokens));
	/* Reserved hugetlb pages that ran out meanwhile: the pages after
	 * them come from the other file, one more run in one tensor. */
	switched = strstr(ci.backend_detail, "hugetlb") && hugetlb_free() == 0;
	for (uint32_t layer = 0; layer < 3; layer++) {
		for (int kv = 0; kv < 2; kv++) {
			struct vkv_tensor t;
			uint64_t lo;
			unsigned n;

			OK(vkv_region_tensor(r, layer, kv, &t));
			lo = t.addr + s * t.slot_stride;
			n = vmas_in(lo, lo + 32 * ps);
			ck_assert_uint_ge(n, 1);
			extra += n - 1;
		}
	}
	ck_assert_uint_le(extra, switched ? 1 : 0);
	OK(vkv_region_destroy(r));
	OK(vkv_ctx_destroy(ctx));
}
END_TEST

START_TEST(lookahead_commits_ahead)
{
	vkv_ctx *ctx = make_ctx(0, 0);
	vkv_region *r = make_region(ctx, VKV_LAYOUT_PER_LAYER, 2, 100000);
	struct vkv_region_info ri;
	struct vkv_slot_info si;
	uint32_t s;
	uint64_t len = 1;

	OK(vkv_region_info(r, &ri));
	OK(vkv_slot_alloc(r, 0, &s));
	OK(vkv_step(r, &s, &len, 1));
	OK(vkv_ctx_quiesce(ctx));
	OK(vkv_slot_info(r, s, &si));
	/* One page's worth of look-ahead beyond the length: two pages. */
	ck_assert_uint_ge(si.backed_tokens, 1 + ri.config.lookahead);
	len = si.backed_tokens;
	OK(vkv_slot_prefetch(r, s, len + 3 * ri.tokens_per_page));
	OK(vkv_ctx_quiesce(ctx));
	OK(vkv_slot_info(r, s, &si));
	ck_assert_uint_ge(si.backed_tokens, len + 3 * ri.tokens_per_page);
	OK(vkv_region_destroy(r));
	OK(vkv_ctx_destroy(ctx));
}
END_TEST

/* ------------------------------------------------------ fault injection */

START_TEST(injected_page_create_failure)
{
	vkv_ctx *ctx = make_ctx(0, VKV_CTX_NO_WORKER);
	vkv_region *r = make_region(ctx, VKV_LAYOUT_PER_LAYER, 2, 4096);
	struct vkv_ctx_info ci;
	struct vkv_slot_info si;
	uint32_t s;

	OK(vkv_slot_alloc(r, 0, &s));
	setenv("VKV_FAULT_PAGE_CREATE", "3", 1);
	FAILS(vkv_slot_ensure(r, s, 1), -ENOMEM); /* needs 6 pages */
	ck_assert_msg(strstr(vkv_last_error(), "injected"), "%s", vkv_last_error());
	OK(vkv_ctx_info(ctx, &ci));
	ck_assert_uint_eq(ci.pages_total, 0);
	ck_assert_uint_eq(ci.pages_mapped, 0);
	OK(vkv_slot_info(r, s, &si));
	ck_assert_uint_eq(si.pages, 0);
	OK(vkv_slot_ensure(r, s, 1)); /* the 4th call on succeeds */
	fill_slot(r, s, 31, 0, 1);
	ck_assert(check_slot(r, s, 31, 0, 1));
	unsetenv("VKV_FAULT_PAGE_CREATE");
	OK(vkv_region_destroy(r));
	OK(vkv_ctx_destroy(ctx));
}
END_TEST

/*
 * The host backend takes 2 MiB pages from the reserved hugetlb pages while
 * they last, then from ordinary memory; every page holds its data either
 * way. With VKV_FAULT_HUGETLB the second hugetlb page fails as if none
 * were left, and the pages after it come from ordinary memory. Where no
 * huge pages are reserved (tools/run-tests.sh reserves a few for one
 * step) it checks that the backend does not claim them.
 */
static void hugetlb_fallback(bool inject)
{
	struct vkv_ctx_config cfg;
	struct vkv_region_config rc;
	struct vkv_ctx_info ci;
	vkv_ctx *ctx = NULL;
	vkv_region *r = NULL;
	uint64_t free0 = hugetlb_free(), slots;

	vkv_ctx_config_init(&cfg);
	cfg.backend = VKV_BACKEND_HOST;
	cfg.page_size = 2ULL << 20;
	cfg.flags |= VKV_CTX_NO_WORKER | VKV_CTX_NO_STATS;
	if (inject)
		setenv("VKV_FAULT_HUGETLB", "2", 1);
	OK(vkv_ctx_create(&cfg, &ctx));
	OK(vkv_ctx_info(ctx, &ci));
	if (!free0 || free0 > 256) {
		/* none reserved, or too many to exhaust in a unit test */
		if (!free0)
			ck_assert_msg(!strstr(ci.backend_detail, "hugetlb"), "%s",
				      ci.backend_detail);
		OK(vkv_ctx_destroy(ctx));
		return;
	}
	ck_assert_msg(strstr(ci.backend_detail, "hugetlb"), "%s", ci.backend_detail);
	vkv_region_config_init(&rc);
	rc.layers = 1;
	rc.kv_heads = 2;
	rc.head_dim = 64;
	rc.elem_size = 2;
	/* two pages (K, V) per slot, four more pages than are reserved */
	slots = free0 / 2 + 3;
	rc.max_slots = (uint32_t)slots;
	rc.max_context = 16;
	OK(vkv_region_create(ctx, &rc, &r));
	for (uint32_t s = 0; s < slots; s++) {
		OK(vkv_slot_alloc_at(r, s));
		OK(vkv_slot_ensure(r, s, 16));
		fill_slot(r, s, 40 + s, 0, 16);
	}
	OK(vkv_ctx_info(ctx, &ci));
	ck_assert_uint_eq(ci.pages_mapped, 2 * slots);
	if (inject)
		/* one hugetlb page, then the rest from ordinary memory */
		ck_assert_uint_eq(hugetlb_free(), free0 - 1);
	else
		ck_assert_uint_eq(hugetlb_free(), 0);
	for (uint32_t s = 0; s < slots; s++)
		ck_assert(check_slot(r, s, 40 + s, 0, 16));
	OK(vkv_region_destroy(r));
	OK(vkv_ctx_destroy(ctx));
	ck_assert_uint_eq(hugetlb_free(), free0);
	unsetenv("VKV_FAULT_HUGETLB");
}

START_TEST(hugetlb_runs_out_falls_back)
{
	hugetlb_fallback(false);
}
END_TEST

START_TEST(hugetlb_failure_falls_back)
{
	hugetlb_fallback(true);
}
END_TEST

START_TEST(injected_map_failure)
{
	vkv_ctx *ctx = make_ctx(0, VKV_CTX_NO_WORKER);
	vkv_region *r = make_region(ctx, VKV_LAYOUT_PER_LAYER, 2, 100000);
	struct vkv_ctx_info ci;
	struct vkv_slot_info si;
	uint32_t s;

	OK(vkv_slot_alloc(r, 0, &s));
	OK(vkv_slot_ensure(r, s, 10));
	fill_slot(r, s, 41, 0, 10);
	OK(vkv_slot_info(r, s, &si));
	uint64_t backed = si.backed_tokens;
	setenv("VKV_FAULT_MAP", "4", 1); /* 6 map calls were made already */
	FAILS(vkv_slot_ensure(r, s, backed + 1), -ENOMEM);
	unsetenv("VKV_FAULT_MAP");
	OK(vkv_slot_info(r, s, &si));
	ck_assert_uint_eq(si.backed_tokens, backed);
	ck_assert(check_slot(r, s, 41, 0, 10));
	OK(vkv_ctx_info(ctx, &ci));
	ck_assert_uint_eq(ci.pages_mapped, 6);
	ck_assert_uint_eq(ci.pages_total, ci.pages_mapped + ci.pages_free);
	OK(vkv_slot_ensure(r, s, backed + 1));
	OK(vkv_region_destroy(r));
	OK(vkv_ctx_destroy(ctx));
}
END_TEST

/* ------------------------------------------------------------------ stats */

START_TEST(stats_segment_published)
{
	char dir[] = "/tmp/vkv-stats-XXXXXX", path[256];
	struct vkv_stats_segment seg;
	struct stat st;
	int fd;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	setenv("VKV_STATS_DIR", dir, 1);
	vkv_ctx *ctx = make_ctx(0, 0);
	vkv_region *r = make_region(ctx, VKV_LAYOUT_PER_LAYER, 2, 100);
	uint32_t s;
	uint64_t len = 50;

	OK(vkv_slot_alloc(r, 0, &s));
	OK(vkv_step(r, &s, &len, 1));
	snprintf(path, sizeof(path), "%s/%s%d", dir, VKV_STATS_PREFIX, (int)getpid());
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_uint_eq(st.st_mode & 0777, 0600);
	fd = open(path, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(read(fd, &seg, sizeof(seg)), (int)sizeof(seg));
	close(fd);
	ck_assert_uint_eq(seg.magic, VKV_STATS_MAGIC);
	ck_assert_uint_eq(seg.version, VKV_STATS_VERSION);
	ck_assert_uint_eq(seg.size, sizeof(seg));
	ck_assert_int_eq(seg.pid, getpid());
	ck_assert_uint_eq(seg.seq % 2, 0);
	ck_assert_uint_eq(seg.steps, 1);
	ck_assert_uint_eq(seg.slots_active, 1);
	ck_assert_uint_eq(seg.regions, 1);
	ck_assert_uint_gt(seg.committed_bytes, 0);
	ck_assert_uint_eq(seg.in_use_bytes,
			  6 * ((50 * 256 + seg.page_size - 1) / seg.page_size) * seg.page_size);
	ck_assert_uint_ge(seg.maps_sync, 6);
	OK(vkv_region_destroy(r));
	OK(vkv_ctx_destroy(ctx));
	fd = open(path, O_RDONLY);
	ck_assert_int_eq(read(fd, &seg, sizeof(seg)), (int)sizeof(seg));
	close(fd);
	ck_assert_uint_eq(seg.regions, 0);
	ck_assert_uint_eq(seg.in_use_bytes, 0);
	ck_assert_uint_eq(seg.committed_bytes, 0);
	ck_assert_uint_eq(seg.contexts, 0);
	unlink(path);
	rmdir(dir);
}
END_TEST

/* A child that creates a context (and so its stats segment), says so, and
 * then holds it until go[1] is closed (or it is killed); with go NULL it
 * exits at once. */
static pid_t spawn_publisher(const int *go)
{
	int ready[2];
	pid_t pid;
	char c;

	ck_assert_int_eq(pipe(ready), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct vkv_ctx_config cfg;
		vkv_ctx *ctx = NULL;

		close(ready[0]);
		vkv_ctx_config_init(&cfg);
		if (vkv_ctx_create(&cfg, &ctx) != 0 || write(ready[1], "r", 1) != 1)
			_exit(1);
		if (go) {
			close(go[1]);
			while (read(go[0], &c, 1) > 0)
				;
		}
		vkv_ctx_destroy(ctx);
		exit(0);
	}
	close(ready[1]);
	ck_assert_int_eq(read(ready[0], &c, 1), 1);
	close(ready[0]);
	return pid;
}

static pid_t dead_pid(void)
{
	pid_t pid = fork();

	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		_exit(0);
	ck_assert_int_eq(waitpid(pid, NULL, 0), pid);
	return pid;
}

static void seg_name(char *buf, size_t len, const char *dir, pid_t pid)
{
	snprintf(buf, len, "%s/%s%d", dir, VKV_STATS_PREFIX, (int)pid);
}

static bool exists(const char *path)
{
	return access(path, F_OK) == 0;
}

/* A copy of `from`'s segment under the name and pid of `pid`; returns a
 * descriptor open on it. */
static int plant_segment(const char *dir, pid_t from, pid_t pid)
{
	struct vkv_stats_segment seg;
	char path[512];
	int fd;

	seg_name(path, sizeof(path), dir, from);
	fd = open(path, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(read(fd, &seg, sizeof(seg)), (int)sizeof(seg));
	close(fd);
	seg.pid = pid;
	seg_name(path, sizeof(path), dir, pid);
	fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, &seg, sizeof(seg)), (int)sizeof(seg));
	return fd;
}

/*
 * A process killed by SIGKILL leaves its segment; the next process that
 * publishes removes it, and nothing else: not a live sibling's, not one
 * whose writer still holds its lock (a live process in another pid
 * namespace, where kill() says ESRCH), not another user's, not a file that
 * is no valid segment, not a file of another name. The sweep runs in a
 * child of its own, so the test holds without Check's fork too. Once in
 * /tmp and once on tmpfs (/dev/shm, the default directory), where a file
 * renamed during readdir() shows up again.
 */
START_TEST(stats_sweeps_dead_segments)
{
	char dir[64], killed_seg[512], live_seg[512], locked_seg[512],
	     other_seg[512], junk_seg[512], sweeper_seg[512], stray[512];
	const char *base = _i ? "/dev/shm" : "/tmp";
	pid_t killed, live, sweeper, pid;
	bool root = geteuid() == 0;
	int go[2], locked_fd, fd, st;
	struct dirent *de;
	struct stat dst;
	DIR *d;

	if (stat(base, &dst) != 0 || !S_ISDIR(dst.st_mode)) {
		printf("stats_sweeps_dead_segments: no %s, case skipped\n", base);
		return;
	}
	snprintf(dir, sizeof(dir), "%s/vkv-sweep-XXXXXX", base);
	ck_assert_ptr_nonnull(mkdtemp(dir));
	setenv("VKV_STATS_DIR", dir, 1);
	setenv("VKV_STATS", "1", 1);
	ck_assert_int_eq(pipe(go), 0);
	killed = spawn_publisher(go);
	live = spawn_publisher(go);
	close(go[0]);
	seg_name(killed_seg, sizeof(killed_seg), dir, killed);
	seg_name(live_seg, sizeof(live_seg), dir, live);
	ck_assert(exists(killed_seg) && exists(live_seg));
	ck_assert_int_eq(kill(killed, SIGKILL), 0);
	ck_assert_int_eq(waitpid(killed, &st, 0), killed);
	ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	ck_assert_msg(exists(killed_seg), "a killed process unlinked its segment");

	/* valid segments of pids no process has, which must stay */
	pid = dead_pid();
	seg_name(locked_seg, sizeof(locked_seg), dir, pid);
	locked_fd = plant_segment(dir, live, pid);
	ck_assert_int_eq(flock(locked_fd, LOCK_SH), 0);
	pid = dead_pid();
	seg_name(other_seg, sizeof(other_seg), dir, pid);
	fd = plant_segment(dir, live, pid);
	if (root)
		ck_assert_int_eq(fchown(fd, 65534, 65534), 0);
	close(fd);
	pid = dead_pid();
	seg_name(junk_seg, sizeof(junk_seg), dir, pid);
	fd = plant_segment(dir, live, pid);
	ck_assert_int_eq(pwrite(fd, "junk", 4, 0), 4);
	close(fd);
	pid = dead_pid();
	seg_name(stray, sizeof(stray) - 8, dir, pid);
	close(plant_segment(dir, live, pid));
	{
		char from[512];

		seg_name(from, sizeof(from), dir, pid);
		strcat(stray, ".old");
		ck_assert_int_eq(rename(from, stray), 0);
	}

	sweeper = spawn_publisher(NULL);
	ck_assert_int_eq(waitpid(sweeper, &st, 0), sweeper);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	seg_name(sweeper_seg, sizeof(sweeper_seg), dir, sweeper);

	ck_assert_msg(!exists(killed_seg), "the killed process's segment stayed");
	ck_assert_msg(exists(live_seg), "a live sibling's segment was removed");
	ck_assert_msg(exists(locked_seg), "a locked segment was removed");
	ck_assert_msg(exists(other_seg) || !root, "another user's segment was removed");
	ck_assert_msg(exists(junk_seg), "a file that is no segment was removed");
	ck_assert_msg(exists(stray), "a file of another name was removed");
	ck_assert_msg(!exists(sweeper_seg), "the sweeper left its own segment");

	close(go[1]);
	ck_assert_int_eq(waitpid(live, &st, 0), live);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	ck_assert_msg(!exists(live_seg), "the sibling left its segment at exit");
	close(locked_fd);
	d = opendir(dir);
	ck_assert_ptr_nonnull(d);
	while ((de = readdir(d)) != NULL) {
		char path[512];

		if (de->d_name[0] == '.')
			continue;
		ck_assert_msg(!strstr(de->d_name, "swept"), "left behind: %s",
			      de->d_name);
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		unlink(path);
	}
	closedir(d);
	rmdir(dir);
	unsetenv("VKV_STATS_DIR");
	unsetenv("VKV_STATS");
}
END_TEST

/* Fill the process's VMA budget (vm.max_map_count) with one-page mappings
 * of a private memfd at descending offsets, so that none merge. Returns
 * the mapping area and its page count through *n. */
static uint8_t *exhaust_vmas(size_t *n)
{
	size_t max = 1 << 20, i;
	int fd = memfd_create("vma-filler", MFD_CLOEXEC);
	uint8_t *area;

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, (off_t)(max * 4096)), 0);
	area = mmap(NULL, max * 4096, PROT_NONE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	ck_assert_ptr_ne(area, MAP_FAILED);
	for (i = 0; i < max; i++)
		if (mmap(area + i * 4096, 4096, PROT_READ, MAP_SHARED | MAP_FIXED, fd,
			 (off_t)((max - i) * 4096)) == MAP_FAILED)
			break;
	close(fd);
	ck_assert_msg(i < max, "vm.max_map_count was never reached");
	*n = max;
	return area;
}

/* At vm.max_map_count, commits fail cleanly and unmaps still work. */
START_TEST(map_count_exhaustion_is_clean)
{
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
	return; /* the sanitizers' own mappings cannot live at the limit */
#endif
	struct vkv_ctx_config cfg;
	struct vkv_ctx_info ci;
	struct vkv_slot_info si;
	vkv_ctx *ctx;
	uint32_t a, b;
	size_t n;
	uint8_t *area;

	vkv_ctx_config_init(&cfg);
	if (cfg.backend != VKV_BACKEND_HOST && cfg.backend != VKV_BACKEND_AUTO)
		return; /* a host-memory property */
	cfg.backend = VKV_BACKEND_HOST;
	cfg.page_size = 4096;
	cfg.flags |= VKV_CTX_NO_WORKER;
	OK(vkv_ctx_create(&cfg, &ctx));
	vkv_region *r = make_region(ctx, VKV_LAYOUT_PER_LAYER, 2, 4096);
	OK(vkv_slot_alloc(r, 0, &a));
	OK(vkv_slot_alloc(r, 0, &b));
	OK(vkv_slot_ensure(r, a, 64));
	fill_slot(r, a, 71, 0, 64);
	OK(vkv_slot_ensure(r, b, 64));
	fill_slot(r, b, 72, 0, 64);

	area = exhaust_vmas(&n);
	/* Growing needs new mappings: a clean -ENOMEM, nothing half done. */
	OK(vkv_slot_info(r, a, &si));
	uint64_t pages = si.pages;
	int err = vkv_slot_ensure(r, a, 4096);
	ck_assert_msg(err == -ENOMEM, "ensure at the limit = %d (%s)", err,
		      vkv_strerror(err));
	OK(vkv_slot_info(r, a, &si));
	ck_assert_uint_eq(si.pages, pages);
	/* Giving pages back still works at the limit. */
	OK(vkv_slot_free(r, b));
	OK(vkv_ctx_trim(ctx, NULL));
	OK(vkv_slot_info(r, b, &si));
	ck_assert_uint_eq(si.pages, 0);
	ck_assert(check_slot(r, a, 71, 0, 64));

	munmap(area, n * 4096);
	OK(vkv_slot_ensure(r, a, 4096));
	ck_assert(check_slot(r, a, 71, 0, 64));
	OK(vkv_region_destroy(r));
	OK(vkv_ctx_info(ctx, &ci));
	ck_assert_uint_eq(ci.pages_mapped, 0);
	OK(vkv_ctx_destroy(ctx));
}
END_TEST

/* --------------------------------------------------------------- threads */

struct stress_arg {
	vkv_region *r;
	uint32_t id;
	unsigned iters;
	int failures;
};

static void *stress_thread(void *p)
{
	struct stress_arg *a = p;
	unsigned seed = a->id * 7919u + 1;

	for (unsigned i = 0; i < a->iters; i++) {
		uint32_t s;
		uint64_t len = 1 + rand_r(&seed) % 900;

		if (vkv_slot_alloc(a->r, len, &s) != 0)
			continue; /* all slots busy: fine */
		for (uint64_t l = 1; l <= len; l += 1 + rand_r(&seed) % 200) {
			if (vkv_step(a->r, &s, &l, 1) != 0) {
				a->failures++;
				break;
			}
		}
		if (vkv_step(a->r, &s, &len, 1) == 0) {
			fill_slot(a->r, s, a->id * 1000 + i, 0, len);
			if (!check_slot(a->r, s, a->id * 1000 + i, 0, len))
				a->failures++;
		} else {
			a->failures++;
		}
		if (vkv_slot_free(a->r, s) != 0)
			a->failures++;
	}
	return NULL;
}

START_TEST(threaded_stress)
{
	enum { THREADS = 4 };
	vkv_ctx *ctx = make_ctx(0, 0);
	vkv_region *r = make_region(ctx, VKV_LAYOUT_PER_LAYER, 6, 1000);
	pthread_t th[THREADS];
	struct stress_arg args[THREADS];
	struct vkv_ctx_info ci;

	for (uint32_t i = 0; i < THREADS; i++) {
		args[i] = (struct stress_arg){ .r = r, .id = i, .iters = 25 };
		ck_assert_int_eq(pthread_create(&th[i], NULL, stress_thread, &args[i]), 0);
	}
	/* The main thread trims concurrently: reclaim races the users. */
	for (int i = 0; i < 20; i++) {
		OK(vkv_ctx_trim(ctx, NULL));
		usleep(1000);
	}
	for (uint32_t i = 0; i < THREADS; i++) {
		pthread_join(th[i], NULL);
		ck_assert_int_eq(args[i].failures, 0);
	}
	OK(vkv_ctx_quiesce(ctx));
	OK(vkv_ctx_trim(ctx, NULL));
	OK(vkv_ctx_info(ctx, &ci));
	ck_assert_uint_eq(ci.pages_mapped, 0);
	ck_assert_uint_eq(ci.pages_total, ci.pages_free);
	OK(vkv_region_destroy(r));
	OK(vkv_ctx_destroy(ctx));
}
END_TEST

/* Destroying a region while the worker commits look-ahead into it. */
START_TEST(destroy_races_worker)
{
	vkv_ctx *ctx = make_ctx(0, 0);

	for (int i = 0; i < 30; i++) {
		struct vkv_region_config rc;
		vkv_region *r;
		uint32_t s[4];
		uint64_t lens[4] = { 1, 1, 1, 1 };

		vkv_region_config_init(&rc);
		rc.layers = 2;
		rc.kv_heads = 1;
		rc.head_dim = 64;
		rc.max_slots = 4;
		rc.max_context = 1 << 16;
		rc.lookahead = 1 << 14; /* plenty of look-ahead work */
		OK(vkv_region_create(ctx, &rc, &r));
		for (int j = 0; j < 4; j++)
			OK(vkv_slot_alloc(r, 0, &s[j]));
		OK(vkv_step(r, s, lens, 4));
		OK(vkv_region_destroy(r));
	}
	struct vkv_ctx_info ci;
	OK(vkv_ctx_quiesce(ctx));
	OK(vkv_ctx_info(ctx, &ci));
	ck_assert_uint_eq(ci.pages_mapped, 0);
	OK(vkv_ctx_destroy(ctx));
}
END_TEST

/* A cached slot that shares pages is reused: its new request writes from
 * token 0 and must not reach the pages its old sharers still map. */
START_TEST(reused_sharer_does_not_clobber_prefix)
{
	vkv_ctx *ctx = make_ctx(0, VKV_CTX_NO_WORKER);
	uint64_t ps = ctx_page(ctx);
	vkv_region *r = make_region(ctx, VKV_LAYOUT_PER_LAYER, 2, 4 * ps / 256);
	uint64_t tpp = ps / 256;
	uint32_t src, dst, again;

	OK(vkv_slot_alloc(r, 0, &src));
	OK(vkv_slot_alloc(r, 0, &dst));
	OK(vkv_slot_ensure(r, src, 3 * tpp));
	fill_slot(r, src, 51, 0, 3 * tpp);
	OK(vkv_slot_share_prefix(r, dst, src, 2 * tpp));
	OK(vkv_slot_free(r, src));
	OK(vkv_slot_alloc(r, 3 * tpp, &again));
	ck_assert_uint_eq(again, src);
	OK(vkv_slot_ensure(r, again, 3 * tpp));
	fill_slot(r, again, 52, 0, 3 * tpp);
	ck_assert(check_slot(r, dst, 51, 0, 2 * tpp));
	ck_assert(check_slot(r, again, 52, 0, 3 * tpp));
	OK(vkv_region_destroy(r));
	OK(vkv_ctx_destroy(ctx));
}
END_TEST

static Suite *core_suite(void)
{
	Suite *s = suite_create("core");
	TCase *tc = tcase_create("ctx");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, ctx_create_info_destroy);
	tcase_add_test(tc, ctx_bad_config);
	tcase_add_test(tc, ctx_destroy_busy_with_regions);
	tcase_add_test(tc, options_from_environment);
	suite_add_tcase(s, tc);

	tc = tcase_create("region");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, region_bad_config);
	tcase_add_test(tc, region_tensor_geometry);
	tcase_add_test(tc, integrity_per_layer);
	tcase_add_test(tc, integrity_all_layers);
	tcase_add_test(tc, tensor_pointer_aliases_slot_data);
	tcase_add_test(tc, unbacked_reads_zero_in_zero_mode);
	if (!getenv("VKV_TEST_NO_SIGNALS"))
		tcase_add_test_raise_signal(tc, unbacked_access_faults, SIGSEGV);
	suite_add_tcase(s, tc);

	tc = tcase_create("slots");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, slot_bad_input);
	tcase_add_test(tc, step_bad_batch_changes_nothing);
	tcase_add_test(tc, share_prefix_per_layer);
	tcase_add_test(tc, share_prefix_all_layers);
	tcase_add_test(tc, reused_sharer_does_not_clobber_prefix);
	tcase_add_test(tc, budget_exhaustion_is_clean);
	tcase_add_test(tc, deferred_reclamation_reuses_pages);
	tcase_add_test(tc, budget_trims_active_surplus);
	tcase_add_test(tc, lookahead_commits_ahead);
	tcase_add_test(tc, grow_maps_each_tensor_in_one_run);
	suite_add_tcase(s, tc);

	tc = tcase_create("faults");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, injected_page_create_failure);
	tcase_add_test(tc, injected_map_failure);
	tcase_add_test(tc, hugetlb_runs_out_falls_back);
	tcase_add_test(tc, hugetlb_failure_falls_back);
	/* Fills the process's mappings: it needs a process of its own. */
	if (!getenv("CK_FORK") || strcmp(getenv("CK_FORK"), "no"))
		tcase_add_test(tc, map_count_exhaustion_is_clean);
	/* The segment is per process: it needs a process of its own. */
	if (!getenv("CK_FORK") || strcmp(getenv("CK_FORK"), "no"))
		tcase_add_test(tc, stats_segment_published);
	tcase_add_loop_test(tc, stats_sweeps_dead_segments, 0, 2);
	suite_add_tcase(s, tc);

	tc = tcase_create("threads");
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, threaded_stress);
	tcase_add_test(tc, destroy_races_worker);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return vkv_check_run(core_suite());
}
