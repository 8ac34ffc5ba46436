// SPDX-License-Identifier: MIT
/*
 * gather.cu - one launch that copies a list of ranges.
 *
 * Evicting or restoring a slot moves every page of it, in every layer, K
 * and V: hundreds to thousands of separate ranges between device pages and
 * pinned host memory. One cuMemcpyAsync per range pays the driver's
 * per-call cost each time; this kernel takes the whole list at once. The
 * host side of each range is pinned, mapped host memory (cuMemHostRegister
 * or cuMemHostAlloc), which the GPU reads and writes over PCIe/C2C through
 * its unified address, so gather (device -> host) and scatter (host ->
 * device) are the same kernel with the addresses swapped.
 *
 * Grid: y walks the ranges, x splits each range. Ranges whose dst, src and
 * length are 16-byte aligned (every page-sized range) move as uint4; the
 * others move byte by byte.
 */
#include <stdint.h>

#include "vkv_kern_abi.h"

static __device__ void copy_aligned16(uint4 *dst, const uint4 *src, uint64_t n)
{
	const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
	uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;

	for (; i < n; i += stride)
		dst[i] = src[i];
}

static __device__ void copy_bytes(uint8_t *dst, const uint8_t *src, uint64_t n)
{
	const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
	uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;

	for (; i < n; i += stride)
		dst[i] = src[i];
}

extern "C" __global__ void vkv_copy_ranges(const struct vkv_kern_range *ranges,
					   uint32_t n)
{
	__shared__ struct vkv_kern_range rg;

	for (uint32_t r = blockIdx.y; r < n; r += gridDim.y) {
		/* one read of the (host-resident) list per block and range */
		if (threadIdx.x == 0)
			rg = ranges[r];
		__syncthreads();
		if (((rg.dst | rg.src | rg.bytes) & 15) == 0)
			copy_aligned16((uint4 *)rg.dst, (const uint4 *)rg.src,
				       rg.bytes / 16);
		else
			copy_bytes((uint8_t *)rg.dst, (const uint8_t *)rg.src,
				   rg.bytes);
		__syncthreads(); /* everyone is done with rg */
	}
}
