// SPDX-License-Identifier: MIT
/*
 * stats_remove.c - remove another process's stats segment file without
 * ever removing a live one.
 *
 * Both libvkv (its sweep of dead segments, stats.c) and vkvstat (its
 * clean-up, tools/vkvstat/segment_reader.c) remove segments of dead
 * processes, and both face the same race: between judging the file under
 * VKV_STATS_PREFIX<pid> and unlinking it, a new process may get the dead
 * pid and create its segment under the same name. Unlinking by name would
 * then remove the new, live segment. So the file is first renamed to a name
 * of our own (which neither vkvstat nor a sweep matches), judged there by
 * the caller, and unlinked only there; a file that turns out to be alive,
 * or cannot be judged, is renamed back without replacing anything. The
 * name is empty only for that moment, which a reader sees as a process
 * that has not published yet.
 *
 * This file needs nothing but libc: vkvstat links its object directly.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <unistd.h>

#include "internal.h"

/* Put a file we took but must not remove back under its name, never over
 * a file that took the name meanwhile. One did only if a process with this
 * pid created its segment since we took ours: that process's own creation
 * would have replaced ours (libvkv unlinks what it finds under its name),
 * so ours goes. */
static void put_back(int dfd, const char *tmp, const char *name)
{
	if (renameat2(dfd, tmp, dfd, name, RENAME_NOREPLACE) == 0)
		return;
	if (errno == EINVAL || errno == ENOSYS) { /* no RENAME_NOREPLACE here */
		if (linkat(dfd, tmp, dfd, name, 0) == 0 || errno == EEXIST)
			unlinkat(dfd, tmp, 0);
		return;
	}
	if (errno == EEXIST)
		unlinkat(dfd, tmp, 0);
}

int vkv__stats_remove_dead(int dfd, const char *name,
			   bool (*dead)(int fd, void *arg), void *arg)
{
	char tmp[NAME_MAX + 1];
	int fd, err;

	if (snprintf(tmp, sizeof(tmp), "%s.swept-by-%d", name, (int)getpid()) >=
	    (int)sizeof(tmp))
		return -ENAMETOOLONG;
	if (renameat(dfd, name, dfd, tmp) != 0)
		return -errno; /* gone already (its owner, another sweeper) */
	fd = openat(dfd, tmp, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		err = -errno;
		put_back(dfd, tmp, name);
		return err;
	}
	/* fd stays open until the file is gone or back: a lock that `dead`
	 * took on it keeps out anyone who would lock the file meanwhile. */
	if (!dead(fd, arg))
		err = -EBUSY;
	else if (unlinkat(dfd, tmp, 0) != 0)
		err = -errno;
	else
		err = 0;
	if (err)
		put_back(dfd, tmp, name);
	close(fd);
	return err;
}
