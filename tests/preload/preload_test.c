// SPDX-License-Identifier: MIT
/*
 * preload_test.c - tests of libvkv_preload.so, one program, one test per
 * run: `preload_test <name>` (tests/preload/run.sh gives each its
 * environment, LD_PRELOAD included).
 *
 * The program is an ordinary CUDA driver API program: linked against
 * libcuda.so.1, unaware of the shim. Against the CUDA driver test double
 * (tests/cudadouble/) it also asks the double what reached the driver
 * (vkv_fakecuda_alloc_stats, looked up at run time), so that "served by the
 * shim" and "passed through" are both checked; against a real driver those
 * checks are skipped. What the shim did is read from the process's stats
 * segment ($VKV_STATS_DIR/vkv-stats.<pid>).
 *
 * Exit status: 0 pass, 1 fail (with the reason on stderr), 77 skip.
 */
#include <cuda.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fakecuda.h"
#include "fakecuda_alloc.h"
#include "vkv_stats.h"

#define MiB (1ULL << 20)

static const char *test_name = "?";

static void fail(int line, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
static void fail(int line, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "preload_test %s: line %d: ", test_name, line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static void fail_check(int line, const char *cond, const char *fmt, ...)
	__attribute__((format(printf, 3, 4), noreturn));
static void fail_check(int line, const char *cond, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "preload_test %s: line %d: check failed: %s ", test_name,
		line, cond);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

#define CHECK(cond, ...)                                                      \
	do {                                                                  \
		if (!(cond))                                                  \
			fail_check(__LINE__, #cond, " " __VA_ARGS__);         \
	} while (0)

#define CU(call)                                                              \
	do {                                                                  \
		CUresult r_ = (call);                                         \
		if (r_ != CUDA_SUCCESS)                                       \
			fail(__LINE__, "%s: CUDA error %d", #call, (int)r_);  \
	} while (0)

static void skip(const char *why)
{
	fprintf(stderr, "preload_test %s: skipped: %s\n", test_name, why);
	exit(77);
}

/* ------------------------------------------------------------- helpers */

static CUcontext ctx;

static void setup(void)
{
	CUdevice dev;
	CUresult r = cuInit(0);

	if (r == CUDA_ERROR_NO_DEVICE)
		skip("no CUDA device");
	CU(r);
	CU(cuDeviceGet(&dev, 0));
	CU(cuDevicePrimaryCtxRetain(&ctx, dev));
	CU(cuCtxSetCurrent(ctx));
}

/* A function of the test double, or NULL on a real driver. */
static void *fake(const char *name)
{
	void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);

	return h ? dlsym(h, name) : NULL;
}

/* What reached the double's classic allocation calls; false on a real
 * driver. */
static bool driver_allocs(struct vkv_fakecuda_alloc_stats *st)
{
	vkv_fakecuda_alloc_stats_fn fn;
	void *p = fake("vkv_fakecuda_alloc_stats");

	if (!p)
		return false;
	memcpy(&fn, &p, sizeof(p));
	fn(st);
	return true;
}

static void set_busy(int busy)
{
	vkv_fakecuda_set_busy_fn fn;
	void *p = fake("vkv_fakecuda_set_busy");

	if (!p)
		skip("needs the CUDA test double (busy streams)");
	memcpy(&fn, &p, sizeof(p));
	fn(busy);
}

static bool stats_path(char *buf, size_t len)
{
	const char *dir = getenv("VKV_STATS_DIR");

	snprintf(buf, len, "%s/vkv-stats.%d", dir && *dir ? dir : "/dev/shm",
		 (int)getpid());
	return access(buf, R_OK) == 0;
}

/* The shim's counters in this process's stats segment; zeros before the
 * shim served anything (it publishes from its first arena on). */
static struct vkv_stats_preload shim_stats(void)
{
	struct vkv_stats_segment seg;
	char path[512];
	int fd;

	if (!stats_path(path, sizeof(path))) {
		memset(&seg, 0, sizeof(seg));
		return seg.preload;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	CHECK(fd >= 0);
	for (;;) {
		uint64_t seq;

		CHECK(pread(fd, &seg, sizeof(seg), 0) == (ssize_t)sizeof(seg));
		seq = seg.seq;
		if (seq & 1)
			continue;
		CHECK(pread(fd, &seg, sizeof(seg), 0) == (ssize_t)sizeof(seg));
		if (seg.seq == seq)
			break;
	}
	close(fd);
	CHECK(seg.magic == VKV_STATS_MAGIC);
	return seg.preload;
}

static void *shim_sym(const char *name)
{
	return dlsym(RTLD_DEFAULT, name);
}

static void fill(CUdeviceptr p, size_t n, unsigned seed)
{
	unsigned char *h = malloc(n), *back = malloc(n);

	CHECK(h && back);
	for (size_t i = 0; i < n; i++)
		h[i] = (unsigned char)(i * 31 + seed);
	CU(cuMemcpyHtoD(p, h, n));
	CU(cuMemcpyDtoH(back, p, n));
	CHECK(!memcmp(h, back, n), "(data of %zu bytes at 0x%llx)", n,
	      (unsigned long long)p);
	free(h);
	free(back);
}

/* ------------------------------------------------------------------ tests */

/* Plain driver API calls, served from the arena. */
static void t_driver(void)
{
	static const size_t sizes[] = { 1, 100, 4096, 65536, MiB, MiB + 1,
					3 * MiB, 64 * MiB };
	enum { N = sizeof(sizes) / sizeof(sizes[0]) };
	struct vkv_fakecuda_alloc_stats fst;
	struct vkv_stats_preload st;
	CUdeviceptr p[N], pp, base;
	size_t pitch, size, sum = 0, fr, total;

	setup();
	for (int i = 0; i < N; i++) {
		CU(cuMemAlloc(&p[i], sizes[i]));
		CHECK(p[i] % 256 == 0);
		fill(p[i], sizes[i], (unsigned)i);
		sum += sizes[i];
	}
	for (int i = 0; i < N; i++)
		for (int j = 0; j < N; j++)
			CHECK(i == j || p[i] + sizes[i] <= p[j] || p[j] + sizes[j] <= p[i],
			      "(blocks %d and %d overlap)", i, j);
	st = shim_stats();
	CHECK(st.allocs == N && st.in_use_bytes == sum, "(%llu allocs, %llu bytes)",
	      (unsigned long long)st.allocs, (unsigned long long)st.in_use_bytes);
	CHECK(st.mapped_bytes >= sum && st.reserved_bytes > st.mapped_bytes);
	CHECK(st.chunks > 0 && st.peak_mapped >= st.mapped_bytes);
	CU(cuMemGetAddressRange(&base, &size, p[5] + 7));
	CHECK(base == p[5] && size == sizes[5]);
	CU(cuMemGetAddressRange(&base, &size, p[7]));
	CHECK(base == p[7] && size == sizes[7]);
	CU(cuMemAllocPitch(&pp, &pitch, 100, 10, 4));
	CHECK(pitch >= 100 && pitch % 256 == 0);
	CU(cuMemGetAddressRange(&base, &size, pp + pitch));
	CHECK(base == pp && size == pitch * 10);
	{
		/* not into pp: a failing call clears its out-pointer */
		CUdeviceptr bad;
		size_t bad_pitch;

		CHECK(cuMemAllocPitch(&bad, &bad_pitch, 100, 10, 3) != CUDA_SUCCESS);
	}
	CU(cuMemGetInfo(&fr, &total));
	CHECK(fr <= total && total > 0);
	if (driver_allocs(&fst))
		CHECK(fst.alloc_calls == 0 && fst.free_calls == 0,
		      "(nothing may reach the driver: %llu)",
		      (unsigned long long)fst.alloc_calls);
	for (int i = 0; i < N; i++)
		CU(cuMemFree(p[i]));
	CU(cuMemFree(pp));
	st = shim_stats();
	CHECK(st.in_use_bytes == 0 && st.frees == N + 1 && st.allocs == N + 1,
	      "(%llu bytes in use, %llu frees, %llu allocs; want 0, %d, %d; "
	      "%llu pending, %llu passed through)",
	      (unsigned long long)st.in_use_bytes, (unsigned long long)st.frees,
	      (unsigned long long)st.allocs, N + 1, N + 1,
	      (unsigned long long)st.pending_bytes,
	      (unsigned long long)st.passthrough);
	CHECK(st.peak_in_use >= sum);
	if (driver_allocs(&fst))
		CHECK(fst.free_calls == 0 && fst.live == 0);
}

/* VKV_PRELOAD=0: everything reaches the driver, nothing is published. */
static void t_disabled(void)
{
	struct vkv_fakecuda_alloc_stats fst;
	CUdeviceptr p;
	char path[512];
	void *h = dlopen("libcuda.so.1", RTLD_NOW);

	setup();
	CU(cuMemAlloc(&p, MiB));
	fill(p, MiB, 1);
	if (!driver_allocs(&fst))
		skip("needs the CUDA test double");
	CHECK(fst.alloc_calls == 1 && fst.live == 1);
	CU(cuMemFree(p));
	driver_allocs(&fst);
	CHECK(fst.live == 0 && fst.free_calls == 1);
	CHECK(!stats_path(path, sizeof(path)), "(%s exists)", path);
	CHECK(h && dlsym(h, "cuMemAlloc_v2") != shim_sym("cuMemAlloc_v2"),
	      "(dlsym must not swap when disabled)");
}

typedef CUresult (*getproc_fn)(const char *, void **, int, cuuint64_t,
			       CUdriverProcAddressQueryResult *);
typedef CUresult (*alloc_fn)(CUdeviceptr *, size_t);
typedef CUresult (*free_fn)(CUdeviceptr);
typedef CUresult (*alloc_async_fn)(CUdeviceptr *, size_t, CUstream);
typedef CUresult (*free_async_fn)(CUdeviceptr, CUstream);
typedef CUresult (*init_fn)(unsigned);

static void *proc(getproc_fn gp, const char *name, int version,
		  cuuint64_t flags)
{
	CUdriverProcAddressQueryResult st = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
	void *p = NULL;

	CU(gp(name, &p, version, flags, &st));
	CHECK(st == CU_GET_PROC_ADDRESS_SUCCESS && p, "(%s)", name);
	return p;
}

/* What the CUDA runtime does: dlopen the driver, dlsym cuGetProcAddress_v2
 * and resolve everything through it, for its version and stream mode. */
static void t_getproc(void)
{
	static const int versions[] = { 11020, 12000, 12040, CUDA_VERSION };
	static const cuuint64_t flags[] = {
		CU_GET_PROC_ADDRESS_DEFAULT, CU_GET_PROC_ADDRESS_LEGACY_STREAM,
		CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM
	};
	struct vkv_fakecuda_alloc_stats fst;
	CUdriverProcAddressQueryResult qs;
	void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL), *p, *raw;
	getproc_fn gp;
	alloc_fn alloc;
	free_fn mfree;
	alloc_async_fn alloc_ptsz;
	free_async_fn free_ptsz;
	init_fn init;
	CUdeviceptr d;

	CHECK(h);
	p = dlsym(h, "cuGetProcAddress_v2");
	CHECK(p && p == shim_sym("cuGetProcAddress_v2"), "(dlsym gave the driver's)");
	memcpy(&gp, &p, sizeof(p));
	CHECK(proc(gp, "cuGetProcAddress", CUDA_VERSION, 0) == p);
	CHECK(proc(gp, "cuGetProcAddress", 11030, 0) == shim_sym("cuGetProcAddress"));
	raw = dlsym(h, "cuInit");
	CHECK(proc(gp, "cuInit", CUDA_VERSION, 0) == raw, "(unserved calls untouched)");
	for (size_t v = 0; v < sizeof(versions) / sizeof(versions[0]); v++) {
		for (size_t f = 0; f < sizeof(flags) / sizeof(flags[0]); f++) {
			bool ptds = flags[f] == CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM;

			CHECK(proc(gp, "cuMemAlloc", versions[v], flags[f]) ==
			      shim_sym("cuMemAlloc_v2"));
			CHECK(proc(gp, "cuMemFree", versions[v], flags[f]) ==
			      shim_sym("cuMemFree_v2"));
			CHECK(proc(gp, "cuMemGetInfo", versions[v], flags[f]) ==
			      shim_sym("cuMemGetInfo_v2"));
			CHECK(proc(gp, "cuMemAllocAsync", versions[v], flags[f]) ==
			      shim_sym(ptds ? "cuMemAllocAsync_ptsz" : "cuMemAllocAsync"));
			CHECK(proc(gp, "cuMemFreeAsync", versions[v], flags[f]) ==
			      shim_sym(ptds ? "cuMemFreeAsync_ptsz" : "cuMemFreeAsync"));
		}
	}
	/* An ABI we do not serve (32-bit cuMemAlloc): the driver's answer
	 * goes back as it is. */
	p = (void *)1;
	CHECK(gp("cuMemAlloc", &p, 3000, 0, &qs) == CUDA_ERROR_NOT_FOUND || p != shim_sym("cuMemAlloc_v2"));

	init = (init_fn)proc(gp, "cuInit", CUDA_VERSION, 0);
	CU(init(0));
	setup();
	alloc = (alloc_fn)proc(gp, "cuMemAlloc", CUDA_VERSION, 0);
	mfree = (free_fn)proc(gp, "cuMemFree", CUDA_VERSION, 0);
	alloc_ptsz = (alloc_async_fn)proc(gp, "cuMemAllocAsync", CUDA_VERSION,
					  CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM);
	free_ptsz = (free_async_fn)proc(gp, "cuMemFreeAsync", CUDA_VERSION,
					CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM);
	CU(alloc(&d, 5 * MiB));
	fill(d, 5 * MiB, 3);
	CU(mfree(d));
	CU(alloc_ptsz(&d, 2 * MiB, NULL));
	fill(d, 2 * MiB, 4);
	CU(free_ptsz(d, NULL));
	CHECK(shim_stats().allocs == 2 && shim_stats().frees == 2);
	if (driver_allocs(&fst))
		CHECK(fst.alloc_calls == 0, "(nothing may reach the driver)");
}

/* dlsym on a dlopen'ed libcuda handle, both glibc versions of dlsym,
 * RTLD_NEXT and RTLD_DEFAULT. */
static void t_dlsym(void)
{
	static const char *const served[] = {
		"cuMemAlloc_v2", "cuMemAllocPitch_v2", "cuMemFree_v2",
		"cuMemAllocAsync", "cuMemAllocAsync_ptsz", "cuMemFreeAsync",
		"cuMemFreeAsync_ptsz", "cuMemGetInfo_v2", "cuMemGetAddressRange_v2",
		"cuGetProcAddress_v2", "cuGetProcAddress",
	};
	void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL), *p, *shim;
	void *(*old_dlsym)(void *, const char *);
	CUdeviceptr d;

	CHECK(h);
	shim = dlopen("libvkv_preload.so", RTLD_NOW | RTLD_NOLOAD);
	CHECK(shim, "(the shim is not loaded: run under LD_PRELOAD)");
	for (size_t i = 0; i < sizeof(served) / sizeof(served[0]); i++) {
		p = dlsym(h, served[i]);
		CHECK(p && p == dlsym(shim, served[i]), "(%s)", served[i]);
	}
	CHECK(dlsym(h, "cuInit") && dlsym(h, "cuInit") != dlsym(shim, "cuInit"));
	CHECK(!dlsym(h, "vkv_no_such_symbol") && dlerror() != NULL);
	p = dlvsym(RTLD_DEFAULT, "dlsym", "GLIBC_2.2.5");
	CHECK(p, "(no dlsym@GLIBC_2.2.5)");
	memcpy(&old_dlsym, &p, sizeof(p));
	CHECK(old_dlsym(h, "cuMemAlloc_v2") == dlsym(shim, "cuMemAlloc_v2"));
	CHECK(old_dlsym(h, "cuMemsetD8_v2") == dlsym(h, "cuMemsetD8_v2"));
	/* RTLD_NEXT from the program: the next object is the shim. */
	CHECK(dlsym(RTLD_NEXT, "cuMemAlloc_v2") == dlsym(shim, "cuMemAlloc_v2"));
	CHECK(dlsym(RTLD_NEXT, "malloc") == dlsym(RTLD_DEFAULT, "malloc"));
	CHECK(dlsym(RTLD_DEFAULT, "cuMemGetInfo_v2") == dlsym(shim, "cuMemGetInfo_v2"));
	setup();
	CU(((alloc_fn)dlsym(h, "cuMemAlloc_v2"))(&d, MiB));
	CU(((free_fn)dlsym(h, "cuMemFree_v2"))(d));
	CHECK(shim_stats().allocs == 1);
}

/* VKV_PRELOAD_LIMIT=64M VKV_PRELOAD_IDLE=0 */
static void t_limit(void)
{
	CUdeviceptr p[64], q;
	size_t fr, total;
	CUresult r = CUDA_SUCCESS;
	int n = 0;

	setup();
	while (n < 10 && (r = cuMemAlloc(&p[n], 16 * MiB)) == CUDA_SUCCESS)
		n++;
	CHECK(r == CUDA_ERROR_OUT_OF_MEMORY && n == 4, "(result %d after %d)",
	      (int)r, n);
	CHECK(cuMemAllocAsync(&q, MiB, NULL) == CUDA_ERROR_OUT_OF_MEMORY);
	CHECK(cuMemAllocPitch(&q, &fr, 4096, 512, 4) == CUDA_ERROR_OUT_OF_MEMORY);
	CU(cuMemGetInfo(&fr, &total));
	CHECK(total == 64 * MiB && fr == 0, "(free %zu total %zu)", fr, total);
	CHECK(shim_stats().ooms == 3 && shim_stats().limit_bytes == 64 * MiB);
	CHECK(shim_stats().mapped_bytes <= 64 * MiB);
	CU(cuMemFree(p[0]));
	CU(cuMemGetInfo(&fr, &total));
	CHECK(fr == 16 * MiB, "(free %zu)", fr);
	CU(cuMemAlloc(&p[0], 16 * MiB));
	for (int i = 0; i < n; i++)
		CU(cuMemFree(p[i]));
	CU(cuMemGetInfo(&fr, &total));
	CHECK(fr == 64 * MiB);
	/* Small blocks pack: 62 x 1 MiB + 31 x 64 KiB fill 64 MiB to 2 MiB. */
	for (n = 0; n < 62; n++)
		CU(cuMemAlloc(&p[n], MiB));
	CHECK(shim_stats().mapped_bytes <= 64 * MiB);
	CHECK(cuMemAlloc(&q, 4 * MiB) == CUDA_ERROR_OUT_OF_MEMORY);
	if (!fake("vkv_fakecuda_set_busy")) {
		for (n = 0; n < 62; n++)
			CU(cuMemFree(p[n]));
		return; /* a real driver: no way to hold streams busy */
	}
	/* Stream-ordered frees still pending when the limit is hit are
	 * waited for, not reported as out of memory. */
	set_busy(1);
	for (n = 0; n < 62; n++)
		CU(cuMemFreeAsync(p[n], NULL));
	CHECK(shim_stats().pending_bytes == 62 * MiB);
	CU(cuMemAlloc(&q, 32 * MiB));
	set_busy(0);
	CU(cuMemFree(q));
	CHECK(shim_stats().in_use_bytes == 0 && shim_stats().pending_bytes == 0);
}

struct worker {
	int id;
	unsigned seed;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	CUdeviceptr live[16];
	size_t size[16];
	unsigned char val[16], b[2];
	int n = 0;
	CUstream s;

	CU(cuCtxSetCurrent(ctx));
	CU(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
	for (int it = 0; it < 3000; it++) {
		unsigned r = (unsigned)rand_r(&w->seed);

		if (n < 16 && (n == 0 || r % 3)) {
			size_t sz = (r >> 4) % 8 == 0 ? 1 + (r >> 8) % (4 * MiB)
						      : 1 + (r >> 8) % 8192;

			if (r & 1)
				CU(cuMemAlloc(&live[n], sz));
			else
				CU(cuMemAllocAsync(&live[n], sz, s));
			val[n] = (unsigned char)r;
			size[n] = sz;
			CU(cuMemsetD8(live[n], val[n], sz));
			n++;
		} else {
			int i = (int)(r % (unsigned)n);

			CU(cuMemcpyDtoH(&b[0], live[i], 1));
			CU(cuMemcpyDtoH(&b[1], live[i] + size[i] - 1, 1));
			CHECK(b[0] == val[i] && b[1] == val[i], "(thread %d)", w->id);
			if (r & 2)
				CU(cuMemFree(live[i]));
			else
				CU(cuMemFreeAsync(live[i], s));
			live[i] = live[--n];
			size[i] = size[n];
			val[i] = val[n];
		}
	}
	while (n--)
		CU(cuMemFree(live[n]));
	CU(cuStreamSynchronize(s));
	CU(cuStreamDestroy(s));
	return NULL;
}

static void t_threads(void)
{
	enum { T = 8 };
	struct worker w[T];
	pthread_t th[T];
	struct vkv_stats_preload st;
	struct vkv_fakecuda_alloc_stats fst;

	setup();
	for (int i = 0; i < T; i++) {
		w[i] = (struct worker){ i, 1234u + (unsigned)i };
		CHECK(pthread_create(&th[i], NULL, worker_main, &w[i]) == 0);
	}
	for (int i = 0; i < T; i++)
		pthread_join(th[i], NULL);
	st = shim_stats();
	CHECK(st.in_use_bytes == 0 && st.allocs == st.frees && st.allocs > 0,
	      "(in use %llu, %llu allocs, %llu frees)",
	      (unsigned long long)st.in_use_bytes, (unsigned long long)st.allocs,
	      (unsigned long long)st.frees);
	if (driver_allocs(&fst))
		CHECK(fst.alloc_calls == 0);
}

static volatile int hammer_stop;

static void *hammer_main(void *arg)
{
	(void)arg;
	CU(cuCtxSetCurrent(ctx));
	while (!hammer_stop) {
		CUdeviceptr p;

		CU(cuMemAlloc(&p, 3 * MiB));
		CU(cuMemFree(p));
	}
	return NULL;
}

static int wait_child(pid_t pid)
{
	int status = 0;

	CHECK(waitpid(pid, &status, 0) == pid);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/*
 * fork while another thread allocates: the child must not deadlock on the
 * shim's locks and must not take the parent's arena for its own. The
 * child only makes calls that stay clear of the test double's own lock
 * (the double, unlike the shim, is not fork-safe); a quiet fork then runs
 * a whole cycle in the child.
 */
static void t_fork(void)
{
	struct vkv_fakecuda_alloc_stats fst;
	CUdeviceptr mine, range;
	pthread_t th;
	size_t size;
	bool double_driver;

	setup();
	/* A real driver is unusable in a forked child: there the child only
	 * checks the shim's own state. */
	double_driver = driver_allocs(&fst);
	CU(cuMemAlloc(&mine, MiB));
	CHECK(pthread_create(&th, NULL, hammer_main, NULL) == 0);
	for (int i = 0; i < 20; i++) {
		pid_t pid = fork();

		CHECK(pid >= 0);
		if (pid == 0) {
			void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);

			/* Not ours any more: goes to the driver. */
			if (double_driver && cuMemFree(mine) == CUDA_SUCCESS)
				_exit(2);
			if (!h || dlsym(h, "cuMemAlloc_v2") != shim_sym("cuMemAlloc_v2"))
				_exit(3);
			_exit(0);
		}
		CHECK(wait_child(pid) == 0, "(child %d)", i);
	}
	hammer_stop = 1;
	pthread_join(th, NULL);
	for (int i = 0; double_driver && i < 3; i++) {
		pid_t pid = fork();

		CHECK(pid >= 0);
		if (pid == 0) {
			CUdeviceptr p;

			test_name = "fork (child)";
			CU(cuMemAlloc(&p, 5 * MiB));
			fill(p, 5 * MiB, 9);
			CU(cuMemFree(p));
			CHECK(shim_stats().allocs == 1, "(child counts its own)");
			_exit(0);
		}
		CHECK(wait_child(pid) == 0);
	}
	CU(cuMemGetAddressRange(&range, &size, mine));
	CHECK(range == mine && size == MiB);
	fill(mine, MiB, 5);
	CU(cuMemFree(mine));
	CHECK(shim_stats().in_use_bytes == 0);
}

/* Pointers the shim does not own go to the driver untouched. */
static void t_foreign(void)
{
	struct vkv_fakecuda_alloc_stats fst;
	CUdeviceptr m, p;
	void *host;

	setup();
	if (!driver_allocs(&fst))
		skip("needs the CUDA test double");
	CU(cuMemAllocManaged(&m, MiB, CU_MEM_ATTACH_GLOBAL));
	driver_allocs(&fst);
	CHECK(fst.managed == 1 && shim_stats().allocs == 0);
	CU(cuMemFree(m));
	driver_allocs(&fst);
	CHECK(fst.managed == 0 && fst.free_calls == 1 && fst.bad_frees == 0);
	CU(cuMemAlloc(&p, MiB));
	CHECK(cuMemFree(p + 512) == CUDA_ERROR_INVALID_VALUE);
	CU(cuMemFree(p));
	CHECK(cuMemFree(p) == CUDA_ERROR_INVALID_VALUE, "(double free)");
	CHECK(cuMemFree(0x7e0000000000ULL) == CUDA_ERROR_INVALID_VALUE);
	CHECK(cuMemFreeAsync(0x7e0000000000ULL, NULL) == CUDA_ERROR_INVALID_VALUE);
	driver_allocs(&fst);
	CHECK(fst.bad_frees == 4, "(%llu)", (unsigned long long)fst.bad_frees);
	CU(cuMemAllocHost(&host, 4096));
	memset(host, 1, 4096);
	CU(cuMemFreeHost(host));
	CHECK(shim_stats().allocs == 1 && shim_stats().passthrough == 5, "(%llu allocs, %llu passed)",
	      (unsigned long long)shim_stats().allocs,
	      (unsigned long long)shim_stats().passthrough);
}

/* Allocations while a stream is being captured belong to the graph: the
 * driver's. */
static void t_capture(void)
{
	struct vkv_fakecuda_alloc_stats fst;
	CUdeviceptr p, q;
	CUstream s;
	CUgraph g;

	setup();
	if (!driver_allocs(&fst))
		skip("needs the CUDA test double");
	CU(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
	CU(cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL));
	CU(cuMemAllocAsync(&p, MiB, s));
	CU(cuStreamEndCapture(s, &g));
	CU(cuGraphDestroy(g));
	driver_allocs(&fst);
	CHECK(fst.captured == 1 && fst.async == 1);
	CHECK(shim_stats().allocs == 0);
	CU(cuMemFreeAsync(p, s));
	driver_allocs(&fst);
	CHECK(fst.async == 0);
	CU(cuMemAllocAsync(&q, MiB, s));
	CHECK(shim_stats().allocs == 1);
	CU(cuMemFreeAsync(q, s));
	CU(cuStreamDestroy(s));
}

static alloc_async_fn ptsz_alloc;
static CUdeviceptr ptsz_got;

/* Another thread's per-thread default stream is another stream. */
static void *ptsz_other_thread(void *arg)
{
	(void)arg;
	CU(cuCtxSetCurrent(ctx));
	CU(ptsz_alloc(&ptsz_got, 3 * MiB, NULL));
	return NULL;
}

/* Stream-ordered reuse: a block freed on a stream is reused at once on
 * that stream, by others only once the stream's work is done. */
static void t_async(void)
{
	CUdeviceptr p1, p2, p3, p4, p5, p6, p7, p8;
	alloc_async_fn alloc_ptsz;
	free_async_fn free_ptsz;
	CUstream s1, s2;

	setup();
	CU(cuStreamCreate(&s1, CU_STREAM_NON_BLOCKING));
	CU(cuStreamCreate(&s2, CU_STREAM_NON_BLOCKING));
	set_busy(1);
	CU(cuMemAllocAsync(&p1, MiB, s1));
	CU(cuMemFreeAsync(p1, s1));
	CU(cuMemAllocAsync(&p2, MiB, s1));
	CHECK(p2 == p1, "(same stream reuses at once)");
	CU(cuMemFreeAsync(p2, s1));
	CHECK(shim_stats().pending_bytes == MiB);
	CU(cuMemAllocAsync(&p3, MiB, s2));
	CHECK(p3 != p1, "(another stream must wait)");
	CU(cuMemAlloc(&p4, MiB));
	CHECK(p4 != p1);
	set_busy(0);
	CU(cuMemAllocAsync(&p5, MiB, s2));
	CHECK(p5 == p1, "(done: reusable by anyone)");
	CHECK(shim_stats().pending_bytes == 0);
	CU(cuMemFreeAsync(p3, s2));
	CU(cuMemFreeAsync(p5, s2));
	CU(cuMemFree(p4));
	/* A pending block is cut for a smaller request on its stream; the
	 * rest stays pending. */
	CU(cuMemAllocAsync(&p6, 8 * MiB, s1)); /* reaps p3, p5 */
	set_busy(1);
	CU(cuMemFreeAsync(p6, s1));
	CU(cuMemAllocAsync(&p7, 2 * MiB, s1));
	CU(cuMemAllocAsync(&p8, 2 * MiB, s1));
	CHECK(p7 == p6 && p8 == p6 + 2 * MiB, "(cut from the pending block)");
	CHECK(shim_stats().pending_bytes == 4 * MiB);
	set_busy(0);
	CU(cuMemFreeAsync(p7, s1));
	CU(cuMemFreeAsync(p8, s1));
	/* The per-thread default stream flavour, as the runtime built with
	 * --default-stream per-thread calls it. */
	alloc_ptsz = (alloc_async_fn)shim_sym("cuMemAllocAsync_ptsz");
	free_ptsz = (free_async_fn)shim_sym("cuMemFreeAsync_ptsz");
	CU(alloc_ptsz(&p1, 3 * MiB, NULL));
	fill(p1, 3 * MiB, 7);
	set_busy(1);
	CU(free_ptsz(p1, NULL));
	CU(alloc_ptsz(&p2, 3 * MiB, NULL));
	CHECK(p2 == p1, "(this thread's stream: at once)");
	CU(free_ptsz(p2, NULL));
	{
		pthread_t th;

		ptsz_alloc = alloc_ptsz;
		CHECK(pthread_create(&th, NULL, ptsz_other_thread, NULL) == 0);
		pthread_join(th, NULL);
		CHECK(ptsz_got != p1, "(another thread's per-thread stream must wait)");
	}
	set_busy(0);
	CU(free_ptsz(ptsz_got, NULL));
	CU(cuStreamSynchronize(s1));
	CHECK(shim_stats().in_use_bytes == 0);
	CU(cuStreamDestroy(s1));
	CU(cuStreamDestroy(s2));
}

/* VKV_FAKECUDA_DEVICES=2 VKV_FAKECUDA_GRANULARITY=64K: one arena per
 * device, chunks of the device's granularity, frees from any device. */
static void t_devices(void)
{
	CUcontext ctx1;
	CUdeviceptr p0, p1, base;
	size_t size;
	struct vkv_stats_preload st;
	int n = 0;

	setup();
	CU(cuDeviceGetCount(&n));
	if (n < 2)
		skip("one device only");
	CU(cuMemAlloc(&p0, 100 << 10));
	CU(cuDevicePrimaryCtxRetain(&ctx1, 1));
	CU(cuCtxSetCurrent(ctx1));
	CU(cuMemAlloc(&p1, 100 << 10));
	fill(p1, 100 << 10, 2);
	CU(cuMemGetAddressRange(&base, &size, p0 + 1));
	CHECK(base == p0 && size == 100 << 10);
	st = shim_stats();
	CHECK(st.allocs == 2);
	if (fake("vkv_fakecuda_stats")) /* the double's 8 GiB, 64 KiB granules */
		CHECK(st.chunks == 4 && st.reserved_bytes == 2 * 2 * (8ULL << 30),
		      "(%llu chunks, %llu bytes reserved)", (unsigned long long)st.chunks,
		      (unsigned long long)st.reserved_bytes);
	CU(cuMemFree(p0)); /* device 0's block, device 1 current */
	CU(cuCtxSetCurrent(ctx));
	CU(cuMemFree(p1));
	CHECK(shim_stats().in_use_bytes == 0);
	CU(cuDevicePrimaryCtxRelease(1));
}

typedef void (*fake_stats_fn)(struct vkv_fakecuda_stats *);
typedef int (*fake_reload_fn)(void);

/* VKV_FAKECUDA_FAIL=cuMemCreate:3:every VKV_PRELOAD_IDLE=64M: a chunk the
 * driver refuses is CUDA_ERROR_OUT_OF_MEMORY, with every chunk of the
 * failed allocation given back; mapped memory is still served. */
static void t_faults(void)
{
	struct vkv_fakecuda_stats fs;
	fake_stats_fn stats = (fake_stats_fn)fake("vkv_fakecuda_stats");
	fake_reload_fn reload = (fake_reload_fn)fake("vkv_fakecuda_reload");
	CUdeviceptr a, b, c;

	if (!stats || !reload)
		skip("needs the CUDA test double");
	setup();
	CU(cuMemAlloc(&a, 2 * MiB));
	CU(cuMemAlloc(&b, 2 * MiB));
	CHECK(cuMemAlloc(&c, 6 * MiB) == CUDA_ERROR_OUT_OF_MEMORY);
	stats(&fs);
	CHECK(fs.allocs == 2 && fs.mappings == 2, "(%llu allocations, %llu mappings left)",
	      (unsigned long long)fs.allocs, (unsigned long long)fs.mappings);
	CHECK(shim_stats().chunks == 2 && shim_stats().ooms == 1);
	CU(cuMemFree(a));
	CU(cuMemAlloc(&a, 3 * MiB / 2)); /* the idle chunk, no cuMemCreate */
	fill(a, 3 * MiB / 2, 1);
	unsetenv("VKV_FAKECUDA_FAIL");
	reload();
	CU(cuMemAlloc(&c, 6 * MiB));
	fill(c, 6 * MiB, 2);
	CU(cuMemFree(a));
	CU(cuMemFree(b));
	CU(cuMemFree(c));
}

static const struct {
	const char *name;
	void (*fn)(void);
} tests[] = {
	{ "driver", t_driver },   { "disabled", t_disabled },
	{ "getproc", t_getproc }, { "dlsym", t_dlsym },
	{ "limit", t_limit },     { "threads", t_threads },
	{ "fork", t_fork },       { "foreign", t_foreign },
	{ "capture", t_capture }, { "async", t_async },
	{ "devices", t_devices }, { "faults", t_faults },
};

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: preload_test <test>\n");
		return 2;
	}
	for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {
		if (!strcmp(argv[1], tests[i].name)) {
			test_name = tests[i].name;
			tests[i].fn();
			return 0;
		}
	}
	fprintf(stderr, "preload_test: unknown test %s\n", argv[1]);
	return 2;
}
