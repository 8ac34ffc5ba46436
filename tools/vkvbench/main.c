// SPDX-License-Identifier: MIT
/*
 * main.c - vkvbench: benchmarks of libvkv against the floors they could
 * reach, and the serving demo (`vkvbench serve`).
 *
 * Adding a subcommand: write tools/vkvbench/<name>.c exporting
 * `int bench_<name>(int argc, char **argv)`, declare it in vkvbench.h and add
 * one row to `cmds` below. mk/vkvbench.mk builds every .c file of this
 * directory, so nothing else changes. Subcommands print a human report by default and
 * one JSON object with --json; they return BENCH_OK, BENCH_FAIL,
 * BENCH_USAGE or BENCH_SKIP (77, what they need is missing here).
 */
#include <stdio.h>
#include <string.h>

#include "vkvbench.h"

static const struct bench_cmd cmds[] = {
	{ "map", "commit + release cost per page, libvkv vs the raw backend floor",
	  bench_map },
	{ "step", "trace-driven continuous batching: step latency, look-ahead, memory",
	  bench_step },
	{ "tier", "evict/restore GB/s to DRAM or NVMe vs memcpy / fio in the same run",
	  bench_tier },
	{ "serve", "the demo: a small batched decoder serving a trace from vkv regions",
	  bench_serve },
	{ "attn", "decode attention: vkv's contiguous layout vs 16-token paged blocks",
	  bench_attn },
	{ "gather", "a slot's pages device <-> pinned host: one kernel vs a copy per range",
	  bench_gather },
	{ "preload", "the LD_PRELOAD shim's arena on a PyTorch-like trace: mapped vs live peak",
	  bench_preload },
};

#define NCMDS (sizeof(cmds) / sizeof(cmds[0]))

static void usage(FILE *f)
{
	fprintf(f, "usage: vkvbench <command> [options]   (vkv %s)\n\ncommands:\n",
		vkv_version());
	for (size_t i = 0; i < NCMDS; i++)
		fprintf(f, "  %-8s %s\n", cmds[i].name, cmds[i].help);
	fprintf(f, "\n`vkvbench <command> --help` lists a command's options.\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return BENCH_USAGE;
	}
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") ||
	    !strcmp(argv[1], "help")) {
		usage(stdout);
		return BENCH_OK;
	}
	for (size_t i = 0; i < NCMDS; i++)
		if (!strcmp(argv[1], cmds[i].name))
			return cmds[i].run(argc - 1, argv + 1);
	fprintf(stderr, "vkvbench: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return BENCH_USAGE;
}
