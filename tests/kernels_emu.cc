// SPDX-License-Identifier: MIT
/*
 * kernels_emu.cc - runs the CUDA sources of kernels/ on the CPU.
 *
 * CI has nvcc but no GPU, and the CUDA test double only replaces kernels by
 * their CPU references, so without this the device code itself (indexing,
 * the online softmax, the warp shuffles, the merge through shared memory,
 * the copy's grid-stride loops) would first run on someone's GPU. Here the
 * .cu files are compiled as ordinary C++ with a small emulation of the CUDA
 * execution model: every thread of a block is a fiber (ucontext) on one OS
 * thread, run round-robin; __syncthreads() and the warp shuffles are
 * barriers that yield until every thread of the block (or warp) arrived;
 * __shared__ variables are statics, valid because blocks run one after the
 * other. Slow (a context switch per thread per barrier), so tests keep the
 * cases small. Not for sanitizer builds: they do not follow fibers.
 */
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <ucontext.h>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <vector_types.h>

#include "kernels_emu.h"

/* ------------------------------------------------ the execution model */

namespace {

struct emu_dim3 {
	unsigned x = 1, y = 1, z = 1;
};

struct emu_barrier {
	unsigned count = 0, gen = 0;
};

constexpr unsigned EMU_MAX_THREADS = 1024;
constexpr size_t EMU_STACK = 256 << 10;

struct emu_fiber {
	ucontext_t ctx;
	char *stack = nullptr;
	bool done = false;
};

emu_dim3 threadIdx, blockIdx, blockDim, gridDim;
ucontext_t emu_sched;
std::vector<emu_fiber> emu_fibers;
unsigned emu_cur;
void (*emu_body)(void *);
void *emu_arg;
emu_barrier emu_block_bar, emu_warp_bar[EMU_MAX_THREADS / 32];
float emu_shfl[EMU_MAX_THREADS];

void emu_yield()
{
	swapcontext(&emu_fibers[emu_cur].ctx, &emu_sched);
}

void emu_wait(emu_barrier &b, unsigned n)
{
	unsigned gen = b.gen;

	if (++b.count == n) {
		b.count = 0;
		b.gen++;
		return;
	}
	while (b.gen == gen)
		emu_yield();
}

void emu_entry()
{
	emu_body(emu_arg);
	emu_fibers[emu_cur].done = true;
}

/* Run one block: blockDim.x fibers until all returned. */
void emu_run_block()
{
	unsigned n = blockDim.x, left = n;

	for (unsigned i = 0; i < n; i++) {
		emu_fiber &f = emu_fibers[i];
		getcontext(&f.ctx);
		f.ctx.uc_stack.ss_sp = f.stack;
		f.ctx.uc_stack.ss_size = EMU_STACK;
		f.ctx.uc_link = &emu_sched;
		f.done = false;
		makecontext(&f.ctx, emu_entry, 0);
	}
	while (left) {
		left = 0;
		for (unsigned i = 0; i < n; i++) {
			if (emu_fibers[i].done)
				continue;
			emu_cur = i;
			threadIdx.x = i;
			swapcontext(&emu_sched, &emu_fibers[i].ctx);
			left += !emu_fibers[i].done;
		}
	}
}

int emu_launch(emu_dim3 grid, unsigned threads, void (*body)(void *), void *arg)
{
	if (threads == 0 || threads > EMU_MAX_THREADS || threads % 32)
		return -1;
	if (emu_fibers.size() < threads) {
		emu_fibers.resize(threads);
		for (emu_fiber &f : emu_fibers)
			if (!f.stack && !(f.stack = static_cast<char *>(malloc(EMU_STACK))))
				return -1;
	}
	gridDim = grid;
	blockDim = emu_dim3{ threads, 1, 1 };
	emu_body = body;
	emu_arg = arg;
	for (unsigned z = 0; z < grid.z; z++)
		for (unsigned y = 0; y < grid.y; y++)
			for (unsigned x = 0; x < grid.x; x++) {
				blockIdx = emu_dim3{ x, y, z };
				emu_run_block();
			}
	return 0;
}

void __syncthreads()
{
	emu_wait(emu_block_bar, blockDim.x);
}

float __shfl_xor_sync(unsigned, float x, int off)
{
	unsigned t = threadIdx.x, w = t / 32;

	emu_shfl[t] = x;
	emu_wait(emu_warp_bar[w], 32);
	float y = emu_shfl[(t & ~31u) | ((t & 31u) ^ (unsigned)off)];
	emu_wait(emu_warp_bar[w], 32);
	return y;
}

} // namespace

/* ------------------------------------------------------ the kernels */

#undef __global__
#undef __device__
#undef __shared__
#undef __launch_bounds__
#define __global__
#define __device__
#define __shared__ static
#define __launch_bounds__(n)

#include "../kernels/attn_decode.cu"
#include "../kernels/gather.cu"

#undef __global__
#undef __device__
#undef __shared__

/* ------------------------------------------------------ entry points */

namespace {

typedef void (*attn_fn)(const struct vkv_attn_params);

#define EMU_ATTN_ROW(name) { name##_d1, name##_d2, name##_d4, name##_d8 }
const attn_fn attn_fns[VKV_KERN_LAYOUT_COUNT][VKV_KERN_DTYPE_COUNT][4] = {
	{ EMU_ATTN_ROW(vkv_attn_contig_f32), EMU_ATTN_ROW(vkv_attn_contig_f16),
	  EMU_ATTN_ROW(vkv_attn_contig_bf16) },
	{ EMU_ATTN_ROW(vkv_attn_paged_f32), EMU_ATTN_ROW(vkv_attn_paged_f16),
	  EMU_ATTN_ROW(vkv_attn_paged_bf16) },
};

struct attn_call {
	attn_fn fn;
	const struct vkv_attn_params *p;
};

void attn_body(void *arg)
{
	const attn_call *c = static_cast<const attn_call *>(arg);
	c->fn(*c->p);
}

struct copy_call {
	const struct vkv_kern_range *r;
	uint32_t n;
};

void copy_body(void *arg)
{
	const copy_call *c = static_cast<const copy_call *>(arg);
	vkv_copy_ranges(c->r, c->n);
}

} // namespace

extern "C" int vkv_emu_attn(int layout, int dtype, unsigned dpl_log2,
			    const struct vkv_attn_params *p)
{
	if (layout < 0 || layout >= VKV_KERN_LAYOUT_COUNT || dtype < 0 ||
	    dtype >= VKV_KERN_DTYPE_COUNT || dpl_log2 > 3 || p->batch == 0)
		return -1;
	attn_call c = { attn_fns[layout][dtype][dpl_log2], p };
	return emu_launch(emu_dim3{ p->q_heads, p->batch, 1 }, 128, attn_body, &c);
}

extern "C" int vkv_emu_copy(const struct vkv_kern_range *r, uint32_t n,
			    unsigned grid_x, unsigned grid_y, unsigned threads)
{
	copy_call c = { r, n };
	return emu_launch(emu_dim3{ grid_x, grid_y, 1 }, threads, copy_body, &c);
}
