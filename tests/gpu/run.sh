#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# tests/gpu/run.sh - the one-shot GPU validation of vkv.
#
# On a machine with an NVIDIA GPU: builds everything, then runs, within
# about 8 minutes, the cuda-backend tests against the real driver (never the
# test double), the shim's GPU checks, the kernels against their CPU
# references, and the benchmarks (map, step, tier, attn, gather), and prints a
# summary table last. With $OUT set, every step's log and JSON and a
# summary.json land there. Parts that do not exist yet are reported
# "absent", not failed.
#
#   tests/gpu/run.sh                  (exit 0: all present steps passed)
#   OUT=/tmp/res tests/gpu/run.sh
#
# Without a GPU it exits 77 and says why. Environment: BUILD (default
# build), VKV_DEVICE (default 0), JOBS, GPU_BUDGET_S (default 480),
# GPU_ONLY (a regex: run only the steps it matches), VKV_GPU_PREBUILT=1
# (use $BUILD as built elsewhere) and VKV_GPU_COMMIT (the commit it was
# built from, for the report).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1

BUILD=${BUILD:-build}
JOBS=${JOBS:-$(nproc)}
BUDGET=${GPU_BUDGET_S:-480}
OUTDIR=${OUT:-}
LOG=${VKV_GPU_LOG:-$BUILD/gpu-logs}
START=$SECONDS

# --------------------------------------------------------------- a GPU?

# Never the test double: drop it from the library path.
if [ -n "${LD_LIBRARY_PATH:-}" ]; then
	LD_LIBRARY_PATH=$(printf '%s' "$LD_LIBRARY_PATH" | tr ':' '\n' |
		grep -v cudadouble | paste -sd: -)
	export LD_LIBRARY_PATH
fi

gpu_reason=""
if command -v nvidia-smi >/dev/null 2>&1; then
	if ! nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
		gpu_reason="nvidia-smi lists no GPU"
	fi
elif [ ! -e /dev/nvidia0 ]; then
	gpu_reason="no nvidia-smi and no /dev/nvidia0"
elif ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1'; then
	gpu_reason="no libcuda.so.1 (NVIDIA driver) installed"
fi
if [ -n "$gpu_reason" ]; then
	echo "tests/gpu/run.sh: SKIP: no GPU on this machine ($gpu_reason)."
	echo "Run it on a machine with an NVIDIA GPU and driver; see docs/gpu-results.md."
	exit 77
fi

mkdir -p "$LOG"
[ -n "$OUTDIR" ] && mkdir -p "$OUTDIR"
export VKV_DEVICE=${VKV_DEVICE:-0}

# ------------------------------------------------------------------ steps

names=()
states=()
secs=()
keys=()

record() { # name state seconds key
	names+=("$1")
	states+=("$2")
	secs+=("$3")
	keys+=("$4")
	printf '%-8s %-34s %4ss  %s\n' "$2" "$1" "$3" "$4"
}

left() { echo $((BUDGET - (SECONDS - START))); }

# The value of a top-level number in a JSON file ("" when absent).
json_key() { # file key
	python3 - "$1" "$2" 2>/dev/null <<'PY' || sed -n "s/.*\"$2\":\([-0-9.eE+]*\).*/\1/p" "$1" | head -n1
import json, sys
d = json.load(open(sys.argv[1]))
for part in sys.argv[2].split('.'):
    d = d[part]
print(f"{d:.4g}" if isinstance(d, float) else d)
PY
}

# Check's "100%: Checks: 14, Failures: 0, Errors: 0" -> "14 checks".
check_key() {
	local l
	l=$(grep -Eo 'Checks: [0-9]+, Failures: [0-9]+, Errors: [0-9]+' "$1" | tail -n1)
	if [ -n "$l" ]; then
		echo "$l"
	else
		tail -n1 "$1" | cut -c1-60
	fi
}

# compute-sanitizer's verdict, or its first report.
sanitizer_key() {
	local l
	l=$(grep -m1 -E '=+ (Invalid|Misaligned|Out-of-range|Program hit|ERROR SUMMARY)' "$1" |
		sed 's/^=* *//' | cut -c1-90)
	echo "${l:-$(tail -n1 "$1" | cut -c1-60)}"
}

# The first error of a build log.
build_key() {
	local l
	l=$(grep -m1 -E 'error:|\*\*\*' "$1" | cut -c1-80)
	echo "${l:-ok}"
}

# run_step name timeout keyfn cmd... : keyfn gets the log file (and the
# JSON file for benchmarks, whose stdout is the JSON).
run_step() {
	local name=$1 limit=$2 keyfn=$3
	shift 3
	local log="$LOG/$name.log" json="$LOG/$name.json" t0=$SECONDS rc key state
	local rest
	# GPU_ONLY=REGEX: run only the steps whose name matches (a rerun)
	if [ -n "${GPU_ONLY:-}" ] && ! [[ $name =~ $GPU_ONLY ]]; then
		return
	fi
	rest=$(left)
	if [ "$rest" -lt 15 ]; then
		record "$name" SKIP 0 "out of time (budget ${BUDGET}s)"
		return
	fi
	[ "$limit" -gt "$rest" ] && limit=$rest
	if [ "$keyfn" = json ]; then
		timeout -k 5 "$limit" "$@" >"$json" 2>"$log"
	else
		timeout -k 5 "$limit" "$@" >"$log" 2>&1
	fi
	rc=$?
	case $rc in
	0) state=PASS ;;
	77) state=SKIP ;;
	124 | 137) state=TIMEOUT ;;
	*) state=FAIL ;;
	esac
	if [ "$keyfn" = json ]; then
		key=$($KEY_OF_JSON "$json")
		[ -s "$json" ] || key="no JSON; $(tail -n1 "$log" | cut -c1-60)"
		[ -n "$OUTDIR" ] && cp "$json" "$OUTDIR/$name.json"
	else
		key=$($keyfn "$log")
	fi
	[ "$state" = TIMEOUT ] && key="killed after ${limit}s; $key"
	[ -n "$OUTDIR" ] && cp "$log" "$OUTDIR/$name.log"
	record "$name" "$state" $((SECONDS - t0)) "$key"
	if [ "$state" = FAIL ] || [ "$state" = TIMEOUT ]; then
		tail -n 15 "$log" | sed 's/^/    | /'
	fi
}

absent() { record "$1" ABSENT 0 "$2"; }

has_cmd() { "$BUILD/bin/vkvbench" help 2>/dev/null | grep -q "^  $1 "; }

# ------------------------------------------------------------ environment

{
	echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
	# VKV_GPU_COMMIT: what $BUILD was built from, when built elsewhere
	if [ -n "${VKV_GPU_COMMIT:-}" ]; then
		echo "commit: $VKV_GPU_COMMIT (built elsewhere)"
	else
		echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (dirty)')"
	fi
	echo "host: $(uname -srm), $(nproc) CPUs"
	nvidia-smi --query-gpu=name,driver_version,memory.total,pci.bus_id \
		--format=csv,noheader 2>/dev/null | sed 's/^/gpu: /'
	command -v nvcc >/dev/null && nvcc --version | tail -n1 | sed 's/^/nvcc: /'
} | tee "$LOG/env.txt"
[ -n "$OUTDIR" ] && cp "$LOG/env.txt" "$OUTDIR/env.txt"
echo

# ------------------------------------------------------------------ build

# -k: build whatever can be built, so a broken part does not hide the rest.
# VKV_GPU_PREBUILT=1: $BUILD was built elsewhere (a GPU machine without the
# build dependencies: carry $BUILD and the shared libraries it needs).
if [ "${VKV_GPU_PREBUILT:-0}" = 1 ]; then
	if [ -x "$BUILD/bin/vkvbench" ]; then
		record build PASS 0 "prebuilt $BUILD"
	else
		record build FAIL 0 "VKV_GPU_PREBUILT=1 but $BUILD/bin/vkvbench is missing"
	fi
	: >"$LOG/build.log"
else
	run_step build 240 build_key make -k -j"$JOBS" BUILD="$BUILD" all
fi
if [ "${states[0]}" != PASS ]; then
	echo "build failed: running what was built" >&2
fi
grep -q 'building without the CUDA kernels' "$LOG/build.log" &&
	echo "note: the build skipped the CUDA kernels (nvcc missing?)"

# ------------------------------------------------------------------ tests

if [ -x "$BUILD/tests/test_core" ]; then
	run_step core-suite-cuda 120 check_key env VKV_BACKEND=cuda VKV_LOG=quiet \
		"$BUILD/tests/test_core"
else
	absent core-suite-cuda "$BUILD/tests/test_core not built"
fi

if [ -x "$BUILD/tests/test_cuda" ]; then
	run_step cuda-suite 120 check_key env VKV_LOG=quiet "$BUILD/tests/test_cuda"
else
	absent cuda-suite "$BUILD/tests/test_cuda not built"
fi

if [ -x "$BUILD/tests/test_tier" ]; then
	tdir=$(mktemp -d /var/tmp/vkv-gpu-tier.XXXXXX)
	run_step tier-suite-cuda 120 check_key env VKV_BACKEND=cuda VKV_LOG=quiet \
		VKV_TEST_DIR="$tdir" "$BUILD/tests/test_tier"
	run_step tier-suite-cuda-kernel-copy 120 check_key env VKV_BACKEND=cuda \
		VKV_TIER_COPY=kernel VKV_LOG=quiet VKV_TEST_DIR="$tdir" \
		"$BUILD/tests/test_tier"
	rm -rf "$tdir"
else
	absent tier-suite-cuda "$BUILD/tests/test_tier not built"
fi

if [ -x "$BUILD/tests/test_kernels_gpu" ]; then
	run_step kernels-vs-reference 120 check_key "$BUILD/tests/test_kernels_gpu"
	ran=false
	[ "${names[-1]}" = kernels-vs-reference ] && ran=true
	$ran && grep -q 'fake GPU' "$LOG/kernels-vs-reference.log" && {
		states[-1]=FAIL
		keys[-1]="ran on the test double, not a GPU"
	}
	# A kernel fault poisons the context, so every later check fails
	# too: compute-sanitizer names the first bad access.
	if $ran && [ "${states[-1]}" = FAIL ] && command -v compute-sanitizer >/dev/null; then
		run_step kernels-sanitizer 120 sanitizer_key env CK_RUN_CASE=attention \
			compute-sanitizer --tool memcheck --print-limit 4 \
			"$BUILD/tests/test_kernels_gpu"
	fi
else
	absent kernels-vs-reference "$BUILD/tests/test_kernels_gpu not built"
fi
if [ -x "$BUILD/tests/test_kernels_ref" ] ||
	make -s BUILD="$BUILD" "$BUILD/tests/test_kernels_ref" >/dev/null 2>&1; then
	run_step kernels-cpu-reference 60 check_key "$BUILD/tests/test_kernels_ref"
else
	absent kernels-cpu-reference "not built"
fi

# ------------------------------------------------------------- benchmarks

BENCH="$BUILD/bin/vkvbench"
KEY_OF_JSON=true
bench() { # name timeout key_path cmd...
	local name=$1 limit=$2 path=$3
	shift 3
	# shellcheck disable=SC2317
	key_fn() { local v; v=$(json_key "$1" "$path"); echo "$path=${v:-?}"; }
	KEY_OF_JSON=key_fn
	run_step "$name" "$limit" json "$@"
}

if [ ! -x "$BENCH" ]; then
	absent bench "$BENCH not built"
else
	if has_cmd map; then
		bench bench-map-cuda 90 ratio "$BENCH" map --backend cuda --json
	else
		absent bench-map-cuda "no vkvbench map"
	fi
	if has_cmd step; then
		bench bench-step-cuda 120 hidden_fraction "$BENCH" step --backend cuda --json
	else
		absent bench-step-cuda "no vkvbench step"
	fi
	if has_cmd tier; then
		# the DRAM tier against one cuMemcpy of the same bytes, with a
		# cuMemcpyAsync per page and with one kernel launch per batch
		bench bench-tier-dram-cuda-async 60 ratio env VKV_TIER_COPY=async \
			"$BENCH" tier --backend cuda --tier dram --size 1G --reps 5 --json
		bench bench-tier-dram-cuda-kernel 60 ratio env VKV_TIER_COPY=kernel \
			"$BENCH" tier --backend cuda --tier dram --size 1G --reps 5 --json
		# NVMe through the cuda backend (fio's floor only where installed)
		bench bench-tier-nvme-cuda 60 evict_gbps "$BENCH" tier --backend cuda \
			--tier nvme --size 1G --reps 3 --json
		# what the disk itself gives to O_DIRECT (fio is not installed
		# on every GPU machine)
		[ -x "$BUILD/bin/vkvstat" ] &&
			run_step probe-disk 60 check_key "$BUILD/bin/vkvstat" probe \
				--dir /var/tmp --size 1G
	else
		absent bench-tier "no vkvbench tier"
	fi
	if has_cmd attn; then
		bench bench-attn-f16 60 paged_over_contig "$BENCH" attn --device gpu --json
		bench bench-attn-bf16-long 60 paged_over_contig "$BENCH" attn --device gpu \
			--dtype bf16 --batch 16 --len 8192 --json
	else
		absent bench-attn "no vkvbench attn"
	fi
	if has_cmd gather; then
		bench bench-gather-2m 60 ratio "$BENCH" gather --device gpu --json
		bench bench-gather-64k 60 gather.kernel_over_per_range "$BENCH" gather \
			--device gpu --range-size 64K --ranges 1024 --json
	else
		absent bench-gather "no vkvbench gather"
	fi
	if has_cmd serve && "$BENCH" serve --help 2>&1 | grep -q -- '--backend'; then
		run_step serve-cuda-verify 120 check_key "$BENCH" serve --backend cuda --verify
	else
		absent serve-cuda-verify "no vkvbench serve --backend"
	fi
fi

# ------------------------------------- the shim and Python on the GPU
# (last: they start PyTorch several times, the slowest steps here)

shims=(tests/gpu/shim*.sh)
if [ -e "${shims[0]}" ]; then
	for s in "${shims[@]}"; do
		run_step "$(basename "$s" .sh)" 90 check_key env BUILD="$BUILD" "$s"
	done
else
	absent shim-gpu "no tests/gpu/shim*.sh"
fi

# The Python binding's suite on CUDA tensors (it skips, 77, without a
# CUDA-enabled torch), and any Python GPU check of this directory.
if [ -x tests/python/run.sh ]; then
	run_step python-cuda 150 check_key env VKV_TEST_BACKEND=cuda \
		VKV_LIBRARY="$BUILD/lib/libvkv.so" tests/python/run.sh -q
else
	absent python-cuda "no tests/python/run.sh"
fi
for p in tests/gpu/*.py; do
	[ -e "$p" ] || continue
	run_step "py-$(basename "$p" .py)" 90 check_key python3 "$p"
done

# ---------------------------------------------------------------- summary

npass=0
nfail=0
echo
echo "== vkv GPU run: $(grep '^gpu:' "$LOG/env.txt" | head -n1 | cut -c6-) =="
printf '%-34s %-8s %6s  %s\n' step status secs key
printf '%-34s %-8s %6s  %s\n' ---- ------ ---- ---
for i in "${!names[@]}"; do
	printf '%-34s %-8s %6s  %s\n' "${names[$i]}" "${states[$i]}" "${secs[$i]}" "${keys[$i]}"
	case ${states[$i]} in
	PASS) npass=$((npass + 1)) ;;
	FAIL | TIMEOUT) nfail=$((nfail + 1)) ;;
	esac
done
echo "$npass passed, $nfail failed, total $((SECONDS - START))s"

if [ -n "$OUTDIR" ]; then
	{
		printf '{"env":%s,"steps":[' "$(python3 -c 'import json,sys;print(json.dumps(open(sys.argv[1]).read()))' "$LOG/env.txt" 2>/dev/null || echo '""')"
		for i in "${!names[@]}"; do
			[ "$i" -gt 0 ] && printf ','
			printf '{"name":"%s","status":"%s","seconds":%s,"key":"%s"}' \
				"${names[$i]}" "${states[$i]}" "${secs[$i]}" \
				"$(printf '%s' "${keys[$i]}" | sed 's/\\/\\\\/g; s/"/\\"/g')"
		done
		printf '],"passed":%d,"failed":%d}\n' "$npass" "$nfail"
	} >"$OUTDIR/summary.json"
fi
[ "$nfail" -eq 0 ]
