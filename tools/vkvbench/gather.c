// SPDX-License-Identifier: MIT
/*
 * gather.c - `vkvbench gather`: moving a slot's pages between device memory
 * and pinned host memory, one kernel launch for every range
 * (kernels/gather.cu) against one cuMemcpyAsync per range, and against the
 * floor: a single cuMemcpyAsync of the same number of bytes (the pinned
 * PCIe/C2C peak). Both directions: gather (device -> host, eviction) and
 * scatter (host -> device, restore).
 *
 * The ranges stand for a slot's pages in every layer, K and V; they are
 * taken from the device buffer in a shuffled order, so neither side sees
 * one long run. Small ranges (--range-size 64K and below) are where one
 * launch should win; at 2 MiB pages the copy engines are already efficient.
 * Without a GPU the CPU reference (a memcpy per range) is measured against
 * one memcpy, the per-range column is null, and the report says device
 * "cpu".
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attn_ref.h"
#include "kernels.h"
#include "vkvbench.h"
#ifdef VKV_HAVE_KERNELS
#include "cuda_driver.h"
#endif

enum gather_device { DEV_AUTO, DEV_CPU, DEV_GPU };

struct gather_opts {
	uint64_t range_size, ranges, reps;
	enum gather_device device;
	bool json;
};

/* ns per whole transfer, medians; [0] gather, [1] scatter */
struct gather_result {
	char device[128];
	double kernel[2], per_range[2], floor[2];
};

/* ranges[i]: chunk perm[i] of `dev` <-> chunk i of `host` */
static void make_ranges(struct vkv_kern_range *r, const struct gather_opts *o,
			uint64_t dev, uint64_t host, bool to_host)
{
	struct bench_rng rng;
	uint64_t *perm = malloc(o->ranges * sizeof(*perm));

	bench_rng_seed(&rng, 7);
	for (uint64_t i = 0; i < o->ranges; i++)
		perm[i] = i;
	for (uint64_t i = o->ranges - 1; i > 0; i--) {
		uint64_t j = bench_rng_u64(&rng) % (i + 1), t = perm[i];
		perm[i] = perm[j];
		perm[j] = t;
	}
	for (uint64_t i = 0; i < o->ranges; i++) {
		uint64_t d = dev + perm[i] * o->range_size;
		uint64_t h = host + i * o->range_size;
		r[i] = (struct vkv_kern_range){ to_host ? h : d, to_host ? d : h,
						o->range_size };
	}
	free(perm);
}

static int run_cpu(const struct gather_opts *o, struct vkv_kern_range *r,
		   struct gather_result *res)
{
	uint64_t bytes = o->ranges * o->range_size;
	uint8_t *dev = malloc(bytes), *host = malloc(bytes);
	double *t = calloc(o->reps * 2, sizeof(double));
	int err = -ENOMEM;

	if (!dev || !host || !t)
		goto out;
	memset(dev, 1, bytes);
	memset(host, 2, bytes);
	snprintf(res->device, sizeof(res->device), "cpu");
	for (int dir = 0; dir < 2; dir++) {
		make_ranges(r, o, (uintptr_t)dev, (uintptr_t)host, dir == 0);
		for (uint64_t i = 0; i < o->reps; i++) {
			uint64_t t0 = bench_now_ns();
			err = vkv__copy_ranges_ref(r, (uint32_t)o->ranges);
			t[i] = (double)(bench_now_ns() - t0);
			t0 = bench_now_ns();
			memcpy(dir ? dev : host, dir ? host : dev, bytes);
			t[o->reps + i] = (double)(bench_now_ns() - t0);
			if (err)
				goto out;
		}
		res->kernel[dir] = bench_median_f64(t, o->reps);
		res->per_range[dir] = NAN; /* no copy engine to compare */
		res->floor[dir] = bench_median_f64(t + o->reps, o->reps);
	}
out:
	free(dev);
	free(host);
	free(t);
	return err;
}

#ifdef VKV_HAVE_KERNELS
enum { WAY_KERNEL, WAY_PER_RANGE, WAY_FLOOR };

/* One transfer by `way`, timed with events. The floor copies `bytes` from
 * floor_src to floor_dst in one call. */
static int time_way(struct vkv_kern *k, const struct vkv_cu *cu, CUevent e[2],
		    int way, const struct vkv_kern_range *r, uint64_t n,
		    const struct vkv_kern_range *floor, double *ns)
{
	float ms = 0;
	int err = VKV_CU_CALL(cu, cuEventRecord, e[0], NULL);

	if (way == WAY_KERNEL && !err)
		err = vkv__kern_copy_ranges(k, NULL, r, (uint32_t)n);
	for (uint64_t i = 0; way == WAY_PER_RANGE && i < n && !err; i++)
		err = VKV_CU_CALL(cu, cuMemcpyAsync, r[i].dst, r[i].src, r[i].bytes,
				  NULL);
	if (way == WAY_FLOOR && !err)
		err = VKV_CU_CALL(cu, cuMemcpyAsync, floor->dst, floor->src,
				  floor->bytes, NULL);
	if (!err)
		err = VKV_CU_CALL(cu, cuEventRecord, e[1], NULL);
	if (!err)
		err = VKV_CU_CALL(cu, cuEventSynchronize, e[1]);
	if (!err)
		err = VKV_CU_CALL(cu, cuEventElapsedTime, &ms, e[0], e[1]);
	*ns = (double)ms * 1e6;
	return err;
}

static int run_gpu(struct vkv_kern *k, const struct gather_opts *o,
		   struct vkv_kern_range *r, struct gather_result *res)
{
	const struct vkv_cu *cu = vkv__cu();
	uint64_t bytes = o->ranges * o->range_size;
	struct vkv_kern_buf dev = { 0 };
	CUevent e[2] = { NULL, NULL };
	double *t = calloc(o->reps * 3, sizeof(double));
	void *host = NULL;
	int err = t ? 0 : -ENOMEM;

	if (!err)
		err = vkv__kern_buf_alloc(k, bytes, &dev);
	if (!err)
		err = VKV_CU_CALL(cu, cuMemAllocHost, &host, bytes);
	if (!err)
		err = VKV_CU_CALL(cu, cuEventCreate, &e[0], CU_EVENT_DEFAULT);
	if (!err)
		err = VKV_CU_CALL(cu, cuEventCreate, &e[1], CU_EVENT_DEFAULT);
	if (!err)
		err = VKV_CU_CALL(cu, cuMemsetD8, dev.addr, 1, bytes);
	snprintf(res->device, sizeof(res->device), "%s", vkv__kern_device_name(k));
	for (int dir = 0; dir < 2 && !err; dir++) {
		uint64_t hbase = (uintptr_t)host;
		struct vkv_kern_range floor = { dir == 0 ? hbase : dev.addr,
						dir == 0 ? dev.addr : hbase, bytes };
		make_ranges(r, o, dev.addr, hbase, dir == 0);
		for (uint64_t i = 0; i <= o->reps && !err; i++) {
			double ns[3];
			for (int way = 0; way < 3 && !err; way++) {
				int w = (way + (int)i) % 3; /* rotate the order */
				err = time_way(k, cu, e, w, r, o->ranges, &floor, &ns[w]);
			}
			if (i == 0)
				continue; /* warm-up */
			for (int w = 0; w < 3; w++)
				t[w * o->reps + i - 1] = ns[w];
		}
		if (err)
			break;
		res->kernel[dir] = bench_median_f64(t, o->reps);
		res->per_range[dir] = bench_median_f64(t + o->reps, o->reps);
		res->floor[dir] = bench_median_f64(t + 2 * o->reps, o->reps);
	}
	if (e[0])
		cu->cuEventDestroy(e[0]);
	if (e[1])
		cu->cuEventDestroy(e[1]);
	if (host)
		cu->cuMemFreeHost(host);
	vkv__kern_buf_free(k, &dev);
	free(t);
	return err;
}
#endif

static void usage(FILE *f)
{
	fprintf(f,
		"usage: vkvbench gather [--range-size SIZE] [--ranges N] [--reps N]\n"
		"                       [--device auto|cpu|gpu] [--json]\n"
		"A slot's pages between device memory and pinned host memory: one\n"
		"kernel launch for all ranges vs one cuMemcpyAsync per range vs one\n"
		"copy of the same bytes (floor). CPU reference without a GPU;\n"
		"--device gpu exits 77 when no GPU is usable.\n");
}

static int parse(int argc, char **argv, struct gather_opts *o)
{
	static const struct option lopts[] = {
		{ "range-size", required_argument, NULL, 's' },
		{ "ranges", required_argument, NULL, 'n' },
		{ "reps", required_argument, NULL, 'r' },
		{ "device", required_argument, NULL, 'D' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	*o = (struct gather_opts){ .range_size = 2u << 20, .ranges = 64, .reps = 9 };
	bench_getopt_reset();
	while ((c = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
		switch (c) {
		case 's':
			if (bench_parse_size(optarg, &o->range_size) ||
			    o->range_size < 16 || o->range_size > (1ull << 30))
				return bench_usage_error("gather", "bad --range-size '%s'",
							 optarg);
			break;
		case 'n':
			if (bench_parse_u64(optarg, 1, 1u << 20, &o->ranges))
				return bench_usage_error("gather", "bad --ranges '%s'", optarg);
			break;
		case 'r':
			if (bench_parse_u64(optarg, 1, 1000, &o->reps))
				return bench_usage_error("gather", "bad --reps '%s'", optarg);
			break;
		case 'D':
			if (!strcmp(optarg, "auto"))
				o->device = DEV_AUTO;
			else if (!strcmp(optarg, "cpu"))
				o->device = DEV_CPU;
			else if (!strcmp(optarg, "gpu"))
				o->device = DEV_GPU;
			else
				return bench_usage_error("gather", "bad --device '%s'",
							 optarg);
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
		return bench_usage_error("gather", "unexpected argument '%s'",
					 argv[optind]);
	if (o->ranges * o->range_size > (16ull << 30))
		return bench_usage_error("gather", "more than 16 GiB in all");
	return 0;
}

static void report(const struct gather_opts *o, const struct gather_result *r)
{
	static const char *const dir[2] = { "gather", "scatter" };
	double bytes = (double)(o->ranges * o->range_size);
	struct bench_json j;

	if (!o->json) {
		printf("gather: %llu ranges of %llu bytes, %s\n",
		       (unsigned long long)o->ranges,
		       (unsigned long long)o->range_size, r->device);
		for (int d = 0; d < 2; d++)
			printf("  %-7s kernel %7.2f GB/s  per-range copies %7.2f GB/s  "
			       "floor %7.2f GB/s  kernel/floor %.3f\n",
			       dir[d], bytes / r->kernel[d], bytes / r->per_range[d],
			       bytes / r->floor[d], r->floor[d] / r->kernel[d]);
		return;
	}
	bench_json_begin(&j, stdout);
	bench_json_str(&j, "bench", "gather");
	bench_json_str(&j, "device", r->device);
	bench_json_u64(&j, "ranges", o->ranges);
	bench_json_u64(&j, "range_size", o->range_size);
	bench_json_u64(&j, "reps", o->reps);
	bench_json_str(&j, "unit", "GB/s");
	for (int d = 0; d < 2; d++) {
		bench_json_object(&j, dir[d]);
		bench_json_f64(&j, "kernel", bytes / r->kernel[d]);
		bench_json_f64(&j, "per_range", bytes / r->per_range[d]);
		bench_json_f64(&j, "floor", bytes / r->floor[d]);
		bench_json_f64(&j, "kernel_over_per_range",
			       r->per_range[d] / r->kernel[d]);
		bench_json_close(&j);
	}
	/* headline: the kernel's worse direction against the floor */
	double g = r->floor[0] / r->kernel[0], s = r->floor[1] / r->kernel[1];
	bench_json_f64(&j, "ratio", g < s ? g : s);
	bench_json_end(&j);
}

int bench_gather(int argc, char **argv)
{
	struct gather_opts o;
	struct gather_result res = { 0 };
	struct vkv_kern_range *r;
	int err = parse(argc, argv, &o);

	if (err)
		return err < 0 ? BENCH_OK : err;
	r = calloc(o.ranges, sizeof(*r));
	if (!r)
		return BENCH_FAIL;
	const char *why = "built without the CUDA kernels (nvcc not found)";
	bool gpu = false;
#ifdef VKV_HAVE_KERNELS
	struct vkv_kern *k = NULL;
	const char *dev = getenv("VKV_DEVICE");
	if (o.device != DEV_CPU) {
		err = vkv__kern_open(dev ? atoi(dev) : 0, &k);
		gpu = !err;
		why = err ? vkv_strerror(err) : "";
	}
#endif
	if (o.device == DEV_GPU && !gpu) {
		fprintf(stderr, "vkvbench gather: no GPU kernels here: %s\n", why);
		free(r);
		return BENCH_SKIP;
	}
#ifdef VKV_HAVE_KERNELS
	err = gpu ? run_gpu(k, &o, r, &res) : run_cpu(&o, r, &res);
	vkv__kern_close(k);
#else
	err = run_cpu(&o, r, &res);
#endif
	free(r);
	if (err) {
		fprintf(stderr, "vkvbench gather: %s\n", vkv_strerror(err));
		return BENCH_FAIL;
	}
	report(&o, &res);
	return BENCH_OK;
}
