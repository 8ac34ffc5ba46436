#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# tests/gpu/shim.sh - the LD_PRELOAD shim (libvkv_preload.so) on a real GPU.
#
#   1. the shim's own test program (tests/preload/) against the installed
#      driver instead of the test double;
#   2. tests/gpu/shim_prog.cu, a plain CUDA runtime program, built with the
#      static and with the shared runtime, run without and with the shim:
#      the same output, and the shim's log shows it served the allocations;
#   3. tests/gpu/shim_torch.py, matrix products and a few MLP training
#      steps in PyTorch, run without the shim, with it, and with it and
#      PyTorch's caching allocator off (every tensor one cudaMalloc): the
#      same numbers each time; the peaks of memory are printed side by side.
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
make -s BUILD="$BUILD" "$SHIM" "$BUILD/tests/preload/preload_test" >/dev/null || {
	echo "tests/gpu/shim.sh: cannot build the shim"; exit 1; }
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

# ------------------------------------------------------------ 1. own tests
if PRELOAD_DRIVER=real BUILD=$BUILD tests/preload/run.sh >"$TMP/own.log" 2>&1; then
	ok "preload tests on the real driver: $(tail -n 1 "$TMP/own.log")"
else
	bad "preload tests on the real driver"
	sed 's/^/    | /' "$TMP/own.log" | tail -n 30
fi

# ------------------------------------------------------- 2. a CUDA program
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
if [ -x "$NVCC" ]; then
	for rt in static shared; do
		bin=$TMP/shim_prog_$rt
		if ! "$NVCC" -O2 -arch=native -cudart "$rt" -o "$bin" tests/gpu/shim_prog.cu >"$TMP/nvcc.log" 2>&1 &&
			! "$NVCC" -O2 -cudart "$rt" -o "$bin" tests/gpu/shim_prog.cu >"$TMP/nvcc.log" 2>&1; then
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

# ---------------------------------------------------------------- 3. torch
if python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
	python3 tests/gpu/shim_torch.py >"$TMP/torch_plain.json" 2>"$TMP/torch_plain.err" ||
		bad "torch without the shim: $(tail -n 1 "$TMP/torch_plain.err")"
	env LD_PRELOAD="$SHIM" VKV_LOG=debug VKV_PRELOAD_LOG="$TMP/torch_shim.log" \
		python3 tests/gpu/shim_torch.py >"$TMP/torch_shim.json" 2>"$TMP/torch_shim.err" ||
		bad "torch under the shim: $(tail -n 1 "$TMP/torch_shim.err")"
	env LD_PRELOAD="$SHIM" VKV_LOG=debug VKV_PRELOAD_LOG="$TMP/torch_nocache.log" \
		PYTORCH_NO_CUDA_MEMORY_CACHING=1 \
		python3 tests/gpu/shim_torch.py >"$TMP/torch_nocache.json" 2>"$TMP/torch_nocache.err" ||
		bad "torch under the shim, no caching: $(tail -n 1 "$TMP/torch_nocache.err")"
	python3 - "$TMP" <<'PY' && ok "torch: identical matmul sums, losses and parameters with and without the shim" || bad "torch: results differ"
import json, sys
d = sys.argv[1]
runs = {n: json.load(open(f"{d}/torch_{n}.json")) for n in ("plain", "shim", "nocache")}
keys = ("matmul", "losses", "param_sum")
base = {k: runs["plain"][k] for k in keys}
same = all({k: r[k] for k in keys} == base for r in runs.values())
for n, r in runs.items():
    print(f"    {n:8s} losses {r['losses'][0]:.6f} .. {r['losses'][-1]:.6f}  "
          f"max allocated {r['max_allocated'] >> 20} MiB  max reserved {r['max_reserved'] >> 20} MiB")
sys.exit(0 if same else 1)
PY
	for run in shim nocache; do
		if served "$TMP/torch_$run.log"; then
			ok "torch ($run): arena in use: $(summary "$TMP/torch_$run.log")"
		else
			bad "torch ($run): the shim served nothing"
			sed 's/^/    | /' "$TMP/torch_$run.log" | tail -n 5
		fi
	done
	if [ -s "$TMP/torch_plain.json" ] && served "$TMP/torch_nocache.log"; then
		python3 - "$TMP" "$(field "$TMP/torch_nocache.log" 'bytes, [0-9]+ chunk')" \
			"$(summary "$TMP/torch_nocache.log" | grep -Eo 'peak in use [0-9]+' | grep -Eo '[0-9]+')" \
			"$(summary "$TMP/torch_nocache.log" | grep -Eo 'peak mapped [0-9]+' | grep -Eo '[0-9]+')" <<'PY'
import json, sys
d, _, in_use, mapped = sys.argv[1:5]
plain = json.load(open(f"{d}/torch_plain.json"))
print(f"    peak memory: PyTorch's caching allocator reserved {plain['max_reserved'] >> 20} MiB "
      f"(allocated {plain['max_allocated'] >> 20} MiB); without caching, under the shim: "
      f"peak in use {int(in_use) >> 20} MiB, peak mapped {int(mapped) >> 20} MiB "
      f"(mapped/in use {int(mapped) / max(int(in_use), 1):.3f})")
PY
	fi
else
	echo "SKIP  torch: no torch with CUDA here"
fi

echo "Checks: $checks, Failures: $fails, Errors: 0"
[ "$fails" -eq 0 ]
