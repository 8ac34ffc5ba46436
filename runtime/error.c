// SPDX-License-Identifier: MIT
/*
 * error.c - error codes, the thread's last-failure detail and messages.
 *
 * Every fallible call returns 0 or a negative errno. The detail of the
 * failure ("cuMemMap: CUDA_ERROR_OUT_OF_MEMORY (2)") is kept per thread so
 * that vkv_strerror() can say more than strerror() without any global
 * state that threads would race on.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static __thread int last_err;
static __thread char last_detail[256];
static __thread char strerror_buf[384];

int vkv__set_error(int err, const char *fmt, ...)
{
	va_list ap;

	last_err = err;
	va_start(ap, fmt);
	vsnprintf(last_detail, sizeof(last_detail), fmt, ap);
	va_end(ap);
	vkv__debug("error %d: %s", err, last_detail);
	return err;
}

int vkv__prefix_error(int err, const char *fmt, ...)
{
	char old[sizeof(last_detail)], pre[128];
	va_list ap;

	memcpy(old, last_detail, sizeof(old));
	va_start(ap, fmt);
	vsnprintf(pre, sizeof(pre), fmt, ap);
	va_end(ap);
	last_err = err;
	snprintf(last_detail, sizeof(last_detail), "%s: %s", pre, old);
	return err;
}

void vkv__clear_error(void)
{
	last_err = 0;
	last_detail[0] = '\0';
}

VKV_API const char *vkv_last_error(void)
{
	return last_detail;
}

VKV_API const char *vkv_strerror(int err)
{
	char base[128];
	int code = err < 0 ? -err : err;

	/* strerror_r (GNU) may return a static string instead of filling. */
	const char *txt = strerror_r(code, base, sizeof(base));
	if (last_err != 0 && (last_err == err || last_err == -err) &&
	    last_detail[0])
		snprintf(strerror_buf, sizeof(strerror_buf), "%s: %s", txt,
			 last_detail);
	else
		snprintf(strerror_buf, sizeof(strerror_buf), "%s", txt);
	return strerror_buf;
}

VKV_API const char *vkv_version(void)
{
#define VKV_STR2(x) #x
#define VKV_STR(x) VKV_STR2(x)
	return VKV_STR(VKV_VERSION_MAJOR) "." VKV_STR(VKV_VERSION_MINOR) "." VKV_STR(
		VKV_VERSION_PATCH);
}

static int log_level(void)
{
	/* 0 quiet, 1 warnings (default), 2 debug. Read each time: cheap, and
	 * tests change it. */
	switch (vkv__opt_enum(VKV_OPT_LOG)) {
	case 0:
		return 0;
	case 2:
		return 2;
	default:
		return 1;
	}
}

static void vmsg(const char *prefix, const char *fmt, va_list ap)
{
	char buf[512];

	vsnprintf(buf, sizeof(buf), fmt, ap);
	fprintf(stderr, "vkv: %s%s\n", prefix, buf);
}

void vkv__warn(const char *fmt, ...)
{
	va_list ap;

	if (log_level() < 1)
		return;
	va_start(ap, fmt);
	vmsg("warning: ", fmt, ap);
	va_end(ap);
}

void vkv__debug(const char *fmt, ...)
{
	va_list ap;

	if (log_level() < 2)
		return;
	va_start(ap, fmt);
	vmsg("", fmt, ap);
	va_end(ap);
}

const char *vkv__fmt_size(char *buf, size_t len, uint64_t bytes)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB",
					     "PiB" };
	double v = (double)bytes;
	unsigned u = 0;

	while (v >= 1024.0 && u + 1 < sizeof(units) / sizeof(units[0])) {
		v /= 1024.0;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%llu B", (unsigned long long)bytes);
	else
		snprintf(buf, len, "%.1f %s", v, units[u]);
	return buf;
}
