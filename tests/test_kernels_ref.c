// SPDX-License-Identifier: MIT
/*
 * test_kernels_ref.c - the CPU references of the CUDA kernels
 * (runtime/attn_ref.c): fp16/bf16 conversions, decode attention over the
 * contiguous and the paged layout, the batched range copy.
 *
 * The references are what the GPU kernels are judged by, so they are
 * judged here by something independent: an exhaustive or compiler-checked
 * sweep for the conversions, a double-precision naive attention on dense
 * arrays (tests/kern_case.h) for the attention, and plain loops for the
 * copy. The contiguous and the paged references must agree bit for bit on
 * the same data, since they differ only in addressing.
 */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attn_ref.h"
#include "kern_case.h"

/* ------------------------------------------------------------ conversions */

static uint32_t bits_of(float f)
{
	uint32_t x;
	memcpy(&x, &f, sizeof(x));
	return x;
}

static float float_of(uint32_t x)
{
	float f;
	memcpy(&f, &x, sizeof(f));
	return f;
}

START_TEST(f16_known_values)
{
	static const struct {
		float f;
		uint16_t h;
	} cases[] = {
		{ 0.0f, 0x0000 },         { -0.0f, 0x8000 },
		{ 1.0f, 0x3c00 },         { -2.0f, 0xc000 },
		{ 0.5f, 0x3800 },         { 65504.0f, 0x7bff },
		{ 65519.0f, 0x7bff },     { 65520.0f, 0x7c00 }, /* tie to even: inf */
		{ 1e6f, 0x7c00 },         { -1e6f, 0xfc00 },
		{ 0x1p-14f, 0x0400 },     /* smallest normal */
		{ 0x1p-24f, 0x0001 },     /* smallest subnormal */
		{ 0x1p-25f, 0x0000 },     /* tie: rounds to even zero */
		{ 0x1.8p-25f, 0x0001 },   /* above the tie: rounds up */
		{ 0x3p-25f, 0x0002 },     /* 1.5 units: tie to even 2 */
		{ 0x1.ffcp-15f, 0x0400 }, /* subnormal rounding into normal */
		{ 1.0f + 0x1p-11f, 0x3c00 }, /* tie: stays on even 1.0 */
		{ 1.0f + 0x3p-11f, 0x3c02 }, /* tie: up to even */
		{ 1e-10f, 0x0000 },       { 3.140625f, 0x4248 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		ck_assert_msg(vkv__f16_from_f32(cases[i].f) == cases[i].h,
			      "f16(%a) = %#x, want %#x", (double)cases[i].f,
			      vkv__f16_from_f32(cases[i].f), cases[i].h);
	ck_assert(vkv__f16_from_f32(INFINITY) == 0x7c00);
	ck_assert(vkv__f16_from_f32(-INFINITY) == 0xfc00);
	ck_assert((vkv__f16_from_f32(NAN) & 0x7fff) > 0x7c00);
	ck_assert(vkv__f32_from_f16(0x0001) == 0x1p-24f);
	ck_assert(vkv__f32_from_f16(0x7bff) == 65504.0f);
	ck_assert(isinf(vkv__f32_from_f16(0xfc00)) && vkv__f32_from_f16(0xfc00) < 0);
	ck_assert(isnan(vkv__f32_from_f16(0x7e01)));
}
END_TEST

/* Every half value survives half -> float -> half; NaNs stay NaN. */
START_TEST(f16_roundtrip_exhaustive)
{
	for (uint32_t h = 0; h < 0x10000; h++) {
		float f = vkv__f32_from_f16((uint16_t)h);
		uint16_t back = vkv__f16_from_f32(f);
		if ((h & 0x7fff) > 0x7c00)
			ck_assert_msg(isnan(f) && (back & 0x7fff) > 0x7c00,
				      "NaN %#x", h);
		else
			ck_assert_msg(back == h, "%#x -> %a -> %#x", h, (double)f,
				      back);
	}
}
END_TEST

/* float -> half agrees with round-to-nearest-even as defined on the value
 * line: the result is the nearer of the two neighbouring halves. */
START_TEST(f16_nearest_sweep)
{
	for (uint64_t x = 0; x < 0x47800000u; x += 0x3fd) {
		float f = float_of((uint32_t)x);
		uint16_t h = vkv__f16_from_f32(f);
		double got = vkv__f32_from_f16(h);
		double lo = h ? vkv__f32_from_f16((uint16_t)(h - 1)) : -1.0;
		double hi = vkv__f32_from_f16((uint16_t)(h + 1));
		double err = fabs(got - (double)f);
		if (h == 0x7c00) {
			ck_assert(f >= 65520.0f);
			continue;
		}
		ck_assert_msg(err <= fabs((double)f - lo) &&
				      err <= fabs(hi - (double)f),
			      "%a -> %#x not nearest", (double)f, h);
		if (err == fabs(hi - (double)f) || (h && err == fabs((double)f - lo)))
			ck_assert_msg((h & 1) == 0 || err == 0, "%a tie -> odd %#x",
				      (double)f, h);
	}
}
END_TEST

#if defined(__FLT16_MAX__) && (defined(__x86_64__) || defined(__aarch64__))
/* The compiler's own _Float16 conversion as a second, independent oracle. */
START_TEST(f16_matches_compiler)
{
	uint64_t s = 12345;
	for (uint32_t i = 0; i < 2000000; i++) {
		s = s * 6364136223846793005ull + 1442695040888963407ull;
		uint32_t x = (uint32_t)(s >> 32);
		float f = float_of(x);
		_Float16 c = (_Float16)f;
		uint16_t want;
		memcpy(&want, &c, sizeof(want));
		if (isnan(f))
			continue;
		ck_assert_msg(vkv__f16_from_f32(f) == want, "%a: %#x vs %#x",
			      (double)f, vkv__f16_from_f32(f), want);
	}
}
END_TEST
#endif

START_TEST(bf16_conversions)
{
	ck_assert(vkv__bf16_from_f32(1.0f) == 0x3f80);
	ck_assert(vkv__bf16_from_f32(-2.0f) == 0xc000);
	/* 1 + 2^-8 is a tie between 1.0 (even) and 1 + 2^-7 */
	ck_assert(vkv__bf16_from_f32(1.0f + 0x1p-8f) == 0x3f80);
	ck_assert(vkv__bf16_from_f32(1.0f + 0x3p-8f) == 0x3f82);
	ck_assert(vkv__bf16_from_f32(1.0f + 0x1.2p-8f) == 0x3f81);
	ck_assert(vkv__bf16_from_f32(INFINITY) == 0x7f80);
	ck_assert(vkv__bf16_from_f32(0x1.fffffep127f) == 0x7f80); /* overflow */
	ck_assert((vkv__bf16_from_f32(NAN) & 0x7fff) > 0x7f80);
	for (uint32_t h = 0; h < 0x10000; h++) {
		float f = vkv__f32_from_bf16((uint16_t)h);
		ck_assert(bits_of(f) == h << 16);
		if ((h & 0x7fff) <= 0x7f80)
			ck_assert(vkv__bf16_from_f32(f) == h);
	}
}
END_TEST

/* -------------------------------------------------------- decode attention */

struct shape {
	enum vkv_kern_dtype dt;
	uint32_t q_heads, kv_heads, head_dim;
	double amp;
};

static const struct shape shapes[] = {
	{ VKV_KERN_F32, 4, 4, 64, 1 },    /* MHA */
	{ VKV_KERN_F32, 8, 2, 128, 1 },   /* GQA 4 */
	{ VKV_KERN_F32, 8, 1, 31, 1 },    /* MQA, odd head_dim */
	{ VKV_KERN_F16, 16, 2, 128, 1 },  /* GQA 8 */
	{ VKV_KERN_F16, 4, 4, 256, 1 },   /* largest head_dim */
	{ VKV_KERN_F16, 2, 1, 1, 1 },     /* head_dim 1 */
	{ VKV_KERN_BF16, 8, 2, 64, 1 },
	{ VKV_KERN_F32, 4, 2, 32, 8 },    /* large scores: softmax stability */
	{ VKV_KERN_F16, 4, 2, 64, 6 },
};

static const uint32_t ragged[] = { 1, 0, 16, 17, 100, 15, 33, 260 };
#define NRAGGED (sizeof(ragged) / sizeof(ragged[0]))

START_TEST(attn_layouts_agree_with_naive)
{
	const struct shape *sh = &shapes[_i];
	struct kern_case c;
	size_t es = vkv__dtype_size(sh->dt);

	ck_assert_int_eq(kc_make(&c, sh->dt, NRAGGED, sh->q_heads, sh->kv_heads,
				 sh->head_dim, ragged, sh->amp), 0);
	void *out_c = malloc(c.out_elems * es);
	void *out_p = malloc(c.out_elems * es);
	double *want = malloc(c.out_elems * sizeof(double));
	ck_assert(out_c && out_p && want);
	memset(out_c, 0xff, c.out_elems * es);
	memset(out_p, 0xff, c.out_elems * es);

	struct vkv_attn_params pc = kc_params(&c, VKV_KERN_CONTIG, out_c);
	struct vkv_attn_params pp = kc_params(&c, VKV_KERN_PAGED, out_p);
	ck_assert_int_eq(vkv__attn_ref(VKV_KERN_CONTIG, sh->dt, &pc), 0);
	ck_assert_int_eq(vkv__attn_ref(VKV_KERN_PAGED, sh->dt, &pp), 0);
	ck_assert_msg(memcmp(out_c, out_p, c.out_elems * es) == 0,
		      "contiguous and paged references differ");

	kc_naive(&c, want);
	double err = kc_rel_err(&c, out_c, want);
	ck_assert_msg(err <= vkv__attn_tol(sh->dt), "%s hd %u: rel_err %g > %g",
		      vkv__dtype_name(sh->dt), sh->head_dim, err,
		      vkv__attn_tol(sh->dt));
	/* a zero-length sequence gives zeros */
	for (uint32_t j = 0; j < c.q_heads * c.head_dim; j++)
		ck_assert(vkv__elem_load(sh->dt, out_c, c.q_heads * c.head_dim + j) ==
			  0.0f);
	free(out_c);
	free(out_p);
	free(want);
	kc_free(&c);
}
END_TEST

/* The comparison itself must catch a wrong answer: a one-token shift of
 * the lengths changes the result far beyond every bound. */
START_TEST(attn_error_metric_detects_wrong_output)
{
	struct kern_case c;
	const uint32_t lens[] = { 40, 41 };

	ck_assert_int_eq(kc_make(&c, VKV_KERN_F16, 2, 4, 2, 64, lens, 3), 0);
	void *out = malloc(c.out_elems * 2);
	double *want = malloc(c.out_elems * sizeof(double));
	ck_assert(out && want);
	kc_naive(&c, want);
	c.lens[0] = 39;
	struct vkv_attn_params p = kc_params(&c, VKV_KERN_CONTIG, out);
	ck_assert_int_eq(vkv__attn_ref(VKV_KERN_CONTIG, VKV_KERN_F16, &p), 0);
	ck_assert(kc_rel_err(&c, out, want) > 10 * VKV_ATTN_TOL_F16);
	free(out);
	free(want);
	kc_free(&c);
}
END_TEST

START_TEST(attn_rejects_bad_params)
{
	struct kern_case c;
	const uint32_t lens[] = { 20, 5 };
	const char *why = NULL;

	ck_assert_int_eq(kc_make(&c, VKV_KERN_F32, 2, 4, 2, 16, lens, 1), 0);
	float out[2 * 4 * 16];
	struct vkv_attn_params p = kc_params(&c, VKV_KERN_PAGED, out), b;

	b = p, b.head_dim = 0;
	ck_assert_int_eq(vkv__attn_ref(VKV_KERN_PAGED, VKV_KERN_F32, &b), -EINVAL);
	b = p, b.head_dim = VKV_KERN_MAX_HEAD_DIM + 1;
	ck_assert_int_eq(vkv__attn_check(VKV_KERN_PAGED, VKV_KERN_F32, &b, &why),
			 -EINVAL);
	ck_assert(why && strstr(why, "head_dim"));
	b = p, b.q_heads = 3;
	ck_assert_int_eq(vkv__attn_ref(VKV_KERN_PAGED, VKV_KERN_F32, &b), -EINVAL);
	b = p, b.kv_heads = 0;
	ck_assert_int_eq(vkv__attn_ref(VKV_KERN_PAGED, VKV_KERN_F32, &b), -EINVAL);
	b = p, b.block_table = 0;
	ck_assert_int_eq(vkv__attn_ref(VKV_KERN_PAGED, VKV_KERN_F32, &b), -EINVAL);
	b = p, b.k = 0;
	ck_assert_int_eq(vkv__attn_ref(VKV_KERN_PAGED, VKV_KERN_F32, &b), -EINVAL);
	ck_assert_int_eq(vkv__attn_ref(VKV_KERN_LAYOUT_COUNT, VKV_KERN_F32, &p),
			 -EINVAL);
	ck_assert_int_eq(vkv__attn_ref(VKV_KERN_PAGED, VKV_KERN_DTYPE_COUNT, &p),
			 -EINVAL);
	ck_assert_int_eq(vkv__attn_ref(VKV_KERN_CONTIG, VKV_KERN_F32, NULL),
			 -EINVAL);
	/* a length beyond the block table, a block beyond the cache */
	c.lens[1] = c.max_blocks * 16 + 1;
	ck_assert_int_eq(vkv__attn_ref(VKV_KERN_PAGED, VKV_KERN_F32, &p), -EINVAL);
	c.lens[1] = 5;
	c.table[c.max_blocks] = c.num_blocks;
	ck_assert_int_eq(vkv__attn_ref(VKV_KERN_PAGED, VKV_KERN_F32, &p), -EINVAL);
	/* an empty batch is fine and touches nothing */
	b = p, b.batch = 0, b.q = 0;
	ck_assert_int_eq(vkv__attn_ref(VKV_KERN_PAGED, VKV_KERN_F32, &b), 0);
	kc_free(&c);
}
END_TEST

/* ------------------------------------------------------------ range copy */

/* A slot of 3 layers x K/V x 4 pages gathered into one host buffer and
 * scattered back into fresh pages: every byte must come back. */
START_TEST(copy_gather_scatter_roundtrip)
{
	enum { LAYERS = 3, PAGES = 4, PAGE = 4096, N = LAYERS * 2 * PAGES };
	uint8_t *dev = malloc(N * PAGE * 2), *back = malloc(N * PAGE * 2);
	uint8_t *host = malloc(N * PAGE);
	struct vkv_kern_range r[N];

	ck_assert(dev && back && host);
	for (size_t i = 0; i < (size_t)N * PAGE * 2; i++)
		dev[i] = (uint8_t)(i * 131 + 7);
	memset(back, 0, N * PAGE * 2);
	/* device pages are every other page of `dev`, in layer-major order */
	for (int i = 0; i < N; i++)
		r[i] = (struct vkv_kern_range){ (uintptr_t)(host + (size_t)i * PAGE),
						(uintptr_t)(dev + (size_t)2 * i * PAGE),
						PAGE };
	ck_assert_int_eq(vkv__copy_ranges_ref(r, N), 0);
	for (int i = 0; i < N; i++) {
		uint64_t t = r[i].dst;
		r[i].dst = (uintptr_t)(back + (size_t)2 * i * PAGE);
		r[i].src = t;
	}
	ck_assert_int_eq(vkv__copy_ranges_ref(r, N), 0);
	for (int i = 0; i < N; i++)
		ck_assert(memcmp(back + (size_t)2 * i * PAGE,
				 dev + (size_t)2 * i * PAGE, PAGE) == 0);
	free(dev);
	free(back);
	free(host);
}
END_TEST

START_TEST(copy_unaligned_and_empty)
{
	uint8_t src[100], dst[100];
	struct vkv_kern_range r[3] = {
		{ (uintptr_t)(dst + 1), (uintptr_t)(src + 3), 17 },
		{ (uintptr_t)(dst + 40), (uintptr_t)(src + 50), 0 },
		{ (uintptr_t)(dst + 60), (uintptr_t)(src + 61), 39 },
	};

	for (int i = 0; i < 100; i++)
		src[i] = (uint8_t)i, dst[i] = 0xee;
	ck_assert_int_eq(vkv__copy_ranges_ref(r, 3), 0);
	for (int i = 0; i < 100; i++) {
		uint8_t want = i >= 1 && i < 18 ? (uint8_t)(i + 2) :
			       i >= 60 && i < 99 ? (uint8_t)(i + 1) : 0xee;
		ck_assert_msg(dst[i] == want, "byte %d", i);
	}
	ck_assert_int_eq(vkv__copy_ranges_ref(NULL, 0), 0);
}
END_TEST

START_TEST(copy_rejects_bad_ranges)
{
	uint8_t a[64], b[64];
	const char *why = NULL;
	struct vkv_kern_range r[2];

	/* overlapping destinations */
	r[0] = (struct vkv_kern_range){ (uintptr_t)a, (uintptr_t)b, 32 };
	r[1] = (struct vkv_kern_range){ (uintptr_t)(a + 31), (uintptr_t)(b + 32), 8 };
	ck_assert_int_eq(vkv__ranges_check(r, 2, &why), -EINVAL);
	ck_assert(why && strstr(why, "overlap"));
	/* touching is fine */
	r[1].dst = (uintptr_t)(a + 32);
	ck_assert_int_eq(vkv__ranges_check(r, 2, NULL), 0);
	/* a source inside another range's destination */
	r[1] = (struct vkv_kern_range){ (uintptr_t)b + 40, (uintptr_t)(a + 8), 8 };
	ck_assert_int_eq(vkv__copy_ranges_ref(r, 2), -EINVAL);
	/* wrap-around and zero addresses */
	r[1] = (struct vkv_kern_range){ UINT64_MAX - 4, (uintptr_t)b, 8 };
	ck_assert_int_eq(vkv__ranges_check(r, 2, NULL), -EINVAL);
	r[1] = (struct vkv_kern_range){ 0, (uintptr_t)b, 8 };
	ck_assert_int_eq(vkv__ranges_check(r, 2, NULL), -EINVAL);
	ck_assert_int_eq(vkv__ranges_check(NULL, 1, NULL), -EINVAL);
	/* a zero-length range may have any address */
	r[1] = (struct vkv_kern_range){ 0, 0, 0 };
	ck_assert_int_eq(vkv__ranges_check(r, 2, NULL), 0);
}
END_TEST

static Suite *kernels_ref_suite(void)
{
	Suite *s = suite_create("kernels_ref");
	TCase *conv = tcase_create("conversions");
	TCase *attn = tcase_create("attention");
	TCase *copy = tcase_create("copy");

	tcase_add_test(conv, f16_known_values);
	tcase_add_test(conv, f16_roundtrip_exhaustive);
	tcase_add_test(conv, f16_nearest_sweep);
#if defined(__FLT16_MAX__) && (defined(__x86_64__) || defined(__aarch64__))
	tcase_add_test(conv, f16_matches_compiler);
#endif
	tcase_add_test(conv, bf16_conversions);
	tcase_set_timeout(conv, 60);
	tcase_add_loop_test(attn, attn_layouts_agree_with_naive, 0,
			    sizeof(shapes) / sizeof(shapes[0]));
	tcase_add_test(attn, attn_error_metric_detects_wrong_output);
	tcase_add_test(attn, attn_rejects_bad_params);
	tcase_set_timeout(attn, 60);
	tcase_add_test(copy, copy_gather_scatter_roundtrip);
	tcase_add_test(copy, copy_unaligned_and_empty);
	tcase_add_test(copy, copy_rejects_bad_ranges);
	suite_add_tcase(s, conv);
	suite_add_tcase(s, attn);
	suite_add_tcase(s, copy);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(kernels_ref_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
