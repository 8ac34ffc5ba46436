// SPDX-License-Identifier: GPL-2.0
/*
 * vkv_sysfs.c - counters of vkv.ko in sysfs, one value per file, for
 * vkvstat and for people:
 *
 *   /sys/class/misc/vkv/{bytes,buffers,purgeable_bytes,purged,
 *                        alloc_failures,max_total,max_file}
 *   /sys/class/misc/vkv/nodes/nodeN/{bytes,buffers,huge_chunks,
 *                                     failures,purged}
 *
 * bytes and buffers are gauges; the others count since the module loaded.
 */
#include <linux/device.h>
#include <linux/kobject.h>
#include <linux/nodemask.h>
#include <linux/slab.h>
#include <linux/sysfs.h>

#include "vkv.h"

static ssize_t bytes_show(struct device *dev, struct device_attribute *attr,
			  char *buf)
{
	return sysfs_emit(buf, "%lld\n", atomic64_read(&vkv_stats.bytes));
}
static DEVICE_ATTR_RO(bytes);

static ssize_t buffers_show(struct device *dev, struct device_attribute *attr,
			    char *buf)
{
	return sysfs_emit(buf, "%lld\n", atomic64_read(&vkv_stats.buffers));
}
static DEVICE_ATTR_RO(buffers);

static ssize_t purgeable_bytes_show(struct device *dev,
				    struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%lld\n",
			  atomic64_read(&vkv_stats.purgeable_pages) <<
			  PAGE_SHIFT);
}
static DEVICE_ATTR_RO(purgeable_bytes);

static ssize_t purged_show(struct device *dev, struct device_attribute *attr,
			   char *buf)
{
	return sysfs_emit(buf, "%lld\n", atomic64_read(&vkv_stats.purged));
}
static DEVICE_ATTR_RO(purged);

static ssize_t alloc_failures_show(struct device *dev,
				   struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%lld\n", atomic64_read(&vkv_stats.failures));
}
static DEVICE_ATTR_RO(alloc_failures);

static ssize_t max_total_show(struct device *dev,
			      struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%lu\n", vkv_limit_total());
}
static DEVICE_ATTR_RO(max_total);

static ssize_t max_file_show(struct device *dev,
			     struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%lu\n", vkv_limit_file());
}
static DEVICE_ATTR_RO(max_file);

static struct attribute *vkv_dev_attrs[] = {
	&dev_attr_bytes.attr,
	&dev_attr_buffers.attr,
	&dev_attr_purgeable_bytes.attr,
	&dev_attr_purged.attr,
	&dev_attr_alloc_failures.attr,
	&dev_attr_max_total.attr,
	&dev_attr_max_file.attr,
	NULL,
};

static const struct attribute_group vkv_dev_group = {
	.attrs = vkv_dev_attrs,
};

const struct attribute_group *vkv_dev_groups[] = {
	&vkv_dev_group,
	NULL,
};

/* ------------------------------------------------------------- per node */

struct vkv_node_kobj {
	struct kobject kobj;
	int nid;
};

struct vkv_node_attr {
	struct attribute attr;
	size_t offset; /* of the atomic64_t in struct vkv_node_stats */
};

#define VKV_NODE_ATTR(_name, _field)					\
	static struct vkv_node_attr vkv_node_attr_##_name = {		\
		.attr = { .name = #_name, .mode = 0444 },		\
		.offset = offsetof(struct vkv_node_stats, _field),	\
	}

VKV_NODE_ATTR(bytes, bytes);
VKV_NODE_ATTR(buffers, buffers);
VKV_NODE_ATTR(huge_chunks, huge);
VKV_NODE_ATTR(failures, failures);
VKV_NODE_ATTR(purged, purged);

static struct attribute *vkv_node_attrs[] = {
	&vkv_node_attr_bytes.attr,
	&vkv_node_attr_buffers.attr,
	&vkv_node_attr_huge_chunks.attr,
	&vkv_node_attr_failures.attr,
	&vkv_node_attr_purged.attr,
	NULL,
};
ATTRIBUTE_GROUPS(vkv_node);

static ssize_t vkv_node_show(struct kobject *kobj, struct attribute *attr,
			     char *buf)
{
	struct vkv_node_kobj *nk = container_of(kobj, struct vkv_node_kobj,
						kobj);
	struct vkv_node_attr *na = container_of(attr, struct vkv_node_attr,
						attr);
	atomic64_t *v = (void *)&vkv_stats.node[nk->nid] + na->offset;

	return sysfs_emit(buf, "%lld\n", atomic64_read(v));
}

static const struct sysfs_ops vkv_node_sysfs_ops = {
	.show = vkv_node_show,
};

static void vkv_node_release(struct kobject *kobj)
{
	kfree(container_of(kobj, struct vkv_node_kobj, kobj));
}

static struct kobj_type vkv_node_ktype = {
	.release = vkv_node_release,
	.sysfs_ops = &vkv_node_sysfs_ops,
	.default_groups = vkv_node_groups,
};

static struct kobject *vkv_nodes_dir;
static struct vkv_node_kobj **vkv_node_kobjs; /* [nr_node_ids] */

void vkv_sysfs_exit(void)
{
	int nid;

	if (!vkv_nodes_dir)
		return;
	for (nid = 0; nid < nr_node_ids; nid++)
		if (vkv_node_kobjs[nid])
			kobject_put(&vkv_node_kobjs[nid]->kobj);
	kfree(vkv_node_kobjs);
	kobject_put(vkv_nodes_dir);
	vkv_nodes_dir = NULL;
}

/* nodes/nodeN for every node that has memory. */
int vkv_sysfs_init(struct device *dev)
{
	struct vkv_node_kobj *nk;
	int nid, ret;

	vkv_node_kobjs = kcalloc(nr_node_ids, sizeof(*vkv_node_kobjs),
				 GFP_KERNEL);
	if (!vkv_node_kobjs)
		return -ENOMEM;
	vkv_nodes_dir = kobject_create_and_add("nodes", &dev->kobj);
	if (!vkv_nodes_dir) {
		kfree(vkv_node_kobjs);
		return -ENOMEM;
	}
	for_each_node_state(nid, N_MEMORY) {
		nk = kzalloc(sizeof(*nk), GFP_KERNEL);
		if (!nk) {
			ret = -ENOMEM;
			goto unwind;
		}
		nk->nid = nid;
		ret = kobject_init_and_add(&nk->kobj, &vkv_node_ktype,
					   vkv_nodes_dir, "node%d", nid);
		if (ret) {
			kobject_put(&nk->kobj);
			goto unwind;
		}
		vkv_node_kobjs[nid] = nk;
	}
	return 0;

unwind:
	vkv_sysfs_exit();
	return ret;
}
