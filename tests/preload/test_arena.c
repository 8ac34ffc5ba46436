// SPDX-License-Identifier: MIT
/*
 * test_arena.c - Check suite of the LD_PRELOAD shim's arena allocator
 * (runtime/preload/arena.c), on its own: the mapping and fence callbacks
 * are a test double that keeps a bitmap of mapped chunks and refuses
 * double maps and stray unmaps, so every allocation is checked to lie on
 * mapped memory and every release to be right. vkv__arena_check() verifies
 * all internal invariants after each step. Unlike the shim's LD_PRELOAD
 * tests, this suite runs under the sanitizers and valgrind too.
 */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "preload/arena.h"

#define CH (64ULL << 10) /* chunk of the tests */
#define BASE (1ULL << 40)
#define MAXF 4096

struct fake {
	uint64_t nchunks;
	uint8_t *mapped;        /* per chunk */
	uint64_t nmapped;
	uint64_t map_calls;
	uint64_t fail_from;     /* map calls from this one on fail; 0 never */
	uint64_t cap;           /* chunks that may be mapped; 0 = any */
	bool done[MAXF];        /* fence completed */
	int puts[MAXF];
	int waits;
};

static struct fake fk;

static int f_map(void *priv, uint64_t addr, uint64_t n, uint64_t *handles)
{
	uint64_t c = (addr - BASE) / CH;

	ck_assert_ptr_eq(priv, &fk);
	fk.map_calls++;
	if (fk.fail_from && fk.map_calls >= fk.fail_from)
		return -ENOMEM;
	if (fk.cap && fk.nmapped + n > fk.cap)
		return -ENOMEM;
	ck_assert_uint_eq(addr % CH, 0);
	for (uint64_t i = 0; i < n; i++) {
		ck_assert_msg(c + i < fk.nchunks && !fk.mapped[c + i],
			      "chunk %llu mapped twice", (unsigned long long)(c + i));
		fk.mapped[c + i] = 1;
		handles[i] = addr + i * CH; /* the test's token */
	}
	fk.nmapped += n;
	return 0;
}

static void f_unmap(void *priv, uint64_t addr, uint64_t n,
		    const uint64_t *handles)
{
	uint64_t c = (addr - BASE) / CH;

	(void)priv;
	for (uint64_t i = 0; i < n; i++) {
		ck_assert_msg(fk.mapped[c + i], "unmap of an unmapped chunk");
		ck_assert_uint_eq(handles[i], addr + i * CH);
		fk.mapped[c + i] = 0;
	}
	fk.nmapped -= n;
}

static bool f_done(void *priv, uint64_t f)
{
	(void)priv;
	ck_assert_uint_lt(f, MAXF);
	return fk.done[f];
}

static void f_wait(void *priv, uint64_t f)
{
	(void)priv;
	fk.waits++;
	fk.done[f] = true;
}

static void f_put(void *priv, uint64_t f)
{
	(void)priv;
	fk.puts[f]++;
}

static const struct vkv_arena_ops ops = { f_map, f_unmap, f_done, f_wait,
					  f_put };

static void setup_arena(struct vkv_arena *a, uint64_t nchunks,
			uint64_t small_max, uint64_t idle_max)
{
	free(fk.mapped);
	memset(&fk, 0, sizeof(fk));
	fk.nchunks = nchunks;
	fk.mapped = calloc(nchunks, 1);
	ck_assert_ptr_nonnull(fk.mapped);
	ck_assert_int_eq(vkv__arena_init(a, BASE, nchunks * CH, CH, small_max,
					 idle_max, &ops, &fk), 0);
}

static void teardown_arena(struct vkv_arena *a)
{
	vkv__arena_fini(a);
	ck_assert_uint_eq(fk.nmapped, 0);
	free(fk.mapped);
	fk.mapped = NULL;
}

#define CHECK_ARENA(a)                                                        \
	do {                                                                  \
		char why_[256] = "";                                          \
		ck_assert_msg(vkv__arena_check((a), why_, sizeof(why_)) == 0, \
			      "%s", why_);                                    \
	} while (0)

/* Every byte of [addr, addr + size) lies on a mapped chunk. */
static void assert_backed(uint64_t addr, uint64_t size)
{
	for (uint64_t c = (addr - BASE) / CH; c <= (addr + size - 1 - BASE) / CH; c++)
		ck_assert_msg(fk.mapped[c], "chunk %llu under a block is unmapped",
			      (unsigned long long)c);
}

START_TEST(test_init_rejects_bad_geometry)
{
	struct vkv_arena a;

	ck_assert_int_eq(vkv__arena_init(&a, BASE, 64 * CH, 3 * 1024, 0, 0, &ops, &fk),
			 -EINVAL);
	ck_assert_int_eq(vkv__arena_init(&a, BASE + 512, 64 * CH, CH, 0, 0, &ops, &fk),
			 -EINVAL);
	ck_assert_int_eq(vkv__arena_init(&a, BASE, 2 * CH, CH, 0, 0, &ops, &fk),
			 -EINVAL);
}
END_TEST

START_TEST(test_alloc_free_ranges)
{
	static const uint64_t sizes[] = { 1, 511, 512, 513, 4096, 16 << 10,
					  (16 << 10) + 1, 100 << 10, 1 << 20 };
	enum { N = sizeof(sizes) / sizeof(sizes[0]) };
	struct vkv_arena a;
	uint64_t p[N], b, s;

	setup_arena(&a, 256, 16 << 10, 4 * CH);
	for (int i = 0; i < N; i++) {
		ck_assert_int_eq(vkv__arena_alloc(&a, sizes[i], VKV_ARENA_NO_STREAM, &p[i]), 0);
		ck_assert_uint_eq(p[i] % VKV_ARENA_ALIGN, 0);
		ck_assert(p[i] >= BASE && p[i] + sizes[i] <= BASE + 256 * CH);
		ck_assert(vkv__arena_owns(&a, p[i]));
		assert_backed(p[i], sizes[i]);
		ck_assert_int_eq(vkv__arena_range(&a, p[i] + sizes[i] - 1, &b, &s), 0);
		ck_assert_uint_eq(b, p[i]);
		ck_assert_uint_eq(s, sizes[i]);
		CHECK_ARENA(&a);
	}
	for (int i = 0; i < N; i++)
		for (int j = 0; j < N; j++)
			ck_assert(i == j || p[i] + sizes[i] <= p[j] || p[j] + sizes[j] <= p[i]);
	ck_assert_uint_eq(a.c.allocs, N);
	ck_assert_int_eq(vkv__arena_free(&a, p[3] + 512), -ENOENT);
	ck_assert(!vkv__arena_owns(&a, BASE + 255 * CH));
	for (int i = N - 1; i >= 0; i -= 2) {
		ck_assert_int_eq(vkv__arena_free(&a, p[i]), 0);
		ck_assert_int_eq(vkv__arena_free(&a, p[i]), -ENOENT);
		ck_assert_int_eq(vkv__arena_range(&a, p[i], &b, &s), -ENOENT);
		CHECK_ARENA(&a);
	}
	for (int i = N - 2; i >= 0; i -= 2)
		ck_assert_int_eq(vkv__arena_free(&a, p[i]), 0);
	CHECK_ARENA(&a);
	ck_assert_uint_eq(a.c.in_use, 0);
	ck_assert_uint_eq(a.c.requested, 0);
	ck_assert_uint_le(a.c.mapped, 4 * CH);
	ck_assert_uint_eq(a.c.idle, a.c.mapped);
	vkv__arena_trim(&a, 0);
	ck_assert_uint_eq(fk.nmapped, 0);
	CHECK_ARENA(&a);
	teardown_arena(&a);
}
END_TEST

/* Small blocks pack into few chunks; big ones start in the large heap. */
START_TEST(test_small_blocks_pack)
{
	struct vkv_arena a;
	uint64_t p[64], big;

	setup_arena(&a, 256, 16 << 10, 0);
	for (int i = 0; i < 64; i++)
		ck_assert_int_eq(vkv__arena_alloc(&a, 4096, VKV_ARENA_NO_STREAM, &p[i]), 0);
	ck_assert_uint_eq(a.c.mapped, 4 * CH); /* 256 KiB exactly */
	ck_assert_int_eq(vkv__arena_alloc(&a, 100 << 10, VKV_ARENA_NO_STREAM, &big), 0);
	ck_assert_uint_ge(big, BASE + 64 * CH); /* the large heap */
	for (int i = 0; i < 64; i++)
		ck_assert_int_eq(vkv__arena_free(&a, p[i]), 0);
	ck_assert_int_eq(vkv__arena_free(&a, big), 0);
	ck_assert_uint_eq(fk.nmapped, 0); /* idle_max 0: all given back */
	CHECK_ARENA(&a);
	teardown_arena(&a);
}
END_TEST

START_TEST(test_random_ops_keep_invariants)
{
	enum { LIVE = 200 };
	struct vkv_arena a;
	uint64_t addr[LIVE], size[LIVE], fence = 1;
	int n = 0;
	unsigned seed = 42;

	setup_arena(&a, 4096, 16 << 10, 16 * CH);
	for (int op = 0; op < 20000; op++) {
		unsigned r = (unsigned)rand_r(&seed);

		if (n < LIVE && (n == 0 || r % 5 < 3)) {
			unsigned kind = (r >> 3) % 100;
			uint64_t sz = kind < 70 ? 1 + (r >> 8) % (16 << 10) :
				      kind < 95 ? (16 << 10) + (r >> 8) % (512 << 10) :
						  (512 << 10) + (r >> 8) % (3 << 20);
			uint64_t stream = (r >> 28) % 4 ? (r >> 28) % 4 : VKV_ARENA_NO_STREAM;
			int err = vkv__arena_alloc(&a, sz, stream, &addr[n]);

			ck_assert_msg(err == 0 || err == -ENOSPC, "alloc: %d", err);
			if (!err) {
				assert_backed(addr[n], sz);
				size[n++] = sz;
			}
		} else {
			int i = (int)(r % (unsigned)n);

			assert_backed(addr[i], size[i]);
			if (r & 0x100 && fence < MAXF)
				ck_assert_int_eq(vkv__arena_free_async(&a, addr[i],
								       1 + (r >> 9) % 3, fence++), 0);
			else
				ck_assert_int_eq(vkv__arena_free(&a, addr[i]), 0);
			addr[i] = addr[--n];
			size[i] = size[n];
		}
		if (op % 64 == 0) /* some stream work finishes */
			for (uint64_t f = 1; f < fence; f++)
				if (rand_r(&seed) % 3 == 0)
					fk.done[f] = true;
		if (op % 97 == 0)
			CHECK_ARENA(&a);
	}
	while (n--)
		ck_assert_int_eq(vkv__arena_free(&a, addr[n]), 0);
	vkv__arena_reap(&a, true);
	CHECK_ARENA(&a);
	ck_assert_uint_eq(a.c.in_use + a.c.pending, 0);
	for (uint64_t f = 1; f < fence; f++)
		ck_assert_int_eq(fk.puts[f], 1);
	ck_assert_uint_le(a.c.peak_mapped, 4096 * CH);
	vkv__arena_trim(&a, 0);
	ck_assert_uint_eq(fk.nmapped, 0);
	teardown_arena(&a);
}
END_TEST

/* A map failing half way leaves nothing behind: the first run it mapped is
 * unmapped again, the block is free, the counters are as before. */
START_TEST(test_map_failure_rolls_back)
{
	struct vkv_arena a;
	uint64_t pa, pb, pc, big;

	setup_arena(&a, 64, 16 << 10, CH);
	/* large heap: chunks 16.. ; make chunk 17 the only mapped one */
	ck_assert_int_eq(vkv__arena_alloc(&a, CH, VKV_ARENA_NO_STREAM, &pa), 0);
	ck_assert_int_eq(vkv__arena_alloc(&a, CH, VKV_ARENA_NO_STREAM, &pb), 0);
	ck_assert_int_eq(vkv__arena_alloc(&a, CH, VKV_ARENA_NO_STREAM, &pc), 0);
	ck_assert_int_eq(vkv__arena_free(&a, pa), 0);
	ck_assert_int_eq(vkv__arena_free(&a, pc), 0);
	ck_assert_int_eq(vkv__arena_free(&a, pb), 0);
	ck_assert_uint_eq(fk.nmapped, 1);
	ck_assert(fk.mapped[(pb - BASE) / CH]);
	CHECK_ARENA(&a);
	/* 4 chunks from pa: run [pa], mapped pb, run [pc, +2): the second
	 * run fails */
	fk.fail_from = fk.map_calls + 2;
	ck_assert_int_eq(vkv__arena_alloc(&a, 4 * CH, VKV_ARENA_NO_STREAM, &big), -ENOMEM);
	CHECK_ARENA(&a);
	ck_assert_uint_eq(a.c.in_use, 0);
	ck_assert_uint_eq(fk.nmapped, a.c.chunks);
	fk.fail_from = 0;
	ck_assert_int_eq(vkv__arena_alloc(&a, 4 * CH, VKV_ARENA_NO_STREAM, &big), 0);
	ck_assert_uint_eq(big, pa);
	assert_backed(big, 4 * CH);
	CHECK_ARENA(&a);
	teardown_arena(&a);
}
END_TEST

/* Under a cap, idle chunks are given back and pending frees waited for
 * before an allocation fails. */
START_TEST(test_short_memory_recovers)
{
	struct vkv_arena a;
	uint64_t p[8], q;

	setup_arena(&a, 64, 16 << 10, 64 * CH);
	fk.cap = 8;
	for (int i = 0; i < 8; i++)
		ck_assert_int_eq(vkv__arena_alloc(&a, CH, VKV_ARENA_NO_STREAM, &p[i]), 0);
	ck_assert_int_eq(vkv__arena_alloc(&a, CH, VKV_ARENA_NO_STREAM, &q), -ENOMEM);
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(vkv__arena_free(&a, p[i]), 0); /* idle, mapped */
	for (int i = 4; i < 8; i++)
		ck_assert_int_eq(vkv__arena_free_async(&a, p[i], 7, (uint64_t)i), 0);
	ck_assert_uint_eq(a.c.pending, 4 * CH);
	ck_assert_int_eq(vkv__arena_alloc(&a, 8 * CH, 9, &q), 0);
	ck_assert_int_eq(fk.waits, 4);
	for (int i = 4; i < 8; i++)
		ck_assert_int_eq(fk.puts[i], 1);
	CHECK_ARENA(&a);
	ck_assert_int_eq(vkv__arena_free(&a, q), 0);
	teardown_arena(&a);
}
END_TEST

START_TEST(test_stream_ordered_reuse)
{
	struct vkv_arena a;
	uint64_t p, p2, p3, q, q1, q2, b, s;

	setup_arena(&a, 256, 16 << 10, 256 * CH);
	ck_assert_int_eq(vkv__arena_alloc(&a, 2 * CH, 1, &p), 0);
	ck_assert_int_eq(vkv__arena_free_async(&a, p, 1, 1), 0);
	ck_assert_int_eq(vkv__arena_range(&a, p, &b, &s), -ENOENT);
	ck_assert_int_eq(vkv__arena_alloc(&a, 2 * CH, 1, &p2), 0);
	ck_assert_uint_eq(p2, p); /* same stream: at once */
	ck_assert_int_eq(fk.puts[1], 1);
	ck_assert_int_eq(vkv__arena_free_async(&a, p2, 1, 2), 0);
	ck_assert_int_eq(vkv__arena_alloc(&a, 2 * CH, 2, &p3), 0);
	ck_assert_uint_ne(p3, p); /* another stream: not before the fence */
	ck_assert_int_eq(vkv__arena_alloc(&a, 2 * CH, VKV_ARENA_NO_STREAM, &q), 0);
	ck_assert_uint_ne(q, p);
	fk.done[2] = true;
	ck_assert_int_eq(vkv__arena_free(&a, q), 0);
	ck_assert_int_eq(vkv__arena_alloc(&a, 2 * CH, 2, &q), 0);
	ck_assert_uint_eq(q, p); /* fence done: anyone */
	ck_assert_int_eq(fk.puts[2], 1);
	CHECK_ARENA(&a);
	/* cut a pending block; the rest stays pending on the same fence */
	ck_assert_int_eq(vkv__arena_alloc(&a, 8 * CH, 1, &p), 0);
	ck_assert_int_eq(vkv__arena_free_async(&a, p, 1, 3), 0);
	ck_assert_int_eq(vkv__arena_alloc(&a, 2 * CH, 1, &q1), 0);
	ck_assert_int_eq(vkv__arena_alloc(&a, 2 * CH, 1, &q2), 0);
	ck_assert_uint_eq(q1, p);
	ck_assert_uint_eq(q2, p + 2 * CH);
	ck_assert_uint_eq(a.c.pending, 4 * CH);
	ck_assert_int_eq(fk.puts[3], 0);
	CHECK_ARENA(&a);
	fk.done[3] = true;
	vkv__arena_reap(&a, false);
	ck_assert_int_eq(fk.puts[3], 1);
	ck_assert_uint_eq(a.c.pending, 0);
	/* a fence for a pointer not ours is put at once */
	ck_assert_int_eq(vkv__arena_free_async(&a, BASE + 3, 1, 4), -ENOENT);
	ck_assert_int_eq(fk.puts[4], 1);
	CHECK_ARENA(&a);
	teardown_arena(&a);
}
END_TEST

START_TEST(test_idle_chunks_trimmed)
{
	struct vkv_arena a;
	uint64_t p[10];

	setup_arena(&a, 256, 16 << 10, 3 * CH);
	for (int i = 0; i < 10; i++)
		ck_assert_int_eq(vkv__arena_alloc(&a, CH, VKV_ARENA_NO_STREAM, &p[i]), 0);
	ck_assert_uint_eq(fk.nmapped, 10);
	for (int i = 0; i < 10; i++)
		ck_assert_int_eq(vkv__arena_free(&a, p[i]), 0);
	ck_assert_uint_eq(fk.nmapped, 3);
	ck_assert_uint_eq(a.c.idle, 3 * CH);
	/* the most recently idle are kept: p[7..9] */
	for (int i = 7; i < 10; i++)
		ck_assert(fk.mapped[(p[i] - BASE) / CH]);
	ck_assert_uint_eq(vkv__arena_largest_free(&a), 3 * CH);
	ck_assert_uint_eq(vkv__arena_trim(&a, 0), 3 * CH);
	ck_assert_uint_eq(vkv__arena_largest_free(&a), 0);
	CHECK_ARENA(&a);
	teardown_arena(&a);
}
END_TEST

START_TEST(test_full_range)
{
	struct vkv_arena a;
	uint64_t p, n = 0;
	int err;

	setup_arena(&a, 16, 16 << 10, 0);
	ck_assert_int_eq(vkv__arena_alloc(&a, 13 * CH, VKV_ARENA_NO_STREAM, &p), -ENOSPC);
	ck_assert_int_eq(vkv__arena_alloc(&a, 0, VKV_ARENA_NO_STREAM, &p), -EINVAL);
	/* small blocks fill their heap, then spill into the large one */
	while ((err = vkv__arena_alloc(&a, 16 << 10, VKV_ARENA_NO_STREAM, &p)) == 0)
		n++;
	ck_assert_int_eq(err, -ENOSPC);
	ck_assert_uint_eq(n, 16 * CH / (16 << 10));
	CHECK_ARENA(&a);
	teardown_arena(&a);
}
END_TEST

START_TEST(test_abandon_calls_nothing)
{
	struct vkv_arena a;
	uint64_t p;

	setup_arena(&a, 64, 16 << 10, 0);
	ck_assert_int_eq(vkv__arena_alloc(&a, 5 * CH, VKV_ARENA_NO_STREAM, &p), 0);
	ck_assert_int_eq(vkv__arena_free_async(&a, p, 1, 1), 0);
	vkv__arena_abandon(&a);
	ck_assert_uint_eq(fk.nmapped, 5); /* left as it was */
	ck_assert_int_eq(fk.puts[1], 0);
	free(fk.mapped);
	fk.mapped = NULL;
}
END_TEST

static Suite *arena_suite(void)
{
	Suite *s = suite_create("preload arena");
	TCase *tc = tcase_create("arena");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_init_rejects_bad_geometry);
	tcase_add_test(tc, test_alloc_free_ranges);
	tcase_add_test(tc, test_small_blocks_pack);
	tcase_add_test(tc, test_random_ops_keep_invariants);
	tcase_add_test(tc, test_map_failure_rolls_back);
	tcase_add_test(tc, test_short_memory_recovers);
	tcase_add_test(tc, test_stream_ordered_reuse);
	tcase_add_test(tc, test_idle_chunks_trimmed);
	tcase_add_test(tc, test_full_range);
	tcase_add_test(tc, test_abandon_calls_nothing);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(arena_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
