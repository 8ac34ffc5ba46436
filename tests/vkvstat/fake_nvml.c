// SPDX-License-Identifier: MIT
/*
 * fake_nvml.c - a libnvidia-ml.so.1 of our own for vkvstat's tests.
 *
 * Just the entry points vkvstat's nvml.c looks up, with their ABI: two
 * "GPUs" of 80 GiB, and on GPU 0 one compute process, the pid in
 * $FAKE_NVML_PID, holding 1 GiB. Loaded with LD_LIBRARY_PATH, so the NVML
 * path of vkvstat (dlopen, per-GPU memory, per-process memory) runs on
 * machines without NVIDIA's driver.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAKE_API __attribute__((visibility("default")))
#define GiB (1ull << 30)

struct nvml_memory {
	unsigned long long total, free, used;
};

struct nvml_proc_v3 {
	unsigned int pid;
	unsigned long long used;
	unsigned int gpu_instance, compute_instance;
};

typedef void *nvml_dev;

static int inited;

FAKE_API int nvmlInit_v2(void);
FAKE_API int nvmlShutdown(void);
FAKE_API int nvmlDeviceGetCount_v2(unsigned *n);
FAKE_API int nvmlDeviceGetHandleByIndex_v2(unsigned i, nvml_dev *d);
FAKE_API int nvmlDeviceGetMemoryInfo(nvml_dev d, struct nvml_memory *m);
FAKE_API int nvmlDeviceGetName(nvml_dev d, char *buf, unsigned len);
FAKE_API int nvmlDeviceGetUUID(nvml_dev d, char *buf, unsigned len);
FAKE_API int nvmlDeviceGetComputeRunningProcesses_v3(nvml_dev d, unsigned *n,
						      struct nvml_proc_v3 *p);

int nvmlInit_v2(void)
{
	inited = 1;
	return 0;
}

int nvmlShutdown(void)
{
	inited = 0;
	return 0;
}

int nvmlDeviceGetCount_v2(unsigned *n)
{
	*n = 2;
	return inited ? 0 : 1; /* NVML_ERROR_UNINITIALIZED */
}

int nvmlDeviceGetHandleByIndex_v2(unsigned i, nvml_dev *d)
{
	if (i >= 2)
		return 2; /* NVML_ERROR_INVALID_ARGUMENT */
	*d = (nvml_dev)(unsigned long)(i + 1);
	return 0;
}

static unsigned idx(nvml_dev d)
{
	return (unsigned)(unsigned long)d - 1;
}

int nvmlDeviceGetMemoryInfo(nvml_dev d, struct nvml_memory *m)
{
	m->total = 80 * GiB;
	m->used = idx(d) == 0 ? 3 * GiB : 0;
	m->free = m->total - m->used;
	return 0;
}

int nvmlDeviceGetName(nvml_dev d, char *buf, unsigned len)
{
	snprintf(buf, len, "Fake \"GPU\" %u", idx(d));
	return 0;
}

int nvmlDeviceGetUUID(nvml_dev d, char *buf, unsigned len)
{
	snprintf(buf, len, "GPU-fake-%u", idx(d));
	return 0;
}

int nvmlDeviceGetComputeRunningProcesses_v3(nvml_dev d, unsigned *n,
					    struct nvml_proc_v3 *p)
{
	const char *pid = getenv("FAKE_NVML_PID");
	unsigned have = idx(d) == 0 && pid ? 1 : 0;

	if (*n < have) {
		*n = have;
		return 7; /* NVML_ERROR_INSUFFICIENT_SIZE */
	}
	*n = have;
	if (have) {
		memset(p, 0, sizeof(*p));
		p->pid = (unsigned)atoi(pid);
		p->used = GiB;
	}
	return 0;
}
