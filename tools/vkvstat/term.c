// SPDX-License-Identifier: MIT
/*
 * term.c - what the human-facing output needs: compact sizes for narrow
 * columns, and whether colour is wanted.
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "vkvstat.h"

const char *vkvstat_size(char *buf, size_t len, uint64_t bytes)
{
	static const char units[] = "BKMGTPE";
	double v = (double)bytes;
	unsigned u = 0;

	if (bytes < 1024) {
		snprintf(buf, len, "%u", (unsigned)bytes);
		return buf;
	}
	while (v >= 1024.0 && u < sizeof(units) - 2) {
		v /= 1024.0;
		u++;
	}
	if (v >= 999.5) /* would print as 4 digits: "1024K" -> "1.00M" */
		snprintf(buf, len, "%.2f%c", v / 1024.0, units[u + 1]);
	else if (v >= 99.95)
		snprintf(buf, len, "%.0f%c", v, units[u]);
	else if (v >= 9.995)
		snprintf(buf, len, "%.1f%c", v, units[u]);
	else
		snprintf(buf, len, "%.2f%c", v, units[u]);
	return buf;
}

bool vkvstat_use_color(FILE *f, int mode)
{
	const char *nc = getenv("NO_COLOR");

	if (mode > 0)
		return true;
	if (mode < 0 || (nc && *nc))
		return false;
	return isatty(fileno(f));
}
