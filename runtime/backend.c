// SPDX-License-Identifier: MIT
/*
 * backend.c - choosing and opening a backend.
 *
 * VKV_BACKEND_AUTO means "cuda when a device is usable here, else host";
 * a backend asked for by name that cannot open is an error (-ENODEV), not
 * a silent fallback, so that a misconfigured server fails loudly.
 */
#include <errno.h>
#include <string.h>

#include "internal.h"

#ifndef VKV_HAVE_CUDA_BACKEND
const struct vkv_backend_ops *const vkv__backend_cuda_ops = NULL;
#endif
#ifndef VKV_HAVE_KMOD_BACKEND
const struct vkv_backend_ops *const vkv__backend_kmod_ops = NULL;
#endif

static const struct vkv_backend_ops *ops_for(enum vkv_backend_kind kind)
{
	switch (kind) {
	case VKV_BACKEND_HOST:
		return &vkv__backend_host_ops;
	case VKV_BACKEND_CUDA:
		return vkv__backend_cuda_ops;
	case VKV_BACKEND_KMOD:
		return vkv__backend_kmod_ops;
	default:
		return NULL;
	}
}

static int open_kind(struct vkv_backend *b, enum vkv_backend_kind kind,
		     const struct vkv_ctx_config *cfg)
{
	const struct vkv_backend_ops *ops = ops_for(kind);
	int err;

	if (!ops)
		return vkv__set_error(-ENODEV, "backend %s is not compiled in",
				      vkv_backend_name(kind));
	memset(b, 0, sizeof(*b));
	b->ops = ops;
	b->kind = kind;
	b->unbacked = cfg->unbacked;
	b->device = cfg->device;
	err = ops->open(b, cfg);
	if (err)
		b->ops = NULL;
	return err;
}

int vkv__backend_open(struct vkv_backend *b, const struct vkv_ctx_config *cfg)
{
	int err;

	if (cfg->backend != VKV_BACKEND_AUTO)
		return open_kind(b, cfg->backend, cfg);
	err = open_kind(b, VKV_BACKEND_CUDA, cfg);
	if (err == 0 || err == -EINVAL)
		return err;
	if (err == -ENODEV)
		vkv__debug("auto: cuda not usable (%s); using host",
			   vkv_last_error());
	else
		vkv__warn("auto: cuda backend failed (%s); using host",
			  vkv_strerror(err));
	vkv__clear_error();
	return open_kind(b, VKV_BACKEND_HOST, cfg);
}

int vkv__backend_copy_batch(struct vkv_backend *b, bool to_host, bool pinned,
			    void *const *host, const uint64_t *dev, size_t n,
			    uint64_t bytes, vkv_fence *done)
{
	int err = 0;

	if (b->ops->copy_batch)
		return b->ops->copy_batch(b, to_host, pinned, host, dev, n, bytes,
					  done);
	for (size_t i = 0; i < n && !err; i++)
		err = to_host ? b->ops->copy_to_host(b, host[i], dev[i], bytes)
			      : b->ops->copy_from_host(b, dev[i], host[i], bytes);
	if (!err && done)
		*done = 0;
	return err;
}

VKV_API const char *vkv_backend_name(enum vkv_backend_kind kind)
{
	static const char *const names[VKV_BACKEND_COUNT] = {
		[VKV_BACKEND_AUTO] = "auto",
		[VKV_BACKEND_HOST] = "host",
		[VKV_BACKEND_CUDA] = "cuda",
		[VKV_BACKEND_KMOD] = "kmod",
	};

	if ((unsigned)kind >= VKV_BACKEND_COUNT)
		return "?";
	return names[kind];
}
