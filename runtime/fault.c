// SPDX-License-Identifier: MIT
/*
 * fault.c - fault injection, an ordinary documented hook.
 *
 * VKV_FAULT_PAGE_CREATE=N fails the Nth page creation of the process,
 * VKV_FAULT_PAGE_CREATE=N,every fails the Nth and every later one (same for
 * VKV_FAULT_MAP). The backends consult it before calling the OS or driver,
 * so every error path above the backend can be driven by a test.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static atomic_ulong calls[VKV_FAULT_COUNT];

static const enum vkv_opt_id site_opt[VKV_FAULT_COUNT] = {
	[VKV_FAULT_PAGE_CREATE] = VKV_OPT_FAULT_PAGE_CREATE,
	[VKV_FAULT_MAP] = VKV_OPT_FAULT_MAP,
	[VKV_FAULT_HUGETLB] = VKV_OPT_FAULT_HUGETLB,
	[VKV_FAULT_DRAM_ALLOC] = VKV_OPT_FAULT_DRAM_ALLOC,
	[VKV_FAULT_NVME_WRITE] = VKV_OPT_FAULT_NVME_WRITE,
	[VKV_FAULT_NVME_READ] = VKV_OPT_FAULT_NVME_READ,
	[VKV_FAULT_NVME_CORRUPT] = VKV_OPT_FAULT_NVME_CORRUPT,
	[VKV_FAULT_NVME_ENOSPC] = VKV_OPT_FAULT_NVME_ENOSPC,
	[VKV_FAULT_IO_URING] = VKV_OPT_FAULT_IO_URING,
};

bool vkv__fault_hit(enum vkv_fault_site site)
{
	const char *spec = vkv__opt_str(site_opt[site]);
	unsigned long nth, n;
	char *end;

	if (!*spec)
		return false;
	nth = strtoul(spec, &end, 10);
	if (end == spec || nth == 0)
		return false;
	n = atomic_fetch_add(&calls[site], 1) + 1;
	if (!strcmp(end, ",every"))
		return n >= nth;
	return n == nth;
}

void vkv__fault_reset(void)
{
	for (unsigned i = 0; i < VKV_FAULT_COUNT; i++)
		atomic_store(&calls[i], 0);
}
