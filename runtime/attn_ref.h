// SPDX-License-Identifier: MIT
/*
 * attn_ref.h - CPU references of the CUDA kernels, and fp16/bf16
 * conversions.
 *
 * Every kernel in kernels/ has a plain C mirror here that takes the very
 * same parameter block (kernels/vkv_kern_abi.h) with host addresses in
 * place of device ones. The references are what the GPU tests check the
 * kernels against, what `vkvbench attn` runs on a machine without a GPU, and
 * what a CPU engine can use directly. They depend on nothing else in
 * libvkv.
 *
 * Error bounds. Attention outputs are convex combinations of V rows, so
 * the error is measured against the size of V:
 *     rel_err = max |got - want| / max |V|
 * over every output element of a call (V taken over the rows read). Between
 * the fp32 reference below (two-pass softmax), the GPU kernels (online
 * softmax, another summation order) and a double-precision naive
 * evaluation, rel_err stays within VKV_ATTN_TOL_<dtype>:
 *   fp32  1e-4    summation order and expf differences only; they grow
 *                 with the size of the scores (|s| * 2^-24 inside exp),
 *                 so the bound holds for |scores| up to about 100
 *   fp16  2e-3    both sides round the fp32 result once; near a rounding
 *                 boundary they may land one fp16 ulp apart (<= 2^-10 of
 *                 |out| <= max|V|), plus the fp32 part
 *   bf16  1.6e-2  the same with one bf16 ulp (<= 2^-7)
 * Inputs are stored in the dtype, so both sides read identical values and
 * input rounding is not part of the error.
 */
#ifndef VKV_ATTN_REF_H
#define VKV_ATTN_REF_H

#include <stddef.h>
#include <stdint.h>

#include "../kernels/vkv_kern_abi.h"

#define VKV_ATTN_TOL_F32 1e-4
#define VKV_ATTN_TOL_F16 2e-3
#define VKV_ATTN_TOL_BF16 1.6e-2

/* The bound above for a dtype (0 for an unknown one). */
double vkv__attn_tol(enum vkv_kern_dtype dt);
/* Bytes per element of a dtype (0 for an unknown one). */
size_t vkv__dtype_size(enum vkv_kern_dtype dt);
/* "f32", "f16", "bf16"; "?" when out of range. */
const char *vkv__dtype_name(enum vkv_kern_dtype dt);

/* IEEE binary16 and bfloat16 <-> binary32, round to nearest even;
 * overflow gives infinity, NaN stays NaN (quiet). */
uint16_t vkv__f16_from_f32(float f);
float vkv__f32_from_f16(uint16_t h);
uint16_t vkv__bf16_from_f32(float f);
float vkv__f32_from_bf16(uint16_t h);
/* Element i of an array of dtype dt, as float; and the store. */
float vkv__elem_load(enum vkv_kern_dtype dt, const void *base, size_t i);
void vkv__elem_store(enum vkv_kern_dtype dt, void *base, size_t i, float x);

/*
 * Check the scalar fields of a parameter block: nonzero addresses,
 * 1 <= head_dim <= VKV_KERN_MAX_HEAD_DIM, q_heads a multiple of kv_heads,
 * paged: max_blocks >= 1 and num_blocks >= 1. 0 or -EINVAL (with detail in
 * *why when why != NULL).
 */
int vkv__attn_check(enum vkv_kern_layout layout, enum vkv_kern_dtype dt,
		    const struct vkv_attn_params *p, const char **why);

/*
 * Decode attention on the CPU, same semantics as the kernels (see
 * vkv_kern_abi.h), every address a host pointer. Also checks what only
 * host memory allows: paged sequences no longer than max_blocks blocks and
 * block numbers below num_blocks. 0, -EINVAL, or -ENOMEM for scratch.
 */
int vkv__attn_ref(enum vkv_kern_layout layout, enum vkv_kern_dtype dt,
		  const struct vkv_attn_params *p);

/*
 * Check a list of copy ranges: no range wraps around the address space, no
 * range of nonzero length has a zero address, no two destinations overlap
 * and no destination overlaps a source (the kernel copies ranges in any
 * order, at once). 0 or -EINVAL (detail in *why), -ENOMEM for scratch.
 */
int vkv__ranges_check(const struct vkv_kern_range *r, uint32_t n,
		      const char **why);
/* The batched copy on the CPU (host addresses): checks, then memcpy each. */
int vkv__copy_ranges_ref(const struct vkv_kern_range *r, uint32_t n);

#endif /* VKV_ATTN_REF_H */
