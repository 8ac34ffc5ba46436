// SPDX-License-Identifier: MIT
/*
 * kernels.c - loads the embedded fatbins into a device's primary context
 * and launches the kernels through the driver API (see kernels.h).
 *
 * The batched copy needs its list of ranges where the GPU can read it. The
 * list goes into a pinned, device-mapped staging buffer (cuMemAllocHost)
 * that the kernel reads directly, which saves a host-to-device copy per
 * launch; an event recorded after each launch says when the buffer may be
 * overwritten, and `lock` keeps two threads from filling it at once.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_driver.h"
#include "internal.h"
#include "kernels.h"

#define COPY_THREADS 256
#define ATTN_THREADS 128 /* attn_decode.cu: WARPS * 32 */
#define GRID_Y_MAX 65535u

/* kernels_blob.c */
extern const unsigned char vkv__fatbin_gather[], vkv__fatbin_gather_end[];
extern const unsigned char vkv__fatbin_attn_decode[],
	vkv__fatbin_attn_decode_end[];

enum { MOD_GATHER, MOD_ATTN, MOD_COUNT };

static const unsigned char *const mod_image[MOD_COUNT] = {
	vkv__fatbin_gather,
	vkv__fatbin_attn_decode,
};

static const char *const layout_names[VKV_KERN_LAYOUT_COUNT] = { "contig",
								  "paged" };

/* Attention entry points exist for 1, 2, 4 and 8 dimensions per lane
 * (attn_decode.cu); the launcher takes the smallest that holds head_dim. */
#define ATTN_DPL_COUNT 4

static unsigned attn_dpl_index(uint32_t head_dim)
{
	unsigned i = 0;

	while (i + 1 < ATTN_DPL_COUNT && head_dim > (32u << i))
		i++;
	return i;
}

struct vkv_kern {
	const struct vkv_cu *cu;
	int device;
	CUdevice dev;
	CUcontext ctx;
	CUmodule mod[MOD_COUNT];
	CUfunction copy;
	CUfunction attn[VKV_KERN_LAYOUT_COUNT][VKV_KERN_DTYPE_COUNT][ATTN_DPL_COUNT];
	uint32_t sm_count;
	char name[128];
	pthread_mutex_t lock;           /* the staging list below */
	struct vkv_kern_range *staging; /* pinned, device-mapped (lock) */
	uint32_t staging_cap;           /* entries (lock) */
	CUevent staging_free;           /* recorded after the last copy (lock) */
	bool staging_busy;              /* a launch may still read it (lock) */
};

static int load_modules(struct vkv_kern *k)
{
	const struct vkv_cu *cu = k->cu;
	int err;

	for (int m = 0; m < MOD_COUNT; m++) {
		err = VKV_CU_CALL(cu, cuModuleLoadData, &k->mod[m], mod_image[m]);
		if (err)
			return err;
	}
	err = VKV_CU_CALL(cu, cuModuleGetFunction, &k->copy, k->mod[MOD_GATHER],
			  "vkv_copy_ranges");
	for (int l = 0; l < VKV_KERN_LAYOUT_COUNT && !err; l++)
		for (int d = 0; d < VKV_KERN_DTYPE_COUNT && !err; d++)
			for (int w = 0; w < ATTN_DPL_COUNT && !err; w++) {
				char name[64];
				snprintf(name, sizeof(name), "vkv_attn_%s_%s_d%d",
					 layout_names[l], vkv__dtype_name(d), 1 << w);
				err = VKV_CU_CALL(cu, cuModuleGetFunction,
						  &k->attn[l][d][w], k->mod[MOD_ATTN],
						  name);
			}
	return err;
}

/* The fatbins hold sm_80 and sm_90 code and compute_90 PTX: any 8.x GPU
 * runs the sm_80 code, 9.x and newer the sm_90 code or the JIT-compiled
 * PTX. Older GPUs get a clear "not supported" instead of a load failure. */
static int check_arch(struct vkv_kern *k)
{
	int major = 0, minor = 0;
	int err = VKV_CU_CALL(k->cu, cuDeviceGetAttribute, &major,
			      CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, k->dev);

	if (!err)
		err = VKV_CU_CALL(k->cu, cuDeviceGetAttribute, &minor,
				  CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
				  k->dev);
	if (!err && major < 8)
		err = vkv__set_error(-ENOTSUP, "kernels: device %d is sm_%d%d; the "
				     "kernels need sm_80 or newer", k->device,
				     major, minor);
	return err;
}

static void describe_device(struct vkv_kern *k)
{
	const struct vkv_cu *cu = k->cu;
	char name[96] = "CUDA device";
	int major = 0, minor = 0, sms = 0;

	cu->cuDeviceGetName(name, sizeof(name), k->dev);
	cu->cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
				 k->dev);
	cu->cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
				 k->dev);
	cu->cuDeviceGetAttribute(&sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
				 k->dev);
	k->sm_count = sms > 0 ? (uint32_t)sms : 1;
	snprintf(k->name, sizeof(k->name), "%s sm_%d%d", name, major, minor);
}

static void kern_free(struct vkv_kern *k)
{
	const struct vkv_cu *cu = k->cu;

	if (k->ctx)
		cu->cuCtxSetCurrent(k->ctx);

	if (k->staging_free) {
		if (k->staging_busy)
			cu->cuEventSynchronize(k->staging_free);
		cu->cuEventDestroy(k->staging_free);
	}
	if (k->staging)
		cu->cuMemFreeHost(k->staging);
	for (int m = 0; m < MOD_COUNT; m++)
		if (k->mod[m])
			cu->cuModuleUnload(k->mod[m]);
	if (k->ctx)
		cu->cuDevicePrimaryCtxRelease(k->dev);
	pthread_mutex_destroy(&k->lock);
	free(k);
}

int vkv__kern_open(int device, struct vkv_kern **out)
{
	struct vkv_kern *k;
	const struct vkv_cu *cu;
	int err = vkv__cu_load(&cu);

	if (err)
		return err;
	k = calloc(1, sizeof(*k));
	if (!k)
		return vkv__set_error(-ENOMEM, "kernels: out of memory");
	k->cu = cu;
	k->device = device;
	pthread_mutex_init(&k->lock, NULL);
	err = VKV_CU_CALL(cu, cuDeviceGet, &k->dev, device);
	if (!err)
		err = VKV_CU_CALL(cu, cuDevicePrimaryCtxRetain, &k->ctx, k->dev);
	if (!err)
		err = VKV_CU_CALL(cu, cuCtxSetCurrent, k->ctx);
	if (!err)
		err = check_arch(k);
	if (!err)
		err = load_modules(k);
	if (!err)
		err = VKV_CU_CALL(cu, cuEventCreate, &k->staging_free,
				  CU_EVENT_DISABLE_TIMING);
	if (err) {
		kern_free(k);
		return err;
	}
	describe_device(k);
	*out = k;
	return 0;
}

void vkv__kern_close(struct vkv_kern *k)
{
	if (k)
		kern_free(k);
}

/* Every call may come from a thread that has never used this context (the
 * tiering worker, say): make it current first. Thread-local and cheap. */
static int kern_enter(struct vkv_kern *k)
{
	return VKV_CU_CALL(k->cu, cuCtxSetCurrent, k->ctx);
}

const char *vkv__kern_device_name(const struct vkv_kern *k)
{
	return k->name;
}

/* Room for n ranges in the staging list, once no launch reads it
 * (k->lock held). */
static int staging_reserve(struct vkv_kern *k, uint32_t n)
{
	const struct vkv_cu *cu = k->cu;
	uint32_t cap = k->staging_cap ? k->staging_cap : 64;
	void *p;
	int err;

	if (k->staging_busy) {
		err = VKV_CU_CALL(cu, cuEventSynchronize, k->staging_free);
		if (err)
			return err;
		k->staging_busy = false;
	}
	if (n <= k->staging_cap)
		return 0;
	while (cap < n)
		cap = cap > UINT32_MAX / 2 ? n : cap * 2;
	err = VKV_CU_CALL(cu, cuMemAllocHost, &p, (size_t)cap * sizeof(*k->staging));
	if (err)
		return err;
	if (k->staging)
		cu->cuMemFreeHost(k->staging);
	k->staging = p;
	k->staging_cap = cap;
	return 0;
}

/* Blocks along a range (grid x): enough blocks in all to fill the GPU a few
 * times over, never more than the longest range has 16-byte chunks for. */
static uint32_t copy_grid_x(const struct vkv_kern *k,
			    const struct vkv_kern_range *r, uint32_t n,
			    uint32_t grid_y)
{
	uint64_t longest = 0, want, need;

	for (uint32_t i = 0; i < n; i++)
		longest = r[i].bytes > longest ? r[i].bytes : longest;
	want = ((uint64_t)k->sm_count * 8 + grid_y - 1) / grid_y;
	need = (longest / 16 + COPY_THREADS - 1) / COPY_THREADS;
	if (want > need)
		want = need;
	return want ? (uint32_t)(want < 65535 ? want : 65535) : 1;
}

int vkv__kern_copy_ranges(struct vkv_kern *k, void *stream,
			  const struct vkv_kern_range *r, uint32_t n)
{
	const struct vkv_cu *cu = k->cu;
	const char *why = NULL;
	uint32_t gy, gx;
	CUdeviceptr list;
	void *args[2];
	int err = vkv__ranges_check(r, n, &why);

	if (err)
		return vkv__set_error(err, "copy_ranges: %s",
				      why ? why : "out of memory");
	if (n == 0)
		return 0;
	gy = n < GRID_Y_MAX ? n : GRID_Y_MAX;
	gx = copy_grid_x(k, r, n, gy);
	pthread_mutex_lock(&k->lock);
	err = kern_enter(k);
	if (!err)
		err = staging_reserve(k, n);
	if (err)
		goto out;
	memcpy(k->staging, r, (size_t)n * sizeof(*r));
	list = (CUdeviceptr)(uintptr_t)k->staging; /* unified addressing */
	args[0] = &list;
	args[1] = &n;
	err = VKV_CU_CALL(cu, cuLaunchKernel, k->copy, gx, gy, 1, COPY_THREADS,
			  1, 1, 0, (CUstream)stream, args, NULL);
	if (err)
		goto out;
	err = VKV_CU_CALL(cu, cuEventRecord, k->staging_free, (CUstream)stream);
	if (!err) {
		k->staging_busy = true;
	} else {
		/* the copy is queued; without the event only a full wait
		 * proves that the list was read */
		err = VKV_CU_CALL(cu, cuCtxSynchronize);
		if (!err)
			vkv__clear_error();
	}
out:
	pthread_mutex_unlock(&k->lock);
	return err;
}

int vkv__kern_attn_decode(struct vkv_kern *k, void *stream,
			  enum vkv_kern_layout layout, enum vkv_kern_dtype dt,
			  const struct vkv_attn_params *p)
{
	struct vkv_attn_params copy;
	const char *why = NULL;
	void *args[1] = { &copy };
	int err = vkv__attn_check(layout, dt, p, &why);

	if (err)
		return vkv__set_error(err, "attn_decode: %s", why);
	if (p->batch > GRID_Y_MAX)
		return vkv__set_error(-EINVAL, "attn_decode: batch %u > %u",
				      p->batch, GRID_Y_MAX);
	if (p->batch == 0)
		return 0;
	err = kern_enter(k);
	if (err)
		return err;
	copy = *p;
	return VKV_CU_CALL(k->cu, cuLaunchKernel,
			   k->attn[layout][dt][attn_dpl_index(p->head_dim)],
			   p->q_heads, p->batch, 1, ATTN_THREADS, 1, 1, 0,
			   (CUstream)stream, args, NULL);
}

/* ------------------------------------------------------------ buffers */

int vkv__kern_buf_alloc(struct vkv_kern *k, uint64_t bytes,
			struct vkv_kern_buf *b)
{
	const struct vkv_cu *cu = k->cu;
	CUmemAllocationProp prop = {
		.type = CU_MEM_ALLOCATION_TYPE_PINNED,
		.location = { .type = CU_MEM_LOCATION_TYPE_DEVICE, .id = k->device },
	};
	CUmemAccessDesc access = {
		.location = prop.location,
		.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE,
	};
	CUmemGenericAllocationHandle h;
	CUdeviceptr addr;
	size_t gran = 0;
	int err;

	memset(b, 0, sizeof(*b));
	err = kern_enter(k);
	if (!err)
		err = VKV_CU_CALL(cu, cuMemGetAllocationGranularity, &gran, &prop,
				  CU_MEM_ALLOC_GRANULARITY_MINIMUM);
	if (err)
		return err;
	if (!bytes || !gran || bytes > UINT64_MAX - gran)
		return vkv__set_error(-EINVAL, "kern_buf: bad size %llu",
				      (unsigned long long)bytes);
	bytes = (bytes + gran - 1) / gran * gran;
	err = VKV_CU_CALL(cu, cuMemAddressReserve, &addr, bytes, gran, 0, 0);
	if (err)
		return err;
	err = VKV_CU_CALL(cu, cuMemCreate, &h, bytes, &prop, 0);
	if (err)
		goto free_va;
	err = VKV_CU_CALL(cu, cuMemMap, addr, bytes, 0, h, 0);
	if (err)
		goto release;
	err = VKV_CU_CALL(cu, cuMemSetAccess, addr, bytes, &access, 1);
	if (err)
		goto unmap;
	*b = (struct vkv_kern_buf){ .addr = addr, .size = bytes, .handle = h };
	return 0;
unmap:
	cu->cuMemUnmap(addr, bytes);
release:
	cu->cuMemRelease(h);
free_va:
	cu->cuMemAddressFree(addr, bytes);
	return err;
}

void vkv__kern_buf_free(struct vkv_kern *k, struct vkv_kern_buf *b)
{
	const struct vkv_cu *cu = k->cu;

	if (!b->size || kern_enter(k))
		return;
	cu->cuCtxSynchronize();
	cu->cuMemUnmap(b->addr, b->size);
	cu->cuMemRelease(b->handle);
	cu->cuMemAddressFree(b->addr, b->size);
	memset(b, 0, sizeof(*b));
}

int vkv__kern_upload(struct vkv_kern *k, uint64_t dst, const void *src,
		     uint64_t bytes)
{
	int err = kern_enter(k);

	return err ? err : VKV_CU_CALL(k->cu, cuMemcpyHtoD, dst, src, bytes);
}

int vkv__kern_download(struct vkv_kern *k, void *dst, uint64_t src,
		       uint64_t bytes)
{
	int err = kern_enter(k);

	return err ? err : VKV_CU_CALL(k->cu, cuMemcpyDtoH, dst, src, bytes);
}
