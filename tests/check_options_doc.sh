#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Every VKV_* option in runtime/options.c has a row in README.md's table.
set -eu
cd "$(dirname "$0")/.."
missing=0
for opt in $(grep -o '"VKV_[A-Z0-9_]*"' runtime/options.c | tr -d '"' | sort -u); do
	if ! grep -q "^| \`$opt\`" README.md; then
		echo "README.md has no row for $opt" >&2
		missing=1
	fi
done
[ $missing -eq 0 ] && echo "options table complete"
exit $missing
