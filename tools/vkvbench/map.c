// SPDX-License-Identifier: MIT
/*
 * map.c - `vkvbench map` (being written; see issue 2, item 10).
 */
#include "vkvbench.h"

int bench_map(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	fprintf(stderr, "vkvbench map: not implemented yet\n");
	return BENCH_SKIP;
}
