// SPDX-License-Identifier: MIT
/*
 * test_tier.c - Check suite for tiering: eviction of slots to host DRAM and
 * NVMe and their restoration at the same addresses, through the public API.
 *
 * Covers round trips for both tiers and both layouts, prefix-shared pages
 * (stored once, restored shared), restoration into a region whose
 * neighbours changed, the automatic policy (demotion of idle slots, DRAM
 * overflow to NVMe, promotion on step and prefetch), every fault the tier
 * promises to survive (ENOSPC, I/O errors, a corrupted extent, a truncated
 * file, a missing directory, io_uring unavailable, no O_DIRECT) and a
 * threaded test that evicts and restores while other slots step (run under
 * TSan by `make SAN=tsan check`).
 *
 * NVMe files go to $VKV_TEST_DIR (default /var/tmp: tmpfs has no O_DIRECT).
 * Each test runs in its own process (Check's fork mode), so options set
 * with setenv() and fault counters never leak into the next test. A test
 * that changes the environment after creating a context creates it
 * without the worker (no_worker()): setenv() is not safe while another
 * thread reads options with getenv() (an ASan run crashed in getenv).
 */
#include <check.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vkv_check.h"
#include "vkv.h"
#include "vkv_stats.h"
#ifdef VKV_HAVE_KERNELS
#include "../runtime/attn_ref.h"
#include "cudadouble/fakecuda.h"
#endif

/* Internals under test (libvkv.a). */
uint32_t vkv__crc32c(uint32_t crc, const void *buf, size_t len);
uint32_t vkv__crc32c_sw(uint32_t crc, const void *buf, size_t len);
int vkv__tier_nvme_fd(vkv_ctx *ctx);


#define LAYERS 2
#define HEADS 2
#define DIM 64
#define TOKEN_BYTES (HEADS * DIM * 2)

static uint64_t test_page(void)
{
	const char *s = getenv("VKV_TEST_PAGE");

	return s ? strtoull(s, NULL, 0) : 0;
}

static void use_test_dir(void)
{
	const char *d = getenv("VKV_TEST_DIR");

	setenv("VKV_NVME_DIR", d ? d : "/var/tmp", 1);
}

/* For tests that setenv() after make_ctx(): no background getenv(). */
static void no_worker(void)
{
	setenv("VKV_WORKER", "0", 1);
}

static vkv_ctx *make_ctx(uint64_t budget)
{
	struct vkv_ctx_config cfg;
	vkv_ctx *ctx = NULL;

	use_test_dir();
	vkv_ctx_config_init(&cfg);
	if (test_page())
		cfg.page_size = test_page();
	cfg.budget = budget;
	cfg.flags |= VKV_CTX_NO_STATS;
	OK(vkv_ctx_create(&cfg, &ctx));
	return ctx;
}

static uint64_t ctx_page(vkv_ctx *ctx)
{
	struct vkv_ctx_info info;

	OK(vkv_ctx_info(ctx, &info));
	return info.page_size;
}

/* The page size contexts of this run get. */
static uint64_t run_page(void)
{
	vkv_ctx *ctx = make_ctx(0);
	uint64_t ps = ctx_page(ctx);

	OK(vkv_ctx_destroy(ctx));
	return ps;
}

/* Tokens that fill `pages` pages of one tensor. */
static uint64_t tokens_for_pages(vkv_region *r, uint64_t pages)
{
	struct vkv_region_info ri;

	OK(vkv_region_info(r, &ri));
	return pages * ri.tokens_per_page;
}

static vkv_region *make_region(vkv_ctx *ctx, enum vkv_layout layout,
			       uint32_t slots, uint64_t pages_per_slot)
{
	struct vkv_region_config rc;
	vkv_region *r = NULL;
	uint64_t tpp;

	vkv_region_config_init(&rc);
	rc.layers = LAYERS;
	rc.kv_heads = HEADS;
	rc.head_dim = DIM;
	rc.elem_size = 2;
	rc.max_slots = slots;
	rc.layout = layout;
	tpp = ctx_page(ctx) / TOKEN_BYTES / (layout == VKV_LAYOUT_ALL_LAYERS ?
						     2 * LAYERS : 1);
	rc.max_context = tpp * pages_per_slot;
	OK(vkv_region_create(ctx, &rc, &r));
	return r;
}

static uint8_t pattern(uint32_t seed, uint32_t layer, int kv, uint64_t tok,
		       uint64_t byte)
{
	uint64_t x = (seed + 1) * 0x9E3779B97F4A7C15ULL ^ (layer * 131 + (unsigned)kv * 7) ^
		     (tok * 0x100000001B3ULL) ^ (byte * 0xff51afd7ed558ccdULL);

	x ^= x >> 29;
	return (uint8_t)(x * 0xbf58476d1ce4e5b9ULL >> 56);
}

/* Write tokens [0, n) of every layer/kv of a slot with seed's pattern. */
static void fill(vkv_region *r, uint32_t s, uint64_t n, uint32_t seed)
{
	uint8_t *buf = malloc(n * TOKEN_BYTES);

	ck_assert_ptr_nonnull(buf);
	OK(vkv_slot_ensure(r, s, n));
	for (uint32_t l = 0; l < LAYERS; l++) {
		for (int kv = 0; kv < 2; kv++) {
			for (uint64_t t = 0; t < n; t++)
				for (uint64_t b = 0; b < TOKEN_BYTES; b++)
					buf[t * TOKEN_BYTES + b] = pattern(seed, l, kv, t, b);
			OK(vkv_slot_write(r, s, l, kv, 0, n, buf));
		}
	}
	free(buf);
}

static bool matches(vkv_region *r, uint32_t s, uint64_t n, uint32_t seed)
{
	uint8_t *buf = malloc(n * TOKEN_BYTES);
	bool ok = true;

	ck_assert_ptr_nonnull(buf);
	for (uint32_t l = 0; l < LAYERS && ok; l++) {
		for (int kv = 0; kv < 2 && ok; kv++) {
			OK(vkv_slot_read(r, s, l, kv, 0, n, buf));
			for (uint64_t t = 0; t < n && ok; t++)
				for (uint64_t b = 0; b < TOKEN_BYTES && ok; b++)
					ok = buf[t * TOKEN_BYTES + b] == pattern(seed, l, kv, t, b);
		}
	}
	free(buf);
	return ok;
}

static struct vkv_slot_info slot_info(vkv_region *r, uint32_t s)
{
	struct vkv_slot_info si;

	OK(vkv_slot_info(r, s, &si));
	return si;
}

static uint64_t pages_mapped(vkv_ctx *ctx)
{
	struct vkv_ctx_info info;

	OK(vkv_ctx_info(ctx, &info));
	return info.pages_mapped;
}

/* ------------------------------------------------------------------ crc */

START_TEST(crc32c_matches_reference)
{
	static const char v[] = "123456789";
	uint8_t buf[4099];

	ck_assert_uint_eq(vkv__crc32c_sw(0, v, 9), 0xE3069283u);
	ck_assert_uint_eq(vkv__crc32c(0, v, 9), 0xE3069283u);
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(i * 7 + (i >> 5));
	for (size_t off = 0; off < 9; off++)
		ck_assert_uint_eq(vkv__crc32c(0, buf + off, sizeof(buf) - off),
				  vkv__crc32c_sw(0, buf + off, sizeof(buf) - off));
	/* Continuation: crc(a+b) == crc(b, crc(a)). */
	ck_assert_uint_eq(vkv__crc32c(vkv__crc32c(0, buf, 100), buf + 100, 3999),
			  vkv__crc32c(0, buf, 4099));
	/* Long buffers take the three-way path; odd lengths and starts. */
	{
		size_t len = (1 << 20) + 13;
		uint8_t *big = malloc(len + 8);

		ck_assert_ptr_nonnull(big);
		for (size_t i = 0; i < len + 8; i++)
			big[i] = (uint8_t)(i * 131 + (i >> 9));
		for (size_t off = 0; off < 8; off += 3)
			for (size_t l = len - 2; l <= len; l++)
				ck_assert_uint_eq(vkv__crc32c(7, big + off, l),
						  vkv__crc32c_sw(7, big + off, l));
		free(big);
	}
}
END_TEST

/* Batch operations that must succeed (or fail), waited for. */
static void evict_ok(vkv_region *r, const uint32_t *slots, size_t n, unsigned tier)
{
	vkv_op *op = NULL;

	OK(vkv_evict(r, slots, n, tier, &op));
	OK(vkv_op_wait(op));
	OK(vkv_op_free(op));
}

static void restore_ok(vkv_region *r, const uint32_t *slots, size_t n)
{
	vkv_op *op = NULL;

	OK(vkv_restore(r, slots, n, &op));
	OK(vkv_op_wait(op));
	OK(vkv_op_free(op));
}

/* The result of an operation that was submitted (submit == 0) into *op. */
static int op_result(int submit, vkv_op **op)
{
	int err;

	OK(submit);
	err = vkv_op_wait(*op);
	OK(vkv_op_free(*op));
	return err;
}

/* ----------------------------------------------------------- round trips */

static void round_trip(unsigned tier, enum vkv_layout layout)
{
	vkv_ctx *ctx = make_ctx(0);
	vkv_region *r = make_region(ctx, layout, 4, 3);
	uint64_t full = tokens_for_pages(r, 3), part = tokens_for_pages(r, 1) + 5;
	uint32_t batch[2] = { 2, 0 };
	uint64_t lens[1];
	struct vkv_tensor before, after;
	uint64_t mapped0;
	vkv_op *op = NULL;

	for (uint32_t s = 0; s < 4; s++)
		OK(vkv_slot_alloc_at(r, s));
	fill(r, 0, full, 10);
	fill(r, 1, part, 11);
	fill(r, 2, part, 12);
	OK(vkv_region_tensor(r, 1, VKV_V, &before));
	mapped0 = pages_mapped(ctx);

	OK(vkv_evict(r, batch, 2, tier, &op));
	OK(vkv_op_wait(op));
	OK(vkv_op_poll(op));
	OK(vkv_op_free(op));
	ck_assert_uint_eq(slot_info(r, 0).tier, tier);
	ck_assert_uint_eq(slot_info(r, 2).tier, tier);
	ck_assert_uint_eq(slot_info(r, 0).allocated, 1);
	ck_assert_uint_eq(slot_info(r, 0).pages, 0);
	ck_assert_uint_lt(pages_mapped(ctx), mapped0);
	/* An evicted slot cannot be used until restored. */
	lens[0] = 1;
	FAILS(vkv_step(r, batch, lens, 1), -EAGAIN);
	FAILS(vkv_slot_ensure(r, 0, 1), -EAGAIN);
	FAILS(vkv_evict(r, batch, 1, tier, NULL), -EAGAIN);
	ck_assert(matches(r, 1, part, 11));

	restore_ok(r, batch, 2);
	OK(vkv_region_tensor(r, 1, VKV_V, &after));
	ck_assert_uint_eq(before.addr, after.addr);
	ck_assert_uint_eq(slot_info(r, 0).tier, 0);
	ck_assert_uint_eq(slot_info(r, 0).backed_tokens, full);
	ck_assert_uint_eq(pages_mapped(ctx), mapped0);
	ck_assert(matches(r, 0, full, 10));
	ck_assert(matches(r, 1, part, 11));
	ck_assert(matches(r, 2, part, 12));
	/* And usable again. */
	lens[0] = full;
	OK(vkv_step(r, batch + 1, lens, 1));
	OK(vkv_region_destroy(r));
	OK(vkv_ctx_destroy(ctx));
}

START_TEST(round_trip_dram_per_layer)
{
	round_trip(VKV_TIER_DRAM, VKV_LAYOUT_PER_LAYER);
}
END_TEST

START_TEST(round_trip_dram_all_layers)
{
	round_trip(VKV_TIER_DRAM, VKV_LAYOUT_ALL_LAYERS);
}
END_TEST

START_TEST(round_trip_nvme_per_layer)
{
	round_trip(VKV_TIER_NVME, VKV_LAYOUT_PER_LAYER);
}
END_TEST

START_TEST(round_trip_nvme_all_layers)
{
	round_trip(VKV_TIER_NVME, VKV_LAYOUT_ALL_LAYERS);
}
END_TEST

/* The fallbacks give the same results. */
START_TEST(round_trip_nvme_without_io_uring)
{
	setenv("VKV_FAULT_IO_URING", "1", 1);
	round_trip(VKV_TIER_NVME, VKV_LAYOUT_PER_LAYER);
}
END_TEST

/* Rings of 1 and 3 I/Os of 4 KiB: many turns of refill, check and copy,
 * with completions finished while their replacements are in flight. */
START_TEST(round_trip_nvme_small_ring)
{
	setenv("VKV_NVME_IO", "4096", 1);
	setenv("VKV_NVME_QD", _i ? "3" : "1", 1);
	round_trip(VKV_TIER_NVME, VKV_LAYOUT_PER_LAYER);
}
END_TEST

START_TEST(round_trip_nvme_on_tmpfs)
{
	no_worker();
	vkv_ctx *ctx = make_ctx(0);
	vkv_region *r = make_region(ctx, VKV_LAYOUT_PER_LAYER, 2, 2);
	uint64_t n = tokens_for_pages(r, 2);
	uint32_t s = 1;

	setenv("VKV_NVME_DIR", "/dev/shm", 1); /* no O_DIRECT there */
	OK(vkv_slot_alloc_at(r, s));
	fill(r, s, n, 3);
	OK(vkv_evict(r, &s, 1, VKV_TIER_NVME, NULL));
	OK(vkv_restore(r, &s, 1, NULL));
	ck_assert(matches(r, s, n, 3));
	OK(vkv_region_destroy(r));
	OK(vkv_ctx_destroy(ctx));
}
END_TEST

/* Pages shared by prefix sharing are stored once and restored shared. */
static void shared_prefix(unsigned tier)
{
	vkv_ctx *ctx = make_ctx(0);
	vkv_region *r = make_region(ctx, VKV_LAYOUT_PER_LAYER, 3, 4);
	uint64_t prefix = tokens_for_pages(r, 2), n = tokens_for_pages(r, 3);
	uint32_t both[2] = { 0, 1 };
	uint64_t mapped0, shared0;

	OK(vkv_slot_alloc_at(r, 0));
	OK(vkv_slot_alloc_at(r, 1));
	fill(r, 0, n, 5);
	OK(vkv_slot_share_prefix(r, 1, 0, prefix));
	OK(vkv_slot_ensure(r, 1, n));
	shared0 = slot_info(r, 1).shared_pages;
	ck_assert_uint_eq(shared0, 2 * 2 * LAYERS);
	mapped0 = pages_mapped(ctx);

	OK(vkv_evict(r, both, 2, tier, NULL));
	ck_assert_uint_eq(pages_mapped(ctx), 0);
	OK(vkv_restore(r, both, 2, NULL));
	ck_assert_uint_eq(pages_mapped(ctx), mapped0);
	ck_assert_uint_eq(slot_info(r, 1).shared_pages, shared0);
	ck_assert(matches(r, 0, n, 5));
	ck_assert(matches(r, 1, prefix, 5));

	/* Restored apart, each gets its own copy of the prefix. */
	OK(vkv_evict(r, both, 2, tier, NULL));
	OK(vkv_restore(r, &both[1], 1, NULL));
	ck_assert(matches(r, 1, prefix, 5));
	OK(vkv_restore(r, &both[0], 1, NULL));
	ck_assert(matches(r, 0, n, 5));
	ck_assert_uint_eq(slot_info(r, 1).shared_pages, 0);
	OK(vkv_region_destroy(r));
	OK(vkv_ctx_destroy(ctx));
}

START_TEST(shared_prefix_dram)
{
	shared_prefix(VKV_TIER_DRAM);
}
END_TEST

START_TEST(shared_prefix_nvme)
{
	shared_prefix(VKV_TIER_NVME);
}
END_TEST

/* Restore into a region whose neighbouring slots changed meanwhile. */
START_TEST(restore_after_neighbours_changed)
{
	vkv_ctx *ctx = make_ctx(0);
	vkv_region *r = make_region(ctx, VKV_LAYOUT_PER_LAYER, 3, 3);
	uint64_t n = tokens_for_pages(r, 2), big = tokens_for_pages(r, 3);
	uint32_t mid = 1;

	for (uint32_t s = 0; s < 3; s++) {
		OK(vkv_slot_alloc_at(r, s));
		fill(r, s, n, s);
	}
	OK(vkv_evict(r, &mid, 1, VKV_TIER_NVME, NULL));
	OK(vkv_slot_free(r, 0));
	OK(vkv_ctx_trim(ctx, NULL));
	OK(vkv_slot_alloc_at(r, 0));
	fill(r, 0, big, 20);
	fill(r, 2, big, 22);
	OK(vkv_restore(r, &mid, 1, NULL));
	ck_assert(matches(r, 0, big, 20));
	ck_assert(matches(r, 1, n, 1));
	ck_assert(matches(r, 2, big, 22));
	OK(vkv_region_destroy(r));
	OK(vkv_ctx_destroy(ctx));
}
END_TEST

/* ------------------------------------------------------------- bad input */

START_TEST(bad_input_changes_nothing)
{
	vkv_ctx *ctx = make_ctx(0);
	vkv_region *r = make_region(ctx, VKV_LAYOUT_PER_LAYER, 4, 2);
	uint32_t dup[2] = { 1, 1 }, s = 1, never = 3, out = 9;
	uint64_t n = tokens_for_pages(r, 1);
	vkv_op *op = NULL;

	OK(vkv_slot_alloc_at(r, s));
	fill(r, s, n, 1);
	FAILS(vkv_evict(NULL, &s, 1, VKV_TIER_DRAM, &op), -EINVAL);
	FAILS(vkv_evict(r, NULL, 1, VKV_TIER_DRAM, &op), -EINVAL);
	FAILS(vkv_evict(r, &s, 0, VKV_TIER_DRAM, &op), -EINVAL);
	FAILS(vkv_evict(r, &s, 1, 0, &op), -EINVAL);
	FAILS(vkv_evict(r, &s, 1, 7, &op), -EINVAL);
	FAILS(vkv_evict(r, dup, 2, VKV_TIER_DRAM, &op), -EINVAL);
	FAILS(vkv_evict(r, &never, 1, VKV_TIER_DRAM, &op), -EINVAL);
	FAILS(vkv_evict(r, &out, 1, VKV_TIER_DRAM, &op), -EINVAL);
	FAILS(vkv_restore(r, &s, 1, &op), -EINVAL);
	FAILS(vkv_op_poll(NULL), -EINVAL);
	FAILS(vkv_op_wait(NULL), -EINVAL);
	OK(vkv_op_free(NULL));
	ck_assert_ptr_null(op);
	ck_assert_uint_eq(slot_info(r, s).tier, 0);
	ck_assert(matches(r, s, n, 1));
	/* A slot that holds no page yet evicts and restores too. */
	never = 2;
	OK(vkv_slot_alloc_at(r, never));
	OK(vkv_evict(r, &never, 1, VKV_TIER_NVME, NULL));
	ck_assert_uint_eq(slot_info(r, never).tier, VKV_TIER_NVME);
	OK(vkv_restore(r, &never, 1, NULL));
	OK(vkv_evict(r, &never, 1, VKV_TIER_DRAM, NULL));
	OK(vkv_restore(r, &never, 1, NULL));
	fill(r, never, n, 4);
	ck_assert(matches(r, never, n, 4));
	OK(vkv_region_destroy(r));
	OK(vkv_ctx_destroy(ctx));
}
END_TEST

/* Freeing an evicted slot forgets its copy; the slot is reusable, and a
 * region destroyed with evicted slots leaves nothing behind. */
START_TEST(free_and_destroy_evicted)
{
	vkv_ctx *ctx = make_ctx(0);
	vkv_region *r = make_region(ctx, VKV_LAYOUT_PER_LAYER, 3, 2);
	uint64_t n = tokens_for_pages(r, 2);
	uint32_t a = 0, b = 1, got;

	OK(vkv_slot_alloc_at(r, a));
	OK(vkv_slot_alloc_at(r, b));
	fill(r, a, n, 1);
	fill(r, b, n, 2);
	OK(vkv_evict(r, &a, 1, VKV_TIER_DRAM, NULL));
	OK(vkv_evict(r, &b, 1, VKV_TIER_NVME, NULL));
	OK(vkv_slot_free(r, a));
	FAILS(vkv_slot_free(r, a), -EINVAL);
	FAILS(vkv_restore(r, &a, 1, NULL), -EINVAL);
	OK(vkv_slot_alloc(r, 0, &got));
	fill(r, got, n, 3);
	ck_assert(matches(r, got, n, 3));
	OK(vkv_region_destroy(r)); /* b is still evicted */
	OK(vkv_ctx_destroy(ctx));
}
END_TEST

/* ---------------------------------------------------------------- faults */

/* An eviction that fails leaves the slot as it was. */
static void evict_fails_cleanly(unsigned tier, int code)
{
	no_worker();
	vkv_ctx *ctx = make_ctx(0);
	vkv_region *r = make_region(ctx, VKV_LAYOUT_PER_LAYER, 2, 3);
	uint64_t n = tokens_for_pages(r, 3);
	uint32_t s = 0;
	uint64_t lens = n, mapped;

	OK(vkv_slot_alloc_at(r, s));
	fill(r, s, n, 7);
	mapped = pages_mapped(ctx);
	FAILS(vkv_evict(r, &s, 1, tier, NULL), code);
	ck_assert_uint_eq(slot_info(r, s).tier, 0);
	ck_assert_uint_eq(pages_mapped(ctx), mapped);
	ck_assert(matches(r, s, n, 7));
	OK(vkv_step(r, &s, &lens, 1));
	/* The tier is usable afterwards. */
	unsetenv("VKV_FAULT_NVME_WRITE");
	unsetenv("VKV_FAULT_NVME_ENOSPC");
	unsetenv("VKV_FAULT_DRAM_ALLOC");
	OK(vkv_region_destroy(r));
	OK(vkv_ctx_destroy(ctx));
}

START_TEST(fault_nvme_budget_full)
{
	setenv("VKV_NVME_BUDGET", "4K", 1); /* less than the slot's 12 pages */
	setenv("VKV_NVME_GROW", "4K", 1);
	evict_fails_cleanly(VKV_TIER_NVME, -ENOSPC);
}
END_TEST

START_TEST(fault_nvme_disk_full)
{
	setenv("VKV_FAULT_NVME_ENOSPC", "1", 1);
	evict_fails_cleanly(VKV_TIER_NVME, -ENOSPC);
}
END_TEST

START_TEST(fault_nvme_write_error)
{
	setenv("VKV_FAULT_NVME_WRITE", "3", 1);
	evict_fails_cleanly(VKV_TIER_NVME, -EIO);
}
END_TEST

START_TEST(fault_nvme_dir_missing)
{
	setenv("VKV_TEST_DIR", "/nonexistent/vkv-tier", 1);
	evict_fails_cleanly(VKV_TIER_NVME, -ENOENT);
}
END_TEST

START_TEST(fault_dram_budget_full)
{
	setenv("VKV_DRAM_BUDGET", "4K", 1); /* less than the slot's 12 pages */
	evict_fails_cleanly(VKV_TIER_DRAM, -ENOSPC);
}
END_TEST

START_TEST(fault_dram_alloc_failure)
{
	setenv("VKV_FAULT_DRAM_ALLOC", "1", 1);
	evict_fails_cleanly(VKV_TIER_DRAM, -ENOMEM);
}
END_TEST

/* A failed restore: the slot stays evicted (read error) or comes back
 * empty and reusable (corrupt or lost copy); bad data is never mapped. */
static void restore_fault(const char *var, const char *val, int code,
			  bool truncate_file)
{
	no_worker();
	vkv_ctx *ctx = make_ctx(0);
	vkv_region *r = make_region(ctx, VKV_LAYOUT_PER_LAYER, 3, 3);
	uint64_t n = tokens_for_pages(r, 3);
	uint32_t s = 1, other = 2;
	struct vkv_slot_info si;
	vkv_op *op;

	OK(vkv_slot_alloc_at(r, s));
	OK(vkv_slot_alloc_at(r, other));
	fill(r, s, n, 9);
	fill(r, other, n, 10);
	OK(vkv_evict(r, &s, 1, VKV_TIER_NVME, NULL));
	if (truncate_file)
		ck_assert_int_eq(ftruncate(vkv__tier_nvme_fd(ctx), 0), 0);
	if (var)
		setenv(var, val, 1);
	OK(vkv_restore(r, &s, 1, &op));
	FAILS(vkv_op_wait(op), code);
	FAILS(vkv_op_poll(op), code);
	OK(vkv_op_free(op));
	if (var)
		unsetenv(var);
	si = slot_info(r, s);
	ck_assert_uint_eq(si.allocated, 1);
	if (code == -EIO && !truncate_file) {
		/* The copy is intact: still evicted, a retry succeeds. */
		ck_assert_uint_eq(si.tier, VKV_TIER_NVME);
		OK(vkv_restore(r, &s, 1, NULL));
		ck_assert(matches(r, s, n, 9));
	} else {
		ck_assert_uint_eq(si.tier, 0);
		ck_assert_uint_eq(si.backed_tokens, 0);
		ck_assert_uint_eq(si.pages, 0);
		fill(r, s, n, 11); /* reusable */
		ck_assert(matches(r, s, n, 11));
	}
	ck_assert(matches(r, other, n, 10));
	OK(vkv_region_destroy(r));
	OK(vkv_ctx_destroy(ctx));
}

START_TEST(fault_nvme_read_error)
{
	restore_fault("VKV_FAULT_NVME_READ", "2", -EIO, false);
}
END_TEST

START_TEST(fault_nvme_corrupt_extent)
{
	restore_fault("VKV_FAULT_NVME_CORRUPT", "2", -EBADMSG, false);
}
END_TEST

/* A corrupt block found while later reads are in flight. */
START_TEST(fault_nvme_corrupt_mid_ring)
{
	setenv("VKV_NVME_IO", "4096", 1);
	setenv("VKV_NVME_QD", "3", 1);
	restore_fault("VKV_FAULT_NVME_CORRUPT", "5", -EBADMSG, false);
}
END_TEST

START_TEST(fault_nvme_truncated_file)
{
	restore_fault(NULL, NULL, -EIO, true);
}
END_TEST

/* A restore that finds no room in the pool leaves the slot evicted. */
START_TEST(restore_without_room)
{
	vkv_ctx *ctx = make_ctx(12 * run_page());
	vkv_region *r = make_region(ctx, VKV_LAYOUT_PER_LAYER, 3, 3);
	uint64_t n = tokens_for_pages(r, 3) / 2 + 1;
	uint32_t a = 0, b = 1;

	OK(vkv_slot_alloc_at(r, a));
	OK(vkv_slot_alloc_at(r, b));
	fill(r, a, n, 1); /* 2 pages x 4 tensors */
	OK(vkv_evict(r, &a, 1, VKV_TIER_DRAM, NULL));
	fill(r, b, tokens_for_pages(r, 3), 2); /* 12 pages: the whole budget */
	FAILS(vkv_restore(r, &a, 1, NULL), -ENOMEM);
	ck_assert_uint_eq(slot_info(r, a).tier, VKV_TIER_DRAM);
	OK(vkv_slot_free(r, b));
	OK(vkv_restore(r, &a, 1, NULL));
	ck_assert(matches(r, a, n, 1));
	OK(vkv_region_destroy(r));
	OK(vkv_ctx_destroy(ctx));
}
END_TEST

/* -------------------------------------------------------- automatic policy */

START_TEST(auto_demotes_idle_and_promotes_on_step)
{
	vkv_ctx *ctx;
	vkv_region *r;
	uint64_t page, n, lens[1];
	char budget[32];
	uint32_t s;

	setenv("VKV_TIER_AUTO", "1", 1);
	setenv("VKV_TIER_IDLE", "1", 1);
	setenv("VKV_WORKER", "0", 1);
	page = run_page();
	/* DRAM has room for two slots of 2 pages x 4 tensors. */
	snprintf(budget, sizeof(budget), "%llu", (unsigned long long)(16 * page));
	setenv("VKV_DRAM_BUDGET", budget, 1);
	ctx = make_ctx(16 * page);
	r = make_region(ctx, VKV_LAYOUT_PER_LAYER, 4, 2);
	n = tokens_for_pages(r, 2);
	for (s = 0; s < 4; s++) {
		OK(vkv_slot_alloc_at(r, s));
		/* Each fill must demote the least recently used slots. */
		fill(r, s, n, s);
		lens[0] = n;
		OK(vkv_step(r, &s, lens, 1));
	}
	ck_assert_uint_eq(slot_info(r, 0).tier, VKV_TIER_DRAM);
	ck_assert_uint_eq(slot_info(r, 1).tier, VKV_TIER_DRAM);
	/* DRAM (two slots' worth) is full: the next demotions go to NVMe. */
	s = 0;
	lens[0] = n;
	OK(vkv_step(r, &s, lens, 1)); /* promotes 0, demotes 2 to NVMe */
	ck_assert_uint_eq(slot_info(r, 0).tier, 0);
	ck_assert_uint_eq(slot_info(r, 2).tier, VKV_TIER_NVME);
	ck_assert(matches(r, 0, n, 0));
	/* Prefetch starts the restore; the step finds it (or waits). */
	s = 2;
	OK(vkv_slot_prefetch(r, s, n));
	OK(vkv_step(r, &s, lens, 1));
	ck_assert_uint_eq(slot_info(r, 2).tier, 0);
	ck_assert(matches(r, 2, n, 2));
	for (s = 0; s < 4; s++) {
		OK(vkv_step(r, &s, lens, 1));
		ck_assert(matches(r, s, n, s));
	}
	OK(vkv_region_destroy(r));
	OK(vkv_ctx_destroy(ctx));
}
END_TEST

/* Without the policy nothing is demoted: the budget says no. */
/*
 * The worker frees pages ahead of need (pool_low) by demoting idle slots,
 * but never more than an eighth of the budget: with pool_low as large as
 * the budget it used to demote every idle slot in every round.
 */
START_TEST(worker_demotes_only_ahead_of_need)
{
	vkv_ctx *ctx;
	vkv_region *r;
	uint64_t page, n;
	uint32_t evicted = 0;
	char low[32];

	setenv("VKV_TIER_AUTO", "1", 1);
	setenv("VKV_TIER_IDLE", "1", 1);
	page = run_page();
	/* pool_low (and so pool_high) as large as the budget */
	snprintf(low, sizeof(low), "%llu", (unsigned long long)(40 * page));
	setenv("VKV_POOL_LOW", low, 1);
	setenv("VKV_POOL_HIGH", low, 1);
	ctx = make_ctx(40 * page); /* ten slots of 4 pages */
	r = make_region(ctx, VKV_LAYOUT_PER_LAYER, 10, 1);
	n = tokens_for_pages(r, 1);
	for (uint32_t s = 0; s < 10; s++) {
		OK(vkv_slot_alloc_at(r, s));
		fill(r, s, n, s);
		OK(vkv_step(r, &s, &n, 1));
	}
	OK(vkv_ctx_quiesce(ctx));
	for (uint32_t s = 0; s < 10; s++)
		evicted += slot_info(r, s).tier != 0;
	/* 40 / 8 = 5 pages ahead of need: two slots of 4, not nine */
	ck_assert_uint_le(evicted, 2);
	for (uint32_t s = 0; s < 10; s++) {
		OK(vkv_step(r, &s, &n, 1));
		ck_assert(matches(r, s, n, s));
	}
	OK(vkv_region_destroy(r));
	OK(vkv_ctx_destroy(ctx));
}
END_TEST

START_TEST(no_auto_means_enomem)
{
	vkv_ctx *ctx;
	vkv_region *r;
	uint64_t n;

	setenv("VKV_WORKER", "0", 1);
	ctx = make_ctx(8 * run_page());
	r = make_region(ctx, VKV_LAYOUT_PER_LAYER, 2, 2);
	n = tokens_for_pages(r, 2);
	OK(vkv_slot_alloc_at(r, 0));
	OK(vkv_slot_alloc_at(r, 1));
	fill(r, 0, n, 0);
	FAILS(vkv_slot_ensure(r, 1, n), -ENOMEM);
	ck_assert_uint_eq(slot_info(r, 0).tier, 0);
	OK(vkv_region_destroy(r));
	OK(vkv_ctx_destroy(ctx));
}
END_TEST

/* ------------------------------------------------------------------ stats */

START_TEST(stats_count_tier_traffic)
{
	char dir[] = "/tmp/vkv-tier-stats.XXXXXX", path[300];
	struct vkv_stats_segment seg;
	struct vkv_ctx_config cfg;
	vkv_ctx *ctx = NULL;
	vkv_region *r;
	uint64_t n, bytes;
	uint32_t a = 0, b = 1;
	FILE *f;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	setenv("VKV_STATS_DIR", dir, 1);
	setenv("VKV_NVME_BUDGET", "1G", 1);
	use_test_dir();
	vkv_ctx_config_init(&cfg);
	if (test_page())
		cfg.page_size = test_page();
	OK(vkv_ctx_create(&cfg, &ctx));
	r = make_region(ctx, VKV_LAYOUT_PER_LAYER, 2, 2);
	n = tokens_for_pages(r, 2);
	bytes = 2 * 2 * LAYERS * ctx_page(ctx);
	OK(vkv_slot_alloc_at(r, a));
	OK(vkv_slot_alloc_at(r, b));
	fill(r, a, n, 1);
	fill(r, b, n, 2);
	OK(vkv_evict(r, &a, 1, VKV_TIER_DRAM, NULL));
	OK(vkv_restore(r, &a, 1, NULL));
	OK(vkv_evict(r, &b, 1, VKV_TIER_NVME, NULL));

	snprintf(path, sizeof(path), "%s/vkv-stats.%d", dir, (int)getpid());
	f = fopen(path, "r");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fread(&seg, sizeof(seg), 1, f), 1);
	fclose(f);
	ck_assert_uint_eq(seg.tiers[VKV_TIER_DRAM].evictions, 1);
	ck_assert_uint_eq(seg.tiers[VKV_TIER_DRAM].restores, 1);
	ck_assert_uint_eq(seg.tiers[VKV_TIER_DRAM].bytes_in, bytes);
	ck_assert_uint_eq(seg.tiers[VKV_TIER_DRAM].bytes_out, bytes);
	ck_assert_uint_eq(seg.tiers[VKV_TIER_DRAM].bytes_used, 0);
	ck_assert_uint_eq(seg.tiers[VKV_TIER_DRAM].bytes_capacity, 4ULL << 30);
	ck_assert_uint_eq(seg.tiers[VKV_TIER_NVME].evictions, 1);
	ck_assert_uint_eq(seg.tiers[VKV_TIER_NVME].restores, 0);
	ck_assert_uint_eq(seg.tiers[VKV_TIER_NVME].bytes_used, bytes);
	ck_assert_uint_ge(seg.tiers[VKV_TIER_NVME].file_bytes, bytes);
	ck_assert_uint_eq(seg.tiers[VKV_TIER_NVME].bytes_capacity,
			  (1ULL << 30) / ctx_page(ctx) * ctx_page(ctx));
	ck_assert_uint_eq(seg.tiers[VKV_TIER_NVME].errors, 0);
	OK(vkv_region_destroy(r));
	OK(vkv_ctx_destroy(ctx));
	unlink(path);
	rmdir(dir);
}
END_TEST

/* ----------------------------------------------------------- concurrency */

struct stepper {
	vkv_region *r;
	uint64_t max_len;
	uint32_t first, count;
	int rounds;
	int err;
};

/* Steps its slots and checks a token written at each step. */
static void *step_thread(void *arg)
{
	struct stepper *st = arg;
	uint8_t tok[TOKEN_BYTES], back[TOKEN_BYTES];

	for (int i = 1; i <= st->rounds && !st->err; i++) {
		for (uint32_t s = st->first; s < st->first + st->count && !st->err; s++) {
			uint64_t len = (uint64_t)i * 13 % st->max_len + 1;

			memset(tok, (int)(s * 31 + (uint32_t)i), sizeof(tok));
			st->err = vkv_step(st->r, &s, &len, 1);
			if (!st->err)
				st->err = vkv_slot_write(st->r, s, 1, VKV_V, len - 1, 1, tok);
			if (!st->err)
				st->err = vkv_slot_read(st->r, s, 1, VKV_V, len - 1, 1, back);
			if (!st->err && memcmp(tok, back, sizeof(tok)))
				st->err = -EILSEQ;
		}
	}
	return NULL;
}

struct evicter {
	vkv_region *r;
	uint32_t first, count;
	int rounds;
	int err;
};

static void *evict_thread(void *arg)
{
	struct evicter *ev = arg;
	uint32_t slots[8];

	for (uint32_t i = 0; i < ev->count; i++)
		slots[i] = ev->first + i;
	for (int i = 0; i < ev->rounds && !ev->err; i++) {
		unsigned tier = i % 2 ? VKV_TIER_NVME : VKV_TIER_DRAM;
		vkv_op *op = NULL;

		ev->err = vkv_evict(ev->r, slots, ev->count, tier, &op);
		if (!ev->err) {
			while (vkv_op_poll(op) == -EINPROGRESS)
				sched_yield();
			ev->err = vkv_op_wait(op);
			vkv_op_free(op);
		}
		if (!ev->err)
			ev->err = vkv_restore(ev->r, slots, ev->count, NULL);
	}
	return NULL;
}

START_TEST(evict_restore_while_stepping)
{
	vkv_ctx *ctx = make_ctx(0);
	vkv_region *r = make_region(ctx, VKV_LAYOUT_PER_LAYER, 8, 2);
	struct stepper st = { r, tokens_for_pages(r, 2), 0, 4, 60, 0 };
	struct evicter ev = { r, 4, 4, 6, 0 };
	uint64_t n = tokens_for_pages(r, 1) + 3;
	pthread_t a, b;

	for (uint32_t s = 0; s < 8; s++) {
		OK(vkv_slot_alloc_at(r, s));
		if (s >= 4)
			fill(r, s, n, s);
	}
	ck_assert_int_eq(pthread_create(&a, NULL, step_thread, &st), 0);
	ck_assert_int_eq(pthread_create(&b, NULL, evict_thread, &ev), 0);
	pthread_join(a, NULL);
	pthread_join(b, NULL);
	OK(st.err);
	OK(ev.err);
	for (uint32_t s = 4; s < 8; s++)
		ck_assert(matches(r, s, n, s));
	OK(vkv_region_destroy(r));
	OK(vkv_ctx_destroy(ctx));
}
END_TEST

/* Automatic policy with the worker on: threads step their own slots, more
 * slots than the budget holds, so slots are demoted and promoted under
 * them all the time; every step checks the slot's data. */
struct auto_user {
	vkv_region *r;
	uint64_t n;
	uint32_t first, count;
	int rounds;
	int err;
};

static void *auto_thread(void *arg)
{
	struct auto_user *u = arg;
	uint8_t back[TOKEN_BYTES];

	for (int i = 0; i < u->rounds && !u->err; i++) {
		uint32_t s = u->first + (uint32_t)i % u->count;

		u->err = vkv_step(u->r, &s, &u->n, 1);
		if (u->err)
			break;
		u->err = vkv_slot_read(u->r, s, 1, VKV_K, u->n - 1, 1, back);
		if (u->err == -EAGAIN) {
			/* another thread's step demoted s again (idle after one
			 * step): the read refuses an evicted slot, as it must;
			 * the next step brings it back */
			u->err = 0;
			continue;
		}
		for (uint64_t b = 0; !u->err && b < TOKEN_BYTES; b++)
			if (back[b] != pattern(s, 1, VKV_K, u->n - 1, b))
				u->err = -EILSEQ;
	}
	return NULL;
}

START_TEST(auto_policy_under_threads)
{
	struct auto_user u[3];
	pthread_t th[3];
	vkv_ctx *ctx;
	vkv_region *r;
	uint64_t page, n;
	uint32_t evicted = 0;

	setenv("VKV_TIER_AUTO", "1", 1);
	setenv("VKV_TIER_IDLE", "1", 1);
	page = run_page();
	/* 9 slots of 4 pages; the pool holds 5 of them. */
	ctx = make_ctx(20 * page);
	r = make_region(ctx, VKV_LAYOUT_PER_LAYER, 9, 1);
	n = tokens_for_pages(r, 1);
	for (uint32_t s = 0; s < 9; s++) {
		OK(vkv_slot_alloc_at(r, s));
		fill(r, s, n, s);
		OK(vkv_step(r, &s, &n, 1));
	}
	for (uint32_t s = 0; s < 9; s++)
		evicted += slot_info(r, s).tier != 0;
	ck_assert_uint_ge(evicted, 4); /* only 5 fit in the pool */
	for (int i = 0; i < 3; i++) {
		u[i] = (struct auto_user){ r, n, 3 * (uint32_t)i, 3, 40, 0 };
		ck_assert_int_eq(pthread_create(&th[i], NULL, auto_thread, &u[i]), 0);
	}
	for (int i = 0; i < 3; i++) {
		pthread_join(th[i], NULL);
		OK(u[i].err);
	}
	for (uint32_t s = 0; s < 9; s++) {
		OK(vkv_step(r, &s, &n, 1));
		ck_assert(matches(r, s, n, s));
	}
	OK(vkv_region_destroy(r));
	OK(vkv_ctx_destroy(ctx));
}
END_TEST

/* ------------------------------------------------------ big batches */

/* Host memory: readable mappings overlapping [lo, hi) (an unbacked range
 * is the reservation's PROT_NONE mapping). */
static unsigned readable_vmas_in(uint64_t lo, uint64_t hi)
{
	FILE *f = fopen("/proc/self/maps", "r");
	unsigned long long a, b;
	char line[512], perms[8];
	unsigned n = 0;

	ck_assert_ptr_nonnull(f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%llx-%llx %7s", &a, &b, perms) == 3 && a < hi &&
		    b > lo && perms[0] == 'r')
			n++;
	fclose(f);
	return n;
}

/* No page of slots 0..n-1 is mapped (host and kmod backends). */
static void assert_slots_unbacked(vkv_ctx *ctx, vkv_region *r, uint32_t n)
{
	struct vkv_ctx_info ci;

	OK(vkv_ctx_info(ctx, &ci));
	if (ci.backend == VKV_BACKEND_CUDA)
		return;
	for (uint32_t layer = 0; layer < LAYERS; layer++) {
		for (int kv = 0; kv < 2; kv++) {
			struct vkv_tensor t;

			OK(vkv_region_tensor(r, layer, kv, &t));
			ck_assert_uint_eq(readable_vmas_in(t.addr, t.addr + n * t.slot_stride), 0);
		}
	}
}

/*
 * A batch of several ~32 MiB groups: on host memory the tier thread copies
 * while a pager thread unmaps (evict) or maps (restore) the neighbouring
 * group; under cuda the copy engine overlaps the driver's calls. Round
 * trip intact; then a map failing in the second group of a restore leaves
 * nothing mapped and every slot evicted, and a retry restores them all.
 */
START_TEST(pipelined_batch_round_trip_and_map_failure)
{
	uint32_t batch[4] = { 0, 1, 2, 3 };
	uint64_t ps = run_page(), per_slot, full, mapped0;
	vkv_op *op = NULL;
	vkv_region *r;
	vkv_ctx *ctx;

	/* each slot alone fills a group: 4 groups */
	per_slot = (32ull << 20) / (2 * LAYERS * ps) + 1;
	no_worker();
	ctx = make_ctx(0);
	r = make_region(ctx, VKV_LAYOUT_PER_LAYER, 4, per_slot);
	full = tokens_for_pages(r, per_slot);
	for (uint32_t s = 0; s < 4; s++) {
		OK(vkv_slot_alloc_at(r, s));
		fill(r, s, full, 80 + s);
	}
	mapped0 = pages_mapped(ctx);
	evict_ok(r, batch, 4, VKV_TIER_DRAM);
	ck_assert_uint_eq(pages_mapped(ctx), 0);
	assert_slots_unbacked(ctx, r, 4);
	restore_ok(r, batch, 4);
	ck_assert_uint_eq(pages_mapped(ctx), mapped0);
	for (uint32_t s = 0; s < 4; s++)
		ck_assert(matches(r, s, full, 80 + s));

	evict_ok(r, batch, 4, VKV_TIER_DRAM);
	/* slot 0 maps its 4 tensors with 4 calls; the 5th is slot 1's */
	setenv("VKV_FAULT_MAP", "5,every", 1);
	ck_assert_int_lt(op_result(vkv_restore(r, batch, 4, &op), &op), 0);
	unsetenv("VKV_FAULT_MAP");
	ck_assert_uint_eq(pages_mapped(ctx), 0);
	assert_slots_unbacked(ctx, r, 4); /* the groups mapped before it too */
	for (uint32_t s = 0; s < 4; s++)
		ck_assert_uint_eq(slot_info(r, s).tier, VKV_TIER_DRAM);
	restore_ok(r, batch, 4);
	for (uint32_t s = 0; s < 4; s++)
		ck_assert(matches(r, s, full, 80 + s));
	OK(vkv_region_destroy(r));
	OK(vkv_ctx_destroy(ctx));
}
END_TEST

/* ------------------------------------------------- DRAM from /dev/vkv */

static bool sysfs_u64(const char *path, uint64_t *v)
{
	FILE *f = fopen(path, "r");
	unsigned long long x;
	bool ok = f && fscanf(f, "%llu", &x) == 1;

	if (f)
		fclose(f);
	if (ok)
		*v = x;
	return ok;
}

/*
 * With the kernel module loaded, the DRAM tier's buffers come from
 * /dev/vkv (pinned huge pages, accounted by the module): the module's
 * byte counter rises while slots are evicted, the data comes back intact,
 * and everything is given back with the context. Meaningful inside the
 * kmod VM (tests/kmod/run.sh runs it there); without /dev/vkv it returns
 * at once.
 */
START_TEST(dram_tier_on_dev_vkv)
{
	const char *bytes = "/sys/class/misc/vkv/bytes";
	uint32_t batch[2] = { 0, 1 };
	uint64_t before, during, after, full;
	vkv_region *r;
	vkv_ctx *ctx;

	if (access("/dev/vkv", R_OK | W_OK) || !sysfs_u64(bytes, &before))
		return;
	setenv("VKV_DRAM_CHUNK", "4M", 1);
	ctx = make_ctx(0);
	r = make_region(ctx, VKV_LAYOUT_PER_LAYER, 2, 2);
	full = tokens_for_pages(r, 2);
	for (uint32_t s = 0; s < 2; s++) {
		OK(vkv_slot_alloc_at(r, s));
		fill(r, s, full, 60 + s);
	}
	evict_ok(r, batch, 2, VKV_TIER_DRAM);
	ck_assert(sysfs_u64(bytes, &during));
	ck_assert_uint_ge(during, before + (4u << 20));
	restore_ok(r, batch, 2);
	for (uint32_t s = 0; s < 2; s++)
		ck_assert(matches(r, s, full, 60 + s));
	OK(vkv_region_destroy(r));
	OK(vkv_ctx_destroy(ctx));
	ck_assert(sysfs_u64(bytes, &after));
	ck_assert_uint_eq(after, before);
}
END_TEST

/* ------------------------------------------- the cuda batch copy kernel */

#ifdef VKV_HAVE_KERNELS
/*
 * Under the CUDA driver test double, VKV_TIER_COPY=kernel launches the
 * range-copy kernel; the double calls these host versions (this program is
 * linked -rdynamic). The attention kernels are loaded with it and must
 * exist, but tiering never launches them.
 */
static unsigned copy_launches, bad_launches;

void vkv_fakecuda_kernel_vkv_copy_ranges(const struct vkv_fakecuda_launch *l);
void vkv_fakecuda_kernel_vkv_copy_ranges(const struct vkv_fakecuda_launch *l)
{
	const struct vkv_kern_range *r =
		(const void *)(uintptr_t) * (const uint64_t *)l->params[0];
	uint32_t n = *(const uint32_t *)l->params[1];

	copy_launches++;
	if (vkv__copy_ranges_ref(r, n))
		bad_launches++;
}

#define NO_ATTN(name)                                                          \
	void vkv_fakecuda_kernel_##name(const struct vkv_fakecuda_launch *l);  \
	void vkv_fakecuda_kernel_##name(const struct vkv_fakecuda_launch *l)   \
	{                                                                      \
		(void)l;                                                       \
		bad_launches++;                                                \
	}
#define NO_ATTNS(layout, dt)                                                  \
	NO_ATTN(vkv_attn_##layout##_##dt##_d1)                                 \
	NO_ATTN(vkv_attn_##layout##_##dt##_d2)                                 \
	NO_ATTN(vkv_attn_##layout##_##dt##_d4)                                 \
	NO_ATTN(vkv_attn_##layout##_##dt##_d8)
NO_ATTNS(contig, f32)
NO_ATTNS(contig, f16)
NO_ATTNS(contig, bf16)
NO_ATTNS(paged, f32)
NO_ATTNS(paged, f16)
NO_ATTNS(paged, bf16)
#endif

/*
 * VKV_TIER_COPY=kernel: a DRAM round trip moves every page in one launch
 * per batch and direction, not one copy per page, and the data survives.
 * Meaningful on the cuda backend; on a real GPU the real kernel runs (the
 * data check stands); elsewhere the option changes nothing.
 */
START_TEST(kernel_copy_round_trip)
{
	vkv_ctx *ctx;
	vkv_region *r;
	struct vkv_ctx_info ci;
	uint32_t batch[3] = { 0, 1, 2 };
	uint64_t full;
	void *lib;
	bool on_double;

	setenv("VKV_TIER_COPY", "kernel", 1);
	ctx = make_ctx(0);
	OK(vkv_ctx_info(ctx, &ci));
	/* the driver libvkv loaded: the test double exports its counters */
	lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
	on_double = lib && dlsym(lib, "vkv_fakecuda_calls");
	if (lib)
		dlclose(lib);
	r = make_region(ctx, VKV_LAYOUT_PER_LAYER, 3, 3);
	full = tokens_for_pages(r, 3);
	for (uint32_t s = 0; s < 3; s++) {
		OK(vkv_slot_alloc_at(r, s));
		fill(r, s, s == 1 ? full / 2 + 1 : full, 20 + s);
	}
	evict_ok(r, batch, 3, VKV_TIER_DRAM);
	restore_ok(r, batch, 3);
	for (uint32_t s = 0; s < 3; s++)
		ck_assert(matches(r, s, s == 1 ? full / 2 + 1 : full, 20 + s));
#ifdef VKV_HAVE_KERNELS
	if (ci.backend == VKV_BACKEND_CUDA && on_double) {
		/* one launch per group of slots and direction (tier.c moves a
		 * batch in groups of ~32 MiB): at least one each way, at most
		 * one per slot, never one per page (36 pages each way here) */
		ck_assert_uint_ge(copy_launches, 2);
		ck_assert_uint_le(copy_launches, 2 * 3);
		ck_assert_uint_eq(bad_launches, 0);
	}
#else
	(void)on_double;
#endif
	OK(vkv_region_destroy(r));
	OK(vkv_ctx_destroy(ctx));
}
END_TEST

/*
 * A batch moves in groups (tier.c): a copy that fails in a later group,
 * after earlier groups were already unmapped (evict) or mapped and filled
 * (restore), must leave every slot as it was: evicted slots mapped again
 * with their data, restored slots still evicted with their data in the
 * tier, restorable once the fault is gone. Needs the CUDA driver test
 * double's fault injection (async copies: not with VKV_TIER_COPY=kernel).
 */
START_TEST(copy_failure_in_a_later_group)
{
	typedef int (*reload_fn)(void);
	vkv_ctx *ctx;
	vkv_region *r;
	struct vkv_ctx_info ci;
	uint32_t batch[3] = { 0, 1, 2 };
	uint64_t full;
	vkv_op *op = NULL;
	void *lib;
	reload_fn reload = NULL;
	const char *mode = getenv("VKV_TIER_COPY");

	no_worker();
	ctx = make_ctx(0);
	OK(vkv_ctx_info(ctx, &ci));
	lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
	if (lib)
		reload = (reload_fn)dlsym(lib, "vkv_fakecuda_reload");
	if (ci.backend != VKV_BACKEND_CUDA || !reload || (mode && !strcmp(mode, "kernel"))) {
		if (lib)
			dlclose(lib);
		OK(vkv_ctx_destroy(ctx));
		return; /* meaningful on the double only */
	}
	/* 3 slots of 4 tensors x 3 pages: at 2 MiB two groups, at 64 KiB one */
	r = make_region(ctx, VKV_LAYOUT_PER_LAYER, 3, 3);
	full = tokens_for_pages(r, 3);
	for (uint32_t s = 0; s < 3; s++) {
		OK(vkv_slot_alloc_at(r, s));
		fill(r, s, full, 40 + s);
	}
	/* evict: the last page copy fails */
	setenv("VKV_FAKECUDA_FAIL", "cuMemcpyDtoHAsync:36", 1);
	reload(); /* -EBUSY: memory is live; the fault plan is reloaded */
	ck_assert_int_lt(op_result(vkv_evict(r, batch, 3, VKV_TIER_DRAM, &op), &op), 0);
	unsetenv("VKV_FAKECUDA_FAIL");
	reload(); /* -EBUSY: memory is live; the fault plan is reloaded */
	for (uint32_t s = 0; s < 3; s++) {
		ck_assert_uint_eq(slot_info(r, s).tier, 0);
		ck_assert_uint_eq(slot_info(r, s).pages, 3 * 2 * LAYERS);
		ck_assert(matches(r, s, full, 40 + s));
	}
	evict_ok(r, batch, 3, VKV_TIER_DRAM);
	/* restore: the last page copy fails */
	setenv("VKV_FAKECUDA_FAIL", "cuMemcpyHtoDAsync:36", 1);
	reload(); /* -EBUSY: memory is live; the fault plan is reloaded */
	ck_assert_int_lt(op_result(vkv_restore(r, batch, 3, &op), &op), 0);
	unsetenv("VKV_FAKECUDA_FAIL");
	reload(); /* -EBUSY: memory is live; the fault plan is reloaded */
	for (uint32_t s = 0; s < 3; s++)
		ck_assert_uint_eq(slot_info(r, s).tier, VKV_TIER_DRAM);
	restore_ok(r, batch, 3);
	for (uint32_t s = 0; s < 3; s++)
		ck_assert(matches(r, s, full, 40 + s));
	dlclose(lib);
	OK(vkv_region_destroy(r));
	OK(vkv_ctx_destroy(ctx));
}
END_TEST

static Suite *tier_suite(void)
{
	Suite *s = suite_create("tier");
	TCase *tc;

	tc = tcase_create("round trips");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, crc32c_matches_reference);
	tcase_add_test(tc, round_trip_dram_per_layer);
	tcase_add_test(tc, round_trip_dram_all_layers);
	tcase_add_test(tc, round_trip_nvme_per_layer);
	tcase_add_test(tc, round_trip_nvme_all_layers);
	tcase_add_test(tc, round_trip_nvme_without_io_uring);
	tcase_add_loop_test(tc, round_trip_nvme_small_ring, 0, 2);
	tcase_add_test(tc, round_trip_nvme_on_tmpfs);
	tcase_add_test(tc, shared_prefix_dram);
	tcase_add_test(tc, shared_prefix_nvme);
	tcase_add_test(tc, restore_after_neighbours_changed);
	tcase_add_test(tc, bad_input_changes_nothing);
	tcase_add_test(tc, free_and_destroy_evicted);
	tcase_add_test(tc, kernel_copy_round_trip);
	tcase_add_test(tc, dram_tier_on_dev_vkv);
	suite_add_tcase(s, tc);

	tc = tcase_create("faults");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, fault_nvme_budget_full);
	tcase_add_test(tc, fault_nvme_disk_full);
	tcase_add_test(tc, fault_nvme_write_error);
	tcase_add_test(tc, fault_nvme_dir_missing);
	tcase_add_test(tc, fault_dram_budget_full);
	tcase_add_test(tc, fault_dram_alloc_failure);
	tcase_add_test(tc, fault_nvme_read_error);
	tcase_add_test(tc, fault_nvme_corrupt_extent);
	tcase_add_test(tc, fault_nvme_corrupt_mid_ring);
	tcase_add_test(tc, fault_nvme_truncated_file);
	tcase_add_test(tc, restore_without_room);
	tcase_add_test(tc, copy_failure_in_a_later_group);
	tcase_add_test(tc, pipelined_batch_round_trip_and_map_failure);
	suite_add_tcase(s, tc);

	tc = tcase_create("policy");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, auto_demotes_idle_and_promotes_on_step);
	tcase_add_test(tc, no_auto_means_enomem);
	tcase_add_test(tc, worker_demotes_only_ahead_of_need);
	tcase_add_test(tc, stats_count_tier_traffic);
	suite_add_tcase(s, tc);

	tc = tcase_create("threads");
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, evict_restore_while_stepping);
	tcase_add_test(tc, auto_policy_under_threads);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return vkv_check_run(tier_suite());
}
