#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# vkvstat end to end against a real libvkv process (vkvstat_wooad): the
# table, --json, --prometheus (promtool), exit codes, hostile and dead
# segments next to a live one, `top` driven in tmux (80x24, keys s and q,
# screen captured), and `probe --json` (which must finish without a GPU).
set -uo pipefail
cd "$(dirname "$0")/../.."
. tests/vkvstat/lib.sh

WORKLOAD=$BUILD/tests/vkvstat_workload
[ -x "$WORKLOAD" ] || fail "$WORKLOAD is not built"

# --- a live process ------------------------------------------------------
VKV_LOG=quiet "$WORKLOAD" 120 >"$T/workload.out" 2>&1 &
WPID=$!
BG_PIDS+=("$WPID")
for ((i = 0; i < 100; i++)); do
	grep -qs ready "$T/workload.out" && break
	kill -0 "$WPID" 2>/dev/null || fail "workload died: $(cat "$T/workload.out")"
	sleep 0.1
done
[ -e "$VKV_STATS_DIR/vkv-stats.$WPID" ] || fail "libvkv wrote no segment in $VKV_STATS_DIR"
check_json_and_prometheus "$WPID"

# --- the table: no colour without a terminal, the pid listed -------------
"$VKVSTAT" >"$T/table" 2>"$T/table.err" || fail "table exit status"
grep -Eq "^ *$WPID vkvstat_wo" "$T/table" || fail "table lacks the process: $(cat "$T/table")"
grep -q $'\033' "$T/table" && fail "escape codes in output to a pipe"
"$VKVSTAT" --color=always >"$T/out" && grep -q $'\033\[1m' "$T/out" || fail "--color=always gives no colour"
awk 'length > 80 { exit 1 }' "$T/table" || fail "table wider than 80 columns"
ok "table lists pid $WPID, plain text, fits 80 columns"

# --- exit codes ----------------------------------------------------------
"$VKVSTAT" --bogus >/dev/null 2>&1; [ $? -eq 2 ] || fail "unknown option must exit 2"
"$VKVSTAT" top --json >/dev/null 2>&1; [ $? -eq 2 ] || fail "top --json must exit 2"
"$VKVSTAT" --dir "$T/nonexistent" >/dev/null 2>"$T/err"; [ $? -eq 1 ] || fail "missing dir must exit 1"
grep -q "cannot read the stats directory" "$T/err" || fail "missing dir: no diagnostic"
"$VKVSTAT" --json --dir "$T/nonexistent" >"$T/json" 2>/dev/null; [ $? -eq 1 ] || fail "missing dir, --json: must exit 1"
python3 -c 'import json,sys; d = json.load(open(sys.argv[1])); assert d["error"] and d["processes"] == []' "$T/json" ||
	fail "missing dir, --json: no valid document with an error"
"$VKVSTAT" top --once --dir "$T/nonexistent" >/dev/null 2>"$T/err"; [ $? -eq 1 ] || fail "top, missing dir: must exit 1"
grep -q "cannot read the stats directory" "$T/err" || fail "top, missing dir: no diagnostic"
mkdir "$T/empty"
"$VKVSTAT" --json --dir "$T/empty" | python3 -c 'import json,sys; assert json.load(sys.stdin)["processes"] == []' ||
	fail "empty dir: processes must be []"
ok "exit codes 0 / 1 / 2"

# --- hostile and dead segments next to the live one ----------------------
SEG=$VKV_STATS_DIR/vkv-stats.$WPID
# garbage under a live pid's name (ours): rejected, reported, not removed
head -c 5000 /dev/urandom >"$VKV_STATS_DIR/vkv-stats.$$"
# a valid segment of a process that is gone, last written a minute ago
sleep 0 & DEAD=$!; wait $DEAD
python3 - "$SEG" "$VKV_STATS_DIR/vkv-stats.$DEAD" "$DEAD" <<'PY'
import struct, sys, time
b = bytearray(open(sys.argv[1], "rb").read())
struct.pack_into("<Q", b, 16, 0)                      # seq
struct.pack_into("<i", b, 24, int(sys.argv[3]))       # pid
old = int((time.time() - 60) * 1e9)
struct.pack_into("<QQ", b, 32, old - 10**9, old)      # start_ns, update_ns
b[48:80] = b"\x1b[31mevil\"\\\n".ljust(32, b"\xff")  # comm, no NUL
open(sys.argv[2], "wb").write(b)
PY
"$VKVSTAT" --json >"$T/json" 2>"$T/err" || fail "exit status with bad segments"
python3 - "$T/json" "$WPID" "$$" "$DEAD" <<'PY' || fail "JSON with bad segments"
import json, sys
d = json.load(open(sys.argv[1]))
live, bad, dead = map(int, sys.argv[2:])
assert [p["pid"] for p in d["processes"]] == [live], d["processes"]
sk = {s["pid"]: s for s in d["skipped"]}
assert sk[bad]["state"] == "bad" and not sk[bad]["removed"], sk
assert sk[dead]["state"] == "dead" and sk[dead]["removed"], sk
PY
[ -e "$VKV_STATS_DIR/vkv-stats.$$" ] || fail "a bad segment was removed"
[ -e "$VKV_STATS_DIR/vkv-stats.$DEAD" ] && fail "the dead segment was not removed"
grep -q "ignored: wrong magic" "$T/err" || fail "no diagnostic for the bad segment: $(cat "$T/err")"
grep -q "removed .*vkv-stats.$DEAD" "$T/err" || fail "no diagnostic for the removal"
"$VKVSTAT" --prometheus 2>/dev/null | promtool check metrics >/dev/null 2>&1 ||
	{ command -v promtool >/dev/null && fail "promtool with a bad segment present"; }
rm -f "$VKV_STATS_DIR/vkv-stats.$$"
ok "bad segment ignored and kept, dead one removed, output still valid"

# --- another user's segment: reported, not fatal -----------------------------
AS_NOBODY=(setpriv --reuid=65534 --regid=65534 --clear-groups)
chmod 755 "$T" "$VKV_STATS_DIR"
if [ "$(id -u)" -ne 0 ] || ! command -v setpriv >/dev/null ||
	! "${AS_NOBODY[@]}" "$VKVSTAT" --help >/dev/null 2>&1; then
	echo "note: not root, no setpriv, or $VKVSTAT not reachable as nobody: permission case not tested here"
else
	"${AS_NOBODY[@]}" "$VKVSTAT" --json >"$T/json" 2>"$T/err" || fail "reading another user's segment must not fail"
	python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["processes"] == [], d["processes"]
assert [s["state"] for s in d["skipped"]] == ["denied"], d["skipped"]
' "$T/json" || fail "denied segment in JSON"
	grep -q "1 segment in .* not readable (permission denied), owned by uid 0" "$T/err" ||
		fail "no permission diagnostic: $(cat "$T/err")"
	ok "a segment of another user is reported as denied, exit 0"
fi
chmod 700 "$T"

# --- every table filled: a synthetic segment for a live pid (this shell) ---
# Offsets of include/vkv_stats.h version 1 (fields are only ever appended).
python3 - "$SEG" "$VKV_STATS_DIR/vkv-stats.$$" "$$" <<'PY'
import struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
struct.pack_into("<i", b, 24, int(sys.argv[3]))
b[48:80] = b"synthetic".ljust(32, b"\0")
struct.pack_into("<QQ", b, 152, 1 << 30, 1 << 34)        # budget, reserved
struct.pack_into("<QQQ", b, 168, 3 << 28, 1 << 28, 1 << 28)  # committed, in use, cached
GiB = 1 << 30
for tier, (cap, used, ev, rs, errors, fileb) in ((1, (4 * GiB, GiB, 120, 80, 0, 0)),
                                                  (2, (0, 2 * GiB, 30, 5, 2, 8 * GiB))):
    off = 648 + 128 * tier
    struct.pack_into("<10Q", b, off, cap, used, ev, rs, 10 * GiB, 5 * GiB,
                     10**9, 2 * 10**9, errors, fileb)
struct.pack_into("<15Q", b, 1032, 8 * GiB, GiB, GiB // 2, GiB, GiB, 512,
                 64 << 20, 1000, 900, 3, 2 * GiB, 7,
                 128 << 20, 256 << 20, 63000)  # pending, idle, fragmentation ppm
open(sys.argv[2], "wb").write(b)
PY
"$VKVSTAT" --pid $$ >"$T/table" 2>/dev/null || fail "table of the synthetic segment"
grep -Eq "^ *$$ synthetic +host +16.0G +768M +256M .* 67% " "$T/table" &&
	grep -Eq "^ *$$ synthetic +4.00G +1.00G +- +120 +80 +10.74 +2.68 +0$" "$T/table" &&
	grep -Eq "^ *$$ synthetic +- +2.00G +8.00G +30 +5 +10.74 +2.68 +2$" "$T/table" &&
	grep -q "^PRELOAD" "$T/table" &&
	grep -Eq "^ *$$ synthetic +8.00G +1.00G +512M +1.00G +512 +2.00G +64.0M +3" "$T/table" &&
	grep -A1 -E "^ *$$ synthetic +8.00G" "$T/table" | tail -n 1 |
	grep -Eq "^ {19}pending 128M, idle 256M, fragmentation 6.3%$" ||
	fail "synthetic segment's tables: $(cat "$T/table")"
awk 'length > 80 { exit 1 }' "$T/table" || fail "full table wider than 80 columns"
if command -v promtool >/dev/null; then
	"$VKVSTAT" --prometheus | promtool check metrics || fail "promtool, all tables filled"
fi
"$VKVSTAT" --prometheus >"$T/prom"
grep -qx "vkv_tier_errors_total{pid=\"$$\",comm=\"synthetic\",tier=\"nvme\"} 2" "$T/prom" ||
	fail "tier counter in Prometheus"
for m in "pending_bytes 134217728" "idle_bytes 268435456" "fragmentation_ratio 0.063"; do
	grep -qx "vkv_preload_${m% *}{pid=\"$$\",comm=\"synthetic\"} ${m#* }" "$T/prom" ||
		fail "vkv_preload_${m% *} in Prometheus: $(grep "vkv_preload_${m% *}" "$T/prom")"
	grep -qx "# TYPE vkv_preload_${m% *} gauge" "$T/prom" || fail "vkv_preload_${m% *}: no TYPE gauge"
done
"$VKVSTAT" --json --pid $$ | python3 -c '
import json, sys
pl = json.load(sys.stdin)["processes"][0]["preload"]
assert pl["pending_bytes"] == 128 << 20, pl
assert pl["idle_bytes"] == 256 << 20, pl
assert pl["fragmentation_ppm"] == 63000, pl
assert pl["passthrough"] == 7, pl
' || fail "preload fields in JSON"
# an impossible fragmentation (over 100%) must not widen the table
python3 -c 'import struct, sys; f = open(sys.argv[1], "r+b"); f.seek(1144); f.write(struct.pack("<Q", 2**64 - 1))' \
	"$VKV_STATS_DIR/vkv-stats.$$"
"$VKVSTAT" --pid $$ >"$T/table" 2>/dev/null || fail "table with a hostile fragmentation"
grep -Eq "^ {19}pending 128M, idle 256M, fragmentation \?$" "$T/table" ||
	fail "hostile fragmentation in the table: $(grep pending "$T/table")"
awk 'length > 80 { exit 1 }' "$T/table" || fail "hostile fragmentation widens the table"
rm -f "$VKV_STATS_DIR/vkv-stats.$$"
ok "tier, preload (pending, idle, fragmentation too) and error columns from a synthetic segment"

# --- kernel module counters from a fake sysfs ------------------------------
FS=$T/sys
mkdir -p "$FS/module/vkv/parameters" "$FS/class/misc/vkv/nodes/node0" \
	"$FS/class/misc/vkv/nodes/node1" "$FS/class/misc/vkv/power"
echo 1048576 >"$FS/class/misc/vkv/bytes"
echo 3 >"$FS/class/misc/vkv/buffers"
echo 10:58 >"$FS/class/misc/vkv/dev"          # not a counter
echo "not a number" >"$FS/class/misc/vkv/junk" # not a counter
echo 524288 >"$FS/class/misc/vkv/nodes/node0/bytes"
echo 524288 >"$FS/class/misc/vkv/nodes/node1/bytes"
echo 0 >"$FS/module/vkv/parameters/max_total"
VKVSTAT_SYSFS_ROOT=$FS "$VKVSTAT" --json | python3 -c '
import json, sys
k = json.load(sys.stdin)["kmod"]
assert k["loaded"], k
assert k["counters"] == {"bytes": 1048576, "buffers": 3, "param_max_total": 0}, k
assert sorted((n["node"], n["name"], n["value"]) for n in k["nodes"]) == \
    [(0, "bytes", 524288), (1, "bytes", 524288)], k
' || fail "kmod counters in JSON"
VKVSTAT_SYSFS_ROOT=$FS "$VKVSTAT" >"$T/out"
grep -q "node1.bytes *512K" "$T/out" || fail "kmod counters in the table"
VKVSTAT_SYSFS_ROOT=$FS "$VKVSTAT" --prometheus >"$T/prom"
grep -qx 'vkv_kmod_node_bytes{node="1"} 524288' "$T/prom" || fail "kmod counters in Prometheus"
if command -v promtool >/dev/null; then
	promtool check metrics <"$T/prom" || fail "promtool with kmod counters"
fi
ok "kernel module counters (fake sysfs) in table, JSON and Prometheus"

# --- GPUs through NVML (our fake libnvidia-ml.so.1) ------------------------
FAKENVML=$BUILD/tests/fakenvml
if [ -e "$FAKENVML/libnvidia-ml.so.1" ]; then
	export FAKE_NVML_PID=$WPID
	LD_LIBRARY_PATH=$FAKENVML "$VKVSTAT" --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
g = d["gpus"]
assert g["nvml"] and len(g["devices"]) == 2, g
assert g["devices"][0]["name"] == "Fake \"GPU\" 0", g
assert g["devices"][0]["memory_total_bytes"] == 80 << 30
assert d["processes"][0]["gpu_memory_bytes"] == 1 << 30, d["processes"]
' || fail "NVML in JSON"
	LD_LIBRARY_PATH=$FAKENVML "$VKVSTAT" >"$T/out"
	grep -Eq '^  0 Fake "GPU" 0 +used +3.00G of +80.0G, vkv processes +1.00G$' "$T/out" ||
		fail "NVML in the table: $(LD_LIBRARY_PATH=$FAKENVML "$VKVSTAT")"
	LD_LIBRARY_PATH=$FAKENVML "$VKVSTAT" --prometheus >"$T/prom"
	grep -qx 'vkv_gpu_memory_used_bytes{gpu="0",uuid="GPU-fake-0",model_name="Fake \\"GPU\\" 0"} 3221225472' "$T/prom" ||
		fail "NVML in Prometheus: $(grep gpu_memory_used "$T/prom")"
	if command -v promtool >/dev/null; then
		promtool check metrics <"$T/prom" || fail "promtool with GPUs"
	fi
	unset FAKE_NVML_PID
	ok "GPUs and per-process GPU memory through NVML (fake library)"
else
	echo "note: $FAKENVML/libnvidia-ml.so.1 not built: NVML path not tested"
fi

# --- top, non-interactive -------------------------------------------------
"$VKVSTAT" top --once >"$T/top1" || fail "top --once exit status"
grep -Eq "^ *$WPID vkvstat_wo" "$T/top1" || fail "top --once lacks the process"
"$VKVSTAT" top -n 2 -d 0.1 | grep -c "^vkvstat top" | grep -qx 2 || fail "top -n 2 must print 2 screens"
ok "top --once / -n"

# --- top in tmux: 80x24, keys, screen ------------------------------------
if command -v tmux >/dev/null; then
	TMUX_SOCK=$T/tmux.sock
	tm() { tmux -S "$TMUX_SOCK" "$@"; }
	# an interactive shell with job control, as a user would have
	tm new-session -d -x 80 -y 24 -s vkvtop "env PS1='$ ' bash --norc --noprofile -i" ||
		fail "tmux new-session"
	tm pipe-pane -o -t vkvtop "cat >>'$T/raw'"
	tm send-keys -t vkvtop -l "TERM=xterm $VKVSTAT top -d 0.2"
	tm send-keys -t vkvtop Enter
	screen_has() { # $1 regex, $2 tries
		local i
		for ((i = 0; i < ${2:-50}; i++)); do
			tm capture-pane -p -t vkvtop >"$T/screen" 2>/dev/null
			grep -Eq "$1" "$T/screen" && return 0
			sleep 0.1
		done
		return 1
	}
	screen_has "^vkvstat top .* sort committed" || fail "top screen: $(cat "$T/screen")"
	screen_has "^ *$WPID vkvstat_wo.*\[[#+.]{10}\]" || fail "top lacks the row: $(cat "$T/screen")"
	grep -q "q quit" "$T/screen" || fail "top lacks the key line"
	[ "$(wc -l <"$T/screen")" -le 24 ] || fail "top taller than 24 lines"
	awk 'length > 80 { exit 1 }' "$T/screen" || fail "top wider than 80"
	# flicker-free: each screen homes the cursor and erases line ends; the
	# whole screen is cleared at most once (at start)
	sleep 0.6
	python3 - "$T/raw" <<'PY' || fail "top's redraw: $(od -c "$T/raw" | head -20)"
import sys
raw = open(sys.argv[1], "rb").read()
assert raw.count(b"\x1b[H") >= 2, "fewer than two screens seen"
assert raw.count(b"\x1b[2J") <= 1, "screen cleared on redraw"
assert b"\x1b[K" in raw and b"\x1b[J" in raw
PY
	tm send-keys -t vkvtop s
	screen_has "sort inuse" || fail "key s did not change the sort: $(cat "$T/screen")"
	# ^Z gives the terminal back to the shell; fg gives it to top again
	TOP_PID=$(pgrep -P "$(tm display -p -t vkvtop '#{pane_pid}')" -x vkvstat)
	[ -n "$TOP_PID" ] || fail "cannot find top's pid"
	tm send-keys -t vkvtop C-z
	for ((i = 0; i < 50; i++)); do
		[ "$(ps -o stat= -p "$TOP_PID" | cut -c1)" = T ] && break
		sleep 0.1
	done
	[ "$(ps -o stat= -p "$TOP_PID" | cut -c1)" = T ] || fail "top did not stop on ^Z"
	screen_has "Stopped" || fail "the shell did not get the terminal back: $(cat "$T/screen")"
	grep -Eq "^vkvstat top +[0-9]{2}:" "$T/screen" && fail "top kept the alternate screen while stopped"
	tm send-keys -t vkvtop fg Enter
	screen_has "^vkvstat top .* sort inuse" || fail "top did not come back on fg: $(cat "$T/screen")"
	tm send-keys -t vkvtop q
	for ((i = 0; i < 50; i++)); do
		kill -0 "$TOP_PID" 2>/dev/null || break
		sleep 0.1
	done
	tm send-keys -t vkvtop -l "echo exit=\$? >$T/top.rc"
	tm send-keys -t vkvtop Enter
	for ((i = 0; i < 50; i++)); do
		[ -s "$T/top.rc" ] && break
		sleep 0.1
	done
	grep -qx "exit=0" "$T/top.rc" 2>/dev/null || fail "top did not quit on q with status 0"
	tm capture-pane -p -t vkvtop >"$T/screen"
	grep -Eq "^vkvstat top +[0-9]{2}:" "$T/screen" && fail "alternate screen not left on q"
	ok "top in tmux: screen, redraw without clearing, sort key, ^Z/fg, q quits and restores the screen"

	# colour on a terminal, unless NO_COLOR is set
	tm new-session -d -x 80 -y 24 -s colour "$VKVSTAT; sleep 5"
	tm new-session -d -x 80 -y 24 -s nocolour "NO_COLOR=1 $VKVSTAT; sleep 5"
	for ((i = 0; i < 50; i++)); do
		tm capture-pane -p -t colour | grep -q "^GPUS" &&
			tm capture-pane -p -t nocolour | grep -q "^GPUS" && break
		sleep 0.1
	done
	tm capture-pane -e -p -t colour | grep -q $'\033\[1m' || fail "no colour on a terminal"
	tm capture-pane -e -p -t nocolour | grep -q "vkvstat 0" || fail "nothing on the NO_COLOR terminal"
	tm capture-pane -e -p -t nocolour | grep -q $'\033\[1m' && fail "colour despite NO_COLOR"
	ok "colour on a terminal, none with NO_COLOR"
else
	echo "note: tmux missing: interactive top not tested"
fi

# --- probe ----------------------------------------------------------------
"$VKVSTAT" probe --json --dir "$T" --size 16M >"$T/probe" 2>"$T/probe.err" ||
	fail "probe exit status: $(cat "$T/probe.err")"
python3 - "$T/probe" <<'PY' || fail "probe JSON: $(cat "$T/probe")"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["schema_version"] == 1
assert len(d["numa_nodes"]) >= 1 and d["numa_nodes"][0]["total_bytes"] > 0
assert d["gpus"] or d["gpu_error"], "no GPU and no reason"
io = d["io"]
assert io["measured"] or io["error"], io
if io["measured"]:
    assert io["write_gbps"] > 0 and io["read_gbps"] > 0
print("probe:", "gpus", len(d["gpus"]), d["gpu_error"], "io", io)
PY
grep -q "vkvstat probe: done" "$T/probe.err" || fail "probe printed no progress"
ok "probe --json completes"

# --- probe's GPU path, against the CUDA test double -------------------------
FAKECUDA=$BUILD/tests/cudadouble
if [ -e "$FAKECUDA/libcuda.so.1" ]; then
	LD_LIBRARY_PATH=$FAKECUDA "$VKVSTAT" probe --json --dir "$T" --size 4M \
		>"$T/probe" 2>"$T/probe.err" || fail "probe on the test double"
	python3 - "$T/probe" <<'PY' || fail "probe JSON on the test double: $(cat "$T/probe")"
import json, sys
g = json.load(open(sys.argv[1]))["gpus"]
assert g and not g[0]["error"], g
assert g[0]["vmm_granularity"] > 0 and g[0]["memory_bytes"] > 0
assert g[0]["map_us_per_page"] > 0 and g[0]["pinned_h2d_gbps"] > 0
PY
	ok "probe measures a GPU through the driver table (test double)"
else
	echo "note: $FAKECUDA/libcuda.so.1 not built: probe's GPU path not tested"
fi
echo "PASS"
