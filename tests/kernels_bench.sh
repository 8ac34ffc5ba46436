#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Smoke test of `vkvbench attn` and `vkvbench gather` with tiny sizes (CPU
# references without a GPU): each exits 0, prints one JSON object with the
# keys tests/gpu/run.sh and docs/gpu-results.md rely on, and refuses bad
# options with exit 2. Usage: tests/kernels_bench.sh BUILD_DIR
set -euo pipefail
BENCH=${1:-build}/bin/vkvbench
fail() {
	echo "kernels_bench: FAIL: $*" >&2
	exit 1
}

# has KEY... : every key present in the JSON on stdin, which must parse
# (without python3: each key's last part appears as a JSON key)
has() {
	if ! command -v python3 >/dev/null; then
		local json k
		json=$(cat)
		for k in "$@"; do
			grep -q "\"${k##*.}\":" <<<"$json" || return 1
		done
		return 0
	fi
	python3 -c '
import json, sys
d = json.load(sys.stdin)
for k in sys.argv[1:]:
    v = d
    for part in k.split("."):
        v = v[part]
' "$@"
}

out=$("$BENCH" attn --json --batch 2 --len 24 --q-heads 4 --kv-heads 2 --head-dim 32) ||
	fail "attn exited $?"
echo "$out" | has bench device dtype tokens contig.us contig.gbps paged.us \
	floor.gbps paged_over_contig max_rel_diff tol || fail "attn JSON: $out"
echo "$out" | grep -q '"max_rel_diff":0[,}]' || fail "attn layouts differ: $out"

for dt in f32 bf16; do
	"$BENCH" attn --json --dtype $dt --batch 1 --len 8 --q-heads 2 --kv-heads 1 \
		--head-dim 16 --plain | has paged_over_contig || fail "attn --dtype $dt"
done

out=$("$BENCH" gather --json --ranges 4 --range-size 64K --reps 2) ||
	fail "gather exited $?"
echo "$out" | has bench device ranges gather.kernel gather.floor scatter.kernel \
	ratio || fail "gather JSON: $out"

for bad in "attn --q-heads 3 --kv-heads 2" "attn --dtype f64" "attn --head-dim 300" \
	"gather --range-size 0" "gather --device tpu" "attn --bogus"; do
	rc=0
	# shellcheck disable=SC2086
	"$BENCH" $bad >/dev/null 2>&1 || rc=$?
	[ $rc -eq 2 ] || fail "'vkvbench $bad' exited $rc, want 2"
done
echo "kernels_bench: ok"
