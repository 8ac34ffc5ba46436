// SPDX-License-Identifier: MIT
/*
 * serve.c - `vkvbench serve` (being written; see issue 2, item 10).
 */
#include "vkvbench.h"

int bench_serve(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	fprintf(stderr, "vkvbench serve: not implemented yet\n");
	return BENCH_SKIP;
}
