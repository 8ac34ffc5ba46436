// SPDX-License-Identifier: MIT
/*
 * kmod_sysfs.c - vkv.ko's counters, read from sysfs.
 *
 * The module publishes one number per file (kmod/vkv_sysfs.c). This reads
 * whatever numeric attributes are there rather than a fixed list, so that a
 * module with more or fewer counters than this tool knows still shows all
 * of them, and a machine without the module shows "not loaded".
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vkvstat.h"

/* A sysfs value: one unsigned decimal number and a newline. */
static bool read_number(int dfd, const char *name, uint64_t *out)
{
	char buf[32], *end;
	ssize_t n;
	int fd;

	fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0 || !isdigit((unsigned char)buf[0]))
		return false;
	buf[n] = 0;
	errno = 0;
	*out = strtoull(buf, &end, 10);
	return errno == 0 && (*end == 0 || *end == '\n');
}

static bool name_ok(const char *n)
{
	if (!*n || strlen(n) >= 40)
		return false;
	for (; *n; n++)
		if (!islower((unsigned char)*n) && !isdigit((unsigned char)*n) &&
		    *n != '_')
			return false;
	return true;
}

static void add_dir(struct vkvstat_kmod *k, const char *path,
		    const char *prefix, int node)
{
	DIR *d = opendir(path);
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d)) != NULL && k->n < VKVSTAT_KMOD_MAX) {
		struct stat st;
		uint64_t v;

		if (!name_ok(de->d_name) || !strcmp(de->d_name, "dev") ||
		    fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) ||
		    !S_ISREG(st.st_mode) ||
		    !read_number(dirfd(d), de->d_name, &v))
			continue;
		snprintf(k->c[k->n].name, sizeof(k->c[k->n].name), "%s%s",
			 prefix, de->d_name);
		k->c[k->n].node = node;
		k->c[k->n].value = v;
		k->n++;
	}
	closedir(d);
}

static void add_nodes(struct vkvstat_kmod *k, const char *path)
{
	DIR *d = opendir(path);
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d)) != NULL) {
		char sub[1024];
		int node;
		char tail;

		if (sscanf(de->d_name, "node%d%c", &node, &tail) != 1 || node < 0)
			continue;
		snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name);
		add_dir(k, sub, "", node);
	}
	closedir(d);
}

void vkvstat_kmod_read(struct vkvstat_kmod *k)
{
	const char *root = getenv("VKVSTAT_SYSFS_ROOT");
	char path[512];
	struct stat st;

	memset(k, 0, sizeof(*k));
	if (!root || !*root)
		root = "/sys";
	k->dev_present = stat("/dev/vkv", &st) == 0 && S_ISCHR(st.st_mode);
	snprintf(path, sizeof(path), "%s/module/vkv", root);
	k->loaded = stat(path, &st) == 0;
	snprintf(path, sizeof(path), "%s/class/misc/vkv", root);
	add_dir(k, path, "", -1);
	snprintf(path, sizeof(path), "%s/class/misc/vkv/nodes", root);
	add_nodes(k, path);
	snprintf(path, sizeof(path), "%s/module/vkv/parameters", root);
	add_dir(k, path, "param_", -1);
	if (k->n)
		k->loaded = true;
}
