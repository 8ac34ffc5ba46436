# SPDX-License-Identifier: MIT
# Shared helpers of vkvstat's shell tests (sourced, not run).
#   BUILD       build directory (default build)
# Every test gets a private stats directory, so that other processes on
# the machine (and other tests running at the same time) do not show up.

BUILD=${BUILD:-build}
VKVSTAT=${VKVSTAT:-$BUILD/bin/vkvstat}
T=$(mktemp -d /tmp/vkvstat-test.XXXXXX)
export VKV_STATS_DIR=$T/stats
mkdir -p "$VKV_STATS_DIR"
BG_PIDS=()

cleanup() {
	local p
	for p in "${BG_PIDS[@]}"; do
		kill "$p" 2>/dev/null && wait "$p" 2>/dev/null
	done
	[ -n "${TMUX_SOCK:-}" ] && tmux -S "$TMUX_SOCK" kill-server 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

ok() {
	echo "ok: $*"
}

skip() {
	echo "SKIP: $*"
	exit 77
}

[ -x "$VKVSTAT" ] || fail "$VKVSTAT is not built (make BUILD=$BUILD all)"

# Poll `vkvstat --json --pid P` until the process reports committed bytes;
# prints the JSON document. $2: seconds to wait.
wait_committed() {
	local pid=$1 secs=$2 i json
	for ((i = 0; i < secs * 10; i++)); do
		json=$("$VKVSTAT" --json --pid "$pid" 2>/dev/null) || true
		if printf '%s' "$json" | python3 -c '
import json, sys
d = json.load(sys.stdin)
pid = int(sys.argv[1])
ps = [p for p in d["processes"] if p["pid"] == pid]
sys.exit(0 if ps and ps[0]["committed_bytes"] > 0 else 1)' "$pid" 2>/dev/null; then
			printf '%s' "$json"
			return 0
		fi
		kill -0 "$pid" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

# The checks every live workload must pass: JSON schema and content, and
# Prometheus output accepted by promtool.
check_json_and_prometheus() {
	local pid=$1 json prom
	json=$(wait_committed "$pid" 30) || fail "vkvstat --json never showed pid $pid with committed > 0"
	printf '%s' "$json" | python3 -c '
import json, sys
d = json.load(sys.stdin)
pid = int(sys.argv[1])
assert d["schema_version"] == 1, d["schema_version"]
p = [p for p in d["processes"] if p["pid"] == pid][0]
assert p["committed_bytes"] > 0
assert p["comm"], "empty comm"
assert p["reserved_bytes"] >= p["committed_bytes"] > 0, p
assert [t["tier"] for t in p["tiers"]] == ["device", "dram", "nvme"]
assert 0.0 <= p["fragmentation"] <= 1.0
assert len(p["steps"]["histogram_log2_ns"]) == 40
assert {"pending_bytes", "idle_bytes", "fragmentation_ppm"} <= p["preload"].keys(), p["preload"]
print("committed", p["committed_bytes"], "comm", p["comm"])
' "$pid" || fail "JSON content"
	ok "--json reports pid $pid with committed > 0"
	prom=$("$VKVSTAT" --prometheus) || fail "--prometheus exit status"
	grep -Eq "^vkv_memory_committed_bytes\{pid=\"$pid\",comm=\"[^\"]*\",tier=\"device\"\} [1-9][0-9]*$" <<<"$prom" ||
		fail "no vkv_memory_committed_bytes sample > 0 for pid $pid"
	if command -v promtool >/dev/null; then
		printf '%s\n' "$prom" | promtool check metrics || fail "promtool check metrics"
		ok "--prometheus passes promtool check metrics"
	else
		echo "note: promtool not installed (Debian package prometheus): lint skipped"
	fi
}
