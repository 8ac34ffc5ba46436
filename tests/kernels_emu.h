// SPDX-License-Identifier: MIT
/*
 * kernels_emu.h - the CUDA kernels of kernels/ run on the CPU by an
 * emulation of the execution model (tests/kernels_emu.cc). Addresses in
 * the parameter blocks are host pointers. Return 0, or -1 for a launch the
 * emulation cannot do.
 */
#ifndef VKV_TEST_KERNELS_EMU_H
#define VKV_TEST_KERNELS_EMU_H

#include <stdint.h>

#include "../kernels/vkv_kern_abi.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The attention entry point of `layout`, `dtype` with 1 << dpl_log2
 * dimensions per lane, on the launcher's grid: (q_heads, batch) blocks of
 * 128 threads. */
int vkv_emu_attn(int layout, int dtype, unsigned dpl_log2,
		 const struct vkv_attn_params *p);

/* vkv_copy_ranges on a grid_x x grid_y grid of `threads` threads. */
int vkv_emu_copy(const struct vkv_kern_range *r, uint32_t n, unsigned grid_x,
		 unsigned grid_y, unsigned threads);

#ifdef __cplusplus
}
#endif
#endif /* VKV_TEST_KERNELS_EMU_H */
