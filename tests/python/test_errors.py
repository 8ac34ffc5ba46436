# SPDX-License-Identifier: MIT
"""C errors become VkvError (an OSError) with the errno and vkv_strerror's
text, including the detail of the failure; bad Python arguments raise
ValueError/TypeError before reaching C."""
import errno

import pytest
import torch

import vkv
from conftest import BACKEND, make_ctx

DIMS = dict(layers=1, kv_heads=1, head_dim=8, dtype=torch.float32, max_slots=2,
            max_context=64)


def raises(code, fn, *args, **kw):
    with pytest.raises(vkv.VkvError) as e:
        fn(*args, **kw)
    assert isinstance(e.value, OSError)
    assert e.value.errno == code, e.value
    assert e.value.strerror and e.value.call
    return e.value


def test_slot_errors(ctx):
    with ctx.cache(**DIMS) as c:
        e = raises(errno.EINVAL, c.alloc_at, 7)
        assert "out of range" in e.strerror or "7" in e.strerror
        assert e.call == "vkv_slot_alloc_at"
        c.alloc_at(0)
        raises(errno.EBUSY, c.alloc_at, 0)
        c.alloc()
        raises(errno.ENOSPC, c.alloc)
        e = raises(errno.E2BIG, c.ensure, 0, 65)
        assert "max_context" in e.strerror
        raises(errno.ERANGE, c.read, 0, 0, vkv.K, 0, 1)  # not backed yet
        c.free(1)
        raises(errno.EINVAL, c.free, 1)  # double free
        raises(errno.EINVAL, c.step, [1], [3])  # a free slot
        raises(errno.EINVAL, c.share_prefix, 1, 0, 8)
        with pytest.raises(ValueError):
            c.step([0, 1], [3])
        with pytest.raises(IndexError):
            c.k(1)
        with pytest.raises(ValueError):
            c.write(0, 0, vkv.K, 0, b"\0" * 5)  # not whole tokens


def test_region_config_errors(ctx):
    raises(errno.EINVAL, ctx.cache, **dict(DIMS, layers=0))
    e = raises(errno.EINVAL, ctx.cache, **dict(DIMS, dtype=None, elem_size=3))
    assert "elem_size" in e.strerror
    raises(errno.EOVERFLOW, ctx.cache, **dict(DIMS, max_context=1 << 60))
    with pytest.raises(ValueError):
        ctx.cache(**dict(DIMS, layout="diagonal"))
    with pytest.raises(ValueError):
        ctx.cache(**dict(DIMS, max_slots=-1))  # not wrapped to 2^32-1
    with pytest.raises(ValueError):
        ctx.cache(**dict(DIMS, head_dim=8.0))
    with pytest.raises(ValueError):
        ctx.cache(**dict(DIMS, elem_size=2))  # float32 is 4 bytes
    assert not ctx._caches  # nothing half-made was kept


def test_context_errors():
    with pytest.raises(ValueError):
        vkv.Context(backend="abacus")
    with pytest.raises(ValueError):
        vkv.Context(budget="lots")
    if BACKEND == "host":
        raises(errno.EINVAL, vkv.Context, backend="host", page_size=12345)


def test_budget_exhausted_is_enomem():
    probe = make_ctx(worker=False)
    page = probe.page_size
    probe.close()
    ctx = make_ctx(budget=4 * page, worker=False)
    with ctx.cache(**dict(DIMS, max_context=1 << 20)) as c:
        s = c.alloc()
        e = raises(errno.ENOMEM, c.ensure, s, c.max_context)
        assert "budget" in e.strerror
        assert c.slot_info(s).backed_tokens <= 4 * c.tokens_per_page
    ctx.close()


def test_strerror_and_str():
    assert "Invalid argument" in vkv.strerror(errno.EINVAL)
    e = vkv.VkvError(errno.ENOMEM, "pool budget exhausted", "vkv_step")
    assert str(e).startswith("vkv_step: [Errno 12 ENOMEM]")


def test_evict_without_tiering_is_enosys(ctx, monkeypatch):
    from vkv import _tier
    monkeypatch.setattr(_tier, "_bound", False)  # as with a libvkv without tiers
    with ctx.cache(**DIMS) as c:
        s = c.alloc()
        raises(errno.ENOSYS, c.evict, [s])
