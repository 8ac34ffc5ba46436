// SPDX-License-Identifier: MIT
/*
 * preload.c - the shim's one-time initialisation, its recursion guard, its
 * log and its fork handling (overview: preload.h).
 *
 * Initialisation happens on the first call into the shim that needs it
 * (an exported cuMem* entry point, cuGetProcAddress, or dlsym of a name we
 * serve), not in a constructor: a program that never touches CUDA pays
 * nothing, and by then libc is fully up. It reads the options (getenv
 * only), opens the log, finds the driver and registers the fork handlers.
 * While it runs, the thread's guard is raised so that the driver's own
 * dlsym calls during dlopen go straight through.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "preload.h"

bool vkv__preload_on;

static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;
static int init_done; /* 1 once initialised (release/acquire) */
static int log_fd = 2;

/* Calls of this thread currently inside the shim. */
static __thread int depth __attribute__((tls_model("initial-exec")));

void vkv__preload_log(int debug, const char *fmt, ...)
{
	unsigned level = vkv__opt_enum(VKV_OPT_LOG); /* quiet, warn, debug */
	char buf[512];
	va_list ap;
	int n;

	if (level == 0 || (debug && level < 2))
		return;
	n = snprintf(buf, sizeof(buf), "vkv: preload: %s",
		     debug ? "" : "warning: ");
	va_start(ap, fmt);
	n += vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(buf) - 2)
		n = (int)sizeof(buf) - 2;
	buf[n++] = '\n';
	if (write(log_fd, buf, (size_t)n) < 0)
		return; /* nowhere left to say it */
}

static void open_log(void)
{
	const char *path = vkv__opt_str(VKV_OPT_PRELOAD_LOG);
	int fd;

	if (!path[0])
		return;
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0) {
		vkv__preload_log(0, "cannot open VKV_PRELOAD_LOG=%s (%s); "
				 "logging to stderr", path, strerror(errno));
		return;
	}
	log_fd = fd;
}

static void fork_prepare(void)
{
	pthread_mutex_lock(&init_lock);
	vkv__serve_fork_prepare();
}

static void fork_parent(void)
{
	vkv__serve_fork_parent();
	pthread_mutex_unlock(&init_lock);
}

static void fork_child(void)
{
	vkv__serve_fork_child();
	pthread_mutex_init(&init_lock, NULL);
}

static void init_once(void)
{
	bool want = vkv__opt_enum(VKV_OPT_PRELOAD) == 1;

	open_log();
	if (vkv__preload_resolve() == 0 && want) {
		vkv__preload_on = true;
		vkv__preload_swaps_init();
	}
	pthread_atfork(fork_prepare, fork_parent, fork_child);
	vkv__preload_log(1, "%s (pid %d)",
			 vkv__preload_on ? "serving device allocations" :
			 want ? "no driver: passing through" :
				"disabled (VKV_PRELOAD=0): passing through",
			 (int)getpid());
}

/* stats.c names the backend in the segment through vkv_backend_name();
 * the shim has one kind of memory and does not link the backends. Local to
 * the shim (its version script exports only the interposed calls). */
const char *vkv_backend_name(enum vkv_backend_kind kind)
{
	return kind == VKV_BACKEND_CUDA ? "cuda" : "?";
}

bool vkv__preload_ready(void)
{
	if (__atomic_load_n(&init_done, __ATOMIC_ACQUIRE))
		return true;
	if (depth > 0)
		return false;
	depth++;
	pthread_mutex_lock(&init_lock);
	if (!init_done) {
		init_once();
		__atomic_store_n(&init_done, 1, __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&init_lock);
	depth--;
	return true;
}

bool vkv__preload_enter(void)
{
	if (depth > 0 || !vkv__preload_ready() || !vkv__preload_on)
		return false;
	depth++;
	return true;
}

void vkv__preload_leave(void)
{
	depth--;
}
