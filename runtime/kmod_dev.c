// SPDX-License-Identifier: MIT
/*
 * kmod_dev.c - ioctl and mmap wrappers of /dev/vkv (see kmod_dev.h). Kept
 * free of the rest of libvkv so that the VM tests and the tier can link it
 * alone. Offsets are id << 40: 32-bit builds need a 64-bit off_t.
 */
#define _FILE_OFFSET_BITS 64

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kmod_dev.h"

int vkv__kmod_open(void)
{
	int fd = open(VKV_KMOD_PATH, O_RDWR | O_CLOEXEC);

	if (fd >= 0)
		return fd;
	return errno == ENOENT || errno == ENXIO ? -ENODEV : -errno;
}

int vkv__kmod_alloc(int fd, uint64_t size, int node, uint32_t flags,
		    struct vkv_kmod_buf *out)
{
	struct vkv_ioc_alloc a;

	memset(&a, 0, sizeof(a));
	a.size = size;
	a.node = node < 0 ? VKV_NODE_ANY : (uint32_t)node;
	a.flags = flags;
	if (ioctl(fd, VKV_IOC_ALLOC, &a) != 0)
		return -errno;
	out->id = a.id;
	out->size = a.size;
	out->offset = a.offset;
	out->node_used = a.node_used;
	out->huge = a.huge;
	return 0;
}

static int buf_ioctl(int fd, unsigned long cmd, uint64_t id, uint32_t *flags)
{
	struct vkv_ioc_buf a;

	memset(&a, 0, sizeof(a));
	a.id = id;
	if (ioctl(fd, cmd, &a) != 0)
		return -errno;
	if (flags)
		*flags = a.flags;
	return 0;
}

int vkv__kmod_free(int fd, uint64_t id)
{
	return buf_ioctl(fd, VKV_IOC_FREE, id, NULL);
}

int vkv__kmod_unpin(int fd, uint64_t id)
{
	return buf_ioctl(fd, VKV_IOC_UNPIN, id, NULL);
}

int vkv__kmod_pin(int fd, uint64_t id, bool *purged)
{
	uint32_t flags = 0;
	int err = buf_ioctl(fd, VKV_IOC_PIN, id, &flags);

	if (purged)
		*purged = !err && (flags & VKV_BUF_PURGED);
	return err;
}

int vkv__kmod_info(int fd, struct vkv_ioc_info *info)
{
	memset(info, 0, sizeof(*info));
	return ioctl(fd, VKV_IOC_INFO, info) == 0 ? 0 : -errno;
}

int vkv__kmod_map(int fd, const struct vkv_kmod_buf *buf, uint64_t off,
		  uint64_t len, void *fixed, void **out)
{
	void *p;

	if (off > buf->size || len > buf->size - off)
		return -EINVAL;
	p = mmap(fixed, len, PROT_READ | PROT_WRITE,
		 MAP_SHARED | (fixed ? MAP_FIXED : 0), fd,
		 (off_t)(buf->offset + off));
	if (p == MAP_FAILED)
		return -errno;
	*out = p;
	return 0;
}
