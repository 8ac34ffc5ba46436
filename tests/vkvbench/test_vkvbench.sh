#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# vkvbench's own test: every subcommand with tiny sizes, its --json output
# parsed and its keys checked, `serve --verify` bit-identical (with prefix
# sharing, and under a budget that forces preemption), bad command lines
# refused with exit 2. No timing thresholds: the benchmarks' numbers are
# only checked to be numbers.
# With --cuda it runs the cuda backend's commands instead, for
# check-vkvbench-cuda (the CUDA driver test double and CPU stand-ins for the
# kernels in the environment).
#   usage: tests/vkvbench/test_vkvbench.sh [--cuda] path/to/vkvbench
set -uo pipefail
CUDA=0
if [ "${1:-}" = --cuda ]; then
	CUDA=1
	shift
fi
BENCH=${1:?usage: $0 [--cuda] path/to/vkvbench}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pass=0
fail=0

ok() { pass=$((pass + 1)); echo "ok    $1"; }
bad() { fail=$((fail + 1)); echo "FAIL  $1"; [ -f "$TMP/err" ] && sed 's/^/    | /' "$TMP/err"; }

# json_check NAME FILE PYTHON-EXPR...: each expression is evaluated with
# d = the parsed document and must be true.
json_check() {
	local name=$1 file=$2
	shift 2
	if python3 - "$file" "$@" >"$TMP/err" 2>&1 <<'PY'; then ok "$name"; else bad "$name"; fi
import json, math, sys
d = json.load(open(sys.argv[1]))
num = lambda x: isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
for expr in sys.argv[2:]:
    if not eval(expr, {"d": d, "num": num}):
        sys.exit("false: " + expr + "\n" + json.dumps(d, indent=1)[:3000])
PY
}

# run NAME EXPECTED-RC CMD...: output in $TMP/out, stderr in $TMP/err
run() {
	local name=$1 want=$2 rc
	shift 2
	"$@" >"$TMP/out" 2>"$TMP/err"
	rc=$?
	if [ "$rc" -eq "$want" ]; then ok "$name (rc $rc)"; return 0; fi
	echo "    | rc $rc, wanted $want: $*" >>"$TMP/err"
	bad "$name"
	return 1
}

if [ "$CUDA" = 1 ]; then
	if run "cuda serve --verify" 0 "$BENCH" serve --backend cuda --requests 4 --slots 2 \
		--verify --json; then
		json_check "cuda serve json" "$TMP/out" \
			'd["backend"] == "cuda" and d["attention"] == "gpu"' \
			'd["verify"]["identical"] and d["verify"]["tokens_compared"] > 0' \
			'd["prefix_tokens_shared"] > 0'
	fi
	if run "cuda map" 0 "$BENCH" map --backend cuda --pages 8 --reps 2 --json; then
		json_check "cuda map json" "$TMP/out" 'd["backend"] == "cuda"' \
			'num(d["ratio"]) and d["ratio"] > 0' 'num(d["floor"]["total"])'
	fi
	if run "cuda step" 0 "$BENCH" step --backend cuda --requests 8 --slots 4 \
		--compute-us 100 --budget 64M --max-context 1024 --json; then
		json_check "cuda step json" "$TMP/out" 'd["backend"] == "cuda"' \
			'len(d["runs"]) == 1 and d["runs"][0]["page_size"] >= 4096' \
			'num(d["vs_static"]) and num(d["hidden_fraction"])'
	fi
	echo "$pass passed, $fail failed"
	[ "$fail" -eq 0 ]
	exit
fi

# --- map
for ps in 4K 2M; do
	n=64; [ $ps = 2M ] && n=4
	if run "map $ps" 0 "$BENCH" map --backend host --page-size $ps --pages $n --reps 3 --json; then
		json_check "map $ps json" "$TMP/out" \
			'd["bench"] == "map" and d["backend"] == "host"' \
			'num(d["ratio"]) and d["ratio"] > 0' \
			'all(num(d[s][k]) for s in ("vkv", "floor") for k in ("commit", "release", "total"))' \
			'num(d["warm"]["ratio"])'
	fi
done
run "map text" 0 "$BENCH" map --page-size 4K --pages 16 --reps 1 &&
	grep -q "ratio vkv/floor" "$TMP/out" && ok "map text report" || bad "map text report"

# --- step: built-in traces and a CSV
if run "step sharegpt" 0 "$BENCH" step --requests 12 --slots 4 --compute-us 200 \
	--budget 16M --json; then
	json_check "step json" "$TMP/out" \
		'd["bench"] == "step" and len(d["runs"]) == 2' \
		'[r["page_size"] for r in d["runs"]] == [4096, 2097152]' \
		'all(num(d[k]) for k in ("hidden_fraction", "vs_static", "vs_paged16"))' \
		'0 <= d["hidden_fraction"] <= 1' \
		'all(r["capacity"]["vkv"] >= 1 and r["capacity"]["static"] >= 1 for r in d["runs"])' \
		'all(num(r[w]["step_ns"]["p50"]) and num(r[w]["step_ns"]["p99"]) for r in d["runs"] for w in ("lookahead_on", "lookahead_off"))' \
		'all(r["lookahead_off"]["maps_async"] == 0 for r in d["runs"])' \
		'all(r["lookahead_on"]["tokens"] == r["lookahead_off"]["tokens"] > 0 for r in d["runs"])'
fi
cat >"$TMP/trace.csv" <<'CSV'
arrival,prompt_len,output_len,prefix_id
0,10,5,0
0,300,20,1
0.001,1,1
# a comment
0.002,50,60,2
CSV
if run "step csv" 0 "$BENCH" step --trace "$TMP/trace.csv" --page-size 4K --slots 2 \
	--compute-us 100 --budget 8M --max-context 1024 --json; then
	json_check "step csv json" "$TMP/out" 'd["requests"] == 4' \
		'd["runs"][0]["lookahead_on"]["tokens"] == 5 + 20 + 1 + 60'
fi
run "step alpaca" 0 "$BENCH" step --trace alpaca --requests 8 --page-size 4K \
	--compute-us 100 --budget 8M --max-context 1024

# --- serve: the demo, verified bit for bit
# Short requests and one layer keep these quick under the sanitizers.
SERVE="serve --backend host --trace alpaca --max-context 160 --layers 1"
if run "serve --verify" 0 "$BENCH" $SERVE --requests 6 --slots 3 --verify --json; then
	json_check "serve json" "$TMP/out" \
		'd["bench"] == "serve" and d["verify"]["ran"] and d["verify"]["identical"]' \
		'd["verify"]["tokens_compared"] == d["tokens_generated"] > 0' \
		'd["memory"]["committed_peak_bytes"] > 0' \
		'num(d["tokens_per_s"])'
fi
run "serve --verify, every request shares the prompt" 0 "$BENCH" $SERVE \
	--requests 4 --slots 2 --share 1 --verify
run "serve --verify under a budget (preemption)" 0 "$BENCH" $SERVE \
	--requests 8 --slots 4 --budget 128K --verify --json &&
	json_check "serve budget json" "$TMP/out" 'd["verify"]["identical"]' \
		'd["memory"]["pool_pages_total"] * d["page_size"] <= 128 << 10'
run "serve 2M pages" 0 "$BENCH" $SERVE --page-size 2M --requests 3 --verify
run "serve budget below one request" 1 "$BENCH" $SERVE --requests 2 --budget 16K

# --- bad command lines
run "unknown command" 2 "$BENCH" nosuch
run "map --pages 0" 2 "$BENCH" map --pages 0
run "map bad size" 2 "$BENCH" map --page-size 4Q
run "step missing trace" 2 "$BENCH" step --trace "$TMP/none.csv"
printf '0,abc,3\n' >"$TMP/bad.csv"
run "step bad csv" 2 "$BENCH" step --trace "$TMP/bad.csv"
run "serve bad share" 2 "$BENCH" serve --share 2
run "serve extra argument" 2 "$BENCH" serve extra
run "help" 0 "$BENCH" --help

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
