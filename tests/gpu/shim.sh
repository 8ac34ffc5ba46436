#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# tests/gpu/shim.sh - the LD_PRELOAD shim (libvkv_preload.so) on a real GPU.
#
#   1. tests/gpu/shim/prog.cu, a plain CUDA runtime program, built with the
#      static and with the shared runtime, run without and with the shim:
#      the same output, and the shim's log shows it served the allocations;
#   2. the shim's own test program (tests/preload/) against the installed
#      driver instead of the test double.
# PyTorch comes in tests/gpu/shim_torch.sh.
#
# Run by tests/gpu/run.sh when present; exits 77 without a GPU. Prints a
# Check-style "Checks: N, Failures: F, Errors: 0" line last.
#   BUILD=build tests/gpu/shim.sh
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
BUILD=${BUILD:-build}

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
	echo "tests/gpu/shim.sh: SKIP: no GPU on this machine"
	exit 77
fi
# The real driver, never the test double.
if [ -n "${LD_LIBRARY_PATH:-}" ]; then
	LD_LIBRARY_PATH=$(printf '%s' "$LD_LIBRARY_PATH" | tr ':' '\n' | grep -v cudadouble | paste -sd: -)
	export LD_LIBRARY_PATH
fi

SHIM=$PWD/$BUILD/lib/libvkv_preload.so
# VKV_GPU_PREBUILT=1: built elsewhere, use as is (no build tools here)
if [ "${VKV_GPU_PREBUILT:-0}" != 1 ]; then
	make -s BUILD="$BUILD" "$SHIM" "$BUILD/tests/preload/preload_test" >/dev/null || {
		echo "tests/gpu/shim.sh: cannot build the shim"; exit 1; }
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
checks=0 fails=0

ok() { checks=$((checks + 1)); echo "PASS  $*"; }
bad() { checks=$((checks + 1)); fails=$((fails + 1)); echo "FAIL  $*"; }

# The shim's one-line summary (VKV_LOG=debug) from a log file.
summary() { grep -o 'summary: .*' "$1" | tail -n 1; }
served() { grep -Eq 'summary: [0-9]+ device\(s\), [1-9][0-9]* allocations served' "$1"; }
field() { # log name -> the number before "name" in the summary
	summary "$1" | grep -Eo "[0-9]+ $2" | head -n 1 | cut -d' ' -f1
}

# ------------------------------------------------------- 1. a CUDA program
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
if [ -x "$NVCC" ]; then
	for rt in static shared; do
		bin=$TMP/shim_prog_$rt
		if ! "$NVCC" -O2 -arch=native -cudart "$rt" -o "$bin" tests/gpu/shim/prog.cu >"$TMP/nvcc.log" 2>&1 &&
			! "$NVCC" -O2 -cudart "$rt" -o "$bin" tests/gpu/shim/prog.cu >"$TMP/nvcc.log" 2>&1; then
			bad "shim_prog ($rt runtime): nvcc failed"; sed 's/^/    | /' "$TMP/nvcc.log" | tail -n 5
			continue
		fi
		"$bin" >"$TMP/plain_$rt.out" 2>&1 || { bad "shim_prog ($rt) without the shim"; continue; }
		env LD_PRELOAD="$SHIM" VKV_LOG=debug VKV_PRELOAD_LOG="$TMP/prog_$rt.log" \
			"$bin" >"$TMP/shim_$rt.out" 2>&1 || {
			bad "shim_prog ($rt) under the shim"; sed 's/^/    | /' "$TMP/shim_$rt.out" | tail -n 5; continue; }
		if cmp -s "$TMP/plain_$rt.out" "$TMP/shim_$rt.out"; then
			ok "shim_prog ($rt runtime): same output with and without the shim"
		else
			bad "shim_prog ($rt runtime): output differs"
			diff "$TMP/plain_$rt.out" "$TMP/shim_$rt.out" | sed 's/^/    | /' | head -n 10
		fi
		if served "$TMP/prog_$rt.log"; then
			ok "shim_prog ($rt runtime): $(summary "$TMP/prog_$rt.log")"
		else
			bad "shim_prog ($rt runtime): the shim served nothing"
			sed 's/^/    | /' "$TMP/prog_$rt.log" | tail -n 5
		fi
	done
else
	echo "SKIP  shim_prog: no nvcc"
fi

# ------------------------------------------------------------ 2. own tests
if PRELOAD_DRIVER=real BUILD=$BUILD tests/preload/run.sh >"$TMP/own.log" 2>&1; then
	ok "preload tests on the real driver: $(tail -n 1 "$TMP/own.log")"
else
	bad "preload tests on the real driver"
	sed 's/^/    | /' "$TMP/own.log" | tail -n 30
fi

echo "Checks: $checks, Failures: $fails, Errors: 0"
[ "$fails" -eq 0 ]
