// SPDX-License-Identifier: MIT
/*
 * nvml.c - GPU memory as the driver sees it, through NVML.
 *
 * vkv's own counters say what vkv committed; NVML says what the GPU has
 * and what every process holds on it, vkv or not. libnvidia-ml is opened
 * with dlopen at run time (it ships with the driver, not with CUDA), so
 * vkvstat builds and runs where there is no NVIDIA driver at all. Only
 * the few entry points used here are declared, with the ABI of their
 * versioned names.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "vkvstat.h"

typedef int nvml_ret;
typedef void *nvml_dev;

struct nvml_memory { /* nvmlMemory_t */
	unsigned long long total, free, used;
};

struct nvml_proc_v3 { /* nvmlProcessInfo_v3_t (= _v2_t) */
	unsigned int pid;
	unsigned long long used;
	unsigned int gpu_instance, compute_instance;
};

#define NVML_ERROR_INSUFFICIENT_SIZE 7

struct nvml_api {
	nvml_ret (*init)(void);
	nvml_ret (*shutdown)(void);
	nvml_ret (*count)(unsigned *);
	nvml_ret (*handle)(unsigned, nvml_dev *);
	nvml_ret (*memory)(nvml_dev, struct nvml_memory *);
	nvml_ret (*name)(nvml_dev, char *, unsigned);
	nvml_ret (*uuid)(nvml_dev, char *, unsigned);
	nvml_ret (*procs)(nvml_dev, unsigned *, struct nvml_proc_v3 *);
};

static bool load(void *lib, struct nvml_api *a)
{
	/* Object-to-function pointer casts through memcpy, as POSIX allows. */
	static const char *const names[] = {
		"nvmlInit_v2", "nvmlShutdown", "nvmlDeviceGetCount_v2",
		"nvmlDeviceGetHandleByIndex_v2", "nvmlDeviceGetMemoryInfo",
		"nvmlDeviceGetName", "nvmlDeviceGetUUID",
		"nvmlDeviceGetComputeRunningProcesses_v3",
	};
	void *syms[sizeof(names) / sizeof(names[0])];

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		syms[i] = dlsym(lib, names[i]);
		if (!syms[i] && i != 7) /* per-process use is optional */
			return false;
	}
	_Static_assert(sizeof(syms) == sizeof(*a), "one symbol per entry");
	memcpy(a, syms, sizeof(*a));
	return true;
}

static void read_procs(const struct nvml_api *a, nvml_dev d, unsigned gpu,
		       struct vkvstat_gpus *g)
{
	struct nvml_proc_v3 info[64];
	unsigned n = 64;

	if (!a->procs || a->procs(d, &n, info) != 0)
		return;
	for (unsigned i = 0; i < n && i < 64 && g->nproc < VKVSTAT_GPU_PROC_MAX;
	     i++) {
		g->proc[g->nproc].pid = (int32_t)info[i].pid;
		g->proc[g->nproc].gpu = gpu;
		/* NVML_VALUE_NOT_AVAILABLE is all ones */
		g->proc[g->nproc].bytes = info[i].used == ~0ull ? 0 : info[i].used;
		g->nproc++;
	}
}

void vkvstat_gpus_read(struct vkvstat_gpus *g)
{
	struct nvml_api a;
	unsigned count = 0;
	void *lib;

	memset(g, 0, sizeof(*g));
	lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		snprintf(g->why, sizeof(g->why), "libnvidia-ml.so.1 not found");
		return;
	}
	if (!load(lib, &a)) {
		snprintf(g->why, sizeof(g->why), "libnvidia-ml.so.1 lacks entry points");
		goto out_close;
	}
	if (a.init() != 0) {
		snprintf(g->why, sizeof(g->why), "nvmlInit failed (no driver loaded?)");
		goto out_close;
	}
	g->nvml = true;
	if (a.count(&count) != 0)
		count = 0;
	for (unsigned i = 0; i < count && g->n < VKVSTAT_GPU_MAX; i++) {
		struct vkvstat_gpu *x = &g->g[g->n];
		struct nvml_memory m;
		nvml_dev d;

		if (a.handle(i, &d) != 0)
			continue;
		x->index = i;
		if (a.name(d, x->name, sizeof(x->name)) != 0)
			snprintf(x->name, sizeof(x->name), "GPU %u", i);
		if (a.uuid(d, x->uuid, sizeof(x->uuid)) != 0)
			x->uuid[0] = 0;
		x->name[sizeof(x->name) - 1] = 0;
		x->uuid[sizeof(x->uuid) - 1] = 0;
		if (a.memory(d, &m) == 0) {
			x->total = m.total;
			x->used = m.used;
			x->free = m.free;
		}
		read_procs(&a, d, i, g);
		g->n++;
	}
	a.shutdown();
out_close:
	dlclose(lib);
}

uint64_t vkvstat_gpu_bytes_of(const struct vkvstat_gpus *g, int32_t pid)
{
	uint64_t sum = 0;

	for (unsigned i = 0; i < g->nproc; i++)
		if (g->proc[i].pid == pid)
			sum += g->proc[i].bytes;
	return sum;
}
