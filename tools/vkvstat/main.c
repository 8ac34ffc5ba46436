// SPDX-License-Identifier: MIT
/*
 * main.c - vkvstat's command line: which view, which options, which exit
 * code. See docs/vkvstat.md for the user's side.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "internal.h"
#include "vkvstat.h"

static const char usage_text[] =
	"usage: vkvstat [OPTIONS]              snapshot of every vkv process\n"
	"       vkvstat top [OPTIONS]          live view (q quits)\n"
	"       vkvstat probe [--dir D] [--size N] [--json]\n"
	"                                      what this machine offers, measured\n"
	"\n"
	"options:\n"
	"  --dir D          stats directory (default $VKV_STATS_DIR or /dev/shm);\n"
	"                   for probe: where the NVMe test file goes (default /tmp)\n"
	"  --json           JSON on stdout (schema_version 1)\n"
	"  --prometheus     Prometheus text exposition format on stdout\n"
	"  --pid P          only process P\n"
	"  --once           top: draw one screen and exit\n"
	"  -n, --iterations N   top: exit after N screens\n"
	"  -d, --interval S top: seconds between screens (default 1)\n"
	"  -s, --sort KEY   top: committed (default), inuse, reserved, peak, frag,\n"
	"                   evictions, pid, comm\n"
	"  --size N         probe: test file size (default 256M; K/M/G suffixes)\n"
	"  --color WHEN     auto (default: on a terminal, unless NO_COLOR is set),\n"
	"                   always, never\n"
	"  --no-clean       leave segments of dead processes in place\n"
	"  -h, --help       this text\n"
	"\n"
	"exit status: 0 ok (also when no process uses vkv), 1 error (stats\n"
	"directory unreadable, probe or output failed), 2 usage error.\n";

enum { OPT_JSON = 256, OPT_PROM, OPT_PID, OPT_ONCE, OPT_SIZE, OPT_COLOR,
       OPT_NO_CLEAN, OPT_DIR };

struct args {
	const char *cmd; /* NULL: snapshot */
	const char *dir;
	bool json, prom, once, clean;
	int32_t pid;
	int color;
	unsigned iterations;
	double interval;
	const char *sort;
	uint64_t size;
};

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "vkvstat: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'vkvstat --help'.\n");
	return VKVSTAT_EXIT_USAGE;
}

static bool parse_uint(const char *s, unsigned long long max,
		       unsigned long long *out)
{
	char *end;

	errno = 0;
	*out = strtoull(s, &end, 10);
	return *s >= '0' && *s <= '9' && !*end && !errno && *out <= max;
}

static bool sort_key_ok(const char *k)
{
	for (const char *const *s = vkvstat_top_sort_keys; *s; s++)
		if (!strcmp(*s, k))
			return true;
	return false;
}

static int parse(int argc, char **argv, struct args *a)
{
	static const struct option opts[] = {
		{ "dir", required_argument, NULL, OPT_DIR },
		{ "json", no_argument, NULL, OPT_JSON },
		{ "prometheus", no_argument, NULL, OPT_PROM },
		{ "pid", required_argument, NULL, OPT_PID },
		{ "once", no_argument, NULL, OPT_ONCE },
		{ "iterations", required_argument, NULL, 'n' },
		{ "interval", required_argument, NULL, 'd' },
		{ "sort", required_argument, NULL, 's' },
		{ "size", required_argument, NULL, OPT_SIZE },
		{ "color", required_argument, NULL, OPT_COLOR },
		{ "colour", required_argument, NULL, OPT_COLOR },
		{ "no-clean", no_argument, NULL, OPT_NO_CLEAN },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	unsigned long long v;
	char *end;
	int c;

	memset(a, 0, sizeof(*a));
	a->clean = true;
	a->interval = 1.0;
	a->sort = "committed";
	a->size = 256ull << 20;
	if (argc > 1 && argv[1][0] != '-') {
		a->cmd = argv[1];
		if (strcmp(a->cmd, "top") && strcmp(a->cmd, "probe"))
			return usage_error("unknown command '%s'", a->cmd);
		argv++;
		argc--;
	}
	while ((c = getopt_long(argc, argv, "n:d:s:h", opts, NULL)) != -1) {
		switch (c) {
		case OPT_DIR: a->dir = optarg; break;
		case OPT_JSON: a->json = true; break;
		case OPT_PROM: a->prom = true; break;
		case OPT_ONCE: a->once = true; break;
		case OPT_NO_CLEAN: a->clean = false; break;
		case 's':
			if (!sort_key_ok(optarg))
				return usage_error("unknown sort key '%s'", optarg);
			a->sort = optarg;
			break;
		case OPT_PID:
			if (!parse_uint(optarg, INT32_MAX, &v) || !v)
				return usage_error("bad pid '%s'", optarg);
			a->pid = (int32_t)v;
			break;
		case 'n':
			if (!parse_uint(optarg, 1000000000, &v) || !v)
				return usage_error("bad iteration count '%s'", optarg);
			a->iterations = (unsigned)v;
			break;
		case 'd':
			a->interval = strtod(optarg, &end);
			if (*end || !(a->interval >= 0.05 && a->interval <= 3600))
				return usage_error("bad interval '%s' (0.05 to 3600 s)",
						   optarg);
			break;
		case OPT_SIZE:
			if (vkv__parse_size(optarg, &a->size) || a->size < (1u << 20))
				return usage_error("bad size '%s' (at least 1M)", optarg);
			break;
		case OPT_COLOR:
			if (!strcmp(optarg, "always"))
				a->color = 1;
			else if (!strcmp(optarg, "never"))
				a->color = -1;
			else if (!strcmp(optarg, "auto"))
				a->color = 0;
			else
				return usage_error("bad --color '%s'", optarg);
			break;
		case 'h':
			fputs(usage_text, stdout);
			return -1;
		default:
			fprintf(stderr, "Try 'vkvstat --help'.\n");
			return VKVSTAT_EXIT_USAGE;
		}
	}
	if (optind < argc)
		return usage_error("unexpected argument '%s'", argv[optind]);
	if (a->json && a->prom)
		return usage_error("%s", "--json and --prometheus exclude each other");
	if (a->cmd && !strcmp(a->cmd, "top") && (a->json || a->prom))
		return usage_error("%s", "top draws a screen; use --json or "
					 "--prometheus without 'top'");
	if (a->cmd && !strcmp(a->cmd, "probe") && a->prom)
		return usage_error("%s", "probe has no --prometheus output");
	return 0;
}

static unsigned term_width(void)
{
	struct winsize ws;

	if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 40)
		return ws.ws_col;
	return 80;
}

static int snapshot(const struct args *a)
{
	struct vkvstat_snapshot s;
	const char *dir = vkvstat_stats_dir(a->dir);
	int rc = VKVSTAT_EXIT_OK;

	if (vkvstat_snapshot_take(&s, dir, a->clean ? VKVSTAT_SCAN_CLEAN : 0, true)) {
		vkvstat_snapshot_error(&s);
		rc = VKVSTAT_EXIT_ERROR;
		/* JSON readers still get a document, saying what went wrong */
		if (!a->json) {
			vkvstat_snapshot_free(&s);
			return rc;
		}
	}
	vkvstat_snapshot_warn(&s);
	if (a->json) {
		vkvstat_print_json(stdout, &s, a->pid);
	} else if (a->prom) {
		vkvstat_print_prometheus(stdout, &s, a->pid);
	} else {
		struct vkvstat_table_opts t = {
			.color = vkvstat_use_color(stdout, a->color),
			.pid = a->pid,
			.width = term_width(),
		};
		vkvstat_print_table(stdout, &s, &t);
	}
	if (fflush(stdout) || ferror(stdout)) {
		fprintf(stderr, "vkvstat: writing the output failed: %s\n",
			strerror(errno));
		rc = VKVSTAT_EXIT_ERROR;
	}
	vkvstat_snapshot_free(&s);
	return rc;
}

int main(int argc, char **argv)
{
	struct args a;
	int rc = parse(argc, argv, &a);

	if (rc)
		return rc < 0 ? VKVSTAT_EXIT_OK : rc;
	if (a.cmd && !strcmp(a.cmd, "probe")) {
		struct vkvstat_probe_opts p = {
			.dir = a.dir ? a.dir : "/tmp",
			.file_bytes = a.size,
			.json = a.json,
		};
		return vkvstat_probe(&p);
	}
	if (a.cmd && !strcmp(a.cmd, "top")) {
		struct vkvstat_top_opts t = {
			.dir = vkvstat_stats_dir(a.dir),
			.interval = a.interval,
			.sort = a.sort,
			.color = a.color,
			.frames = a.once ? 1 : a.iterations,
			.scan_flags = a.clean ? VKVSTAT_SCAN_CLEAN : 0,
		};
		return vkvstat_top(&t);
	}
	return snapshot(&a);
}
