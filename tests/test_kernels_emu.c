// SPDX-License-Identifier: MIT
/*
 * test_kernels_emu.c - the CUDA kernels' own code, run on the CPU by the
 * emulation in tests/kernels_emu.cc, against the CPU references and the
 * naive double-precision evaluation (tests/kern_case.h).
 *
 * This is what proves the device code in CI, where there is no GPU: the
 * attention kernels of both layouts, every dtype and every head-dim class
 * (the one the launcher picks and the widest one), and the range copy with
 * aligned, unaligned and empty ranges and with fewer blocks than ranges.
 * The cases are small because the emulation switches context for every
 * thread at every barrier.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "attn_ref.h"
#include "kern_case.h"
#include "kernels_emu.h"

struct shape {
	enum vkv_kern_dtype dt;
	uint32_t q_heads, kv_heads, head_dim;
	double amp;
};

static const struct shape shapes[] = {
	{ VKV_KERN_F32, 2, 2, 64, 1 },  { VKV_KERN_F32, 4, 1, 31, 1 },
	{ VKV_KERN_F32, 4, 2, 128, 1 }, { VKV_KERN_F16, 4, 2, 128, 1 },
	{ VKV_KERN_F16, 2, 2, 256, 1 }, { VKV_KERN_F16, 2, 1, 1, 1 },
	{ VKV_KERN_BF16, 4, 2, 64, 1 }, { VKV_KERN_F32, 2, 1, 32, 8 },
	{ VKV_KERN_F16, 2, 2, 33, 6 },
};

static const uint32_t ragged[] = { 1, 0, 16, 17, 45, 15, 33 };
#define NRAGGED (sizeof(ragged) / sizeof(ragged[0]))

static unsigned min_dpl_log2(uint32_t head_dim)
{
	unsigned i = 0;

	while (i < 3 && head_dim > (32u << i))
		i++;
	return i;
}

START_TEST(attn_kernel_code_matches_reference)
{
	const struct shape *sh = &shapes[_i];
	size_t es = vkv__dtype_size(sh->dt);
	double tol = vkv__attn_tol(sh->dt);
	struct kern_case c;

	ck_assert_int_eq(kc_make(&c, sh->dt, NRAGGED, sh->q_heads, sh->kv_heads,
				 sh->head_dim, ragged, sh->amp), 0);
	void *ref = malloc(c.out_elems * es), *got = malloc(c.out_elems * es);
	double *naive = malloc(c.out_elems * sizeof(double));
	double *refd = malloc(c.out_elems * sizeof(double));
	ck_assert(ref && got && naive && refd);
	struct vkv_attn_params rp = kc_params(&c, VKV_KERN_CONTIG, ref);
	ck_assert_int_eq(vkv__attn_ref(VKV_KERN_CONTIG, sh->dt, &rp), 0);
	kc_naive(&c, naive);
	for (size_t i = 0; i < c.out_elems; i++)
		refd[i] = vkv__elem_load(sh->dt, ref, i);

	unsigned dpls[2] = { min_dpl_log2(sh->head_dim), 3 };
	for (int l = 0; l < VKV_KERN_LAYOUT_COUNT; l++) {
		for (int v = 0; v < 2; v++) {
			struct vkv_attn_params p = kc_params(&c, l, got);
			memset(got, 0xff, c.out_elems * es);
			ck_assert_int_eq(vkv_emu_attn(l, sh->dt, dpls[v], &p), 0);
			double e_ref = kc_rel_err(&c, got, refd);
			double e_naive = kc_rel_err(&c, got, naive);
			ck_assert_msg(e_ref <= tol && e_naive <= tol,
				      "%s %s hd %u d%u: rel_err %g vs reference, "
				      "%g vs naive (bound %g)",
				      l ? "paged" : "contig", vkv__dtype_name(sh->dt),
				      sh->head_dim, 1u << dpls[v], e_ref, e_naive, tol);
		}
	}
	free(ref);
	free(got);
	free(naive);
	free(refd);
	kc_free(&c);
}
END_TEST

START_TEST(copy_kernel_code_moves_every_byte)
{
	enum { N = 9, CHUNK = 4096 };
	uint8_t *src = malloc(N * CHUNK), *dst = malloc(N * CHUNK + 64);
	struct vkv_kern_range r[N + 2];
	/* grids: one block per range; fewer blocks than ranges (y stride);
	 * several blocks along a range (x stride) */
	const unsigned grids[][3] = { { 1, N + 2, 256 }, { 1, 3, 256 }, { 4, 2, 64 } };

	ck_assert(src && dst);
	for (int i = 0; i < N * CHUNK; i++)
		src[i] = (uint8_t)(i * 31 + 5);
	for (size_t g = 0; g < sizeof(grids) / sizeof(grids[0]); g++) {
		memset(dst, 0xee, N * CHUNK + 64);
		for (int i = 0; i < N; i++) /* chunk i goes to slot N-1-i */
			r[i] = (struct vkv_kern_range){
				(uintptr_t)(dst + (size_t)(N - 1 - i) * CHUNK),
				(uintptr_t)(src + (size_t)i * CHUNK), CHUNK };
		r[0].bytes = CHUNK - 3; /* unaligned length */
		r[N] = (struct vkv_kern_range){ (uintptr_t)(dst + N * CHUNK + 1),
						(uintptr_t)(src + 7), 50 };
		r[N + 1] = (struct vkv_kern_range){ (uintptr_t)(dst + N * CHUNK + 60),
						    (uintptr_t)src, 0 };
		ck_assert_int_eq(vkv_emu_copy(r, N + 2, grids[g][0], grids[g][1],
					      grids[g][2]), 0);
		for (int i = 1; i < N; i++)
			ck_assert_msg(memcmp(dst + (size_t)(N - 1 - i) * CHUNK,
					     src + (size_t)i * CHUNK, CHUNK) == 0,
				      "grid %zu chunk %d", g, i);
		ck_assert(memcmp(dst + (size_t)(N - 1) * CHUNK, src, CHUNK - 3) == 0);
		ck_assert(dst[(size_t)N * CHUNK - 1] == 0xee);
		ck_assert(memcmp(dst + N * CHUNK + 1, src + 7, 50) == 0);
		ck_assert(dst[N * CHUNK] == 0xee && dst[N * CHUNK + 51] == 0xee &&
			  dst[N * CHUNK + 60] == 0xee);
	}
	free(src);
	free(dst);
}
END_TEST

static Suite *kernels_emu_suite(void)
{
	Suite *s = suite_create("kernels_emu");
	TCase *attn = tcase_create("attention");
	TCase *copy = tcase_create("copy");

	tcase_add_loop_test(attn, attn_kernel_code_matches_reference, 0,
			    sizeof(shapes) / sizeof(shapes[0]));
	tcase_set_timeout(attn, 120);
	tcase_add_test(copy, copy_kernel_code_moves_every_byte);
	tcase_set_timeout(copy, 60);
	suite_add_tcase(s, attn);
	suite_add_tcase(s, copy);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(kernels_emu_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
