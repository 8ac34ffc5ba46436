// SPDX-License-Identifier: MIT
/*
 * fake_attn.c - CPU stand-ins for the CUDA kernels, for running
 * `vkvbench serve --backend cuda` against the CUDA driver test double
 * (tests/cudadouble/). The double resolves a kernel <name> to the exported
 * function vkv_fakecuda_kernel_<name> of any loaded library and calls it
 * on launch; device addresses are host addresses there. This library is
 * LD_PRELOADed into vkvbench by check-vkvbench-cuda, so the demo's GPU
 * path (uploads into the cuda region, launches over its tensors, prefix
 * sharing with device copies, static device buffers for --verify) runs in
 * CI without a GPU. Each stand-in runs libvkv's CPU reference.
 */
#include <stdint.h>

#include "../cudadouble/fakecuda.h"
#include "attn_ref.h"

#define FAKE_ATTN(name, layout, dt, dpl)                                      \
	void vkv_fakecuda_kernel_##name##_d##dpl(                              \
		const struct vkv_fakecuda_launch *l);                          \
	void vkv_fakecuda_kernel_##name##_d##dpl(                              \
		const struct vkv_fakecuda_launch *l)                           \
	{                                                                      \
		vkv__attn_ref(layout, dt, l->params[0]);                       \
	}
#define FAKE_ATTNS(name, layout, dt)                                          \
	FAKE_ATTN(name, layout, dt, 1)                                         \
	FAKE_ATTN(name, layout, dt, 2)                                         \
	FAKE_ATTN(name, layout, dt, 4)                                         \
	FAKE_ATTN(name, layout, dt, 8)

FAKE_ATTNS(vkv_attn_contig_f32, VKV_KERN_CONTIG, VKV_KERN_F32)
FAKE_ATTNS(vkv_attn_contig_f16, VKV_KERN_CONTIG, VKV_KERN_F16)
FAKE_ATTNS(vkv_attn_contig_bf16, VKV_KERN_CONTIG, VKV_KERN_BF16)
FAKE_ATTNS(vkv_attn_paged_f32, VKV_KERN_PAGED, VKV_KERN_F32)
FAKE_ATTNS(vkv_attn_paged_f16, VKV_KERN_PAGED, VKV_KERN_F16)
FAKE_ATTNS(vkv_attn_paged_bf16, VKV_KERN_PAGED, VKV_KERN_BF16)

void vkv_fakecuda_kernel_vkv_copy_ranges(const struct vkv_fakecuda_launch *l);
void vkv_fakecuda_kernel_vkv_copy_ranges(const struct vkv_fakecuda_launch *l)
{
	const struct vkv_kern_range *r =
		(const void *)(uintptr_t) * (const uint64_t *)l->params[0];

	vkv__copy_ranges_ref(r, *(const uint32_t *)l->params[1]);
}
