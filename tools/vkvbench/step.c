// SPDX-License-Identifier: MIT
/*
 * step.c - `vkvbench step` (being written; see issue 2, item 10).
 */
#include "vkvbench.h"

int bench_step(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	fprintf(stderr, "vkvbench step: not implemented yet\n");
	return BENCH_SKIP;
}
