#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The host backend with a few reserved hugetlb pages, fewer than the tests
# use: 2 MiB pages come from hugetlb until it runs out, then from ordinary
# memory, in the same slots and tensors. Runs the core and tier suites and
# serve --verify that way. Reserving huge pages is a system setting: this
# needs root and a machine that reserves none (CI's), and puts the
# setting back. Anywhere else it says why and passes without running.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
knob=/proc/sys/vm/nr_hugepages
if [ "$(id -u)" -ne 0 ] || [ ! -w "$knob" ]; then
	echo "check_hugetlb: skipped (needs root to reserve huge pages)"
	exit 0
fi
if [ "$(cat "$knob")" -ne 0 ]; then
	echo "check_hugetlb: skipped (this machine already reserves huge pages)"
	exit 0
fi
trap 'echo 0 > "$knob"' EXIT
echo 16 > "$knob"
free=$(awk '/^HugePages_Free:/ { print $2 }' /proc/meminfo)
if [ "${free:-0}" -lt 4 ]; then
	echo "check_hugetlb: skipped (the kernel reserved only ${free:-0} huge pages)"
	exit 0
fi
echo "check_hugetlb: $free huge pages reserved"
rc=0
VKV_LOG=quiet VKV_BACKEND=host "$BUILD/tests/test_core" || rc=1
VKV_LOG=quiet VKV_BACKEND=host VKV_TEST_DIR=${TIER_TEST_DIR:-/var/tmp} \
	VKV_TEST_PAGE=2097152 "$BUILD/tests/test_tier" || rc=1
"$BUILD/bin/vkvbench" serve --backend host --verify >/dev/null || rc=1
left=$(awk '/^HugePages_Free:/ { print $2 }' /proc/meminfo)
if [ "$left" -ne "$free" ]; then
	echo "check_hugetlb: $((free - left)) huge pages still in use after the runs" >&2
	rc=1
fi
exit $rc
