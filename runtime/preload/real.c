// SPDX-License-Identifier: MIT
/*
 * real.c - the functions behind the shim's wrappers: the real dlsym and
 * the real CUDA driver entry points.
 *
 * The shim defines dlsym itself, so its own lookups must use glibc's
 * through dlvsym (dlsym has two symbol versions: GLIBC_2.34 in libc.so.6
 * since glibc 2.34, GLIBC_2.2.5 before and for old binaries).
 *
 * dlsym(RTLD_NEXT, name) depends on who calls it: it searches the objects
 * loaded after the caller. Forwarded as is from inside the shim it would
 * search after the shim instead, and hand an interposer its own symbol
 * back. vkv__dlsym_next() walks the link map after the real caller's
 * object instead, asking each object for the symbol and keeping the
 * answer only when that object defines it.
 *
 * The driver table is filled by dlsym of exact symbol names on the
 * libcuda.so.1 handle, never through cuGetProcAddress: the names pin the
 * ABI we were written for, and the lookup cannot come back to the shim.
 */
#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <string.h>

#include "preload.h"

struct vkv_preload_real vkv__real;

typedef void *(*dlsym_fn)(void *, const char *);

static dlsym_fn real_dlsym_fn; /* set once; racing writers store the same */

void *vkv__real_dlsym(void *handle, const char *name)
{
	dlsym_fn f = __atomic_load_n(&real_dlsym_fn, __ATOMIC_ACQUIRE);

	if (!f) {
		void *p = dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.34");

		if (!p)
			p = dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.2.5");
		if (!p)
			return NULL;
		memcpy(&f, &p, sizeof(p));
		__atomic_store_n(&real_dlsym_fn, f, __ATOMIC_RELEASE);
	}
	return f(handle, name);
}

/* The object that defines the code or data at p, or NULL. */
static struct link_map *object_of(const void *p)
{
	struct link_map *lm = NULL;
	Dl_info info;

	if (!dladdr1(p, &info, (void **)&lm, RTLD_DL_LINKMAP))
		return NULL;
	return lm;
}

void *vkv__dlsym_next(const void *caller, const char *name)
{
	struct link_map *self = object_of(caller), *l;

	if (!self)
		return vkv__real_dlsym(RTLD_NEXT, name);
	for (l = self->l_next; l; l = l->l_next) {
		void *h, *p;

		if (!l->l_name || !l->l_name[0])
			continue;
		h = dlopen(l->l_name, RTLD_LAZY | RTLD_NOLOAD);
		if (!h)
			continue;
		p = vkv__real_dlsym(h, name);
		dlclose(h);
		if (p && object_of(p) == l)
			return p;
	}
	return NULL;
}

int vkv__preload_resolve(void)
{
	void *lib = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_NOLOAD);
	void *p;

	if (!lib)
		lib = dlopen("libcuda.so.1", RTLD_LAZY);
	if (!lib) {
		vkv__preload_log(1, "no CUDA driver (dlopen libcuda.so.1: %s)",
				 dlerror());
		return -ENODEV;
	}
	vkv__real.lib = lib;
	p = vkv__real_dlsym(lib, "cuGetProcAddress_v2");
	memcpy(&vkv__real.getproc_v2, &p, sizeof(p));
	p = vkv__real_dlsym(lib, "cuGetProcAddress");
	memcpy(&vkv__real.getproc_v1, &p, sizeof(p));
#define VKV_PRELOAD_REAL_LOAD(field, decl, sym)                               \
	p = vkv__real_dlsym(lib, sym);                                        \
	memcpy(&vkv__real.field, &p, sizeof(p));
	VKV_PRELOAD_REAL(VKV_PRELOAD_REAL_LOAD)
#undef VKV_PRELOAD_REAL_LOAD
	return 0;
}
