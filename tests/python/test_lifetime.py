# SPDX-License-Identifier: MIT
"""Lifetime: tensors keep their cache (and its context) alive; closing a
cache while tensors or views of it live is refused; nothing leaks across
1,000 create/destroy cycles."""
import gc
import os
import weakref

import pytest
import torch

import vkv
from conftest import BACKEND, STATS_DIR, make_ctx, sync

DIMS = dict(layers=2, kv_heads=2, head_dim=8, dtype=torch.float32, max_slots=2,
            max_context=100)


def test_tensor_keeps_cache_and_context_alive():
    ctx = make_ctx()
    cache = ctx.cache(**DIMS)
    s = cache.alloc()
    cache.ensure(s, 10)
    k = cache.k(0)
    wcache, wctx = weakref.ref(cache), weakref.ref(ctx)
    del cache, ctx
    gc.collect()
    assert wcache() is not None and wctx() is not None
    k[s, :10] = 3.0  # the memory is still there
    sync()
    assert torch.equal(wcache().read(s, 0, vkv.K, 0, 10), torch.full((10, 2, 8), 3.0))
    view = k[s, 2:5]
    del k
    gc.collect()
    assert wcache() is not None  # a view is enough
    del view
    gc.collect()
    assert wcache() is None and wctx() is None  # then both go, on their own


def test_close_refused_while_tensors_alive(ctx):
    cache = ctx.cache(**DIMS)
    k, v = cache.kv(1)
    row = v[0]
    del v
    with pytest.raises(vkv.VkvError) as e:
        cache.close()
    assert e.value.errno == 16 and "still alive" in str(e.value)
    assert not cache.closed
    del k
    with pytest.raises(vkv.VkvError):
        cache.close()  # `row` still views the memory
    del row
    cache.close()
    assert cache.closed
    with pytest.raises(vkv.VkvError) as e:
        cache.alloc()
    assert e.value.errno == 9  # EBADF: closed
    cache.close()  # idempotent


def test_context_close_refused_with_open_cache():
    ctx = make_ctx()
    cache = ctx.cache(**DIMS)
    with pytest.raises(vkv.VkvError) as e:
        ctx.close()
    assert e.value.errno == 16
    cache.close()
    ctx.close()
    with pytest.raises(vkv.VkvError):
        ctx.info()


def _counts():
    with open("/proc/self/statm") as f:
        rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    with open("/proc/self/maps") as f:
        maps = sum(1 for _ in f)
    return dict(rss=rss, fds=len(os.listdir("/proc/self/fd")), maps=maps,
                threads=len(os.listdir("/proc/self/task")),
                stats_files=sum(n.startswith("vkv-stats.") for n in os.listdir(STATS_DIR)))


def _cycle(i):
    ctx = make_ctx(worker=(i % 2 == 0))
    with ctx.cache(**DIMS) as cache:
        a, b = cache.alloc(), cache.alloc()
        cache.step([a, b], [60, 5])
        k, v = cache.kv(i % 2)
        k[a, :60] = float(i)
        v[b, :5] = k[a, :5]
        cache.share_prefix(b, a, 40)
        cache.free(a)
        del k, v
    ctx.close()


# A CUDA context per cycle is slow: the GPU run does fewer unless told.
CYCLES = int(os.environ.get("VKV_TEST_LEAK_CYCLES", 1000 if BACKEND == "host" else 200))


def test_no_leak_across_1000_cycles():
    for i in range(50):  # warm up allocators and torch's caches
        _cycle(i)
    gc.collect()
    before = _counts()
    for i in range(CYCLES):
        _cycle(i)
    gc.collect()
    after = _counts()
    for what in ("fds", "maps", "threads"):
        assert after[what] == before[what], (what, before, after)
    assert after["stats_files"] <= 1, after
    assert after["rss"] - before["rss"] < 16 << 20, (before, after)
    seg = vkv.stats()
    assert seg["contexts"] == 0 and seg["regions"] == 0 and seg["slots_active"] == 0


def test_dlpack_capsule_aliases_and_keeps_owner_alive():
    """The DLPack path the cuda backend uses, exercised on host memory."""
    from vkv import _tensor

    ctx = make_ctx()
    cache = ctx.cache(**DIMS)
    if BACKEND == "cuda":
        pytest.skip("host memory only (the CUDA run covers the cuda path itself)")
    s = cache.alloc()
    cache.ensure(s, 10)
    wcache = weakref.ref(cache)
    cap = _tensor.dlpack_capsule(cache, cache.base, cache.reserved_bytes, _tensor.KDL_CPU, 0)
    raw = torch.utils.dlpack.from_dlpack(cap)
    del cap
    assert raw.data_ptr() == cache.base and raw.numel() == cache.reserved_bytes
    k = _tensor.view(raw, cache.base, torch.float32, cache._descs[1][vkv.K], *cache.shape)
    del raw
    k[s, :10] = 7.0
    assert torch.equal(cache.read(s, 1, vkv.K, 0, 10), torch.full((10, 2, 8), 7.0))
    del cache, ctx
    gc.collect()
    assert wcache() is not None
    del k
    gc.collect()
    assert wcache() is None and not _tensor._dl_live
