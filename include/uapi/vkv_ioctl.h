/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note OR MIT */
/*
 * vkv_ioctl.h - the ABI of /dev/vkv, shared by the kernel module (kmod/)
 * and the runtime (runtime/kmod_dev.c).
 *
 * /dev/vkv hands out buffers of pinned, zeroed, NUMA-placed memory. Every
 * open file owns its buffers; ids are per file. A buffer is mapped with
 * mmap(fd, offset = vkv_ioc_alloc.offset + byte offset inside the buffer),
 * MAP_SHARED only. A buffer marked purgeable (VKV_IOC_UNPIN) may be dropped
 * by the kernel under memory pressure while it is not mapped; VKV_IOC_PIN
 * makes it resident again and says whether its contents were lost.
 *
 * Rules of this header: fixed-size types only, explicit padding, every
 * struct a multiple of 8 bytes, reserved fields must be zero on input.
 * The module checks the sizes with BUILD_BUG_ON.
 */
#ifndef _UAPI_VKV_IOCTL_H
#define _UAPI_VKV_IOCTL_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define VKV_ABI_VERSION 1

/* vkv_ioc_alloc.node: let the kernel choose (the caller's local node). */
#define VKV_NODE_ANY 0xffffffffu

/*
 * vkv_ioc_alloc.flags. HUGE: 2 MiB physically contiguous chunks where
 * available (size rounded up to 2 MiB), 4 KiB pages otherwise. ZEROED:
 * accepted for clarity; memory is always zeroed.
 */
#define VKV_ALLOC_HUGE (1u << 0)
#define VKV_ALLOC_ZEROED (1u << 1)
#define VKV_ALLOC_FLAGS (VKV_ALLOC_HUGE | VKV_ALLOC_ZEROED)

/*
 * The mmap offset of a buffer is id << VKV_MMAP_ID_SHIFT: buffers are at
 * most 1 TiB, and a mapping may start anywhere (page-aligned) inside one.
 */
#define VKV_MMAP_ID_SHIFT 40
#define VKV_MAX_BUFFER_SIZE (1ull << VKV_MMAP_ID_SHIFT)

/*
 * VKV_IOC_ALLOC: create a buffer. size is rounded up to the page size, or
 * to 2 MiB with VKV_ALLOC_HUGE, and the rounded size is returned.
 */
struct vkv_ioc_alloc {
	__u64 size;      /* in: bytes (> 0); out: rounded */
	__u32 node;      /* in: NUMA node or VKV_NODE_ANY */
	__u32 flags;     /* in: VKV_ALLOC_* */
	__u64 id;        /* out: buffer id (> 0), unique in this file */
	__u64 offset;    /* out: mmap offset of the buffer's first byte */
	__u32 node_used; /* out: node of the buffer's first page */
	__u32 huge;      /* out: 2 MiB chunks that are contiguous */
	__u64 reserved[2]; /* in: zero */
};

/* VKV_IOC_FREE, VKV_IOC_UNPIN, VKV_IOC_PIN: one buffer. */
struct vkv_ioc_buf {
	__u64 id;      /* in */
	__u32 flags;   /* out: VKV_BUF_* */
	__u32 pad;     /* in: zero */
};

/*
 * vkv_ioc_buf.flags. PURGED (from PIN): the contents were dropped; the
 * buffer now holds fresh zeroed pages.
 */
#define VKV_BUF_PURGED (1u << 0)

/* VKV_IOC_INFO: the module and this file. */
struct vkv_ioc_info {
	__u32 abi_version;    /* VKV_ABI_VERSION */
	__u32 module_version; /* major << 16 | minor << 8 | patch */
	__u32 nr_nodes;       /* node ids are < nr_nodes */
	__u32 pad;
	__u64 page_size;      /* bytes */
	__u64 huge_size;      /* bytes of a VKV_ALLOC_HUGE chunk */
	__u64 max_total;      /* bytes, all files (module parameter) */
	__u64 max_file;       /* bytes, one open file (module parameter) */
	__u64 total_bytes;    /* resident now, all files */
	__u64 total_buffers;  /* all files */
	__u64 file_bytes;     /* resident now, this file */
	__u64 file_buffers;   /* this file */
	__u64 purgeable_bytes; /* marked purgeable and resident, all files */
	__u64 purged;         /* buffers purged since load */
	__u64 alloc_failures; /* since load */
	__u64 reserved[5];
};

#define VKV_IOC_MAGIC 0xCB
#define VKV_IOC_ALLOC _IOWR(VKV_IOC_MAGIC, 0x01, struct vkv_ioc_alloc)
#define VKV_IOC_FREE _IOW(VKV_IOC_MAGIC, 0x02, struct vkv_ioc_buf)
#define VKV_IOC_INFO _IOR(VKV_IOC_MAGIC, 0x03, struct vkv_ioc_info)
#define VKV_IOC_UNPIN _IOWR(VKV_IOC_MAGIC, 0x04, struct vkv_ioc_buf)
#define VKV_IOC_PIN _IOWR(VKV_IOC_MAGIC, 0x05, struct vkv_ioc_buf)

#endif /* _UAPI_VKV_IOCTL_H */
