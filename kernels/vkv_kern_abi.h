// SPDX-License-Identifier: MIT
/*
 * vkv_kern_abi.h - the parameter blocks shared by the CUDA kernels (the
 * .cu files next to this header) and the C code that launches them
 * (runtime/kernels.c) or mirrors them on the CPU (runtime/attn_ref.c).
 *
 * Both sides compile this one header, so a kernel parameter passed by value
 * through cuLaunchKernel has the same layout on the host and the device:
 * fixed-width fields only, 64-bit fields first, explicit padding, and a
 * size check below. Addresses are uint64_t: device pointers for a kernel
 * launch, host pointers for the CPU references.
 */
#ifndef VKV_KERN_ABI_H
#define VKV_KERN_ABI_H

#include <stdint.h>

/* One range of a batched copy: bytes from src to dst. Ranges of one batch
 * must not overlap each other's destinations. */
struct vkv_kern_range {
	uint64_t dst;
	uint64_t src;
	uint64_t bytes;
};

/* Element type of Q, K, V and the output. Softmax and sums are fp32. */
enum vkv_kern_dtype {
	VKV_KERN_F32 = 0,
	VKV_KERN_F16,
	VKV_KERN_BF16,
	VKV_KERN_DTYPE_COUNT
};

/* Where K and V of a sequence live. */
enum vkv_kern_layout {
	/* vkv's contiguous virtual tensor: token t, head h of the sequence in
	 * slot s at k + s*seq_stride + t*token_stride + h*head_stride. */
	VKV_KERN_CONTIG = 0,
	/* 16-token blocks (vLLM-style cache [num_blocks][16][kv_heads][dim]):
	 * token t of sequence i at k + block_table[i][t/16]*seq_stride +
	 * (t%16)*token_stride + h*head_stride. */
	VKV_KERN_PAGED,
	VKV_KERN_LAYOUT_COUNT
};

#define VKV_KERN_BLOCK_TOKENS 16u /* tokens per block of the paged layout */
#define VKV_KERN_MAX_HEAD_DIM 256u /* largest head_dim the kernels take */

/*
 * Decode attention, one query token per sequence, grouped-query:
 * q_heads = group * kv_heads, query head j reads KV head j / group.
 *   out[i][j][:] = softmax(scale * q[i][j] . K_i[t][j/group], t < len[i])
 *                  . V_i[t][j/group]
 * A sequence of length 0 gets an output of zeros.
 */
struct vkv_attn_params {
	uint64_t q;            /* [batch][q_heads][head_dim], packed */
	uint64_t out;          /* [batch][q_heads][head_dim], packed */
	uint64_t k;            /* K tensor (contig) or K block cache (paged) */
	uint64_t v;            /* same for V */
	uint64_t seq_stride;   /* bytes: between slots (contig) or blocks */
	uint64_t token_stride; /* bytes between tokens */
	uint64_t head_stride;  /* bytes between KV heads */
	uint64_t seq_slot;     /* contig: uint32_t [batch], slot per sequence */
	uint64_t seq_len;      /* uint32_t [batch], tokens per sequence */
	uint64_t block_table;  /* paged: uint32_t [batch][max_blocks] */
	uint32_t max_blocks;   /* paged: row length of block_table */
	uint32_t num_blocks;   /* paged: blocks in the cache (bounds checks) */
	uint32_t batch;
	uint32_t q_heads;
	uint32_t kv_heads;
	uint32_t head_dim;     /* 1 .. VKV_KERN_MAX_HEAD_DIM */
	float scale;           /* usually 1/sqrt(head_dim) */
	uint32_t pad0;
};

#ifdef __cplusplus
static_assert(sizeof(struct vkv_kern_range) == 24, "vkv_kern_range ABI");
static_assert(sizeof(struct vkv_attn_params) == 112, "vkv_attn_params ABI");
#else
_Static_assert(sizeof(struct vkv_kern_range) == 24, "vkv_kern_range ABI");
_Static_assert(sizeof(struct vkv_attn_params) == 112, "vkv_attn_params ABI");
#endif

#endif /* VKV_KERN_ABI_H */
