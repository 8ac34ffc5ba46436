// SPDX-License-Identifier: MIT
/*
 * kmod_dev.h - a thin userspace wrapper around /dev/vkv (vkv.ko).
 *
 * Used by the kmod backend (backend_kmod.c), by the DRAM tier to hold
 * extents in pinned, NUMA-placed, purgeable buffers, and by the VM tests.
 * It depends on nothing else in libvkv: every call returns 0 (or a file
 * descriptor) or a negative errno and records nothing; callers add the
 * detail with vkv__set_error().
 *
 * Typical use by a tier (one buffer per extent):
 *
 *	int fd = vkv__kmod_open();              // -ENODEV: no module
 *	struct vkv_kmod_buf buf;
 *	vkv__kmod_alloc(fd, bytes, node, VKV_ALLOC_HUGE, &buf);
 *	vkv__kmod_map(fd, &buf, 0, buf.size, NULL, &p);  // copy data in
 *	... NVMe copy written: munmap(p, buf.size); vkv__kmod_unpin(fd, buf.id);
 *	... restore: vkv__kmod_pin(fd, buf.id, &purged);
 *	    purged ? read the NVMe copy : map again and use the contents
 *	vkv__kmod_free(fd, buf.id);
 *
 * Only unmapped purgeable buffers are reclaimed, so unmap before unpin.
 */
#ifndef VKV_KMOD_DEV_H
#define VKV_KMOD_DEV_H

#include <stdbool.h>
#include <stdint.h>

#include "uapi/vkv_ioctl.h"

#define VKV_KMOD_PATH "/dev/vkv"

/* A buffer as the module described it. */
struct vkv_kmod_buf {
	uint64_t id;
	uint64_t size;      /* bytes, rounded by the module */
	uint64_t offset;    /* mmap offset of byte 0 */
	uint32_t node_used; /* NUMA node of the first page */
	uint32_t huge;      /* 2 MiB contiguous chunks */
};

/* Open /dev/vkv (O_RDWR | O_CLOEXEC): the fd, or -ENODEV when the module is
 * not loaded, or another -errno (-EACCES, ...). */
int vkv__kmod_open(void);
/* node: a NUMA node or -1 for any. flags: VKV_ALLOC_*. -ENOMEM when out of
 * memory, -EDQUOT over the module's limits, -EINVAL for a bad value. */
int vkv__kmod_alloc(int fd, uint64_t size, int node, uint32_t flags,
		    struct vkv_kmod_buf *out);
/* -ENOENT for an unknown or already freed id. Mappings stay valid until
 * unmapped; the memory goes back when the last one is gone. */
int vkv__kmod_free(int fd, uint64_t id);
/* Mark purgeable: the kernel may drop the contents while it is unmapped. */
int vkv__kmod_unpin(int fd, uint64_t id);
/* Make resident again; *purged says whether the contents were dropped
 * (the buffer then holds zeroes). -ENOMEM leaves it purged. */
int vkv__kmod_pin(int fd, uint64_t id, bool *purged);
int vkv__kmod_info(int fd, struct vkv_ioc_info *info);
/* Map [off, off + len) of a buffer (page-aligned) read/write shared, at
 * `fixed` (MAP_FIXED) when not NULL. -ENODATA when the buffer is purged. */
int vkv__kmod_map(int fd, const struct vkv_kmod_buf *buf, uint64_t off,
		  uint64_t len, void *fixed, void **out);

#endif /* VKV_KMOD_DEV_H */
