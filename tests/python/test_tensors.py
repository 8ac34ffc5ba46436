# SPDX-License-Identifier: MIT
"""The K/V tensors view vkv's memory: right addresses and strides, writes
through torch are what the C API reads and back, growth beyond a page,
prefix sharing visible through both slots, evict/restore keeps contents."""
import pytest
import torch

import vkv
from conftest import TENSOR_DEVICE, sync

DIMS = dict(layers=3, kv_heads=2, head_dim=16, max_slots=4, max_context=300)


def rand(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    if dtype.is_floating_point:
        return torch.randn(shape, generator=g).to(dtype)
    return torch.randint(0, 255, shape, generator=g, dtype=torch.uint8).to(dtype)


@pytest.fixture(params=["per_layer", "all_layers"])
def layout(request):
    return request.param


def sized(ctx):
    """DIMS with room for four pages of a per-layer tensor at ctx's page
    size (4 KiB on host, 2 MiB on cuda), so tests can cross page bounds."""
    return dict(DIMS, max_context=max(DIMS["max_context"], 4 * ctx.page_size // (2 * 16 * 4)))


@pytest.fixture
def cache(ctx, layout):
    c = ctx.cache(dtype=torch.float32, layout=layout, **sized(ctx))
    yield c
    c.close()


def test_shape_strides_and_addresses(cache):
    es = cache.elem_size
    want_dev = TENSOR_DEVICE
    assert cache.device == (None if cache.context.backend in ("host", "kmod") else 0)
    for layer in range(cache.layers):
        for kv in (vkv.K, vkv.V):
            t = cache.tensor(layer, kv)
            d = cache.strides(layer, kv)
            assert t.shape == (4, cache.max_context, 2, 16) == cache.shape
            assert t.dtype == torch.float32 and t.device.type == want_dev
            assert t.stride() == (d["slot_stride"] // es, d["token_stride"] // es,
                                  d["head_stride"] // es, 1)
            assert t.data_ptr() == d["addr"]
            assert t[2, 5].data_ptr() == d["addr"] + 2 * d["slot_stride"] + 5 * d["token_stride"]
    assert cache.k(1) is cache.k(1)  # one tensor per (layer, kv) while alive


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32,
                                   torch.float64, torch.uint8])
def test_torch_write_c_read_and_back(ctx, dtype):
    with ctx.cache(dtype=dtype, **DIMS) as c:
        a, b = c.alloc(), c.alloc()
        c.step([a, b], [70, 9])
        for layer in range(c.layers):
            for kv in (vkv.K, vkv.V):
                t = c.tensor(layer, kv)
                data = rand((70, 2, 16), dtype, 10 * layer + kv)
                t[a, :70] = data.to(t.device)
                sync()
                assert torch.equal(c.read(a, layer, kv, 0, 70), data)
                back = rand((9, 2, 16), dtype, 100 + layer)
                c.write(b, layer, kv, 0, back)
                assert torch.equal(t[b, :9].cpu(), back)
        # slot a's rows were not touched by slot b's writes
        assert torch.equal(c.read(a, 0, vkv.K, 0, 70), rand((70, 2, 16), dtype, 0))
        del t


def test_growth_beyond_a_page(cache):
    tpp = cache.tokens_per_page
    total = 3 * tpp + 5
    s = cache.alloc()
    k, v = cache.kv(1)
    # decode-like growth: one token per step near every page boundary
    points = sorted({n for b in (0, tpp, 2 * tpp, 3 * tpp) for n in range(b - 2, b + 3)
                     if 0 < n < total} | {total})
    committed, prev = [], 0
    for n in points:
        cache.step([s], [n])
        vals = torch.arange(prev + 1, n + 1, dtype=torch.float32, device=k.device)
        k[s, prev:n] = vals[:, None, None]
        v[s, prev:n] = -vals[:, None, None]
        committed.append(cache.info().committed_bytes)
        prev = n
    info = cache.slot_info(s)
    assert info.backed_tokens >= total and info.last_len == total
    assert info.pages >= 4 * (2 * cache.layers if cache.layout == "per_layer" else 1)
    assert committed[-1] > committed[0]
    sync()
    want = torch.arange(1, total + 1, dtype=torch.float32)
    assert torch.equal(k[s, :total, 0, 0].cpu(), want)
    assert torch.equal(cache.read(s, 1, vkv.V, 0, total)[:, 1, 7], -want)
    for t in (tpp - 1, tpp, tpp + 1, 2 * tpp, total - 1):  # page boundaries
        assert torch.equal(cache.read(s, 1, vkv.K, t, 1)[0], torch.full((2, 16), t + 1.0))


def test_prefix_sharing_visible_through_both_slots(cache):
    tpp = cache.tokens_per_page
    n = 2 * tpp + tpp // 2  # two full pages and a partial one
    src, dst = cache.alloc(), cache.alloc()
    cache.ensure(src, n)
    k, v = cache.kv(0)
    prefix = rand((n, 2, 16), torch.float32, 7).to(k.device)
    k[src, :n] = prefix
    v[src, :n] = -prefix
    sync()
    cache.share_prefix(dst, src, n)
    assert torch.equal(k[dst, :n], prefix) and torch.equal(v[dst, :n], -prefix)
    assert torch.equal(cache.read(dst, 0, vkv.K, 0, n), prefix.cpu())
    assert cache.slot_info(dst).shared_pages > 0
    # the full pages are the same physical memory: a write shows in both
    k[src, 3] = 42.0
    sync()
    assert torch.equal(k[dst, 3].cpu(), torch.full((2, 16), 42.0))
    assert torch.equal(cache.read(dst, 0, vkv.K, 3, 1)[0], torch.full((2, 16), 42.0))
    # freeing the source leaves the sharer intact
    cache.free(src)
    cache.context.trim()  # give back what only the freed slot held
    sync()
    assert torch.equal(k[dst, 3].cpu(), torch.full((2, 16), 42.0))
    assert torch.equal(k[dst, 4:n], prefix[4:n])


def test_slots_are_isolated(cache):
    slots = [cache.alloc() for _ in range(cache.max_slots)]
    cache.step(slots, [40] * len(slots))
    k = cache.k(2)
    for i, s in enumerate(slots):
        k[s, :40] = float(i)
    sync()
    for i, s in enumerate(slots):
        assert torch.equal(cache.read(s, 2, vkv.K, 0, 40), torch.full((40, 2, 16), float(i)))


@pytest.mark.skipif(not vkv.has_tiering(),
                    reason="libvkv has no tiering API yet (vkv_evict/vkv_restore)")
def test_evict_restore_keeps_tensor_contents(cache):
    tpp = cache.tokens_per_page
    a, b = cache.alloc(), cache.alloc()
    n = 2 * tpp + 3
    cache.step([a, b], [n, n])
    data = [rand((n, 2, 16), torch.float32, 50 + i) for i in range(2 * cache.layers)]
    for layer in range(cache.layers):
        k, v = cache.kv(layer)
        k[a, :n] = data[2 * layer].to(k.device)
        v[a, :n] = data[2 * layer + 1].to(v.device)
        k[b, :n] = 1.0
    sync()
    ptrs = [cache.k(layer)[a].data_ptr() for layer in range(cache.layers)]
    before = cache.info().committed_bytes
    op = cache.evict([a], tier=1)
    assert op.done()
    assert cache.slot_info(a).tier == 1
    assert cache.info().committed_bytes < before
    with pytest.raises(vkv.VkvError) as e:
        cache.step([a], [n + 1])  # an evicted slot cannot be stepped
    assert e.value.errno == 11  # EAGAIN
    cache.restore([a])
    assert cache.slot_info(a).tier == 0
    for layer in range(cache.layers):
        k, v = cache.kv(layer)
        assert k[a].data_ptr() == ptrs[layer]  # same virtual addresses
        assert torch.equal(k[a, :n].cpu(), data[2 * layer])
        assert torch.equal(v[a, :n].cpu(), data[2 * layer + 1])
        assert torch.equal(k[b, :n].cpu(), torch.ones(n, 2, 16))


@pytest.mark.skipif(not vkv.has_tiering(),
                    reason="libvkv has no tiering API yet (vkv_evict/vkv_restore)")
def test_evict_restore_async_batch(cache):
    slots = [cache.alloc() for _ in range(3)]
    cache.step(slots, [10, 70, 130])
    k = cache.k(0)
    for i, s in enumerate(slots):
        k[s, :10] = float(i + 1)
    sync()
    op = cache.evict(slots, tier="dram", wait=False)
    op.wait()
    assert op.done() and all(cache.slot_info(s).tier == 1 for s in slots)
    with pytest.raises(vkv.VkvError) as e:
        cache.evict(slots[:1])
    assert e.value.errno == 11  # EAGAIN: already evicted
    op = cache.restore(slots, wait=False)
    while not op.done():
        pass
    for i, s in enumerate(slots):
        assert torch.equal(cache.read(s, 0, vkv.K, 0, 10), torch.full((10, 2, 16), i + 1.0))
    with pytest.raises(vkv.VkvError) as e:
        cache.restore(slots[:1])
    assert e.value.errno == 22  # EINVAL: not evicted
    with pytest.raises(ValueError):
        cache.evict(slots, tier="tape")
