// SPDX-License-Identifier: MIT
/*
 * fakecuda_alloc.h - control interface of the test double's classic
 * allocation calls (tests/cudadouble/alloc.c): cuMemAlloc_v2 and friends,
 * stream-ordered allocation, stream capture and event queries.
 *
 * Like fakecuda.h, tests look these up at run time with dlsym on the
 * libcuda.so.1 handle, so they also run (with the checks skipped) against a
 * real driver.
 */
#ifndef VKV_FAKECUDA_ALLOC_H
#define VKV_FAKECUDA_ALLOC_H

#include <stdint.h>

/* What the classic allocation calls hold right now, and how often they
 * were called since start. */
struct vkv_fakecuda_alloc_stats {
	uint64_t live;           /* live allocations of every kind below */
	uint64_t live_bytes;     /* their requested bytes */
	uint64_t device;         /* live cuMemAlloc/cuMemAllocPitch blocks */
	uint64_t managed;        /* live cuMemAllocManaged blocks */
	uint64_t async;          /* live cuMemAllocAsync blocks */
	uint64_t captured;       /* cuMemAllocAsync calls on a capturing stream */
	uint64_t alloc_calls;    /* every allocation call, failed ones too */
	uint64_t free_calls;     /* cuMemFree_v2 and cuMemFreeAsync calls */
	uint64_t bad_frees;      /* frees of pointers the double never gave */
	uint64_t captures;       /* streams capturing now */
	uint64_t graphs;         /* live graphs from cuStreamEndCapture */
};

void vkv_fakecuda_alloc_stats(struct vkv_fakecuda_alloc_stats *st);
typedef void (*vkv_fakecuda_alloc_stats_fn)(struct vkv_fakecuda_alloc_stats *st);

/*
 * Pretend the device is busy (1) or idle (0, the default). While busy,
 * cuEventQuery and cuStreamQuery answer CUDA_ERROR_NOT_READY, so a caller
 * that waits for stream work by polling events sees it pending; the
 * synchronising calls still return at once.
 */
void vkv_fakecuda_set_busy(int busy);
typedef void (*vkv_fakecuda_set_busy_fn)(int busy);

#endif /* VKV_FAKECUDA_ALLOC_H */
