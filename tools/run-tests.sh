#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The whole test run (README's test command, and CI's): the Check suites in
# a plain build, under ASan+UBSan, under TSan and under valgrind, then every
# part's own harness. Prints one line per step and "N passed, N failed" last.
set -uo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-$(nproc)}
passed=0
failed=0
failed_names=()
LOG=${VKV_TEST_LOG:-build/test-logs}
mkdir -p "$LOG"

step() {
	local name=$1
	shift
	local log="$LOG/${name//[^A-Za-z0-9_.-]/_}.log"
	local t0=$SECONDS
	if "$@" >"$log" 2>&1; then
		passed=$((passed + 1))
		printf 'PASS  %-28s %4ds\n' "$name" $((SECONDS - t0))
	else
		local rc=$?
		failed=$((failed + 1))
		failed_names+=("$name")
		printf 'FAIL  %-28s %4ds (rc %d, log %s)\n' "$name" $((SECONDS - t0)) "$rc" "$log"
		tail -n 40 "$log" | sed 's/^/    | /'
	fi
}

step build make -j"$JOBS" all
step check make -j"$JOBS" check
step hugetlb tests/check_hugetlb.sh
step check-asan make -j"$JOBS" SAN=asan BUILD=build-asan check
step check-tsan make -j"$JOBS" SAN=tsan BUILD=build-tsan check
step valgrind make -j"$JOBS" valgrind
step lint make lint
step install tests/check_install.sh
step vkvstat-cli make vkvstat-test-cli
step vkvstat-serve make vkvstat-test-serve
step vkvstat-fuzz make BUILD=build-fuzz vkvstat-fuzz-run
# parts append their steps below this line
step gpu-validation bash -c 'tests/gpu/run.sh; rc=$?; [ $rc -eq 0 ] || [ $rc -eq 77 ]'
step kmod-vm tests/kmod/run.sh
step pytest tests/python/run.sh

echo
[ ${#failed_names[@]} -eq 0 ] || echo "failed: ${failed_names[*]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
