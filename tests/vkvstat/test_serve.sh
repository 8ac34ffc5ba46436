#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# vkvstat against the demo workload: with `vkvbench serve` running,
# `vkvstat --json` must report its process with committed bytes > 0 and
# `vkvstat --prometheus` must pass `promtool check metrics`. Skips (77)
# when vkvbench is not built or its serve command is not available.
set -uo pipefail
cd "$(dirname "$0")/../.."
. tests/vkvstat/lib.sh

BENCH=$BUILD/bin/vkvbench
[ -x "$BENCH" ] || skip "$BENCH is not built"
# Many requests, so that it is still serving while vkvstat looks; it is
# stopped at the end.
ARGS=(serve)
grep -q -- "--requests" <<<"$("$BENCH" serve --help 2>&1)" && ARGS+=(--requests 20000)
VKV_LOG=quiet "$BENCH" "${ARGS[@]}" >"$T/serve.out" 2>&1 &
SPID=$!
BG_PIDS+=("$SPID")
sleep 0.3
if ! kill -0 "$SPID" 2>/dev/null; then
	wait "$SPID"
	rc=$?
	[ "$rc" -eq 77 ] && skip "vkvbench serve is not available: $(head -n 3 "$T/serve.out")"
	wait_committed "$SPID" 0 >/dev/null ||
		fail "vkvbench serve exited ($rc) before vkvstat could see it: $(tail -n 5 "$T/serve.out")"
fi
check_json_and_prometheus "$SPID"
echo "PASS"
