// SPDX-License-Identifier: MIT
/*
 * test_kmod_backend.c - Check suite of the kmod backend (runtime/
 * backend_kmod.c) straight on its ops. On a machine without /dev/vkv (any
 * build host) it checks that asking for the backend fails with -ENODEV and
 * says why; inside the test VM (tests/kmod/run.sh) it checks the contract
 * against the real module: 4 KiB pages cut from 2 MiB buffers, aliasing,
 * zero mode, and every buffer back to the kernel once its pages are gone
 * (the module's sysfs counters say so).
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "kmod_dev.h"

#define MiB ((uint64_t)1 << 20)

static bool have_dev(void)
{
	struct stat st;

	return stat(VKV_KMOD_PATH, &st) == 0;
}

static uint64_t kmod_bytes(void)
{
	char buf[32] = "";
	FILE *f = fopen("/sys/class/misc/vkv/bytes", "r");

	ck_assert(f != NULL);
	ck_assert(fgets(buf, sizeof(buf), f) != NULL);
	fclose(f);
	return strtoull(buf, NULL, 10);
}

static void open_kmod(struct vkv_backend *b, uint64_t page, int device,
		      enum vkv_unbacked unbacked, int want)
{
	struct vkv_ctx_config cfg;

	vkv_ctx_config_init(&cfg);
	cfg.backend = VKV_BACKEND_KMOD;
	cfg.page_size = page;
	cfg.device = device;
	cfg.unbacked = unbacked;
	ck_assert_int_eq(vkv__backend_open(b, &cfg), want);
}

START_TEST(test_without_module)
{
	struct vkv_ctx_config cfg;
	vkv_ctx *ctx = NULL;

	if (have_dev()) {
		printf("skip: test_without_module: %s exists\n", VKV_KMOD_PATH);
		return;
	}
	vkv_ctx_config_init(&cfg);
	cfg.backend = VKV_BACKEND_KMOD;
	ck_assert_int_eq(vkv_ctx_create(&cfg, &ctx), -ENODEV);
	ck_assert_ptr_null(ctx);
	ck_assert_ptr_nonnull(strstr(vkv_last_error(), "vkv.ko"));
}
END_TEST

START_TEST(test_open_checks_config)
{
	struct vkv_backend b;

	if (!have_dev()) {
		printf("skip: test_open_checks_config: no %s\n", VKV_KMOD_PATH);
		return;
	}
	open_kmod(&b, 64 << 10, 0, VKV_UNBACKED_FAULT, -EINVAL);
	open_kmod(&b, 0, 4096, VKV_UNBACKED_FAULT, -EINVAL);
	open_kmod(&b, 0, 0, VKV_UNBACKED_FAULT, 0);
	ck_assert_uint_eq(b.page_size, 2 * MiB);
	ck_assert_ptr_nonnull(strstr(b.detail, "/dev/vkv node 0"));
	b.ops->close(&b);
}
END_TEST

/* 600 pages of 4 KiB span two 2 MiB buffers; all go back on release. */
START_TEST(test_small_pages_carved_and_returned)
{
	enum { N = 600 };
	static vkv_phys pages[N];
	struct vkv_backend b;
	uint64_t base, addr, alias;
	uint8_t *p, *q;

	if (!have_dev()) {
		printf("skip: test_small_pages_carved_and_returned: no %s\n",
		       VKV_KMOD_PATH);
		return;
	}
	base = kmod_bytes();
	open_kmod(&b, 4096, -1, VKV_UNBACKED_FAULT, 0);
	for (int i = 0; i < N; i++)
		ck_assert_int_eq(b.ops->page_create(&b, &pages[i]), 0);
	ck_assert_uint_eq(kmod_bytes(), base + 4 * MiB);
	ck_assert_int_eq(b.ops->reserve(&b, N * 4096, &addr), 0);
	ck_assert_int_eq(b.ops->reserve(&b, 4096, &alias), 0);
	ck_assert_int_eq(b.ops->map_pages(&b, addr, pages, N), 0);
	ck_assert_int_eq(b.ops->map_pages(&b, alias, &pages[N - 1], 1), 0);
	p = (uint8_t *)(uintptr_t)addr;
	q = (uint8_t *)(uintptr_t)alias;
	for (int i = 0; i < N; i++)
		ck_assert_uint_eq(p[i * 4096 + 17], 0);
	memset(p, 0x5c, N * 4096);
	ck_assert_uint_eq(q[4095], 0x5c);
	ck_assert_int_eq(b.ops->unmap_pages(&b, addr, N), 0);
	ck_assert_int_eq(b.ops->unmap_pages(&b, alias, 1), 0);
	for (int i = 0; i < N; i++)
		b.ops->page_release(&b, pages[i]);
	ck_assert_uint_eq(kmod_bytes(), base);
	ck_assert_int_eq(b.ops->unreserve(&b, addr, N * 4096), 0);
	ck_assert_int_eq(b.ops->unreserve(&b, alias, 4096), 0);
	b.ops->close(&b);
}
END_TEST

START_TEST(test_zero_mode_and_huge_pages)
{
	struct vkv_backend b;
	vkv_phys pg;
	uint64_t addr;
	uint8_t *p;

	if (!have_dev()) {
		printf("skip: test_zero_mode_and_huge_pages: no %s\n",
		       VKV_KMOD_PATH);
		return;
	}
	open_kmod(&b, 0, -1, VKV_UNBACKED_ZERO, 0);
	ck_assert_int_eq(b.ops->reserve(&b, 4 * MiB, &addr), 0);
	p = (uint8_t *)(uintptr_t)addr;
	ck_assert_uint_eq(p[3 * MiB], 0); /* unbacked reads as zero */
	ck_assert_int_eq(b.ops->page_create(&b, &pg), 0);
	ck_assert_int_eq(b.ops->map_pages(&b, addr + 2 * MiB, &pg, 1), 0);
	p[3 * MiB] = 9;
	ck_assert_int_eq(b.ops->unmap_pages(&b, addr + 2 * MiB, 1), 0);
	ck_assert_uint_eq(p[3 * MiB], 0);
	/* Mapping it again finds the data: the page outlives its mappings. */
	ck_assert_int_eq(b.ops->map_pages(&b, addr, &pg, 1), 0);
	ck_assert_uint_eq(p[MiB], 9);
	ck_assert_int_eq(b.ops->unmap_pages(&b, addr, 1), 0);
	b.ops->page_release(&b, pg);
	ck_assert_int_eq(b.ops->unreserve(&b, addr, 4 * MiB), 0);
	b.ops->close(&b);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("kmod_backend");
	TCase *tc = tcase_create("ops");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_without_module);
	tcase_add_test(tc, test_open_checks_config);
	tcase_add_test(tc, test_small_pages_carved_and_returned);
	tcase_add_test(tc, test_zero_mode_and_huge_pages);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
