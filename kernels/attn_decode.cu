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
 * One block per (query head, sequence), 4 warps. Each warp takes 4 tokens
 * at a time (every 4th group of 4) with an online softmax (running max,
 * running sum, running weighted V in fp32 registers: lane l holds
 * dimensions l, l+32, ...), then the warps merge their partial results
 * through shared memory. Elements are read as
 * fp32, fp16 or bf16; all arithmetic is fp32; the output is rounded once.
 * runtime/attn_ref.c is the CPU mirror that checks these kernels.
 */
#include <stdint.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "vkv_kern_abi.h"

#define WARPS 4
#define THREADS (WARPS * 32)
#define UNROLL 4 /* tokens per warp per step */

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

template <typename T, int LAYOUT, int DPL>
static __device__ void attn_decode(const struct vkv_attn_params &p)
{
	__shared__ float part_max[WARPS], part_sum[WARPS];
	__shared__ float part_acc[WARPS][DPL * 32];
	const uint32_t qh = blockIdx.x, seq = blockIdx.y;
	const uint32_t kh = qh / (p.q_heads / p.kv_heads);
	const uint32_t lane = threadIdx.x % 32, warp = threadIdx.x / 32;
	const uint32_t hd = p.head_dim;
	const uint32_t len = ((const uint32_t *)p.seq_len)[seq];
	const uint32_t slot = LAYOUT == VKV_KERN_CONTIG ?
				      ((const uint32_t *)p.seq_slot)[seq] : 0;
	const uint64_t qoff = ((uint64_t)seq * p.q_heads + qh) * hd;
	const T *q = (const T *)p.q + qoff;
	float qs[DPL], acc[DPL];
	float m = -INFINITY, l = 0.0f;

#pragma unroll
	for (int i = 0; i < DPL; i++) {
		uint32_t d = i * 32 + lane;
		qs[i] = d < hd ? elem<T>::load(q + d) * p.scale : 0.0f;
		acc[i] = 0.0f;
	}
	/* UNROLL tokens per step: all their K and V loads are issued before
	 * the first use, so each warp keeps several rows in flight */
	for (uint32_t base = warp * UNROLL; base < len; base += WARPS * UNROLL) {
		float kv[UNROLL][DPL], vv[UNROLL][DPL], s[UNROLL];
#pragma unroll
		for (int u = 0; u < UNROLL; u++) {
			uint32_t t = base + u;
			const T *kr = NULL, *vr = NULL;
			if (t < len) {
				kr = (const T *)kv_row<LAYOUT>(p, p.k, seq, slot, t, kh);
				vr = (const T *)kv_row<LAYOUT>(p, p.v, seq, slot, t, kh);
			}
#pragma unroll
			for (int i = 0; i < DPL; i++) {
				uint32_t d = i * 32 + lane;
				bool ok = t < len && d < hd;
				kv[u][i] = ok ? elem<T>::load(kr + d) : 0.0f;
				vv[u][i] = ok ? elem<T>::load(vr + d) : 0.0f;
			}
		}
		float mn = m;
#pragma unroll
		for (int u = 0; u < UNROLL; u++) {
			float dot = 0.0f;
#pragma unroll
			for (int i = 0; i < DPL; i++)
				dot += qs[i] * kv[u][i];
			s[u] = warp_sum(dot);
			if (base + u < len)
				mn = fmaxf(mn, s[u]);
		}
		float c = expf(m - mn); /* 0 while m is still -inf */
		l *= c;
#pragma unroll
		for (int i = 0; i < DPL; i++)
			acc[i] *= c;
#pragma unroll
		for (int u = 0; u < UNROLL; u++) {
			float w = base + u < len ? expf(s[u] - mn) : 0.0f;
			l += w;
#pragma unroll
			for (int i = 0; i < DPL; i++)
				acc[i] += w * vv[u][i];
		}
		m = mn;
	}
	if (lane == 0) {
		part_max[warp] = m;
		part_sum[warp] = l;
	}
#pragma unroll
	for (int i = 0; i < DPL; i++) {
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

/* Entry points vkv_attn_<layout>_<dtype>_d<DPL>: DPL dimensions per lane,
 * head_dim <= 32 * DPL. The launcher picks the smallest DPL that fits. */
#define VKV_ATTN_ENTRY(name, T, LAYOUT, DPL)                                 \
	extern "C" __global__ void __launch_bounds__(THREADS)               \
		name##_d##DPL(const struct vkv_attn_params p)               \
	{                                                                   \
		attn_decode<T, LAYOUT, DPL>(p);                             \
	}
#define VKV_ATTN_ENTRIES(name, T, LAYOUT)                                    \
	VKV_ATTN_ENTRY(name, T, LAYOUT, 1)                                  \
	VKV_ATTN_ENTRY(name, T, LAYOUT, 2)                                  \
	VKV_ATTN_ENTRY(name, T, LAYOUT, 4)                                  \
	VKV_ATTN_ENTRY(name, T, LAYOUT, 8)

VKV_ATTN_ENTRIES(vkv_attn_contig_f32, float, VKV_KERN_CONTIG)
VKV_ATTN_ENTRIES(vkv_attn_contig_f16, __half, VKV_KERN_CONTIG)
VKV_ATTN_ENTRIES(vkv_attn_contig_bf16, __nv_bfloat16, VKV_KERN_CONTIG)
VKV_ATTN_ENTRIES(vkv_attn_paged_f32, float, VKV_KERN_PAGED)
VKV_ATTN_ENTRIES(vkv_attn_paged_f16, __half, VKV_KERN_PAGED)
VKV_ATTN_ENTRIES(vkv_attn_paged_bf16, __nv_bfloat16, VKV_KERN_PAGED)
