// SPDX-License-Identifier: MIT
/*
 * map.c - `vkvbench map`: what one page costs to commit and release through
 * libvkv, against the floor: the same backend calls made directly, in the
 * same run, on the same machine.
 *
 * cold  (the headline "ratio"): a context with an empty pool that keeps no
 *       free pages (pool_low = pool_high = 0) and no worker, so every
 *       committed page is created and mapped on the spot and every released
 *       page is unmapped and given back to the backend:
 *         vkv   commit  = vkv_slot_ensure(slot, N pages)
 *               release = vkv_slot_free + vkv_ctx_trim
 *         floor (host) = the same system calls libvkv's host backend makes
 *               for this workload, made directly: commit = fallocate of
 *               a memfd piece per page + one mmap(MAP_FIXED|MAP_SHARED)
 *               for the range (the pages are consecutive in the memfd);
 *               release = one mmap(PROT_NONE, MAP_FIXED) back over the
 *               range + fallocate(PUNCH_HOLE) per page.
 *               Printed too: "floor_per_page_map" (a map call per page)
 *               and "floor_bulk" (one fallocate and one mmap in all).
 *         floor (cuda) = per page cuMemCreate + cuMemMap + cuMemSetAccess,
 *               then cuMemUnmap + cuMemRelease, through the driver.
 * warm  (information): the budget holds exactly N pages and two slots take
 *       turns, so each commit reclaims the other slot's cached pages (unmap)
 *       and maps them again, with no page creation. Floor: the same two
 *       mmap calls. Untouched pages make both very cheap, so this ratio
 *       mostly shows libvkv's bookkeeping.
 *
 * Each measurement is repeated (--reps) with the order of vkv and floor
 * alternating, and medians are reported. "ratio" is the median of the
 * per-repetition ratios (vkv and floor measured back to back), which a
 * busy machine disturbs less than a ratio of medians.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/memfd.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifdef VKV_HAVE_CUDA
#include "cuda_driver.h"
#endif

#include "vkvbench.h"

struct map_opts {
	enum vkv_backend_kind backend;
	uint64_t page_size; /* 0: backend default */
	uint64_t pages;     /* 0: chosen from the page size */
	uint64_t reps;
	bool json;
};

/* Nanoseconds per page of one repetition. */
struct map_sample {
	double commit, release;
};

/* ------------------------------------------------------------- the floor */

/*
 * The floor's own pages and address range. One memfd, created the way the
 * host backend creates its own (hugetlb for 2 MiB pages when the system
 * has huge pages reserved, else an ordinary memfd with MADV_HUGEPAGE).
 */
struct host_floor {
	int fd;
	bool hugetlb;
	uint64_t ps, n;
	uint8_t *va;  /* n pages, PROT_NONE when unbacked */
	uint8_t *va2; /* second range (warm variant) */
	uint8_t *raw; /* the mmap both live in */
	size_t raw_len;
};

static bool floor_probe(int fd, uint64_t ps)
{
	if (ftruncate(fd, (off_t)ps) != 0 || fallocate(fd, 0, 0, (off_t)ps) != 0)
		return false;
	fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t)ps);
	return true;
}

static int host_floor_open(struct host_floor *f, uint64_t ps, uint64_t n)
{
	memset(f, 0, sizeof(*f));
	f->fd = -1;
	f->ps = ps;
	f->n = n;
	if (ps == (2u << 20)) {
		f->fd = memfd_create("vkvbench-floor",
				     MFD_CLOEXEC | MFD_HUGETLB | MFD_HUGE_2MB);
		if (f->fd >= 0 && !floor_probe(f->fd, ps)) {
			close(f->fd);
			f->fd = -1;
		}
		f->hugetlb = f->fd >= 0;
	}
	if (f->fd < 0)
		f->fd = memfd_create("vkvbench-floor", MFD_CLOEXEC);
	if (f->fd < 0)
		return -errno;
	if (ftruncate(f->fd, (off_t)(n * ps)) != 0)
		goto fail;
	/* Two ranges of n pages, aligned to the page size. */
	f->raw_len = (size_t)(2 * n * ps + ps);
	f->raw = mmap(NULL, f->raw_len, PROT_NONE,
		      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (f->raw == MAP_FAILED)
		goto fail;
	f->va = (uint8_t *)(((uintptr_t)f->raw + ps - 1) & ~(uintptr_t)(ps - 1));
	f->va2 = f->va + n * ps;
	if (ps == (2u << 20))
		madvise(f->va, 2 * n * ps, MADV_HUGEPAGE);
	return 0;
fail:
	close(f->fd);
	return -errno;
}

static void host_floor_close(struct host_floor *f)
{
	munmap(f->raw, f->raw_len);
	close(f->fd);
}

static int unback(uint8_t *addr, size_t len)
{
	void *p = mmap(addr, len, PROT_NONE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE,
		       -1, 0);
	return p == MAP_FAILED ? -errno : 0;
}

static int back(uint8_t *addr, size_t len, int fd, uint64_t off)
{
	void *p = mmap(addr, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
		       fd, (off_t)off);
	return p == MAP_FAILED ? -errno : 0;
}

/*
 * How the floor commits and releases n pages.
 *   FLOOR_SAME   what libvkv's host backend does for this workload: every
 *                page created and released on its own (fallocate /
 *                PUNCH_HOLE per page, since pages are independent), the
 *                range of consecutive pages mapped and unmapped with one
 *                mmap call. The headline floor.
 *   FLOOR_PAGE   one mmap call per page as well (pages not consecutive).
 *   FLOOR_BULK   one fallocate and one mmap for the whole range: below
 *                what any page allocator can do, for information.
 */
enum floor_mode { FLOOR_SAME, FLOOR_PAGE, FLOOR_BULK };

static int host_floor_cold(struct host_floor *f, enum floor_mode mode,
			   struct map_sample *s)
{
	uint64_t ps = f->ps, n = f->n, t0, t1, t2;
	int err = 0;

	t0 = bench_now_ns();
	if (mode == FLOOR_BULK) {
		if (fallocate(f->fd, 0, 0, (off_t)(n * ps)) != 0)
			return -errno;
	} else {
		for (uint64_t i = 0; i < n; i++)
			if (fallocate(f->fd, 0, (off_t)(i * ps), (off_t)ps) != 0)
				return -errno;
	}
	if (mode == FLOOR_PAGE) {
		for (uint64_t i = 0; i < n && !err; i++)
			err = back(f->va + i * ps, ps, f->fd, i * ps);
	} else {
		err = back(f->va, n * ps, f->fd, 0);
	}
	t1 = bench_now_ns();
	if (mode == FLOOR_PAGE) {
		for (uint64_t i = 0; i < n; i++) {
			int e = unback(f->va + i * ps, ps);
			err = err ? err : e;
		}
	} else {
		int e = unback(f->va, n * ps);
		err = err ? err : e;
	}
	if (mode == FLOOR_BULK) {
		fallocate(f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
			  (off_t)(n * ps));
	} else {
		for (uint64_t i = 0; i < n; i++)
			fallocate(f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				  (off_t)(i * ps), (off_t)ps);
	}
	t2 = bench_now_ns();
	s->commit = (double)(t1 - t0) / (double)n;
	s->release = (double)(t2 - t1) / (double)n;
	return err;
}

/* Warm: the pages exist; move them from one range to the other with the
 * calls libvkv makes for it: one unmap of the old range, one map of the
 * new one (the pages come back from the free list in memfd order). */
static int host_floor_warm(struct host_floor *f, struct map_sample *s)
{
	uint64_t ps = f->ps, n = f->n, t0, t1;
	int err;

	if (fallocate(f->fd, 0, 0, (off_t)(n * ps)) != 0)
		return -errno;
	err = back(f->va, n * ps, f->fd, 0);
	t0 = bench_now_ns();
	if (!err)
		err = unback(f->va, n * ps);
	if (!err)
		err = back(f->va2, n * ps, f->fd, 0);
	t1 = bench_now_ns();
	unback(f->va, 2 * n * ps);
	fallocate(f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
		  (off_t)(n * ps));
	s->commit = (double)(t1 - t0) / (double)n;
	s->release = 0;
	return err;
}

#ifdef VKV_HAVE_CUDA
/*
 * The cuda floor: the driver's VMM calls made directly, through the same
 * run-time driver table libvkv uses (cuda_driver.h), on device 0's primary
 * context.
 */
struct cu_api {
	const struct vkv_cu *cu;
	CUdevice dev;
	CUcontext ctx;
	CUmemAllocationProp prop;
	CUmemAccessDesc access;
};

static int cu_load(struct cu_api *c, int device)
{
	int err;

	memset(c, 0, sizeof(*c));
	err = vkv__cu_load(&c->cu);
	if (err)
		return err;
	err = VKV_CU_CALL(c->cu, cuDeviceGet, &c->dev, device);
	if (!err)
		err = VKV_CU_CALL(c->cu, cuDevicePrimaryCtxRetain, &c->ctx, c->dev);
	if (err) {
		c->cu = NULL;
		return err;
	}
	c->cu->cuCtxSetCurrent(c->ctx);
	c->prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
	c->prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
	c->prop.location.id = c->dev;
	c->access.location = c->prop.location;
	c->access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
	return 0;
}

static void cu_unload(struct cu_api *c)
{
	if (c->cu)
		c->cu->cuDevicePrimaryCtxRelease(c->dev);
}

static int cu_floor_cold(struct cu_api *c, uint64_t ps, uint64_t n,
			 struct map_sample *s)
{
	const struct vkv_cu *cu = c->cu;
	CUmemGenericAllocationHandle *h = calloc(n, sizeof(*h));
	CUdeviceptr va;
	uint64_t t0, t1, t2, made = 0;
	int err = 0;

	if (!h)
		return -ENOMEM;
	err = VKV_CU_CALL(cu, cuMemAddressReserve, &va, n * ps, ps, 0, 0);
	if (err) {
		free(h);
		return err;
	}
	t0 = bench_now_ns();
	for (; made < n && !err; made++) {
		CUdeviceptr at = va + made * ps;

		err = VKV_CU_CALL(cu, cuMemCreate, &h[made], ps, &c->prop, 0);
		if (err)
			break;
		err = VKV_CU_CALL(cu, cuMemMap, at, ps, 0, h[made], 0);
		if (!err)
			err = VKV_CU_CALL(cu, cuMemSetAccess, at, ps, &c->access, 1);
	}
	t1 = bench_now_ns();
	for (uint64_t i = 0; i < made; i++) {
		cu->cuMemUnmap(va + i * ps, ps);
		cu->cuMemRelease(h[i]);
	}
	t2 = bench_now_ns();
	cu->cuMemAddressFree(va, n * ps);
	free(h);
	s->commit = (double)(t1 - t0) / (double)n;
	s->release = (double)(t2 - t1) / (double)n;
	return err;
}
#endif /* VKV_HAVE_CUDA */

/* ------------------------------------------------------------ through vkv */

struct vkv_side {
	vkv_ctx *ctx;
	vkv_region *r;
	uint64_t n;
};

/* A region whose one tensor holds one token per page, so a slot of n
 * tokens is n pages and vkv_slot_ensure commits exactly those. */
static int vkv_side_open(struct vkv_side *v, const struct map_opts *o,
			 uint64_t ps, uint64_t n, bool budgeted,
			 struct vkv_ctx_info *info)
{
	struct vkv_ctx_config cc;
	struct vkv_region_config rc;
	int err;

	memset(v, 0, sizeof(*v));
	v->n = n;
	vkv_ctx_config_init(&cc);
	cc.backend = o->backend;
	cc.page_size = ps;
	cc.flags |= VKV_CTX_NO_WORKER;
	cc.budget = budgeted ? n * ps : 0;
	cc.pool_low = 0;
	cc.pool_high = 0;
	err = vkv_ctx_create(&cc, &v->ctx);
	if (err)
		return err;
	err = vkv_ctx_info(v->ctx, info);
	if (err)
		goto fail_ctx;
	vkv_region_config_init(&rc);
	rc.layers = 1;
	rc.kv_heads = 1;
	rc.elem_size = 4;
	rc.head_dim = (uint32_t)(info->page_size / (2 * rc.elem_size));
	rc.max_slots = 2;
	rc.max_context = n;
	rc.layout = VKV_LAYOUT_ALL_LAYERS;
	err = vkv_region_create(v->ctx, &rc, &v->r);
	if (err)
		goto fail_ctx;
	return 0;
fail_ctx:
	vkv_ctx_destroy(v->ctx);
	return err;
}

static void vkv_side_close(struct vkv_side *v)
{
	vkv_region_destroy(v->r);
	vkv_ctx_destroy(v->ctx);
}

static int vkv_cold(struct vkv_side *v, struct map_sample *s)
{
	uint64_t t0, t1, t2;
	int err;

	err = vkv_slot_alloc_at(v->r, 0);
	if (err)
		return err;
	t0 = bench_now_ns();
	err = vkv_slot_ensure(v->r, 0, v->n);
	t1 = bench_now_ns();
	int e2 = vkv_slot_free(v->r, 0);
	int e3 = vkv_ctx_trim(v->ctx, NULL);
	t2 = bench_now_ns();
	s->commit = (double)(t1 - t0) / (double)v->n;
	s->release = (double)(t2 - t1) / (double)v->n;
	return err ? err : e2 ? e2 : e3;
}

/* The slot that now holds the pages is `*cur`; commit the other one. */
static int vkv_warm(struct vkv_side *v, uint32_t *cur, struct map_sample *s)
{
	uint32_t next = *cur ^ 1;
	uint64_t t0, t1;
	int err;

	err = vkv_slot_free(v->r, *cur);
	if (!err)
		err = vkv_slot_alloc_at(v->r, next);
	if (err)
		return err;
	t0 = bench_now_ns();
	err = vkv_slot_ensure(v->r, next, v->n);
	t1 = bench_now_ns();
	*cur = next;
	s->commit = (double)(t1 - t0) / (double)v->n;
	s->release = 0;
	return err;
}

/* ---------------------------------------------------------------- driver */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: vkvbench map [--backend host|cuda] [--page-size 4K|2M]\n"
		"                    [--pages N] [--reps N] [--json]\n"
		"Commit + release cost per page through libvkv vs the same backend\n"
		"calls made directly (the floor), in the same run; medians of --reps.\n");
}

static int parse(int argc, char **argv, struct map_opts *o)
{
	static const struct option lopts[] = {
		{ "backend", required_argument, NULL, 'b' },
		{ "page-size", required_argument, NULL, 'p' },
		{ "pages", required_argument, NULL, 'n' },
		{ "reps", required_argument, NULL, 'r' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	memset(o, 0, sizeof(*o));
	o->backend = VKV_BACKEND_HOST;
	o->reps = 15;
	bench_getopt_reset();
	while ((c = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
		switch (c) {
		case 'b':
			if (bench_parse_backend(optarg, &o->backend) ||
			    o->backend == VKV_BACKEND_KMOD)
				return bench_usage_error("map", "bad --backend '%s'", optarg);
			break;
		case 'p':
			if (bench_parse_size(optarg, &o->page_size) || !o->page_size)
				return bench_usage_error("map", "bad --page-size '%s'", optarg);
			break;
		case 'n':
			if (bench_parse_u64(optarg, 1, 1u << 20, &o->pages))
				return bench_usage_error("map", "bad --pages '%s'", optarg);
			break;
		case 'r':
			if (bench_parse_u64(optarg, 1, 1000, &o->reps))
				return bench_usage_error("map", "bad --reps '%s'", optarg);
			break;
		case 'j':
			o->json = true;
			break;
		case 'h':
			usage(stdout);
			return -1;
		default:
			return BENCH_USAGE;
		}
	}
	if (optind < argc)
		return bench_usage_error("map", "unexpected argument '%s'", argv[optind]);
	return 0;
}

/* Medians of the repetitions. */
struct map_result {
	double vkv_commit, vkv_release, floor_commit, floor_release;
	double page_commit, page_release;       /* host only */
	double batched_commit, batched_release; /* host only */
	double vkv_warm, floor_warm;            /* host only */
	double ratio, warm_ratio;               /* medians of paired ratios */
	bool have_batched, have_warm;
};

static double med_commit(struct map_sample *s, size_t n, double *tmp)
{
	for (size_t i = 0; i < n; i++)
		tmp[i] = s[i].commit;
	return bench_median_f64(tmp, n);
}

static double med_release(struct map_sample *s, size_t n, double *tmp)
{
	for (size_t i = 0; i < n; i++)
		tmp[i] = s[i].release;
	return bench_median_f64(tmp, n);
}

/* Median over repetitions of (a.commit + a.release) / (b.commit + b.release). */
static double med_ratio(const struct map_sample *a, const struct map_sample *b,
			size_t n, double *tmp)
{
	for (size_t i = 0; i < n; i++) {
		double den = b[i].commit + b[i].release;
		tmp[i] = den > 0 ? (a[i].commit + a[i].release) / den : NAN;
	}
	return bench_median_f64(tmp, n);
}

static int run_host(const struct map_opts *o, uint64_t ps, uint64_t n,
		    struct map_result *res, char *floor_detail, size_t dlen)
{
	size_t reps = o->reps;
	struct map_sample *sv = calloc(reps * 6, sizeof(*sv));
	struct map_sample *sf, *sp, *sb, *wv, *wf;
	double *tmp = calloc(reps, sizeof(*tmp));
	struct vkv_side cold, warm;
	struct vkv_ctx_info info;
	struct host_floor f;
	uint32_t cur = 0;
	int err;

	if (!sv || !tmp) {
		err = -ENOMEM;
		goto out_free;
	}
	sf = sv + reps;
	sp = sv + 2 * reps;
	sb = sv + 3 * reps;
	wv = sv + 4 * reps;
	wf = sv + 5 * reps;
	err = host_floor_open(&f, ps, n);
	if (err)
		goto out_free;
	snprintf(floor_detail, dlen, "memfd %s", f.hugetlb ? "hugetlb" : "shmem");
	err = vkv_side_open(&cold, o, ps, n, false, &info);
	if (err)
		goto out_floor;
	err = vkv_side_open(&warm, o, ps, n, true, &info);
	if (err)
		goto out_cold;
	/* Warm start: slot 0 holds the budget's n pages. */
	err = vkv_slot_alloc_at(warm.r, 0);
	if (!err)
		err = vkv_slot_ensure(warm.r, 0, n);
	for (size_t i = 0; i < reps && !err; i++) {
		if (i % 2) {
			err = vkv_cold(&cold, &sv[i]);
			err = err ? err : host_floor_cold(&f, FLOOR_SAME, &sf[i]);
			err = err ? err : vkv_warm(&warm, &cur, &wv[i]);
			err = err ? err : host_floor_warm(&f, &wf[i]);
		} else {
			err = host_floor_cold(&f, FLOOR_SAME, &sf[i]);
			err = err ? err : vkv_cold(&cold, &sv[i]);
			err = err ? err : host_floor_warm(&f, &wf[i]);
			err = err ? err : vkv_warm(&warm, &cur, &wv[i]);
		}
		err = err ? err : host_floor_cold(&f, FLOOR_PAGE, &sp[i]);
		err = err ? err : host_floor_cold(&f, FLOOR_BULK, &sb[i]);
	}
	if (!err) {
		res->vkv_commit = med_commit(sv, reps, tmp);
		res->vkv_release = med_release(sv, reps, tmp);
		res->floor_commit = med_commit(sf, reps, tmp);
		res->floor_release = med_release(sf, reps, tmp);
		res->page_commit = med_commit(sp, reps, tmp);
		res->page_release = med_release(sp, reps, tmp);
		res->batched_commit = med_commit(sb, reps, tmp);
		res->batched_release = med_release(sb, reps, tmp);
		res->vkv_warm = med_commit(wv, reps, tmp);
		res->floor_warm = med_commit(wf, reps, tmp);
		res->ratio = med_ratio(sv, sf, reps, tmp);
		res->warm_ratio = med_ratio(wv, wf, reps, tmp);
		res->have_batched = res->have_warm = true;
	}
	vkv_slot_free(warm.r, cur);
	vkv_side_close(&warm);
out_cold:
	vkv_side_close(&cold);
out_floor:
	host_floor_close(&f);
out_free:
	free(tmp);
	free(sv);
	return err;
}

#ifdef VKV_HAVE_CUDA
static int run_cuda(const struct map_opts *o, uint64_t ps, uint64_t n,
		    struct map_result *res, char *floor_detail, size_t dlen)
{
	size_t reps = o->reps;
	struct map_sample *sv = calloc(reps * 2, sizeof(*sv)), *sf;
	double *tmp = calloc(reps, sizeof(*tmp));
	struct vkv_ctx_info info;
	struct vkv_side cold;
	struct cu_api cu;
	int err;

	if (!sv || !tmp) {
		err = -ENOMEM;
		goto out_free;
	}
	sf = sv + reps;
	err = cu_load(&cu, 0);
	if (err)
		goto out_free;
	snprintf(floor_detail, dlen, "cuMemCreate/cuMemMap/cuMemSetAccess");
	err = vkv_side_open(&cold, o, ps, n, false, &info);
	if (err)
		goto out_cu;
	for (size_t i = 0; i < reps && !err; i++) {
		if (i % 2) {
			err = vkv_cold(&cold, &sv[i]);
			err = err ? err : cu_floor_cold(&cu, ps, n, &sf[i]);
		} else {
			err = cu_floor_cold(&cu, ps, n, &sf[i]);
			err = err ? err : vkv_cold(&cold, &sv[i]);
		}
	}
	if (!err) {
		res->vkv_commit = med_commit(sv, reps, tmp);
		res->vkv_release = med_release(sv, reps, tmp);
		res->floor_commit = med_commit(sf, reps, tmp);
		res->floor_release = med_release(sf, reps, tmp);
		res->ratio = med_ratio(sv, sf, reps, tmp);
	}
	vkv_side_close(&cold);
out_cu:
	cu_unload(&cu);
out_free:
	free(tmp);
	free(sv);
	return err;
}
#endif

/* Page size the backend really uses (the default may differ per backend). */
static int probe_page_size(const struct map_opts *o, struct vkv_ctx_info *info)
{
	struct vkv_ctx_config cc;
	vkv_ctx *ctx;
	int err;

	vkv_ctx_config_init(&cc);
	cc.backend = o->backend;
	cc.page_size = o->page_size;
	cc.flags |= VKV_CTX_NO_WORKER;
	err = vkv_ctx_create(&cc, &ctx);
	if (err)
		return err;
	err = vkv_ctx_info(ctx, info);
	vkv_ctx_destroy(ctx);
	return err;
}

static void report_text(const struct map_opts *o, const struct vkv_ctx_info *info,
			uint64_t n, const struct map_result *r, const char *floor_detail)
{
	double vt = r->vkv_commit + r->vkv_release;
	double ft = r->floor_commit + r->floor_release;
	char sz[32];

	printf("vkvbench map: backend %s (%s), page %s, %llu pages, median of %llu\n",
	       info->backend_name, info->backend_detail,
	       bench_fmt_size(sz, sizeof(sz), info->page_size),
	       (unsigned long long)n, (unsigned long long)o->reps);
	printf("  %-22s %10s %10s %10s   (ns per page)\n", "", "commit", "release", "total");
	printf("  %-22s %10.0f %10.0f %10.0f\n", "vkv", r->vkv_commit, r->vkv_release, vt);
	printf("  %-22s %10.0f %10.0f %10.0f   %s\n", "floor",
	       r->floor_commit, r->floor_release, ft, floor_detail);
	if (r->have_batched) {
		printf("  %-22s %10.0f %10.0f %10.0f   (a map call per page)\n",
		       "floor_per_page_map", r->page_commit, r->page_release,
		       r->page_commit + r->page_release);
		printf("  %-22s %10.0f %10.0f %10.0f   (one fallocate + one mmap in all)\n",
		       "floor_bulk", r->batched_commit, r->batched_release,
		       r->batched_commit + r->batched_release);
	}
	printf("  ratio vkv/floor: %.3f (median of %llu paired repetitions)\n", r->ratio,
	       (unsigned long long)o->reps);
	if (r->have_warm)
		printf("  warm (reclaim + remap): vkv %.0f ns/page, floor %.0f ns/page, ratio %.3f\n",
		       r->vkv_warm, r->floor_warm, r->warm_ratio);
}

static void report_json(const struct map_opts *o, const struct vkv_ctx_info *info,
			uint64_t n, const struct map_result *r, const char *floor_detail)
{
	double vt = r->vkv_commit + r->vkv_release;
	double ft = r->floor_commit + r->floor_release;
	struct bench_json j;

	bench_json_begin(&j, stdout);
	bench_json_str(&j, "bench", "map");
	bench_json_str(&j, "backend", info->backend_name);
	bench_json_str(&j, "backend_detail", info->backend_detail);
	bench_json_u64(&j, "page_size", info->page_size);
	bench_json_u64(&j, "pages", n);
	bench_json_u64(&j, "reps", o->reps);
	bench_json_str(&j, "unit", "ns_per_page");
	bench_json_object(&j, "vkv");
	bench_json_f64(&j, "commit", r->vkv_commit);
	bench_json_f64(&j, "release", r->vkv_release);
	bench_json_f64(&j, "total", vt);
	bench_json_close(&j);
	bench_json_object(&j, "floor");
	bench_json_str(&j, "what", floor_detail);
	bench_json_f64(&j, "commit", r->floor_commit);
	bench_json_f64(&j, "release", r->floor_release);
	bench_json_f64(&j, "total", ft);
	bench_json_close(&j);
	if (r->have_batched) {
		bench_json_object(&j, "floor_per_page_map");
		bench_json_f64(&j, "commit", r->page_commit);
		bench_json_f64(&j, "release", r->page_release);
		bench_json_f64(&j, "total", r->page_commit + r->page_release);
		bench_json_close(&j);
		bench_json_object(&j, "floor_bulk");
		bench_json_f64(&j, "commit", r->batched_commit);
		bench_json_f64(&j, "release", r->batched_release);
		bench_json_f64(&j, "total", r->batched_commit + r->batched_release);
		bench_json_close(&j);
	}
	bench_json_f64(&j, "ratio", r->ratio);
	bench_json_f64(&j, "ratio_of_medians", ft > 0 ? vt / ft : NAN);
	bench_json_f64(&j, "ratio_commit",
		       r->floor_commit > 0 ? r->vkv_commit / r->floor_commit : NAN);
	bench_json_f64(&j, "ratio_release",
		       r->floor_release > 0 ? r->vkv_release / r->floor_release : NAN);
	if (r->have_warm) {
		bench_json_object(&j, "warm");
		bench_json_f64(&j, "vkv", r->vkv_warm);
		bench_json_f64(&j, "floor", r->floor_warm);
		bench_json_f64(&j, "ratio", r->warm_ratio);
		bench_json_close(&j);
	}
	bench_json_end(&j);
}

int bench_map(int argc, char **argv)
{
	struct map_result res = { 0 };
	struct vkv_ctx_info info;
	struct map_opts o;
	char floor_detail[64] = "";
	uint64_t n;
	int err;

	err = parse(argc, argv, &o);
	if (err)
		return err < 0 ? BENCH_OK : err;
	err = probe_page_size(&o, &info);
	if (err) {
		fprintf(stderr, "vkvbench map: %s backend: %s\n",
			vkv_backend_name(o.backend), vkv_strerror(err));
		return err == -ENODEV ? BENCH_SKIP : BENCH_FAIL;
	}
	/* Default: 8 MiB of 4 KiB pages, 128 MiB of larger ones. */
	n = o.pages ? o.pages : info.page_size <= 4096 ? 2048 : 64;
	if (info.backend == VKV_BACKEND_HOST) {
		err = run_host(&o, info.page_size, n, &res, floor_detail,
			       sizeof(floor_detail));
	} else {
#ifdef VKV_HAVE_CUDA
		err = run_cuda(&o, info.page_size, n, &res, floor_detail,
			       sizeof(floor_detail));
#else
		err = -ENODEV;
#endif
	}
	if (err) {
		fprintf(stderr, "vkvbench map: %s\n", vkv_strerror(err));
		return err == -ENODEV ? BENCH_SKIP : BENCH_FAIL;
	}
	if (o.json)
		report_json(&o, &info, n, &res, floor_detail);
	else
		report_text(&o, &info, n, &res, floor_detail);
	return BENCH_OK;
}
