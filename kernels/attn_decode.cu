// SPDX-License-Identifier: MIT
/*
 * attn_decode.cu - reference decode-attention kernels over two KV layouts.
 *
 * The vAttention claim is that a KV cache kept contiguous in virtual memory
 * lets attention kernels index K and V with plain strides, while a paged
 * cache (vLLM's 16-token blocks) makes every kernel look each block up in a
 * per-sequence table. To measure that difference and nothing else, both
 * layouts run the *same* kernel body here; only the function that turns
 * (sequence, token, head) into an address differs (kv_row below).
 *
 * One block per (query head, sequence), 4 warps. Each warp walks every 4th
 * token with an online softmax (running max, running sum, running weighted
 * V in fp32 registers: lane l holds dimensions l, l+32, ...), then the warps
 * merge their partial results through shared memory. Elements are read as
 * fp32, fp16 or bf16; all arithmetic is fp32; the output is rounded once.
 * runtime/attn_ref.c is the CPU mirror that checks these kernels.
 */
#include <stdint.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "vkv_kern_abi.h"

#define WARPS 4
#define THREADS (WARPS * 32)
#define DIMS_PER_LANE (VKV_KERN_MAX_HEAD_DIM / 32)

template <typename T> struct elem;
template <> struct elem<float> {
	static __device__ float load(const float *p) { return *p; }
	static __device__ float store(float x) { return x; }
};
template <> struct elem<__half> {
	static __device__ float load(const __half *p) { return __half2float(*p); }
	static __device__ __half store(float x) { return __float2half_rn(x); }
};
template <> struct elem<__nv_bfloat16> {
	static __device__ float load(const __nv_bfloat16 *p)
	{
		return __bfloat162float(*p);
	}
	static __device__ __nv_bfloat16 store(float x)
	{
		return __float2bfloat16_rn(x);
	}
};

/* Address of the row (all head_dim elements) of token t, KV head h. */
template <int LAYOUT>
static __device__ uint64_t kv_row(const struct vkv_attn_params &p,
				  uint64_t base, uint32_t seq, uint32_t slot,
				  uint32_t t, uint32_t h)
{
	uint64_t row = base + (uint64_t)h * p.head_stride;

	if (LAYOUT == VKV_KERN_CONTIG)
		return row + (uint64_t)slot * p.seq_stride +
		       (uint64_t)t * p.token_stride;
	const uint32_t *table = (const uint32_t *)p.block_table +
				(uint64_t)seq * p.max_blocks;
	uint32_t blk = table[t / VKV_KERN_BLOCK_TOKENS];
	return row + (uint64_t)blk * p.seq_stride +
	       (uint64_t)(t % VKV_KERN_BLOCK_TOKENS) * p.token_stride;
}

static __device__ float warp_sum(float x)
{
	for (int off = 16; off > 0; off >>= 1)
		x += __shfl_xor_sync(0xffffffffu, x, off);
	return x;
}

template <typename T, int LAYOUT>
static __device__ void attn_decode(const struct vkv_attn_params &p)
{
	__shared__ float part_max[WARPS], part_sum[WARPS];
	__shared__ float part_acc[WARPS][VKV_KERN_MAX_HEAD_DIM];
	const uint32_t qh = blockIdx.x, seq = blockIdx.y;
	const uint32_t kh = qh / (p.q_heads / p.kv_heads);
	const uint32_t lane = threadIdx.x % 32, warp = threadIdx.x / 32;
	const uint32_t hd = p.head_dim;
	const uint32_t len = ((const uint32_t *)p.seq_len)[seq];
	const uint32_t slot = LAYOUT == VKV_KERN_CONTIG ?
				      ((const uint32_t *)p.seq_slot)[seq] : 0;
	const uint64_t qoff = ((uint64_t)seq * p.q_heads + qh) * hd;
	const T *q = (const T *)p.q + qoff;
	float qs[DIMS_PER_LANE], acc[DIMS_PER_LANE];
	float m = -INFINITY, l = 0.0f;

#pragma unroll
	for (int i = 0; i < DIMS_PER_LANE; i++) {
		uint32_t d = i * 32 + lane;
		qs[i] = d < hd ? elem<T>::load(q + d) * p.scale : 0.0f;
		acc[i] = 0.0f;
	}
	for (uint32_t t = warp; t < len; t += WARPS) {
		const T *kr = (const T *)kv_row<LAYOUT>(p, p.k, seq, slot, t, kh);
		const T *vr = (const T *)kv_row<LAYOUT>(p, p.v, seq, slot, t, kh);
		float s = 0.0f;
#pragma unroll
		for (int i = 0; i < DIMS_PER_LANE; i++) {
			uint32_t d = i * 32 + lane;
			if (d < hd)
				s += qs[i] * elem<T>::load(kr + d);
		}
		s = warp_sum(s);
		float mn = fmaxf(m, s);
		float c = expf(m - mn);
		float w = expf(s - mn);
		l = l * c + w;
#pragma unroll
		for (int i = 0; i < DIMS_PER_LANE; i++) {
			uint32_t d = i * 32 + lane;
			if (d < hd)
				acc[i] = acc[i] * c + w * elem<T>::load(vr + d);
		}
		m = mn;
	}
	if (lane == 0) {
		part_max[warp] = m;
		part_sum[warp] = l;
	}
#pragma unroll
	for (int i = 0; i < DIMS_PER_LANE; i++) {
		uint32_t d = i * 32 + lane;
		if (d < hd)
			part_acc[warp][d] = acc[i];
	}
	__syncthreads();

	float mx = -INFINITY;
	for (int w = 0; w < WARPS; w++)
		mx = fmaxf(mx, part_max[w]);
	T *out = (T *)p.out + qoff;
	for (uint32_t d = threadIdx.x; d < hd; d += THREADS) {
		float sum = 0.0f, a = 0.0f;
		for (int w = 0; w < WARPS; w++) {
			if (part_max[w] == -INFINITY)
				continue; /* this warp saw no token */
			float c = expf(part_max[w] - mx);
			sum += part_sum[w] * c;
			a += part_acc[w][d] * c;
		}
		out[d] = elem<T>::store(sum > 0.0f ? a / sum : 0.0f);
	}
}

#define VKV_ATTN_ENTRY(name, T, LAYOUT)                                      \
	extern "C" __global__ void __launch_bounds__(THREADS)               \
		name(const struct vkv_attn_params p)                        \
	{                                                                   \
		attn_decode<T, LAYOUT>(p);                                  \
	}

VKV_ATTN_ENTRY(vkv_attn_contig_f32, float, VKV_KERN_CONTIG)
VKV_ATTN_ENTRY(vkv_attn_contig_f16, __half, VKV_KERN_CONTIG)
VKV_ATTN_ENTRY(vkv_attn_contig_bf16, __nv_bfloat16, VKV_KERN_CONTIG)
VKV_ATTN_ENTRY(vkv_attn_paged_f32, float, VKV_KERN_PAGED)
VKV_ATTN_ENTRY(vkv_attn_paged_f16, __half, VKV_KERN_PAGED)
VKV_ATTN_ENTRY(vkv_attn_paged_bf16, __nv_bfloat16, VKV_KERN_PAGED)
