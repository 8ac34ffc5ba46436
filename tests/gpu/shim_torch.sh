#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# tests/gpu/shim_torch.sh - PyTorch under the LD_PRELOAD shim on a real GPU.
#
# tests/gpu/shim/torch_workload.py (matrix products and a few training
# steps of a small MLP) runs without the shim, with it, and with it and
# PyTorch's caching allocator off (every tensor one cudaMalloc): the
# numbers must be identical each time, the shim's log must show its arena
# served the allocations, and the peaks of memory are printed side by side.
#
# Run by tests/gpu/run.sh when present; exits 77 without a GPU or without
# torch. Prints a Check-style "Checks: N, Failures: F, Errors: 0" line last.
#   BUILD=build tests/gpu/shim_torch.sh
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
BUILD=${BUILD:-build}

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
	echo "tests/gpu/shim_torch.sh: SKIP: no GPU on this machine"
	exit 77
fi
# The real driver, never the test double.
if [ -n "${LD_LIBRARY_PATH:-}" ]; then
	LD_LIBRARY_PATH=$(printf '%s' "$LD_LIBRARY_PATH" | tr ':' '\n' | grep -v cudadouble | paste -sd: -)
	export LD_LIBRARY_PATH
fi

SHIM=$PWD/$BUILD/lib/libvkv_preload.so
if [ "${VKV_GPU_PREBUILT:-0}" != 1 ]; then
	make -s BUILD="$BUILD" "$SHIM" >/dev/null || {
		echo "tests/gpu/shim_torch.sh: cannot build the shim"; exit 1; }
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
checks=0 fails=0

ok() { checks=$((checks + 1)); echo "PASS  $*"; }
bad() { checks=$((checks + 1)); fails=$((fails + 1)); echo "FAIL  $*"; }

# The shim's one-line summary (VKV_LOG=debug) from a log file.
summary() { grep -o 'summary: .*' "$1" | tail -n 1; }
served() { grep -Eq 'summary: [0-9]+ device\(s\), [1-9][0-9]* allocations served' "$1"; }

if python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
	python3 tests/gpu/shim/torch_workload.py >"$TMP/torch_plain.json" 2>"$TMP/torch_plain.err" ||
		bad "torch without the shim: $(tail -n 1 "$TMP/torch_plain.err")"
	env LD_PRELOAD="$SHIM" VKV_LOG=debug VKV_PRELOAD_LOG="$TMP/torch_shim.log" \
		python3 tests/gpu/shim/torch_workload.py >"$TMP/torch_shim.json" 2>"$TMP/torch_shim.err" ||
		bad "torch under the shim: $(tail -n 1 "$TMP/torch_shim.err")"
	env LD_PRELOAD="$SHIM" VKV_LOG=debug VKV_PRELOAD_LOG="$TMP/torch_nocache.log" \
		PYTORCH_NO_CUDA_MEMORY_CACHING=1 \
		python3 tests/gpu/shim/torch_workload.py >"$TMP/torch_nocache.json" 2>"$TMP/torch_nocache.err" ||
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
		python3 - "$TMP" <<'PY'
import json, re, sys
d = sys.argv[1]
plain = json.load(open(f"{d}/torch_plain.json"))
line = open(f"{d}/torch_nocache.log").read()
in_use = int(re.findall(r"peak in use (\d+)", line)[-1])
mapped = int(re.findall(r"peak mapped (\d+)", line)[-1])
print(f"    peak memory: PyTorch's caching allocator reserved {plain['max_reserved'] >> 20} MiB "
      f"(allocated {plain['max_allocated'] >> 20} MiB); caching off, under the shim: "
      f"peak in use {in_use >> 20} MiB, peak mapped {mapped >> 20} MiB "
      f"(mapped / in use {mapped / max(in_use, 1):.3f})")
PY
	fi
else
	echo "tests/gpu/shim_torch.sh: SKIP: no torch with CUDA here"
	exit 77
fi

echo "Checks: $checks, Failures: $fails, Errors: 0"
[ "$fails" -eq 0 ]
