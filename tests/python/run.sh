#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Run the vkv Python binding's pytest suite with Debian's python3-torch and
# python3-pytest (hence /usr/bin/python3: a pyenv or venv python on PATH may
# not see Debian's packages). Extra arguments go to pytest.
#   tests/python/run.sh                          host backend, CPU tensors
#   VKV_TEST_BACKEND=cuda tests/python/run.sh    cuda backend, CUDA tensors
# The default run makes a second pass, VKV_TEST_BACKEND=cudadouble: the cuda
# backend against the CUDA driver test double (see conftest.py).
# libvkv.so: $VKV_LIBRARY, else build/lib/libvkv.so (made by `make`).
# Exit: pytest's, except that "no tests collected" (5) is a failure too.
set -uo pipefail
cd "$(dirname "$0")/../.."
BACKEND=${VKV_TEST_BACKEND:-host}
PY=${VKV_PYTHON:-/usr/bin/python3}

# CUDA tensors need a PyTorch built with CUDA (not Debian's): take the first
# python that has one.
if [ "$BACKEND" = cuda ] && [ -z "${VKV_PYTHON:-}" ]; then
	PY=
	for p in python3 /usr/bin/python3 /usr/local/bin/python3; do
		if command -v "$p" >/dev/null &&
			"$p" -c 'import torch, pytest, sys; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
			PY=$p
			break
		fi
	done
	if [ -z "$PY" ]; then
		echo "tests/python: SKIP: no python3 with pytest and a CUDA-enabled torch" \
			"(set VKV_PYTHON)" >&2
		exit 77
	fi
fi

if ! "$PY" -c 'import torch, pytest' 2>/dev/null; then
	echo "tests/python: $PY cannot import torch and pytest;" \
		"install python3-torch python3-pytest (tools/install-deps.sh)" >&2
	exit 1
fi
if [ -z "${VKV_LIBRARY:-}" ] && [ ! -e build/lib/libvkv.so ]; then
	echo "tests/python: build/lib/libvkv.so is missing; run make first" \
		"or set VKV_LIBRARY" >&2
	exit 1
fi
export PYTHONDONTWRITEBYTECODE=1

run_pytest() {
	"$PY" -m pytest -q -p no:cacheprovider -rs tests/python "$@"
	local rc=$?
	if [ "$rc" -eq 5 ]; then
		echo "tests/python: pytest collected no tests" >&2
		return 1
	fi
	return "$rc"
}

run_pytest "$@" || exit $?

# The default run also takes the binding's cuda path against the CUDA
# driver test double built next to the library (make all builds it when
# cuda.h is there).
if [ "$BACKEND" = host ] && [ -z "${VKV_TEST_BACKEND:-}" ]; then
	libdir=$(dirname "${VKV_LIBRARY:-build/lib/libvkv.so}")
	double=$libdir/../tests/cudadouble
	if [ -e "$double/libcuda.so.1" ]; then
		echo "== cuda backend against the CUDA driver test double ($double)"
		LD_LIBRARY_PATH=$(cd "$double" && pwd)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
			VKV_TEST_BACKEND=cudadouble run_pytest "$@" || exit $?
	else
		echo "tests/python: SKIP the cuda-path pass: no CUDA test double at $double"
	fi
fi
