# SPDX-License-Identifier: MIT
"""Fixtures of the vkv Python tests.

The tests run against the package in python/ (no install needed) and the
libvkv.so it finds ($VKV_LIBRARY, else build/lib). VKV_TEST_BACKEND picks
the backend:
  host        (default) CPU tensors;
  cuda        CUDA tensors on a real GPU (tests/gpu/run.sh);
  cudadouble  the cuda backend against the CUDA driver test double
              (tests/cudadouble, whose "device" memory is host memory):
              the binding's cuda path -- device detection, the DLPack
              capsule, lifetime, every C call -- with the capsule naming
              the CPU, since a CPU-only torch cannot make CUDA tensors.
Stats segments go to a private directory so that the leak test can count
them.
"""
import os
import shutil
import sys
import tempfile

import pytest
import torch  # noqa: F401  (a missing torch must fail the run, not skip it)

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "python"))

STATS_DIR = tempfile.mkdtemp(prefix="vkv-pytest-stats-")
os.environ["VKV_STATS_DIR"] = STATS_DIR

import vkv  # noqa: E402

BACKEND = os.environ.get("VKV_TEST_BACKEND", "host")
VKV_BACKEND = "cuda" if BACKEND == "cudadouble" else BACKEND
TENSOR_DEVICE = "cuda" if BACKEND == "cuda" else "cpu"

if BACKEND == "cudadouble":
    from vkv import _tensor

    def _double_tensor(mem, base, nbytes, device):
        return torch.utils.dlpack.from_dlpack(
            _tensor.dlpack_capsule(mem, base, nbytes, _tensor.KDL_CPU, 0))

    _tensor._cuda_tensor = _double_tensor


def pytest_report_header(config):
    return "vkv: %s (libvkv %s), backend %s, torch %s" % (
        vkv.library_path(), vkv.library_version(), BACKEND, torch.__version__)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(STATS_DIR, ignore_errors=True)


def make_ctx(**kw):
    """A context on the backend under test: 4 KiB pages on host, so that a
    few tokens already span several pages."""
    if BACKEND == "host":
        kw.setdefault("page_size", "4K")
    return vkv.Context(backend=VKV_BACKEND, **kw)


@pytest.fixture
def ctx():
    c = make_ctx()
    yield c
    c.close()


@pytest.fixture
def backend():
    return BACKEND


def sync():
    if BACKEND == "cuda":
        torch.cuda.synchronize()
