// SPDX-License-Identifier: MIT
/*
 * probe.c - `vkvstat probe`: what this machine offers vkv, and how fast.
 *
 * It measures rather than guesses: per GPU the VMM granularity, the time
 * to map one page (cuMemMap + cuMemSetAccess, the cost vkv pays on every
 * commit) and pinned host<->device copy bandwidth; the host's NUMA nodes;
 * O_DIRECT read and write bandwidth through io_uring with registered
 * buffers in the directory given (where the NVMe tier's files would go);
 * whether /dev/vkv is there. Every part that cannot run here (no driver,
 * no GPU, io_uring forbidden, a file system without O_DIRECT) says why and
 * the probe goes on, so it completes on any machine. Progress goes to
 * stderr, the result to stdout (text or --json).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <liburing.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "vkvstat.h"
#ifdef VKV_HAVE_CUDA
#include "cuda_driver.h"
#endif

#define PROBE_MAX_GPUS 16
#define PROBE_MAX_NODES 64
#define PROBE_MAP_PAGES 32       /* pages mapped one by one for the latency */
#define PROBE_COPY_ROUNDS 8      /* copies of the mapped range per direction */
#define PROBE_IO_BLOCK (1u << 20)
#define PROBE_IO_DEPTH 16

struct probe_gpu {
	int index;
	char name[128];
	uint64_t total;
	uint64_t granularity;
	double map_us;          /* per page, map + set access */
	double unmap_us;
	double h2d_gbps, d2h_gbps;
	char err[160];          /* what failed, "" when all was measured */
};

struct probe_node {
	int id;
	uint64_t total, free;
	uint64_t huge2m_total, huge2m_free; /* reserved 2 MiB huge pages */
	char cpus[64];                      /* cpulist */
};

struct probe_io {
	bool ran;
	bool o_direct;
	uint64_t bytes;
	double write_gbps, read_gbps;
	char err[160];
};

struct probe {
	char kernel[128];
	char thp[32];           /* transparent huge pages mode: always, madvise, never */
	uint64_t memlock;       /* RLIMIT_MEMLOCK, UINT64_MAX = unlimited */
	char gpu_err[200];
	int ngpus;
	struct probe_gpu gpu[PROBE_MAX_GPUS];
	int nnodes;
	struct probe_node node[PROBE_MAX_NODES];
	struct probe_io io;
	struct vkvstat_kmod kmod;
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void progress(const char *fmt, ...)
{
	va_list ap;

	fputs("vkvstat probe: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* ------------------------------------------------------------------ NUMA */

/* First line of a small sysfs file, without its newline; "" if none. */
static void read_line(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "re");

	buf[0] = 0;
	if (!f)
		return;
	if (!fgets(buf, (int)len, f))
		buf[0] = 0;
	buf[strcspn(buf, "\n")] = 0;
	fclose(f);
}

static uint64_t read_u64(const char *path)
{
	char buf[32];

	read_line(path, buf, sizeof(buf));
	return strtoull(buf, NULL, 10);
}

/* CPUs and 2 MiB huge pages of a node (what the DRAM tier and the kmod
 * backend can pin there). */
static void node_extras(const char *name, struct probe_node *n)
{
	char path[512];

	snprintf(path, sizeof(path), "/sys/devices/system/node/%.64s/cpulist", name);
	read_line(path, n->cpus, sizeof(n->cpus));
	snprintf(path, sizeof(path), "/sys/devices/system/node/%.64s/hugepages/"
		 "hugepages-2048kB/nr_hugepages", name);
	n->huge2m_total = read_u64(path) << 21;
	snprintf(path, sizeof(path), "/sys/devices/system/node/%.64s/hugepages/"
		 "hugepages-2048kB/free_hugepages", name);
	n->huge2m_free = read_u64(path) << 21;
}

/* Transparent huge pages mode (the bracketed word) and the memlock limit:
 * the host backend's 2 MiB pages and the pinned DRAM tier depend on them. */
static void probe_host(struct probe *p)
{
	char buf[128], *a, *b;
	struct rlimit rl;

	read_line("/sys/kernel/mm/transparent_hugepage/enabled", buf, sizeof(buf));
	a = strchr(buf, '[');
	b = a ? strchr(a, ']') : NULL;
	if (a && b)
		snprintf(p->thp, sizeof(p->thp), "%.*s", (int)(b - a - 1), a + 1);
	else
		snprintf(p->thp, sizeof(p->thp), "unknown");
	p->memlock = 0;
	if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0)
		p->memlock = rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : rl.rlim_cur;
}

static void probe_numa(struct probe *p)
{
	DIR *d = opendir("/sys/devices/system/node");
	struct dirent *de;

	progress("host NUMA nodes");
	if (!d)
		return;
	while ((de = readdir(d)) != NULL && p->nnodes < PROBE_MAX_NODES) {
		struct probe_node *n = &p->node[p->nnodes];
		char path[300], line[256];
		unsigned long long kb;
		char tail;
		FILE *f;

		if (sscanf(de->d_name, "node%d%c", &n->id, &tail) != 1)
			continue;
		snprintf(path, sizeof(path), "/sys/devices/system/node/%s/meminfo",
			 de->d_name);
		f = fopen(path, "re");
		if (!f)
			continue;
		n->total = n->free = 0;
		while (fgets(line, sizeof(line), f)) {
			char *c = strchr(line, ':');

			if (!c || sscanf(c + 1, "%llu", &kb) != 1)
				continue;
			if (strstr(line, "MemTotal"))
				n->total = kb * 1024;
			else if (strstr(line, "MemFree"))
				n->free = kb * 1024;
		}
		fclose(f);
		node_extras(de->d_name, n);
		p->nnodes++;
	}
	closedir(d);
}

/* ------------------------------------------------------------------- GPU */

#ifdef VKV_HAVE_CUDA
/* Map PROBE_MAP_PAGES pages one at a time, then copy through them. */
static int gpu_measure(const struct vkv_cu *cu, CUdevice dev, struct probe_gpu *g)
{
	CUmemAllocationProp prop = { 0 };
	CUmemAccessDesc acc = { 0 };
	CUmemGenericAllocationHandle h[PROBE_MAP_PAGES];
	CUdeviceptr va = 0;
	void *host = NULL;
	size_t gran = 0, span;
	int created = 0, mapped = 0, err = 0;
	double t0;

	prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
	prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
	prop.location.id = dev;
	acc.location = prop.location;
	acc.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
	if ((err = VKV_CU_CALL(cu, cuMemGetAllocationGranularity, &gran, &prop,
			       CU_MEM_ALLOC_GRANULARITY_RECOMMENDED)))
		return err;
	g->granularity = gran;
	span = gran * PROBE_MAP_PAGES;
	if ((err = VKV_CU_CALL(cu, cuMemAddressReserve, &va, span, 0, 0, 0)))
		return err;
	for (; created < PROBE_MAP_PAGES; created++)
		if ((err = VKV_CU_CALL(cu, cuMemCreate, &h[created], gran, &prop, 0)))
			goto out_release;
	t0 = now_s();
	for (; mapped < PROBE_MAP_PAGES; mapped++) {
		CUdeviceptr a = va + (CUdeviceptr)mapped * gran;

		if ((err = VKV_CU_CALL(cu, cuMemMap, a, gran, 0, h[mapped], 0)))
			goto out_unmap;
		if ((err = VKV_CU_CALL(cu, cuMemSetAccess, a, gran, &acc, 1))) {
			mapped++;
			goto out_unmap;
		}
	}
	g->map_us = (now_s() - t0) * 1e6 / PROBE_MAP_PAGES;
	if ((err = VKV_CU_CALL(cu, cuMemAllocHost, &host, span)))
		goto out_unmap;
	memset(host, 1, span);
	t0 = now_s();
	for (int r = 0; r < PROBE_COPY_ROUNDS && !err; r++)
		err = VKV_CU_CALL(cu, cuMemcpyHtoD, va, host, span);
	if (!err && !(err = VKV_CU_CALL(cu, cuCtxSynchronize)))
		g->h2d_gbps = (double)span * PROBE_COPY_ROUNDS / (now_s() - t0) / 1e9;
	t0 = now_s();
	for (int r = 0; r < PROBE_COPY_ROUNDS && !err; r++)
		err = VKV_CU_CALL(cu, cuMemcpyDtoH, host, va, span);
	if (!err && !(err = VKV_CU_CALL(cu, cuCtxSynchronize)))
		g->d2h_gbps = (double)span * PROBE_COPY_ROUNDS / (now_s() - t0) / 1e9;
	cu->cuMemFreeHost(host);
out_unmap:
	t0 = now_s();
	for (int i = 0; i < mapped; i++)
		cu->cuMemUnmap(va + (CUdeviceptr)i * gran, gran);
	if (mapped == PROBE_MAP_PAGES)
		g->unmap_us = (now_s() - t0) * 1e6 / PROBE_MAP_PAGES;
out_release:
	for (int i = 0; i < created; i++)
		cu->cuMemRelease(h[i]);
	cu->cuMemAddressFree(va, span);
	return err;
}

static void probe_gpus(struct probe *p)
{
	const struct vkv_cu *cu;
	int n = 0, err;

	progress("GPUs (CUDA driver)");
	err = vkv__cu_load(&cu);
	if (err) {
		snprintf(p->gpu_err, sizeof(p->gpu_err), "%s", vkv_last_error());
		return;
	}
	if (cu->cuDeviceGetCount(&n) != CUDA_SUCCESS)
		n = 0;
	for (int i = 0; i < n && p->ngpus < PROBE_MAX_GPUS; i++) {
		struct probe_gpu *g = &p->gpu[p->ngpus++];
		CUcontext ctx = NULL;
		CUdevice dev;
		size_t total = 0;

		g->index = i;
		if ((err = VKV_CU_CALL(cu, cuDeviceGet, &dev, i)) ||
		    (err = VKV_CU_CALL(cu, cuDeviceGetName, g->name,
				       (int)sizeof(g->name), dev))) {
			snprintf(g->err, sizeof(g->err), "%s", vkv_last_error());
			continue;
		}
		if (!VKV_CU_CALL(cu, cuDeviceTotalMem, &total, dev))
			g->total = total;
		progress("GPU %d (%s): mapping %d pages, copying", i, g->name,
			 PROBE_MAP_PAGES);
		if ((err = VKV_CU_CALL(cu, cuDevicePrimaryCtxRetain, &ctx, dev)) ||
		    (err = VKV_CU_CALL(cu, cuCtxSetCurrent, ctx)) ||
		    (err = gpu_measure(cu, dev, g)))
			snprintf(g->err, sizeof(g->err), "%s", vkv_last_error());
		if (ctx) {
			cu->cuCtxSetCurrent(NULL);
			cu->cuDevicePrimaryCtxRelease(dev);
		}
	}
}
#else
static void probe_gpus(struct probe *p)
{
	snprintf(p->gpu_err, sizeof(p->gpu_err),
		 "vkvstat was built without cuda.h");
}
#endif

/* ------------------------------------------------------------- io_uring */

/* Write or read the whole file, PROBE_IO_DEPTH blocks in flight. */
static int uring_pass(struct io_uring *ring, int fd, void **bufs,
		      uint64_t bytes, bool write)
{
	uint64_t next = 0, done = 0;
	unsigned inflight = 0, free_idx[PROBE_IO_DEPTH], nfree = PROBE_IO_DEPTH;

	for (unsigned i = 0; i < PROBE_IO_DEPTH; i++)
		free_idx[i] = i;
	while (done < bytes) {
		struct io_uring_cqe *cqe;
		int ret;

		while (nfree && next < bytes) {
			struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
			unsigned b = free_idx[--nfree];

			if (!sqe)
				return -EBUSY;
			if (write)
				io_uring_prep_write_fixed(sqe, fd, bufs[b],
							  PROBE_IO_BLOCK, next, (int)b);
			else
				io_uring_prep_read_fixed(sqe, fd, bufs[b],
							 PROBE_IO_BLOCK, next, (int)b);
			io_uring_sqe_set_data64(sqe, b);
			next += PROBE_IO_BLOCK;
			inflight++;
		}
		ret = io_uring_submit_and_wait(ring, 1);
		if (ret < 0)
			return ret;
		while (io_uring_peek_cqe(ring, &cqe) == 0) {
			if (cqe->res < 0)
				return cqe->res;
			if (cqe->res != (int)PROBE_IO_BLOCK)
				return -EIO;
			free_idx[nfree++] = (unsigned)io_uring_cqe_get_data64(cqe);
			io_uring_cqe_seen(ring, cqe);
			inflight--;
			done += PROBE_IO_BLOCK;
		}
	}
	return inflight ? -EIO : 0;
}

static int open_test_file(const char *dir, bool *o_direct)
{
	char path[4096];
	int fd;

	snprintf(path, sizeof(path), "%s/vkvstat-probe.%d", dir, getpid());
	*o_direct = true;
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_DIRECT | O_CLOEXEC, 0600);
	if (fd < 0 && errno == EINVAL) { /* tmpfs and friends */
		*o_direct = false;
		fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	}
	if (fd < 0)
		return -errno;
	unlink(path);
	return fd;
}

static void probe_io(struct probe *p, const char *dir, uint64_t bytes)
{
	struct probe_io *r = &p->io;
	struct iovec iov[PROBE_IO_DEPTH];
	void *bufs[PROBE_IO_DEPTH] = { 0 };
	struct io_uring ring;
	int fd, err;
	double t0;

	bytes -= bytes % PROBE_IO_BLOCK;
	r->bytes = bytes;
	progress("io_uring %s write and read in %s", vkvstat_size((char[16]){ 0 }, 16, bytes),
		 dir);
	fd = open_test_file(dir, &r->o_direct);
	if (fd < 0) {
		snprintf(r->err, sizeof(r->err), "cannot create a file in %s: %s",
			 dir, strerror(-fd));
		return;
	}
	err = io_uring_queue_init(PROBE_IO_DEPTH * 2, &ring, 0);
	if (err < 0) {
		snprintf(r->err, sizeof(r->err), "io_uring unavailable: %s",
			 strerror(-err));
		goto out_close;
	}
	if (fallocate(fd, 0, 0, (off_t)bytes) < 0 && errno != EOPNOTSUPP) {
		snprintf(r->err, sizeof(r->err), "fallocate: %s", strerror(errno));
		goto out_ring;
	}
	for (unsigned i = 0; i < PROBE_IO_DEPTH; i++) {
		if (posix_memalign(&bufs[i], 4096, PROBE_IO_BLOCK)) {
			snprintf(r->err, sizeof(r->err), "out of memory");
			goto out_bufs;
		}
		memset(bufs[i], (int)i + 1, PROBE_IO_BLOCK);
		iov[i].iov_base = bufs[i];
		iov[i].iov_len = PROBE_IO_BLOCK;
	}
	err = io_uring_register_buffers(&ring, iov, PROBE_IO_DEPTH);
	if (err < 0) {
		snprintf(r->err, sizeof(r->err), "io_uring_register_buffers: %s",
			 strerror(-err));
		goto out_bufs;
	}
	t0 = now_s();
	err = uring_pass(&ring, fd, bufs, bytes, true);
	if (!err && fdatasync(fd) < 0)
		err = -errno;
	if (err) {
		snprintf(r->err, sizeof(r->err), "write: %s", strerror(-err));
		goto out_bufs;
	}
	r->write_gbps = (double)bytes / (now_s() - t0) / 1e9;
	progress("write %.2f GB/s%s", r->write_gbps,
		 r->o_direct ? "" : " (buffered: no O_DIRECT here)");
	t0 = now_s();
	err = uring_pass(&ring, fd, bufs, bytes, false);
	if (err) {
		snprintf(r->err, sizeof(r->err), "read: %s", strerror(-err));
		goto out_bufs;
	}
	r->read_gbps = (double)bytes / (now_s() - t0) / 1e9;
	progress("read %.2f GB/s", r->read_gbps);
	r->ran = true;
out_bufs:
	for (unsigned i = 0; i < PROBE_IO_DEPTH; i++)
		free(bufs[i]);
out_ring:
	io_uring_queue_exit(&ring);
out_close:
	close(fd);
}

/* --------------------------------------------------------------- output */

static void print_text(const struct probe *p, const char *dir)
{
	char a[16], b[16];

	printf("kernel      %s\n", p->kernel);
	printf("/dev/vkv    %s (vkv.ko %s)\n", p->kmod.dev_present ? "present" : "absent",
	       p->kmod.loaded ? "loaded" : "not loaded");
	printf("host        THP %s, memlock limit %s\n", p->thp,
	       p->memlock == UINT64_MAX ? "unlimited"
					: vkvstat_size(a, sizeof(a), p->memlock));
	for (int i = 0; i < p->nnodes; i++) {
		const struct probe_node *n = &p->node[i];
		char c[16], d[16];

		printf("numa node%-2d %s total, %s free, cpus %s, 2M huge pages "
		       "%s (%s free)\n", n->id, vkvstat_size(a, sizeof(a), n->total),
		       vkvstat_size(b, sizeof(b), n->free), n->cpus,
		       vkvstat_size(c, sizeof(c), n->huge2m_total),
		       vkvstat_size(d, sizeof(d), n->huge2m_free));
	}
	if (!p->ngpus)
		printf("gpus        none (%s)\n", p->gpu_err[0] ? p->gpu_err : "no device");
	for (int i = 0; i < p->ngpus; i++) {
		const struct probe_gpu *g = &p->gpu[i];

		printf("gpu %-7d %s, %s, VMM granularity %s\n", g->index, g->name,
		       vkvstat_size(a, sizeof(a), g->total),
		       vkvstat_size(b, sizeof(b), g->granularity));
		if (g->err[0])
			printf("            not measured: %s\n", g->err);
		else
			printf("            map %.1f us/page, unmap %.1f us/page, "
			       "pinned H2D %.1f GB/s, D2H %.1f GB/s\n",
			       g->map_us, g->unmap_us, g->h2d_gbps, g->d2h_gbps);
	}
	if (p->io.ran)
		printf("io_uring    %s in %s: write %.2f GB/s, read %.2f GB/s%s\n",
		       vkvstat_size(a, sizeof(a), p->io.bytes), dir, p->io.write_gbps,
		       p->io.read_gbps, p->io.o_direct ? " (O_DIRECT)" : " (buffered)");
	else
		printf("io_uring    not measured: %s\n", p->io.err);
}

static void jnum(const char *k, double v, bool comma)
{
	printf("\"%s\":%.6g%s", k, v, comma ? "," : "");
}

static void print_json(const struct probe *p, const char *dir)
{
	printf("{\"schema_version\":%d,\"tool\":\"vkvstat probe\",\"kernel\":",
	       VKVSTAT_JSON_SCHEMA);
	vkvstat_json_str(stdout, p->kernel);
	printf(",\"thp\":");
	vkvstat_json_str(stdout, p->thp);
	if (p->memlock == UINT64_MAX)
		printf(",\"memlock_bytes\":null");
	else
		printf(",\"memlock_bytes\":%" PRIu64, p->memlock);
	printf(",\"dev_vkv\":%s,\"kmod_loaded\":%s,\"numa_nodes\":[",
	       p->kmod.dev_present ? "true" : "false",
	       p->kmod.loaded ? "true" : "false");
	for (int i = 0; i < p->nnodes; i++) {
		const struct probe_node *n = &p->node[i];

		printf("%s{\"node\":%d,\"total_bytes\":%" PRIu64 ",\"free_bytes\":%" PRIu64
		       ",\"hugepages_2m_bytes\":%" PRIu64 ",\"hugepages_2m_free_bytes\":%" PRIu64
		       ",\"cpus\":", i ? "," : "", n->id, n->total, n->free,
		       n->huge2m_total, n->huge2m_free);
		vkvstat_json_str(stdout, n->cpus);
		putchar('}');
	}
	printf("],\"gpus\":[");
	for (int i = 0; i < p->ngpus; i++) {
		const struct probe_gpu *g = &p->gpu[i];

		printf("%s{\"index\":%d,\"name\":", i ? "," : "", g->index);
		vkvstat_json_str(stdout, g->name);
		printf(",\"memory_bytes\":%" PRIu64 ",\"vmm_granularity\":%" PRIu64 ",",
		       g->total, g->granularity);
		jnum("map_us_per_page", g->map_us, true);
		jnum("unmap_us_per_page", g->unmap_us, true);
		jnum("pinned_h2d_gbps", g->h2d_gbps, true);
		jnum("pinned_d2h_gbps", g->d2h_gbps, true);
		printf("\"error\":");
		vkvstat_json_str(stdout, g->err);
		putchar('}');
	}
	printf("],\"gpu_error\":");
	vkvstat_json_str(stdout, p->gpu_err);
	printf(",\"io\":{\"dir\":");
	vkvstat_json_str(stdout, dir);
	printf(",\"measured\":%s,\"o_direct\":%s,\"bytes\":%" PRIu64 ",",
	       p->io.ran ? "true" : "false", p->io.o_direct ? "true" : "false",
	       p->io.bytes);
	jnum("write_gbps", p->io.write_gbps, true);
	jnum("read_gbps", p->io.read_gbps, true);
	printf("\"error\":");
	vkvstat_json_str(stdout, p->io.err);
	printf("}}\n");
}

int vkvstat_probe(const struct vkvstat_probe_opts *o)
{
	struct probe *p = calloc(1, sizeof(*p));
	struct utsname u;
	int rc = VKVSTAT_EXIT_OK;

	if (!p)
		return VKVSTAT_EXIT_ERROR;
	if (uname(&u) == 0)
		snprintf(p->kernel, sizeof(p->kernel), "%.40s %.60s %.20s", u.sysname,
			 u.release, u.machine);
	vkvstat_kmod_read(&p->kmod);
	probe_host(p);
	probe_numa(p);
	probe_gpus(p);
	probe_io(p, o->dir, o->file_bytes);
	progress("done");
	if (o->json)
		print_json(p, o->dir);
	else
		print_text(p, o->dir);
	if (fflush(stdout) || ferror(stdout))
		rc = VKVSTAT_EXIT_ERROR;
	free(p);
	return rc;
}
