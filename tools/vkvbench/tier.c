// SPDX-License-Identifier: MIT
/*
 * tier.c - `vkvbench tier`: eviction and restoration bandwidth of a tier,
 * against the floor measured in the same run.
 *
 *   vkv    evict   = vkv_evict of every slot of a region in one batch (data
 *                    copied down, pages unmapped and dropped), until the
 *                    operation completes; restore = vkv_restore of them all
 *                    (fresh pages mapped at the same addresses, data copied
 *                    back and, for NVMe, verified). GB/s = bytes / time.
 *   floor  dram    host/kmod backends: memcpy of the same bytes, page by
 *                  page, between two prefaulted buffers (write and read
 *                  are the same number). cuda backend: one cuMemcpyAsync
 *                  of the same bytes from device memory into pinned host
 *                  memory (write) and back (read): the link's peak.
 *          nvme    fio with ioengine=io_uring, direct=1, fixed buffers and
 *                  registered files, the same size, block size (--bs =
 *                  VKV_NVME_IO) and queue depth (--qd = VKV_NVME_QD), in the
 *                  same directory: a sequential write, then a read of it.
 *                  fio's buffers are hugetlb pages (--mem=shmhuge) when
 *                  enough are reserved ("floor_buffers": "hugetlb"), as
 *                  vkv's staging buffers are huge pages; else its default
 *                  4 KiB pages ("4k"), a weaker floor (fio_gbps).
 *                  Without fio the floor is reported as null.
 * "ratio_write" = evict / floor write, "ratio_read" = restore / floor read,
 * each the median over the rounds of that round's rate over the floor
 * measured right after it; "ratio" = the smaller of the two. Host DRAM
 * also reports the streaming-store copy the host backend uses for bulk
 * copies ("stream_gbps", "ratio_*_stream"): a stricter floor than memcpy.
 * Every repetition (--reps) after one warm-up round checks the data that
 * came back bit for bit; medians are reported.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "backend.h"
#include "vkvbench.h"
#ifdef VKV_HAVE_KERNELS
#include "cuda_driver.h"
#include "kernels.h"
#endif

#define TIER_SLOTS 16
#define TIER_HEADS 8
#define TIER_DIM 128
#define TIER_TOKEN (TIER_HEADS * TIER_DIM * 2)

struct tier_opts {
	unsigned tier;
	enum vkv_backend_kind backend;
	const char *dir;
	uint64_t size, bs, qd, reps;
	bool json;
};

struct tier_result {
	double evict, restore;      /* GB/s, medians */
	double floor_w, floor_r;    /* GB/s, medians; < 0: none */
	double ratio_w, ratio_r;    /* medians of the rounds' own ratios */
	double stream;              /* host DRAM: streaming copy GB/s; < 0: none */
	double sratio_w, sratio_r;  /* ... and the ratios against it */
	bool verified;
	bool fio_huge;              /* fio's buffers were hugetlb pages */
	uint64_t size;              /* bytes actually moved per round */
	/* each measured round: GB/s, and its floor (NaN: none) */
	double round_ev[1000], round_re[1000], round_fw[1000], round_fr[1000];
	char floor[16];
	char backend[16];
};

static void tier_help(FILE *f)
{
	fprintf(f, "usage: vkvbench tier --tier dram|nvme [--json] [--dir D] [--size S]\n"
		   "                     [--bs B] [--qd Q] [--reps N] [--backend B]\n"
		   "  --tier     dram or nvme (required)\n"
		   "  --dir      directory of the NVMe tier file and of fio's (default /var/tmp)\n"
		   "  --size     bytes evicted and restored per round (default 512M)\n"
		   "  --bs       NVMe I/O size (default 1M)\n"
		   "  --qd       NVMe queue depth (default 32)\n"
		   "  --reps     measured rounds after a warm-up (default 3)\n"
		   "  --backend  auto (default), host, cuda or kmod\n");
}

static int parse_tier_opts(int argc, char **argv, struct tier_opts *o)
{
	static const struct option longopts[] = {
		{ "tier", required_argument, NULL, 't' },
		{ "dir", required_argument, NULL, 'd' },
		{ "size", required_argument, NULL, 's' },
		{ "bs", required_argument, NULL, 'b' },
		{ "qd", required_argument, NULL, 'q' },
		{ "reps", required_argument, NULL, 'r' },
		{ "backend", required_argument, NULL, 'B' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	int c;

	*o = (struct tier_opts){ 0, VKV_BACKEND_AUTO, "/var/tmp", 512ULL << 20,
				 1ULL << 20, 32, 3, false };
	bench_getopt_reset();
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 't':
			if (!strcmp(optarg, "dram"))
				o->tier = VKV_TIER_DRAM;
			else if (!strcmp(optarg, "nvme"))
				o->tier = VKV_TIER_NVME;
			else
				return bench_usage_error("tier", "--tier must be dram or nvme");
			break;
		case 'd': o->dir = optarg; break;
		case 's':
			if (bench_parse_size(optarg, &o->size) || o->size < (4ULL << 20))
				return bench_usage_error("tier", "--size: at least 4M");
			break;
		case 'b':
			if (bench_parse_size(optarg, &o->bs) || o->bs < 4096 ||
			    (o->bs & (o->bs - 1)))
				return bench_usage_error("tier", "--bs: a power of two >= 4K");
			break;
		case 'q':
			if (bench_parse_u64(optarg, 1, 4096, &o->qd))
				return bench_usage_error("tier", "--qd: 1..4096");
			break;
		case 'r':
			if (bench_parse_u64(optarg, 1, 1000, &o->reps))
				return bench_usage_error("tier", "--reps: 1..1000");
			break;
		case 'B':
			if (bench_parse_backend(optarg, &o->backend))
				return bench_usage_error("tier", "--backend: auto, host, cuda, kmod");
			break;
		case 'j': o->json = true; break;
		case 'h': tier_help(stdout); return -1;
		default: tier_help(stderr); return BENCH_USAGE;
		}
	}
	if (!o->tier)
		return bench_usage_error("tier", "--tier dram|nvme is required");
	return 0;
}

/* ------------------------------------------------------------------ floor */

/* memcpy between two prefaulted buffers, chunk by chunk; or (stream) the
 * streaming-store copy that the host backend uses for bulk copies
 * (vkv__copy_stream), which glibc's memcpy does not use below a size near
 * the L3's. */
static double memcpy_gbps(uint8_t *dst, const uint8_t *src, uint64_t size,
			  uint64_t chunk, bool stream)
{
	uint64_t t0 = bench_now_ns();

	for (uint64_t off = 0; off < size; off += chunk) {
		if (stream)
			vkv__copy_stream(dst + off, src + off, chunk);
		else
			memcpy(dst + off, src + off, chunk);
	}
	return (double)size / ((double)(bench_now_ns() - t0) / 1e9) / 1e9;
}

#ifdef VKV_HAVE_KERNELS
/*
 * The cuda floor: `size` bytes device -> pinned host in one copy (fw) and
 * back (fr), GB/s, wall clock around copy + synchronize as for vkv. Device
 * memory through the kernels' helper (the driver table has no cuMemAlloc).
 */
struct cuda_floor {
	struct vkv_kern *k;
	struct vkv_kern_buf dev;
	void *host;
};

static int cuda_floor_open(struct cuda_floor *f, int device, uint64_t size)
{
	const struct vkv_cu *cu;
	int err;

	memset(f, 0, sizeof(*f));
	err = vkv__kern_open(device, &f->k);
	if (err)
		return err;
	cu = vkv__cu();
	err = vkv__kern_buf_alloc(f->k, size, &f->dev);
	if (!err)
		err = VKV_CU_CALL(cu, cuMemAllocHost, &f->host, size);
	if (!err) {
		memset(f->host, 3, size);
		err = VKV_CU_CALL(cu, cuMemsetD8, f->dev.addr, 1, size);
	}
	return err;
}

static void cuda_floor_close(struct cuda_floor *f)
{
	if (!f->k)
		return;
	if (f->host)
		vkv__cu()->cuMemFreeHost(f->host);
	if (f->dev.addr)
		vkv__kern_buf_free(f->k, &f->dev);
	vkv__kern_close(f->k);
	f->k = NULL;
}

static int cuda_floor_gbps(struct cuda_floor *f, uint64_t size, double *fw,
			   double *fr)
{
	const struct vkv_cu *cu = vkv__cu();
	uint64_t h = (uint64_t)(uintptr_t)f->host, t0;
	int err = 0;

	for (int dir = 0; dir < 2 && !err; dir++) {
		t0 = bench_now_ns();
		err = VKV_CU_CALL(cu, cuMemcpyAsync, dir ? f->dev.addr : h,
				  dir ? h : f->dev.addr, size, NULL);
		if (!err)
			err = VKV_CU_CALL(cu, cuCtxSynchronize);
		*(dir ? fr : fw) = (double)size / ((double)(bench_now_ns() - t0) / 1e9) / 1e9;
	}
	return err;
}
#endif

/*
 * fio's bandwidth for one job in GB/s, < 0 when fio is not there or the
 * job failed. huge: fio's buffers in hugetlb pages (--mem=shmhuge), one
 * DMA segment per I/O as vkv's THP staging buffers are; fio has no way to
 * ask for transparent huge pages, and from its default 4 KiB-page buffers
 * a 1 MiB I/O is 256 segments (the development VM's virtio disk: 1.3-1.7
 * GB/s against 2.8 from hugetlb buffers).
 */
static double fio_gbps(const struct tier_opts *o, const char *path, bool write,
		       bool huge)
{
	char cmd[1024], line[8192];
	double kib = -1;
	FILE *p;

	snprintf(cmd, sizeof(cmd),
		 "fio --name=vkvbench --filename=%s --ioengine=io_uring --direct=1 "
		 "--fixedbufs=1 --registerfiles=1 --refill_buffers=1 --rw=%s --bs=%llu --iodepth=%llu "
		 "--size=%llu%s --output-format=terse --terse-version=3 2>/dev/null",
		 path, write ? "write" : "read", (unsigned long long)o->bs,
		 (unsigned long long)o->qd, (unsigned long long)o->size,
		 huge ? " --mem=shmhuge" : "");
	p = popen(cmd, "r");
	if (!p)
		return -1;
	while (fgets(line, sizeof(line), p)) {
		char *save = NULL, *f = strtok_r(line, ";", &save);

		/* terse v3: field 7 read bandwidth, field 48 write, KiB/s */
		for (int i = 1; f; i++, f = strtok_r(NULL, ";", &save)) {
			if (i == (write ? 48 : 7)) {
				kib = strtod(f, NULL);
				break;
			}
		}
	}
	if (pclose(p) != 0)
		return -1;
	return kib > 0 ? kib * 1024 / 1e9 : -1;
}

/* Enough free hugetlb pages for fio's buffers (qd * bs, and a page of
 * slack)? Reserve them with vm.nr_hugepages for the strongest floor. */
static bool hugetlb_for_fio(const struct tier_opts *o)
{
	unsigned long long free_pages = 0, page_kib = 0;
	char line[256];
	FILE *f = fopen("/proc/meminfo", "r");

	if (!f)
		return false;
	while (fgets(line, sizeof(line), f)) {
		sscanf(line, "HugePages_Free: %llu", &free_pages);
		sscanf(line, "Hugepagesize: %llu kB", &page_kib);
	}
	fclose(f);
	return page_kib && free_pages * page_kib * 1024 >= o->qd * o->bs + page_kib * 1024;
}

static bool have_fio(void)
{
	return system("fio --version >/dev/null 2>&1") == 0;
}

/* ------------------------------------------------------------- the tier */

static void set_env_size(const char *name, uint64_t v)
{
	char buf[32];

	snprintf(buf, sizeof(buf), "%llu", (unsigned long long)v);
	setenv(name, buf, 1);
}

/* Word i of slot s's K or V: pseudo-random (splitmix64), so that a disk
 * or hypervisor that compresses or deduplicates gains nothing (a patterned
 * fill read back at 1.9 GB/s where random bytes and fio's buffers read at
 * 1.1 on the development VM's disk). */
static uint64_t word_at(uint32_t slot, int kv, uint64_t i)
{
	uint64_t x = ((uint64_t)slot << 40 ^ (uint64_t)kv << 39 ^ i) + 0x9E3779B97F4A7C15ULL;

	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
	x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
	return x ^ (x >> 31);
}

/* Fill (or check) every slot's K and V. */
static int fill_or_check(vkv_region *r, uint64_t tokens, uint64_t *buf, bool check)
{
	uint64_t words = tokens * TIER_TOKEN / sizeof(uint64_t);
	int err = 0;

	for (uint32_t s = 0; s < TIER_SLOTS && !err; s++) {
		for (int kv = 0; kv < 2 && !err; kv++) {
			if (check) {
				err = vkv_slot_read(r, s, 0, kv, 0, tokens, buf);
				for (uint64_t i = 0; i < words && !err; i++)
					if (buf[i] != word_at(s, kv, i))
						err = -EILSEQ;
				continue;
			}
			for (uint64_t i = 0; i < words; i++)
				buf[i] = word_at(s, kv, i);
			err = vkv_slot_write(r, s, 0, kv, 0, tokens, buf);
		}
	}
	return err;
}

static int round_trip(vkv_region *r, unsigned tier, const uint32_t *slots,
		      double *ev_s, double *re_s)
{
	vkv_op *op = NULL;
	uint64_t t0 = bench_now_ns();
	int err = vkv_evict(r, slots, TIER_SLOTS, tier, &op);

	if (!err)
		err = vkv_op_wait(op);
	vkv_op_free(op);
	*ev_s = (double)(bench_now_ns() - t0) / 1e9;
	if (err)
		return err;
	t0 = bench_now_ns();
	op = NULL;
	err = vkv_restore(r, slots, TIER_SLOTS, &op);
	if (!err)
		err = vkv_op_wait(op);
	vkv_op_free(op);
	*re_s = (double)(bench_now_ns() - t0) / 1e9;
	return err;
}

static int measure(const struct tier_opts *o, struct tier_result *res)
{
	struct vkv_ctx_config cfg;
	struct vkv_region_config rc;
	struct vkv_region_info ri;
	vkv_ctx *ctx = NULL;
	vkv_region *r = NULL;
	uint32_t slots[TIER_SLOTS];
	double ev[1000], re[1000], fw[1000], fr[1000], pw[1000], pr[1000];
	double sw[1000], spw[1000], spr[1000];
	uint64_t tokens, nf = 0;
	char fio_path[4096];
	bool fio = o->tier == VKV_TIER_NVME && have_fio();
	uint64_t *buf = NULL;
	uint8_t *fa = NULL, *fb = NULL;
	bool gpu_floor = false, no_floor = false;
#ifdef VKV_HAVE_KERNELS
	struct cuda_floor cf = { 0 };
#endif
	int err;

	setenv("VKV_NVME_DIR", o->dir, 1);
	set_env_size("VKV_NVME_IO", o->bs);
	set_env_size("VKV_NVME_QD", o->qd);
	set_env_size("VKV_NVME_BUDGET", 2 * o->size);
	set_env_size("VKV_NVME_GROW", o->size);
	set_env_size("VKV_DRAM_BUDGET", 2 * o->size);
	set_env_size("VKV_DRAM_CHUNK", o->size);
	vkv_ctx_config_init(&cfg);
	cfg.backend = o->backend;
	cfg.flags |= VKV_CTX_NO_STATS;
	/* The pool keeps the evicted pages: restore measures the transfer,
	 * not the backend's page creation. */
	cfg.pool_low = 0;
	cfg.pool_high = 2 * o->size;
	err = vkv_ctx_create(&cfg, &ctx);
	if (err)
		return err;
	vkv_region_config_init(&rc);
	rc.layers = 1;
	rc.kv_heads = TIER_HEADS;
	rc.head_dim = TIER_DIM;
	rc.elem_size = 2;
	rc.max_slots = TIER_SLOTS;
	/* Two tensors (K, V) per slot: size / slots / 2 bytes each. */
	rc.max_context = o->size / TIER_SLOTS / 2 / TIER_TOKEN;
	{
		struct vkv_ctx_info ci;

		vkv_ctx_info(ctx, &ci);
		snprintf(res->backend, sizeof(res->backend), "%s", ci.backend_name);
	}
	err = vkv_region_create(ctx, &rc, &r);
	if (err)
		goto out;
	vkv_region_info(r, &ri);
	tokens = rc.max_context / ri.tokens_per_page * ri.tokens_per_page;
	if (!tokens) {
		err = -EINVAL;
		fprintf(stderr, "vkvbench tier: --size too small for the page size\n");
		goto out;
	}
	res->size = tokens * TIER_TOKEN * 2 * TIER_SLOTS;
	buf = malloc(tokens * TIER_TOKEN); /* a multiple of 8 bytes */
	if (!buf) {
		err = -ENOMEM;
		goto out;
	}
	for (uint32_t s = 0; s < TIER_SLOTS && !err; s++) {
		slots[s] = s;
		err = vkv_slot_alloc_at(r, s);
		if (!err)
			err = vkv_slot_ensure(r, s, tokens);
	}
	if (!err)
		err = fill_or_check(r, tokens, buf, false);
#ifdef VKV_HAVE_KERNELS
	if (!err && o->tier == VKV_TIER_DRAM && !strcmp(res->backend, "cuda")) {
		struct vkv_ctx_info ci;

		vkv_ctx_info(ctx, &ci);
		gpu_floor = true;
		if (cuda_floor_open(&cf, ci.device, res->size)) {
			fprintf(stderr, "vkvbench tier: no cuda floor: %s\n",
				vkv_last_error());
			cuda_floor_close(&cf);
			no_floor = true;
		}
	}
#endif
	if (!err && o->tier == VKV_TIER_DRAM && !gpu_floor) {
		fa = malloc(res->size);
		fb = malloc(res->size);
		if (!fa || !fb) {
			err = -ENOMEM;
		} else {
			memset(fa, 1, res->size);
			memset(fb, 2, res->size);
		}
	}
	snprintf(fio_path, sizeof(fio_path), "%s/vkvbench-fio.%d", o->dir, (int)getpid());
	res->fio_huge = fio && hugetlb_for_fio(o);
	res->verified = true;
	for (uint64_t i = 0; i <= o->reps && !err; i++) {
		double e, t;

		err = round_trip(r, o->tier, slots, &e, &t);
		if (!err && fill_or_check(r, tokens, buf, true))
			res->verified = false;
		if (o->tier == VKV_TIER_DRAM && !err && !gpu_floor) {
			fw[nf] = fr[nf] = memcpy_gbps(fb, fa, res->size, ri.page_size, false);
			sw[nf] = memcpy_gbps(fa, fb, res->size, ri.page_size, true);
		}
#ifdef VKV_HAVE_KERNELS
		if (o->tier == VKV_TIER_DRAM && !err && gpu_floor && !no_floor)
			err = cuda_floor_gbps(&cf, res->size, &fw[nf], &fr[nf]);
#endif
		if (err || i == 0)
			continue; /* round 0 warms up (file growth, first faults) */
		ev[i - 1] = (double)res->size / e / 1e9;
		re[i - 1] = (double)res->size / t / 1e9;
		if (o->tier == VKV_TIER_NVME && fio) {
			fw[nf] = fio_gbps(o, fio_path, true, res->fio_huge);
			fr[nf] = fio_gbps(o, fio_path, false, res->fio_huge);
			if (res->fio_huge && (fw[nf] < 0 || fr[nf] < 0)) {
				/* no hugetlb after all: 4 KiB pages from now on */
				res->fio_huge = false;
				fw[nf] = fio_gbps(o, fio_path, true, false);
				fr[nf] = fio_gbps(o, fio_path, false, false);
			}
			unlink(fio_path);
		}
		res->round_ev[i - 1] = ev[i - 1];
		res->round_re[i - 1] = re[i - 1];
		res->round_fw[i - 1] = res->round_fr[i - 1] = NAN;
		/* each round against the floor measured right after it: the
		 * median of those ratios follows a disk whose speed drifts */
		if ((o->tier == VKV_TIER_DRAM && !no_floor) ||
		    (fio && fw[nf] > 0 && fr[nf] > 0)) {
			res->round_fw[i - 1] = fw[nf];
			res->round_fr[i - 1] = fr[nf];
			pw[nf] = ev[i - 1] / fw[nf];
			pr[nf] = re[i - 1] / fr[nf];
			if (o->tier == VKV_TIER_DRAM && !gpu_floor) {
				spw[nf] = ev[i - 1] / sw[nf];
				spr[nf] = re[i - 1] / sw[nf];
			}
			nf++;
		}
	}
	if (err)
		goto out;
	res->evict = bench_median_f64(ev, o->reps);
	res->restore = bench_median_f64(re, o->reps);
	res->floor_w = nf ? bench_median_f64(fw, nf) : -1;
	res->floor_r = nf ? bench_median_f64(fr, nf) : -1;
	res->ratio_w = nf ? bench_median_f64(pw, nf) : -1;
	res->ratio_r = nf ? bench_median_f64(pr, nf) : -1;
	res->stream = -1;
	if (nf && o->tier == VKV_TIER_DRAM && !gpu_floor) {
		res->stream = bench_median_f64(sw, nf);
		res->sratio_w = bench_median_f64(spw, nf);
		res->sratio_r = bench_median_f64(spr, nf);
	}
	snprintf(res->floor, sizeof(res->floor), "%s",
		 o->tier == VKV_TIER_NVME ? (nf ? "fio" : "none")
		 : gpu_floor ? "cuMemcpy" : "memcpy");
out:
#ifdef VKV_HAVE_KERNELS
	cuda_floor_close(&cf);
#endif
	free(buf);
	free(fa);
	free(fb);
	if (r)
		vkv_region_destroy(r);
	vkv_ctx_destroy(ctx);
	return err;
}

static void report(const struct tier_opts *o, const struct tier_result *res)
{
	const char *tier = o->tier == VKV_TIER_DRAM ? "dram" : "nvme";
	bool floor = res->floor_w > 0;

	if (o->json) {
		struct bench_json j;

		bench_json_begin(&j, stdout);
		bench_json_str(&j, "bench", "tier");
		bench_json_str(&j, "tier", tier);
		bench_json_str(&j, "backend", res->backend);
		bench_json_str(&j, "tier_copy", getenv("VKV_TIER_COPY") ? getenv("VKV_TIER_COPY") : "auto");
		bench_json_str(&j, "dir", o->dir);
		bench_json_u64(&j, "size", res->size);
		bench_json_u64(&j, "bs", o->bs);
		bench_json_u64(&j, "qd", o->qd);
		bench_json_u64(&j, "reps", o->reps);
		bench_json_f64(&j, "evict_gbps", res->evict);
		bench_json_f64(&j, "restore_gbps", res->restore);
		bench_json_str(&j, "floor", res->floor);
		if (o->tier == VKV_TIER_NVME && floor)
			bench_json_str(&j, "floor_buffers", res->fio_huge ? "hugetlb" : "4k");
		bench_json_f64(&j, "floor_write_gbps", floor ? res->floor_w : 0.0 / 0.0);
		bench_json_f64(&j, "floor_read_gbps", floor ? res->floor_r : 0.0 / 0.0);
		bench_json_f64(&j, "ratio_write", floor ? res->ratio_w : 0.0 / 0.0);
		bench_json_f64(&j, "ratio_read", floor ? res->ratio_r : 0.0 / 0.0);
		/* The headline: the weaker direction. */
		bench_json_f64(&j, "ratio", floor ? fmin(res->ratio_w, res->ratio_r)
						  : 0.0 / 0.0);
		if (res->stream > 0) {
			/* the stricter floor: the copy vkv itself uses, raw */
			bench_json_f64(&j, "stream_gbps", res->stream);
			bench_json_f64(&j, "ratio_write_stream", res->sratio_w);
			bench_json_f64(&j, "ratio_read_stream", res->sratio_r);
		}
		bench_json_str(&j, "ratio_def", "median over rounds of (round GB/s / floor GB/s measured right after it)");
		/* every round, so that a noisy disk shows as what it is */
		bench_json_array(&j, "rounds");
		for (uint64_t i = 0; i < o->reps; i++) {
			bench_json_object(&j, NULL);
			bench_json_f64(&j, "evict_gbps", res->round_ev[i]);
			bench_json_f64(&j, "restore_gbps", res->round_re[i]);
			bench_json_f64(&j, "floor_write_gbps", res->round_fw[i]);
			bench_json_f64(&j, "floor_read_gbps", res->round_fr[i]);
			bench_json_close(&j);
		}
		bench_json_close(&j);
		bench_json_bool(&j, "verified", res->verified);
		bench_json_end(&j);
		return;
	}
	printf("tier %s (%s backend): %.2f GB/s evict, %.2f GB/s restore (%llu MiB, bs %llu KiB, qd %llu)\n",
	       tier, res->backend, res->evict, res->restore, (unsigned long long)(res->size >> 20),
	       (unsigned long long)(o->bs >> 10), (unsigned long long)o->qd);
	if (floor)
		printf("floor %s%s: %.2f GB/s write, %.2f GB/s read; ratio %.2f write, %.2f read\n",
		       res->floor, o->tier != VKV_TIER_NVME ? ""
		       : res->fio_huge ? " (hugetlb buffers)" : " (4 KiB-page buffers)",
		       res->floor_w, res->floor_r, res->ratio_w, res->ratio_r);
	if (res->stream > 0)
		printf("streaming copy (what vkv uses): %.2f GB/s; ratio %.2f write, %.2f read\n",
		       res->stream, res->sratio_w, res->sratio_r);
	if (!floor)
		printf("floor: none (fio not installed, or no cuda floor); no ratio\n");
	printf("data %s\n", res->verified ? "verified bit for bit" : "MISMATCH");
}

int bench_tier(int argc, char **argv)
{
	struct tier_opts o;
	struct tier_result res = { 0 };
	int err = parse_tier_opts(argc, argv, &o);

	if (err)
		return err < 0 ? BENCH_OK : err;
	err = measure(&o, &res);
	if (err) {
		fprintf(stderr, "vkvbench tier: %s\n", vkv_strerror(err));
		return err == -ENODEV ? BENCH_SKIP : BENCH_FAIL;
	}
	report(&o, &res);
	return res.verified ? BENCH_OK : BENCH_FAIL;
}
