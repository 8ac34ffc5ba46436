// SPDX-License-Identifier: MIT
/*
 * kernels.h - launching the CUDA kernels of kernels/ through the driver API.
 *
 * The kernels are compiled by nvcc into fatbins (sm_80, sm_90 and compute_90
 * PTX, so newer GPUs JIT them) that are embedded in libvkv
 * (kernels_blob.c), loaded with cuModuleLoadData into a device's primary
 * context and launched with cuLaunchKernel. libvkv therefore needs neither
 * libcudart nor a file next to it. All of this exists only when the build
 * found nvcc (VKV_HAVE_KERNELS); the CPU references in attn_ref.h always do.
 *
 * Addresses in the parameter blocks are device addresses: device memory,
 * vkv's virtual tensors under the cuda backend, or pinned host memory
 * (cuMemHostRegister / cuMemAllocHost), which the GPU reaches through its
 * unified address. Launches are asynchronous on the given stream (NULL: the
 * legacy default stream); errors are 0 or a negative errno with detail
 * recorded for vkv_strerror().
 */
#ifndef VKV_KERNELS_H
#define VKV_KERNELS_H

#include <stdint.h>

#include "attn_ref.h"

#ifdef VKV_HAVE_KERNELS

/* The kernels loaded into one device's primary context. */
struct vkv_kern;

/*
 * Retain `device`'s primary context, make it current in the calling thread
 * and load the kernels into it. -ENODEV without a usable driver or device,
 * -ENOTSUP for a GPU older than sm_80, -EIO when the driver refuses the
 * modules, -ENOMEM.
 */
int vkv__kern_open(int device, struct vkv_kern **out);
/* Unload, release the context reference. Waits for pending range copies. */
void vkv__kern_close(struct vkv_kern *k);
/* "NVIDIA H100 80GB HBM3 sm_90", for reports. */
const char *vkv__kern_device_name(const struct vkv_kern *k);

/*
 * Copy every range of r[0..n) (vkv__ranges_check rules) in one launch.
 * The list is copied into pinned memory that the kernel reads, so r may be
 * reused at once; a later call waits until the previous launch has read its
 * list. -EINVAL for bad ranges.
 */
int vkv__kern_copy_ranges(struct vkv_kern *k, void *stream,
			  const struct vkv_kern_range *r, uint32_t n);

/*
 * Decode attention (vkv_kern_abi.h) on the GPU. Scalar fields are checked
 * here (vkv__attn_check, batch <= 65535); seq_len, seq_slot and the block
 * table live in device memory and are trusted. -EINVAL for bad parameters.
 */
int vkv__kern_attn_decode(struct vkv_kern *k, void *stream,
			  enum vkv_kern_layout layout, enum vkv_kern_dtype dt,
			  const struct vkv_attn_params *p);

/*
 * Device memory for tests and benchmarks, made with the VMM calls (the
 * driver table has no cuMemAlloc): `bytes` rounded up to the granularity,
 * readable and writable by the kernel's device. Copy with
 * vkv__kern_upload / vkv__kern_download (synchronous).
 */
struct vkv_kern_buf {
	uint64_t addr;
	uint64_t size;
	uint64_t handle; /* CUmemGenericAllocationHandle */
};

int vkv__kern_buf_alloc(struct vkv_kern *k, uint64_t bytes,
			struct vkv_kern_buf *b);
void vkv__kern_buf_free(struct vkv_kern *k, struct vkv_kern_buf *b);
int vkv__kern_upload(struct vkv_kern *k, uint64_t dst, const void *src,
		     uint64_t bytes);
int vkv__kern_download(struct vkv_kern *k, void *dst, uint64_t src,
		       uint64_t bytes);

#endif /* VKV_HAVE_KERNELS */
#endif /* VKV_KERNELS_H */
