// SPDX-License-Identifier: GPL-2.0
/*
 * vkv_main.c - /dev/vkv: the misc device of vkv.ko, its ioctls and mmap.
 *
 * vkv.ko gives vkv's host tier and kmod backend memory that userspace
 * cannot get by itself: pinned, zeroed, NUMA-placed pages in 2 MiB
 * physically contiguous chunks, accounted to the caller's memory cgroup
 * and capped by module limits, which the kernel may drop under memory
 * pressure while userspace has marked them purgeable. The ABI is
 * include/uapi/vkv_ioctl.h; the design is in docs/kmod.md.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/build_bug.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/version.h>

#include "vkv.h"
#include "uapi/vkv_ioctl.h"

unsigned long vkv_max_total;
module_param_named(max_total, vkv_max_total, ulong, 0644);
MODULE_PARM_DESC(max_total,
		 "Bytes all files together may hold (0 = 3/4 of RAM)");

unsigned long vkv_max_file;
module_param_named(max_file, vkv_max_file, ulong, 0644);
MODULE_PARM_DESC(max_file,
		 "Bytes one open file may hold (0 = the total limit)");

/* Ids are < 2^20 so that id << VKV_MMAP_ID_SHIFT stays a valid offset. */
#define VKV_MAX_ID ((1u << 20) - 1)
#define VKV_PGOFF_SHIFT (VKV_MMAP_ID_SHIFT - PAGE_SHIFT)
#define VKV_PGOFF_MASK ((1UL << VKV_PGOFF_SHIFT) - 1)

static int vkv_open(struct inode *inode, struct file *file)
{
	struct vkv_file *f;

	f = kzalloc(sizeof(*f), GFP_KERNEL_ACCOUNT);
	if (!f)
		return -ENOMEM;
	xa_init_flags(&f->bufs, XA_FLAGS_ALLOC1);
	file->private_data = f;
	return 0;
}

/* Runs once the last mapping is gone too: every VMA holds the file. */
static int vkv_release(struct inode *inode, struct file *file)
{
	struct vkv_file *f = file->private_data;
	struct vkv_buf *b;
	unsigned long id;

	xa_for_each(&f->bufs, id, b) {
		xa_erase(&f->bufs, id);
		vkv_buf_put(b);
	}
	xa_destroy(&f->bufs);
	WARN_ON(atomic64_read(&f->bytes) || atomic64_read(&f->buffers));
	kfree(f);
	return 0;
}

/* The buffer `id` of f with a reference, or NULL. */
static struct vkv_buf *vkv_lookup(struct vkv_file *f, u64 id)
{
	struct vkv_buf *b;

	if (!id || id > VKV_MAX_ID)
		return NULL;
	xa_lock(&f->bufs);
	b = xa_load(&f->bufs, id);
	if (b)
		vkv_buf_get(b);
	xa_unlock(&f->bufs);
	return b;
}

static long vkv_ioctl_alloc(struct vkv_file *f, void __user *uarg)
{
	struct vkv_ioc_alloc a;
	struct vkv_buf *b;
	int node = NUMA_NO_NODE;
	u32 id;
	int ret;

	if (copy_from_user(&a, uarg, sizeof(a)))
		return -EFAULT;
	if ((a.flags & ~VKV_ALLOC_FLAGS) || a.reserved[0] || a.reserved[1])
		return -EINVAL;
	if (!a.size || a.size > VKV_MAX_BUFFER_SIZE)
		return -EINVAL;
	if (a.node != VKV_NODE_ANY) {
		if (a.node >= nr_node_ids || !node_state(a.node, N_MEMORY))
			return -EINVAL;
		node = a.node;
	}

	ret = vkv_buf_create(f, a.size, node, a.flags, &b);
	if (ret)
		return ret;
	a.size = (u64)b->nr_pages << PAGE_SHIFT;
	a.node_used = b->node_used;
	a.huge = b->huge;

	ret = xa_alloc(&f->bufs, &id, b, XA_LIMIT(1, VKV_MAX_ID),
		       GFP_KERNEL_ACCOUNT);
	if (ret) {
		vkv_buf_put(b);
		return ret == -EBUSY ? -ENOSPC : ret;
	}
	/* From here another thread may free it by id: b is not ours. */
	a.id = id;
	a.offset = (u64)id << VKV_MMAP_ID_SHIFT;
	if (copy_to_user(uarg, &a, sizeof(a))) {
		b = xa_erase(&f->bufs, id);
		if (b)
			vkv_buf_put(b);
		return -EFAULT;
	}
	return 0;
}

static long vkv_ioctl_buf(struct vkv_file *f, unsigned int cmd,
			  void __user *uarg)
{
	struct vkv_ioc_buf a;
	struct vkv_buf *b;
	int ret;

	if (copy_from_user(&a, uarg, sizeof(a)))
		return -EFAULT;
	if (a.pad)
		return -EINVAL;
	if (cmd == VKV_IOC_FREE) {
		if (!a.id || a.id > VKV_MAX_ID)
			return -ENOENT;
		b = xa_erase(&f->bufs, a.id);
		if (!b)
			return -ENOENT;
		vkv_buf_put(b);
		return 0;
	}

	b = vkv_lookup(f, a.id);
	if (!b)
		return -ENOENT;
	if (cmd == VKV_IOC_UNPIN)
		ret = vkv_buf_unpin(b);
	else
		ret = vkv_buf_pin(b);
	vkv_buf_put(b);
	if (ret < 0)
		return ret;
	a.flags = ret ? VKV_BUF_PURGED : 0;
	if (copy_to_user(uarg, &a, sizeof(a)))
		return -EFAULT;
	return 0;
}

static long vkv_ioctl_info(struct vkv_file *f, void __user *uarg)
{
	struct vkv_ioc_info in;

	memset(&in, 0, sizeof(in));
	in.abi_version = VKV_ABI_VERSION;
	in.module_version = VKV_MODULE_VERSION;
	in.nr_nodes = nr_node_ids;
	in.page_size = PAGE_SIZE;
	in.huge_size = VKV_HUGE_SIZE;
	in.max_total = vkv_limit_total();
	in.max_file = vkv_limit_file();
	in.total_bytes = atomic64_read(&vkv_stats.bytes);
	in.total_buffers = atomic64_read(&vkv_stats.buffers);
	in.file_bytes = atomic64_read(&f->bytes);
	in.file_buffers = atomic64_read(&f->buffers);
	in.purgeable_bytes = (u64)atomic64_read(&vkv_stats.purgeable_pages)
			     << PAGE_SHIFT;
	in.purged = atomic64_read(&vkv_stats.purged);
	in.alloc_failures = atomic64_read(&vkv_stats.failures);
	if (copy_to_user(uarg, &in, sizeof(in)))
		return -EFAULT;
	return 0;
}

static long vkv_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct vkv_file *f = file->private_data;
	void __user *uarg = (void __user *)arg;

	switch (cmd) {
	case VKV_IOC_ALLOC:
		return vkv_ioctl_alloc(f, uarg);
	case VKV_IOC_FREE:
	case VKV_IOC_UNPIN:
	case VKV_IOC_PIN:
		return vkv_ioctl_buf(f, cmd, uarg);
	case VKV_IOC_INFO:
		return vkv_ioctl_info(f, uarg);
	default:
		return -ENOTTY;
	}
}

static void vkv_vm_open(struct vm_area_struct *vma)
{
	struct vkv_buf *b = vma->vm_private_data;

	mutex_lock(&vkv_lock);
	b->mapcount++;
	mutex_unlock(&vkv_lock);
	vkv_buf_get(b);
}

static void vkv_vm_close(struct vm_area_struct *vma)
{
	struct vkv_buf *b = vma->vm_private_data;

	mutex_lock(&vkv_lock);
	b->mapcount--;
	mutex_unlock(&vkv_lock);
	vkv_buf_put(b);
}

/*
 * Pages are inserted at mmap time; a fault only happens after something
 * zapped them (madvise(MADV_DONTNEED)), and puts the same page back.
 */
static vm_fault_t vkv_vm_fault(struct vm_fault *vmf)
{
	struct vm_area_struct *vma = vmf->vma;
	struct vkv_buf *b = vma->vm_private_data;
	unsigned long idx = vmf->pgoff & VKV_PGOFF_MASK;
	vm_fault_t ret = VM_FAULT_SIGBUS;
	int err;

	mutex_lock(&vkv_lock);
	if (!b->purged && !b->pinning && idx < b->nr_pages) {
		err = vm_insert_page(vma, vmf->address & PAGE_MASK,
				     b->pages[idx]);
		ret = (err && err != -EBUSY) ? vmf_error(err) : VM_FAULT_NOPAGE;
	}
	mutex_unlock(&vkv_lock);
	return ret;
}

static const struct vm_operations_struct vkv_vm_ops = {
	.open = vkv_vm_open,
	.close = vkv_vm_close,
	.fault = vkv_vm_fault,
};

static void vkv_vma_set_flags(struct vm_area_struct *vma, vm_flags_t flags)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 3, 0)
	vm_flags_set(vma, flags);
#else
	vma->vm_flags |= flags;
#endif
}

/* offset = id << VKV_MMAP_ID_SHIFT + byte offset inside the buffer. */
static int vkv_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct vkv_file *f = file->private_data;
	unsigned long first = vma->vm_pgoff & VKV_PGOFF_MASK;
	unsigned long n = vma_pages(vma);
	unsigned long count = n;
	struct vkv_buf *b;
	int ret;

	if (!(vma->vm_flags & VM_SHARED))
		return -EINVAL;
	b = vkv_lookup(f, vma->vm_pgoff >> VKV_PGOFF_SHIFT);
	if (!b)
		return -EINVAL;
	if (first >= b->nr_pages || n > b->nr_pages - first) {
		ret = -EINVAL;
		goto put;
	}
	vkv_vma_set_flags(vma, VM_MIXEDMAP | VM_DONTEXPAND | VM_DONTDUMP);

	mutex_lock(&vkv_lock);
	if (b->purged || b->pinning) {
		ret = -ENODATA;
	} else {
		ret = vm_insert_pages(vma, vma->vm_start, b->pages + first,
				      &count);
		if (!ret)
			b->mapcount++;
	}
	mutex_unlock(&vkv_lock);
	if (ret)
		goto put;
	/* The VMA keeps our reference until vkv_vm_close(). */
	vma->vm_private_data = b;
	vma->vm_ops = &vkv_vm_ops;
	return 0;

put:
	vkv_buf_put(b);
	return ret;
}

static const struct file_operations vkv_fops = {
	.owner = THIS_MODULE,
	.open = vkv_open,
	.release = vkv_release,
	.unlocked_ioctl = vkv_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.mmap = vkv_mmap,
	.llseek = noop_llseek,
};

static struct miscdevice vkv_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "vkv",
	.fops = &vkv_fops,
	.groups = vkv_dev_groups,
	.mode = 0600,
};

static int __init vkv_init(void)
{
	int ret;

	BUILD_BUG_ON(sizeof(struct vkv_ioc_alloc) != 56);
	BUILD_BUG_ON(sizeof(struct vkv_ioc_buf) != 16);
	BUILD_BUG_ON(sizeof(struct vkv_ioc_info) != 144);
	BUILD_BUG_ON(VKV_HUGE_SIZE != 2 * 1024 * 1024);
	BUILD_BUG_ON(VKV_MAX_BUFFER_SIZE >> PAGE_SHIFT > VKV_PGOFF_MASK + 1);

	ret = vkv_buf_init();
	if (ret)
		return ret;
	ret = misc_register(&vkv_misc);
	if (ret)
		goto exit_buf;
	ret = vkv_sysfs_init(vkv_misc.this_device);
	if (ret)
		goto deregister;
	pr_info("version %s loaded, limit %lu bytes total, %lu per file\n",
		VKV_MODULE_VERSION_STR, vkv_limit_total(), vkv_limit_file());
	return 0;

deregister:
	misc_deregister(&vkv_misc);
exit_buf:
	vkv_buf_exit();
	return ret;
}

static void __exit vkv_exit(void)
{
	vkv_sysfs_exit();
	misc_deregister(&vkv_misc);
	vkv_buf_exit();
}

module_init(vkv_init);
module_exit(vkv_exit);
MODULE_DESCRIPTION("vkv: pinned NUMA huge-page buffers for the KV host tier");
MODULE_AUTHOR("vkv project");
MODULE_LICENSE("GPL");
MODULE_VERSION(VKV_MODULE_VERSION_STR);
