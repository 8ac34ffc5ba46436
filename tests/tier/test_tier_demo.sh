#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Tiering through vkvbench: `vkvbench tier` for both tiers with tiny sizes
# (JSON keys checked, data verified; no timing thresholds), and the demo's
# preemption by eviction: `vkvbench serve --verify` with a budget at half
# of the workload's peak must stay bit-identical and must have evicted to
# both DRAM and NVMe and restored everything it evicted.
#   usage: tests/tier/test_tier_demo.sh path/to/vkvbench [nvme-dir]
set -uo pipefail
BENCH=${1:?usage: $0 path/to/vkvbench [nvme-dir]}
DIR=${2:-/var/tmp}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
export VKV_NVME_DIR=$DIR VKV_LOG=quiet
pass=0
fail=0

ok() { pass=$((pass + 1)); echo "ok    $1"; }
bad() { fail=$((fail + 1)); echo "FAIL  $1"; sed 's/^/    | /' "$TMP/err" 2>/dev/null; }

# check NAME EXPR...: python expressions over d = the JSON in $TMP/out
check() {
	local name=$1
	shift
	if python3 - "$TMP/out" "$@" >"$TMP/err" 2>&1 <<'PY'; then ok "$name"; else bad "$name"; fi
import json, math, sys
d = json.load(open(sys.argv[1]))
num = lambda x: isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
for expr in sys.argv[2:]:
    if not eval(expr, {"d": d, "num": num}):
        sys.exit("false: " + expr + "\n" + json.dumps(d, indent=1)[:3000])
PY
}

run() {
	local name=$1 want=$2 rc
	shift 2
	"$@" >"$TMP/out" 2>"$TMP/err"
	rc=$?
	if [ "$rc" -eq "$want" ]; then ok "$name (rc $rc)"; return 0; fi
	echo "rc $rc, wanted $want: $*" >>"$TMP/err"
	bad "$name"
	return 1
}

for tier in dram nvme; do
	if run "tier --tier $tier" 0 "$BENCH" tier --tier "$tier" --json --size 64M \
		--reps 1 --bs 256K --qd 4 --dir "$DIR"; then
		check "tier $tier json" 'd["bench"] == "tier" and d["verified"]' \
			'num(d["evict_gbps"]) and num(d["restore_gbps"])' \
			'd["floor"] in ("memcpy", "fio", "none")' \
			'd["floor"] == "none" or (num(d["ratio_write"]) and num(d["ratio_read"]))'
	fi
done
run "tier without --tier" 2 "$BENCH" tier --json
run "tier bad --bs" 2 "$BENCH" tier --tier nvme --bs 3000

# The workload's peak without a budget, then the demo at half of it.
ARGS=(serve --backend host --requests 8 --slots 4 --json)
if run "serve unbudgeted" 0 "$BENCH" "${ARGS[@]}"; then
	peak=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["memory"]["committed_peak_bytes"])' "$TMP/out")
	if run "serve --verify at half the peak ($((peak / 2)) bytes)" 0 "$BENCH" \
		"${ARGS[@]}" --verify --budget $((peak / 2)); then
		check "serve evicts to both tiers and restores all" \
			'd["verify"]["identical"]' \
			'd["tiers"]["preempt"] == "evict"' \
			'd["tiers"]["dram"]["evictions"] > 0' \
			'd["tiers"]["nvme"]["evictions"] > 0' \
			'd["tiers"]["dram"]["evictions"] == d["tiers"]["dram"]["restores"]' \
			'd["tiers"]["nvme"]["evictions"] == d["tiers"]["nvme"]["restores"]'
	fi
	run "serve --preempt recompute at half the peak" 0 "$BENCH" "${ARGS[@]}" \
		--verify --budget $((peak / 2)) --preempt recompute
	check "recompute evicts nothing" 'd["verify"]["identical"]' \
		'd["tiers"]["dram"]["evictions"] + d["tiers"]["nvme"]["evictions"] == 0'
fi
run "serve bad --preempt" 2 "$BENCH" serve --preempt swap

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
