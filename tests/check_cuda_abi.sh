#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# tests/check_cuda_abi.sh - the driver table of runtime/cuda_driver.h against
# the CUDA headers it is built with.
#
# libvkv asks cuGetProcAddress for each entry point at CUDA_VERSION, and the
# driver answers with the newest ABI of that name up to that version. Where
# cuda.h's plain declaration (the one our table is typed with) has another
# signature than that newest ABI, the entry must be pinned to its own
# version in cuda_driver.c (pinned_version): CUDA 13.0's
# cuCtxSynchronize_v2(CUcontext) was such a case, found on an H200 only.
# This fails when an entry needs a pin it does not have, or keeps a pin it
# no longer needs. Exit 77 without cuda.h.
#   tests/check_cuda_abi.sh [CUDA_HOME]
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
CUDA_HOME=${1:-${CUDA_HOME:-/usr/local/cuda}}
INC=$CUDA_HOME/include
if [ ! -f "$INC/cuda.h" ] || [ ! -f "$INC/cudaTypedefs.h" ]; then
	echo "check_cuda_abi: SKIP: no cuda.h / cudaTypedefs.h under $INC"
	exit 77
fi
exec python3 - "$INC" <<'PY'
import re, sys
inc = sys.argv[1]
cuda_h = open(f"{inc}/cuda.h").read()
typedefs = open(f"{inc}/cudaTypedefs.h").read()
table = re.findall(r"X\((cu\w+)\)", open("runtime/cuda_driver.h").read())
drv = open("runtime/cuda_driver.c").read()
pins = dict(re.findall(r'\{\s*"(cu\w+)",\s*(\d+)\s*\}', drv))
version = int(re.search(r"#define CUDA_VERSION (\d+)", cuda_h).group(1))

def norm(params):
    out = []
    for p in params.split(","):
        p = re.sub(r"\bconst\b", "", p).strip()
        if p in ("", "void"):
            continue
        p = re.sub(r"\s*\b\w+\s*$", "", p) if re.search(r"[\w*]\s+\w+\s*$", p) else p
        p = re.sub(r"_v\d+\b", "", p)
        out.append(re.sub(r"\s+", "", p))
    return out

bad = 0
for fn in table:
    vers = {int(v): norm(a) for v, a in re.findall(
        rf"PFN_{fn}_v(\d+)\)\s*\(([^;]*)\);", typedefs)}
    vers = {v: a for v, a in vers.items() if v <= version}
    if not vers:
        continue
    # declared under its plain name (which a #define may map to _v2)
    d = re.search(rf"CUresult CUDAAPI {fn}\(([^;]*)\);", cuda_h)
    if not d:
        print(f"check_cuda_abi: {fn}: no declaration in cuda.h")
        bad += 1
        continue
    decl = norm(d.group(1))
    newest = vers[max(vers)]
    need = None
    if newest != decl:
        same = [v for v, a in vers.items() if a == decl]
        need = max(same) if same else -1
    have = int(pins[fn]) if fn in pins else None
    if need != have:
        print(f"check_cuda_abi: {fn}: cuda.h declares ({', '.join(decl)}), "
              f"the newest ABI up to {version} is ({', '.join(newest)}): "
              f"pin needed: {need}, pinned: {have}")
        bad += 1
print(f"check_cuda_abi: {len(table)} entry points against CUDA {version}: "
      f"{'OK' if not bad else f'{bad} wrong'}; pinned: {sorted(pins) or 'none'}")
sys.exit(1 if bad else 0)
PY
