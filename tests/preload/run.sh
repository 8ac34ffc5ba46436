#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The LD_PRELOAD shim's tests: each case of preload_test runs as its own
# process under LD_PRELOAD=libvkv_preload.so against the CUDA driver test
# double, with the environment it needs. Prints one line per case and
# exits 1 if any failed, 77 if all were skipped.
#
#   BUILD=build tests/preload/run.sh [case...]
#   PRELOAD_DRIVER=real ...      against the installed driver (a GPU), not
#                                the double (tests/gpu/shim.sh does this)
set -u
cd "$(dirname "$0")/.."/..
BUILD=${BUILD:-build}
SAN=${SAN:-}
SHIM=$PWD/$BUILD/lib/libvkv_preload.so
TEST=$PWD/$BUILD/tests/preload/preload_test
DOUBLE=$PWD/$BUILD/tests/cudadouble

if [ -n "$SAN" ]; then
	# An instrumented program wants its sanitizer runtime first in the
	# library list; LD_PRELOAD puts the shim there.
	echo "preload tests: skipped under SAN=$SAN (LD_PRELOAD and sanitizer runtimes do not mix); the plain build runs them"
	exit 77
fi
for f in "$SHIM" "$TEST" "$DOUBLE/libcuda.so.1"; do
	[ -e "$f" ] || { echo "preload tests: missing $f" >&2; exit 1; }
done

LIBPATH=$DOUBLE
if [ "${PRELOAD_DRIVER:-double}" = real ]; then
	LIBPATH=$(printf '%s' "${LD_LIBRARY_PATH:-}" | tr ':' '\n' | grep -v cudadouble | paste -sd: -)
fi

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pass=0 fail=0 skip=0

# run NAME EXPECTED_OUTPUT_CHECK ENV... -- ARGS
run() {
	local name=$1
	shift
	local envs=()
	while [ $# -gt 0 ] && [ "$1" != -- ]; do envs+=("$1"); shift; done
	shift
	local dir="$TMP/$name"
	mkdir -p "$dir"
	env LD_PRELOAD="$SHIM" LD_LIBRARY_PATH="$LIBPATH" VKV_STATS_DIR="$dir" \
		VKV_LOG=warn "${envs[@]}" timeout 120 "$TEST" "$@" \
		>"$dir/out" 2>"$dir/err"
	local rc=$?
	if [ $rc -eq 0 ] && [ -s "$dir/out" ]; then
		echo "FAIL  $name (wrote to stdout)"; sed 's/^/    | /' "$dir/out"
		fail=$((fail + 1))
	elif [ $rc -eq 0 ]; then
		echo "PASS  $name"; pass=$((pass + 1))
	elif [ $rc -eq 77 ]; then
		echo "SKIP  $name: $(tail -n 1 "$dir/err")"; skip=$((skip + 1))
	else
		echo "FAIL  $name (rc $rc)"; sed 's/^/    | /' "$dir/err" | tail -n 20
		fail=$((fail + 1))
	fi
}

want() { [ $# -eq 0 ] || [[ " $* " == *" $CASE "* ]]; }

for CASE in driver disabled getproc dlsym limit threads fork foreign capture async devices faults log; do
	want "$@" || continue
	case $CASE in
	disabled) run disabled VKV_PRELOAD=0 -- disabled ;;
	limit) run limit VKV_PRELOAD_LIMIT=64M VKV_PRELOAD_IDLE=0 -- limit ;;
	devices) run devices VKV_FAKECUDA_DEVICES=2 VKV_FAKECUDA_GRANULARITY=64K -- devices ;;
	faults) run faults VKV_FAKECUDA_FAIL=cuMemCreate:3:every VKV_PRELOAD_IDLE=64M -- faults ;;
	log)
		# Debug messages go to VKV_PRELOAD_LOG, never to stdout.
		run log VKV_LOG=debug VKV_PRELOAD_LOG="$TMP/shim.log" -- driver
		if ! grep -q "vkv: preload: serving device allocations" "$TMP/shim.log" 2>/dev/null; then
			echo "FAIL  log (no message in VKV_PRELOAD_LOG)"; fail=$((fail + 1))
		fi ;;
	*) run "$CASE" -- "$CASE" ;;
	esac
done

echo "preload tests: $pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ] || exit 1
[ $pass -gt 0 ] || exit 77
exit 0
