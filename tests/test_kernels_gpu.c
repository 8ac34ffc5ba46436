// SPDX-License-Identifier: MIT
/*
 * test_kernels_gpu.c - the CUDA kernels against their CPU references.
 *
 * On a GPU this runs the real kernels (loaded from the fatbins embedded in
 * libvkv) on the data of tests/kern_case.h and compares every output with
 * runtime/attn_ref.c within the bounds stated in attn_ref.h, and checks that
 * the batched copy moves every byte between device pages and pinned host
 * memory. Against the CUDA test double (tests/cudadouble), the "kernels"
 * are the host functions at the bottom of this file, which run the CPU
 * references after checking the launch geometry: that exercises the
 * launcher (module loading, parameter blocks, range staging, errors) in CI.
 * Without a driver or device it exits 77.
 *
 * Check runs in no-fork mode: a CUDA context does not survive fork().
 */
#include <check.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_driver.h"
#include "cudadouble/fakecuda.h"
#include "internal.h"
#include "kern_case.h"
#include "kernels.h"

static struct vkv_kern *kern;

/* ------------------------------------------------- device copies of a case */

struct dev_case {
	struct vkv_kern_buf q, out, kc, vc, kp, vp, lens, slots, table;
};

static void dev_put(struct vkv_kern_buf *b, const void *src, uint64_t bytes)
{
	ck_assert_int_eq(vkv__kern_buf_alloc(kern, bytes ? bytes : 1, b), 0);
	if (src && bytes)
		ck_assert_int_eq(vkv__kern_upload(kern, b->addr, src, bytes), 0);
}

static void dev_make(struct dev_case *d, const struct kern_case *c)
{
	size_t es = vkv__dtype_size(c->dt);

	dev_put(&d->q, c->qbuf, c->out_elems * es);
	dev_put(&d->out, NULL, c->out_elems * es);
	dev_put(&d->kc, c->kc, c->contig_bytes);
	dev_put(&d->vc, c->vc, c->contig_bytes);
	dev_put(&d->kp, c->kp, c->paged_bytes);
	dev_put(&d->vp, c->vp, c->paged_bytes);
	dev_put(&d->lens, c->lens, c->batch * sizeof(uint32_t));
	dev_put(&d->slots, c->slots, c->batch * sizeof(uint32_t));
	dev_put(&d->table, c->table, (size_t)c->batch * c->max_blocks * 4);
}

static void dev_free(struct dev_case *d)
{
	struct vkv_kern_buf *all[] = { &d->q,  &d->out, &d->kc,
				       &d->vc, &d->kp,  &d->vp,
				       &d->lens, &d->slots, &d->table };
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		vkv__kern_buf_free(kern, all[i]);
}

/* The case's parameters with device addresses. */
static struct vkv_attn_params dev_params(const struct kern_case *c,
					 const struct dev_case *d,
					 enum vkv_kern_layout layout)
{
	struct vkv_attn_params p = kc_params(c, layout, NULL);

	p.q = d->q.addr;
	p.out = d->out.addr;
	p.seq_len = d->lens.addr;
	if (layout == VKV_KERN_CONTIG) {
		p.k = d->kc.addr;
		p.v = d->vc.addr;
		p.seq_slot = d->slots.addr;
	} else {
		p.k = d->kp.addr;
		p.v = d->vp.addr;
		p.block_table = d->table.addr;
	}
	return p;
}

static void sync_all(void)
{
	int err = VKV_CU_CALL(vkv__cu(), cuCtxSynchronize);

	ck_assert_msg(err == 0, "the kernel failed: %s", vkv_last_error());
}

/* ---------------------------------------------------------------- attention */

struct shape {
	enum vkv_kern_dtype dt;
	uint32_t q_heads, kv_heads, head_dim;
	double amp;
};

static const struct shape shapes[] = {
	{ VKV_KERN_F32, 4, 4, 64, 1 },   { VKV_KERN_F32, 8, 2, 128, 1 },
	{ VKV_KERN_F32, 8, 1, 31, 1 },   { VKV_KERN_F16, 16, 2, 128, 1 },
	{ VKV_KERN_F16, 4, 4, 256, 1 },  { VKV_KERN_F16, 2, 1, 1, 1 },
	{ VKV_KERN_BF16, 8, 2, 64, 1 },  { VKV_KERN_BF16, 32, 8, 128, 1 },
	{ VKV_KERN_F32, 4, 2, 32, 8 },   { VKV_KERN_F16, 4, 2, 64, 6 },
};

static const uint32_t ragged[] = { 1, 0, 16, 17, 100, 15, 33, 260, 1031 };
#define NRAGGED (sizeof(ragged) / sizeof(ragged[0]))

/* rel_err of `got` (dtype of c) against another output of the same dtype */
static double rel_err_vs(const struct kern_case *c, const void *got,
			 const void *want)
{
	double *w = malloc(c->out_elems * sizeof(double)), err;

	ck_assert_ptr_nonnull(w);
	for (size_t i = 0; i < c->out_elems; i++)
		w[i] = vkv__elem_load(c->dt, want, i);
	err = kc_rel_err(c, got, w);
	free(w);
	return err;
}

START_TEST(attn_kernels_match_reference)
{
	const struct shape *sh = &shapes[_i];
	struct kern_case c;
	struct dev_case d;
	size_t es = vkv__dtype_size(sh->dt), bytes;
	double tol = vkv__attn_tol(sh->dt);

	ck_assert_int_eq(kc_make(&c, sh->dt, NRAGGED, sh->q_heads, sh->kv_heads,
				 sh->head_dim, ragged, sh->amp), 0);
	bytes = c.out_elems * es;
	void *ref = malloc(bytes), *got_c = malloc(bytes), *got_p = malloc(bytes);
	double *naive = malloc(c.out_elems * sizeof(double));
	ck_assert(ref && got_c && got_p && naive);
	struct vkv_attn_params rp = kc_params(&c, VKV_KERN_CONTIG, ref);
	ck_assert_int_eq(vkv__attn_ref(VKV_KERN_CONTIG, sh->dt, &rp), 0);
	kc_naive(&c, naive);
	dev_make(&d, &c);

	for (int l = 0; l < VKV_KERN_LAYOUT_COUNT; l++) {
		struct vkv_attn_params p = dev_params(&c, &d, l);
		void *got = l == VKV_KERN_CONTIG ? got_c : got_p;
		ck_assert_int_eq(VKV_CU_CALL(vkv__cu(), cuMemsetD8, d.out.addr,
					     0xff, bytes), 0);
		ck_assert_int_eq(vkv__kern_attn_decode(kern, NULL, l, sh->dt, &p), 0);
		sync_all();
		ck_assert_int_eq(vkv__kern_download(kern, got, d.out.addr, bytes), 0);
		double e_ref = rel_err_vs(&c, got, ref);
		double e_naive = kc_rel_err(&c, got, naive);
		ck_assert_msg(e_ref <= tol && e_naive <= tol,
			      "%s %s hd %u: rel_err %g vs reference, %g vs naive "
			      "(bound %g)", l ? "paged" : "contig",
			      vkv__dtype_name(sh->dt), sh->head_dim, e_ref, e_naive,
			      tol);
	}
	ck_assert_msg(rel_err_vs(&c, got_c, got_p) <= tol,
		      "contiguous and paged kernels disagree");
	dev_free(&d);
	free(ref);
	free(got_c);
	free(got_p);
	free(naive);
	kc_free(&c);
}
END_TEST

START_TEST(attn_launch_rejects_bad_params)
{
	struct vkv_attn_params p = {
		.q = 1, .out = 1, .k = 1, .v = 1, .seq_len = 1, .seq_slot = 1,
		.batch = 1, .q_heads = 4, .kv_heads = 2, .head_dim = 64,
	};
	struct vkv_attn_params b;

	b = p, b.head_dim = 0;
	ck_assert_int_eq(vkv__kern_attn_decode(kern, NULL, VKV_KERN_CONTIG,
					       VKV_KERN_F16, &b), -EINVAL);
	ck_assert_ptr_nonnull(strstr(vkv_last_error(), "head_dim"));
	b = p, b.q_heads = 5;
	ck_assert_int_eq(vkv__kern_attn_decode(kern, NULL, VKV_KERN_CONTIG,
					       VKV_KERN_F16, &b), -EINVAL);
	b = p, b.batch = 70000;
	ck_assert_int_eq(vkv__kern_attn_decode(kern, NULL, VKV_KERN_CONTIG,
					       VKV_KERN_F16, &b), -EINVAL);
	ck_assert_int_eq(vkv__kern_attn_decode(kern, NULL, VKV_KERN_PAGED,
					       VKV_KERN_F16, &p), -EINVAL);
	b = p, b.batch = 0;
	ck_assert_int_eq(vkv__kern_attn_decode(kern, NULL, VKV_KERN_CONTIG,
					       VKV_KERN_F16, &b), 0);
}
END_TEST

/* ------------------------------------------------------------- range copy */

/* A slot's pages (layers x K/V x pages, every other device page) gathered
 * into pinned host memory in one launch, then scattered into other device
 * pages; plus unaligned ranges. */
START_TEST(copy_kernel_gather_scatter)
{
	enum { LAYERS = 4, PAGES = 3, PAGE = 64 << 10, N = LAYERS * 2 * PAGES };
	const struct vkv_cu *cu = vkv__cu();
	const uint64_t dev_bytes = (uint64_t)2 * N * PAGE;
	struct vkv_kern_buf a, b;
	struct vkv_kern_range r[N + 2];
	uint8_t *pattern = malloc(dev_bytes), *back = malloc(dev_bytes);
	uint8_t *host = NULL;

	ck_assert(pattern && back);
	ck_assert_int_eq(VKV_CU_CALL(cu, cuMemAllocHost, (void **)&host,
				     (size_t)N * PAGE + 4096), 0);
	for (uint64_t i = 0; i < dev_bytes; i++)
		pattern[i] = (uint8_t)(i * 2654435761u >> 13);
	dev_put(&a, pattern, dev_bytes);
	dev_put(&b, NULL, dev_bytes);
	ck_assert_int_eq(VKV_CU_CALL(cu, cuMemsetD8, b.addr, 0, b.size), 0);
	memset(host, 0xee, (size_t)N * PAGE + 4096);

	for (int i = 0; i < N; i++)
		r[i] = (struct vkv_kern_range){ (uintptr_t)(host + (size_t)i * PAGE),
						a.addr + (uint64_t)2 * i * PAGE,
						PAGE };
	/* two unaligned tails into the spare host bytes */
	r[N] = (struct vkv_kern_range){ (uintptr_t)(host + (size_t)N * PAGE + 1),
					a.addr + 3, 1001 };
	r[N + 1] = (struct vkv_kern_range){ (uintptr_t)(host + (size_t)N * PAGE + 2000),
					    a.addr + PAGE + 7, 0 };
	ck_assert_int_eq(vkv__kern_copy_ranges(kern, NULL, r, N + 2), 0);
	sync_all();
	for (int i = 0; i < N; i++)
		ck_assert_msg(memcmp(host + (size_t)i * PAGE,
				     pattern + (size_t)2 * i * PAGE, PAGE) == 0,
			      "gathered page %d differs", i);
	ck_assert(memcmp(host + (size_t)N * PAGE + 1, pattern + 3, 1001) == 0);
	ck_assert(host[(size_t)N * PAGE] == 0xee &&
		  host[(size_t)N * PAGE + 1002] == 0xee);

	/* scatter back, into the odd pages of b */
	for (int i = 0; i < N; i++) {
		r[i].src = r[i].dst;
		r[i].dst = b.addr + (uint64_t)(2 * i + 1) * PAGE;
	}
	ck_assert_int_eq(vkv__kern_copy_ranges(kern, NULL, r, N), 0);
	sync_all();
	ck_assert_int_eq(vkv__kern_download(kern, back, b.addr, dev_bytes), 0);
	for (int i = 0; i < N; i++) {
		ck_assert(memcmp(back + (size_t)(2 * i + 1) * PAGE,
				 pattern + (size_t)2 * i * PAGE, PAGE) == 0);
		ck_assert(back[(size_t)2 * i * PAGE] == 0); /* untouched */
	}

	/* bad lists are refused before anything is launched */
	r[1].dst = r[0].dst + 8;
	ck_assert_int_eq(vkv__kern_copy_ranges(kern, NULL, r, N), -EINVAL);
	ck_assert_ptr_nonnull(strstr(vkv_last_error(), "overlap"));
	ck_assert_int_eq(vkv__kern_copy_ranges(kern, NULL, r, 0), 0);

	vkv__kern_buf_free(kern, &a);
	vkv__kern_buf_free(kern, &b);
	cu->cuMemFreeHost(host);
	free(pattern);
	free(back);
}
END_TEST

/* Many launches in a row reuse the staging list; each must copy its own. */
START_TEST(copy_kernel_back_to_back)
{
	enum { ROUNDS = 50, CHUNK = 4096 };
	struct vkv_kern_buf a, b;
	uint8_t *src = malloc(ROUNDS * CHUNK), *dst = malloc(ROUNDS * CHUNK);

	ck_assert(src && dst);
	for (int i = 0; i < ROUNDS * CHUNK; i++)
		src[i] = (uint8_t)(i / CHUNK + 1);
	dev_put(&a, src, ROUNDS * CHUNK);
	dev_put(&b, NULL, ROUNDS * CHUNK);
	for (int i = 0; i < ROUNDS; i++) {
		struct vkv_kern_range r = { b.addr + (uint64_t)(ROUNDS - 1 - i) * CHUNK,
					    a.addr + (uint64_t)i * CHUNK, CHUNK };
		ck_assert_int_eq(vkv__kern_copy_ranges(kern, NULL, &r, 1), 0);
	}
	sync_all();
	ck_assert_int_eq(vkv__kern_download(kern, dst, b.addr, ROUNDS * CHUNK), 0);
	for (int i = 0; i < ROUNDS; i++)
		ck_assert_int_eq(dst[(size_t)(ROUNDS - 1 - i) * CHUNK], i + 1);
	vkv__kern_buf_free(kern, &a);
	vkv__kern_buf_free(kern, &b);
	free(src);
	free(dst);
}
END_TEST

/* A thread that never touched CUDA can launch: the launcher makes the
 * context current itself (the tiering worker relies on it). */
struct other_thread_copy {
	struct vkv_kern_range r;
	int err;
	char detail[256]; /* vkv_last_error() is per thread */
};

static void *copy_from_other_thread(void *arg)
{
	struct other_thread_copy *c = arg;

	c->err = vkv__kern_copy_ranges(kern, NULL, &c->r, 1);
	if (!c->err)
		c->err = VKV_CU_CALL(vkv__cu(), cuCtxSynchronize);
	if (c->err)
		snprintf(c->detail, sizeof(c->detail), "%s", vkv_last_error());
	return NULL;
}

START_TEST(copy_kernel_from_another_thread)
{
	struct vkv_kern_buf a;
	uint8_t src[8192], *dst = NULL;
	struct other_thread_copy c;
	pthread_t t;

	for (size_t i = 0; i < sizeof(src); i++)
		src[i] = (uint8_t)(i * 7 + 1);
	dev_put(&a, src, sizeof(src));
	/* the kernel writes host memory itself: pinned, as kernels.h says
	 * (a stack buffer faulted on an H200) */
	ck_assert_int_eq(VKV_CU_CALL(vkv__cu(), cuMemAllocHost, (void **)&dst, 4096), 0);
	memset(dst, 0, 4096);
	c = (struct other_thread_copy){ { (uintptr_t)dst, a.addr + 4096, 4096 }, 0, "" };
	ck_assert_int_eq(pthread_create(&t, NULL, copy_from_other_thread, &c), 0);
	pthread_join(t, NULL);
	ck_assert_msg(c.err == 0, "%s", c.detail);
	ck_assert(memcmp(dst, src + 4096, 4096) == 0);
	vkv__cu()->cuMemFreeHost(dst);
	vkv__kern_buf_free(kern, &a);
}
END_TEST

/* --------------------------------------------- injected driver failures
 *
 * Only under the test double (its controls are found with dlsym; on a real
 * driver these tests return at once): every driver call the launcher makes
 * is failed once, and the launcher must report it, leave nothing behind
 * and work again afterwards.
 */
struct fake_ctl {
	vkv_fakecuda_stats_fn stats;
	vkv_fakecuda_reload_fn reload;
};

static bool fake_ctl(struct fake_ctl *c)
{
	void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);

	if (!h)
		return false;
	c->stats = (vkv_fakecuda_stats_fn)dlsym(h, "vkv_fakecuda_stats");
	c->reload = (vkv_fakecuda_reload_fn)dlsym(h, "vkv_fakecuda_reload");
	dlclose(h);
	return c->stats && c->reload;
}

static void fail_next(struct fake_ctl *c, const char *spec)
{
	if (spec)
		setenv("VKV_FAKECUDA_FAIL", spec, 1);
	else
		unsetenv("VKV_FAKECUDA_FAIL");
	c->reload();
}

static bool same_resources(const struct vkv_fakecuda_stats *a,
			   const struct vkv_fakecuda_stats *b)
{
	return a->allocs == b->allocs && a->reservations == b->reservations &&
	       a->mappings == b->mappings && a->events == b->events &&
	       a->host_allocs == b->host_allocs && a->modules == b->modules &&
	       a->primary_refs == b->primary_refs;
}

static const char *const open_faults[] = {
	"cuDeviceGet:1",         "cuDevicePrimaryCtxRetain:1",
	"cuCtxSetCurrent:1",     "cuDeviceGetAttribute:1",
	"cuModuleLoadData:1",    "cuModuleLoadData:2",
	"cuModuleGetFunction:1", "cuModuleGetFunction:20",
	"cuEventCreate:1",
};

START_TEST(open_fails_cleanly)
{
	struct fake_ctl c;
	struct vkv_fakecuda_stats before, after;
	struct vkv_kern *k2 = NULL;

	if (!fake_ctl(&c))
		return;
	c.stats(&before);
	fail_next(&c, open_faults[_i]);
	ck_assert_msg(vkv__kern_open(0, &k2) < 0, "%s did not fail the open",
		      open_faults[_i]);
	fail_next(&c, NULL);
	c.stats(&after);
	ck_assert_msg(same_resources(&before, &after), "%s leaked",
		      open_faults[_i]);
	ck_assert_int_eq(vkv__kern_open(0, &k2), 0);
	vkv__kern_close(k2);
}
END_TEST

START_TEST(launch_failures_are_reported)
{
	static const char *const faults[] = { "cuMemAllocHost:1", "cuLaunchKernel:1",
					      "cuEventRecord:1", "cuCtxSetCurrent:1" };
	struct fake_ctl c;
	struct vkv_kern *k2;
	struct vkv_kern_buf a, b;
	uint8_t src[4096];

	if (!fake_ctl(&c))
		return;
	memset(src, 0x5a, sizeof(src));
	dev_put(&a, src, sizeof(src));
	dev_put(&b, NULL, sizeof(src));
	struct vkv_kern_range r = { b.addr, a.addr, sizeof(src) };
	for (size_t i = 0; i < sizeof(faults) / sizeof(faults[0]); i++) {
		/* a fresh launcher: its staging list is not allocated yet */
		ck_assert_int_eq(vkv__kern_open(0, &k2), 0);
		fail_next(&c, faults[i]);
		int err = vkv__kern_copy_ranges(k2, NULL, &r, 1);
		fail_next(&c, NULL);
		/* an event that could not be recorded is replaced by a full
		 * wait: the copy happened and the call succeeds */
		if (strcmp(faults[i], "cuEventRecord:1"))
			ck_assert_msg(err < 0, "%s: %d", faults[i], err);
		else
			ck_assert_int_eq(err, 0);
		ck_assert_int_eq(vkv__kern_copy_ranges(k2, NULL, &r, 1), 0);
		vkv__kern_close(k2);
	}
	struct vkv_attn_params p = {
		.q = a.addr, .out = b.addr, .k = a.addr, .v = a.addr,
		.seq_len = a.addr, .seq_slot = a.addr, .batch = 1,
		.q_heads = 1, .kv_heads = 1, .head_dim = 1,
	};
	memset(src, 0, sizeof(src)); /* lengths 0: an output of zeros */
	ck_assert_int_eq(vkv__kern_upload(kern, a.addr, src, sizeof(src)), 0);
	fail_next(&c, "cuLaunchKernel:1");
	ck_assert_int_eq(vkv__kern_attn_decode(kern, NULL, VKV_KERN_CONTIG,
					       VKV_KERN_F32, &p), -ENOMEM);
	ck_assert_ptr_nonnull(strstr(vkv_last_error(), "cuLaunchKernel"));
	fail_next(&c, NULL);
	ck_assert_int_eq(vkv__kern_attn_decode(kern, NULL, VKV_KERN_CONTIG,
					       VKV_KERN_F32, &p), 0);
	vkv__kern_buf_free(kern, &a);
	vkv__kern_buf_free(kern, &b);
}
END_TEST

/* ----------------------------------------- host versions for the test double
 *
 * The double calls vkv_fakecuda_kernel_<name> for a launch of <name>; device
 * addresses are host addresses there. Each checks the geometry the launcher
 * chose and runs the CPU reference.
 */
static int bad_geometry;

/* Also checks that the launcher picked the entry point with the fewest
 * dimensions per lane (DPL) that holds head_dim. */
#define FAKE_ATTN(name, layout, dt, dpl)                                      \
	void vkv_fakecuda_kernel_##name##_d##dpl(                              \
		const struct vkv_fakecuda_launch *l);                          \
	void vkv_fakecuda_kernel_##name##_d##dpl(                              \
		const struct vkv_fakecuda_launch *l)                           \
	{                                                                      \
		const struct vkv_attn_params *p = l->params[0];                \
		if (l->grid[0] != p->q_heads || l->grid[1] != p->batch ||      \
		    l->block[0] != 128 || p->head_dim > 32 * (dpl) ||          \
		    ((dpl) > 1 && p->head_dim <= 16 * (dpl)))                  \
			bad_geometry++;                                        \
		if (vkv__attn_ref(layout, dt, p))                              \
			bad_geometry++;                                        \
	}
#define FAKE_ATTNS(name, layout, dt)                                          \
	FAKE_ATTN(name, layout, dt, 1)                                         \
	FAKE_ATTN(name, layout, dt, 2)                                         \
	FAKE_ATTN(name, layout, dt, 4)                                         \
	FAKE_ATTN(name, layout, dt, 8)

FAKE_ATTNS(vkv_attn_contig_f32, VKV_KERN_CONTIG, VKV_KERN_F32)
FAKE_ATTNS(vkv_attn_contig_f16, VKV_KERN_CONTIG, VKV_KERN_F16)
FAKE_ATTNS(vkv_attn_contig_bf16, VKV_KERN_CONTIG, VKV_KERN_BF16)
FAKE_ATTNS(vkv_attn_paged_f32, VKV_KERN_PAGED, VKV_KERN_F32)
FAKE_ATTNS(vkv_attn_paged_f16, VKV_KERN_PAGED, VKV_KERN_F16)
FAKE_ATTNS(vkv_attn_paged_bf16, VKV_KERN_PAGED, VKV_KERN_BF16)

void vkv_fakecuda_kernel_vkv_copy_ranges(const struct vkv_fakecuda_launch *l);
void vkv_fakecuda_kernel_vkv_copy_ranges(const struct vkv_fakecuda_launch *l)
{
	const struct vkv_kern_range *r =
		(const void *)(uintptr_t) * (const CUdeviceptr *)l->params[0];
	uint32_t n = *(const uint32_t *)l->params[1];

	if (l->grid[1] != (n < 65535 ? n : 65535) || l->block[0] != 256)
		bad_geometry++;
	if (vkv__copy_ranges_ref(r, n))
		bad_geometry++;
}

START_TEST(launch_geometry_as_expected)
{
	/* meaningful under the double; the real kernels never touch it */
	ck_assert_int_eq(bad_geometry, 0);
}
END_TEST

static Suite *kernels_gpu_suite(void)
{
	Suite *s = suite_create("kernels_gpu");
	TCase *attn = tcase_create("attention");
	TCase *copy = tcase_create("copy");

	tcase_add_loop_test(attn, attn_kernels_match_reference, 0,
			    sizeof(shapes) / sizeof(shapes[0]));
	tcase_add_test(attn, attn_launch_rejects_bad_params);
	tcase_set_timeout(attn, 120);
	tcase_add_test(copy, copy_kernel_gather_scatter);
	tcase_add_test(copy, copy_kernel_back_to_back);
	tcase_add_test(copy, copy_kernel_from_another_thread);
	tcase_add_test(copy, launch_geometry_as_expected);
	TCase *faults = tcase_create("faults");
	tcase_add_loop_test(faults, open_fails_cleanly, 0,
			    sizeof(open_faults) / sizeof(open_faults[0]));
	tcase_add_test(faults, launch_failures_are_reported);
	suite_add_tcase(s, attn);
	suite_add_tcase(s, copy);
	suite_add_tcase(s, faults);
	return s;
}

/* Under the test double: everything the tests and the launcher created
 * must be gone after vkv__kern_close(). On a real driver: nothing to do. */
static int leaks_under_double(void)
{
	void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
	vkv_fakecuda_stats_fn stats;
	struct vkv_fakecuda_stats st;

	if (!h)
		return 0;
	stats = (vkv_fakecuda_stats_fn)dlsym(h, "vkv_fakecuda_stats");
	dlclose(h);
	if (!stats)
		return 0;
	stats(&st);
	if (st.allocs || st.reservations || st.mappings || st.events ||
	    st.host_allocs || st.modules || st.primary_refs) {
		fprintf(stderr,
			"FAIL: leaked under the test double: allocs %llu "
			"reservations %llu mappings %llu events %llu host %llu "
			"modules %llu primary refs %llu\n",
			(unsigned long long)st.allocs,
			(unsigned long long)st.reservations,
			(unsigned long long)st.mappings,
			(unsigned long long)st.events,
			(unsigned long long)st.host_allocs,
			(unsigned long long)st.modules,
			(unsigned long long)st.primary_refs);
		return 1;
	}
	return 0;
}

int main(void)
{
	const char *dev = getenv("VKV_DEVICE");
	int err = vkv__kern_open(dev ? atoi(dev) : 0, &kern);
	SRunner *sr;
	int failed;

	if (err == -ENODEV || err == -ENOTSUP) {
		printf("SKIP: no usable CUDA driver or device: %s\n",
		       vkv_strerror(err));
		return 77;
	}
	if (err) {
		fprintf(stderr, "FAIL: loading the kernels: %s\n", vkv_strerror(err));
		return 1;
	}
	printf("kernels on %s\n", vkv__kern_device_name(kern));
	sr = srunner_create(kernels_gpu_suite());
	srunner_set_fork_status(sr, CK_NOFORK);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	vkv__kern_close(kern);
	return failed || leaks_under_double() ? 1 : 0;
}
