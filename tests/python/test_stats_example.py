# SPDX-License-Identifier: MIT
"""The stats segment as the binding reads it, and the engine-shaped example:
its outputs with vkv equal those with plain tensors."""
import os
import subprocess
import sys

import pytest
import torch

import vkv
from conftest import BACKEND, ROOT, make_ctx

EXAMPLE = os.path.join(ROOT, "python", "examples", "tiny_decoder.py")


def test_stats_segment_matches_the_api():
    ctx = make_ctx()
    base = vkv.stats()
    with ctx.cache(layers=2, kv_heads=2, head_dim=8, dtype=torch.float32, max_slots=3,
                   max_context=100) as c:
        s = c.alloc()
        c.step([s], [50])
        seg = ctx.stats()
        assert seg["pid"] == os.getpid() and seg["path"] == vkv.stats_path()
        assert seg["contexts"] >= 1 and seg["regions"] == base["regions"] + 1
        assert seg["slots_active"] == 1
        assert seg["steps"] == base["steps"] + 1
        assert seg["reserved_bytes"] >= c.reserved_bytes
        assert seg["page_size"] == ctx.page_size
        assert set(seg["tiers"]) == {"device", "dram", "nvme"}
        assert len(seg["step_hist"]) == 40
    ctx.close()


@pytest.mark.skipif(BACKEND == "cudadouble",
                    reason="the example makes CUDA tensors; the test double has no GPU")
def test_example_outputs_equal_plain_tensors():
    env = dict(os.environ)
    p = subprocess.run([sys.executable, EXAMPLE, "--json", "--backend", BACKEND],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    assert '"ok": true' in p.stdout and '"preemptions": 0' not in p.stdout


def test_example_detects_a_difference():
    """The check would catch a store that loses or alters KV data."""
    sys.path.insert(0, os.path.dirname(EXAMPLE))
    import tiny_decoder as td

    model = td.TinyDecoder(5, "cpu", max_context=128)
    reqs = td.make_requests(5, 4, model.vocab)
    ref = td.serve(model, td.PlainStore(model, 2, 128, "cpu", 32), reqs, 2, 8, False)

    class Lossy(td.PlainStore):
        def step(self, lens):  # forget one token of the first slot's K
            slot = next(iter(lens))
            if lens[slot] > 6:
                self.tensors[0][0][slot, 5] = 0.0

    got = td.serve(model, Lossy(model, 2, 128, "cpu", 32), reqs, 2, 8, False)
    assert td.compare(got, ref)
