// SPDX-License-Identifier: MIT
/*
 * fakecuda.h - the control interface of the CUDA driver test double.
 *
 * The double (libcuda.so.1 built from fakecuda.c) is configured through the
 * environment (see the top of fakecuda.c). Tests that need to change the
 * configuration inside one process, or to check that nothing leaked, look
 * these functions up at run time, so that they never link the double and
 * run unchanged against a real driver (where the lookups fail and the
 * checks are skipped):
 *
 *	void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
 *	vkv_fakecuda_stats_fn st = (vkv_fakecuda_stats_fn)dlsym(h,
 *						"vkv_fakecuda_stats");
 */
#ifndef VKV_FAKECUDA_H
#define VKV_FAKECUDA_H

#include <stdint.h>

/* What the double holds right now; everything non-zero after a test that
 * cleaned up is a leak. */
struct vkv_fakecuda_stats {
	uint64_t allocs;         /* live cuMemCreate handles */
	uint64_t alloc_bytes;    /* their bytes (device memory in use) */
	uint64_t reservations;   /* live cuMemAddressReserve ranges */
	uint64_t reserved_bytes;
	uint64_t mappings;       /* live cuMemMap mappings */
	uint64_t mapped_bytes;
	uint64_t streams;        /* live streams */
	uint64_t events;         /* live events */
	uint64_t host_allocs;    /* live cuMemAllocHost blocks */
	uint64_t host_registered;/* live cuMemHostRegister ranges */
	uint64_t modules;        /* loaded modules */
	uint64_t primary_refs;   /* primary context references, all devices */
	uint64_t faults_fired;   /* injected failures returned so far */
};

/* Fill *st. */
void vkv_fakecuda_stats(struct vkv_fakecuda_stats *st);
typedef void (*vkv_fakecuda_stats_fn)(struct vkv_fakecuda_stats *st);

/*
 * Read the environment again: the fault plan (VKV_FAKECUDA_FAIL) and its
 * call counters always; granularity, memory size and device count only
 * while no allocation, reservation or mapping is live (-16, EBUSY,
 * otherwise, with the fault plan still reloaded). Returns 0.
 */
int vkv_fakecuda_reload(void);
typedef int (*vkv_fakecuda_reload_fn)(void);

/* Calls of the driver function `name` since start or the last reload. */
unsigned long vkv_fakecuda_calls(const char *name);
typedef unsigned long (*vkv_fakecuda_calls_fn)(const char *name);

/*
 * Kernels. cuModuleGetFunction(&f, mod, "name") finds the host function
 * `vkv_fakecuda_kernel_name` exported by the test program (or any loaded
 * library); cuLaunchKernel then calls it once, synchronously, with the
 * launch geometry and the kernel's parameter array, so a test can provide
 * a CPU version of a kernel and exercise the launcher around it.
 */
struct vkv_fakecuda_launch {
	unsigned grid[3];
	unsigned block[3];
	unsigned shared_bytes;
	void **params;
};
typedef void (*vkv_fakecuda_kernel_fn)(const struct vkv_fakecuda_launch *l);
#define VKV_FAKECUDA_KERNEL_PREFIX "vkv_fakecuda_kernel_"

#endif /* VKV_FAKECUDA_H */
