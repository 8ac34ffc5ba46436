# SPDX-License-Identifier: MIT
"""vkv - contiguous virtual KV caches for LLM serving, from Python.

A pure-Python (ctypes) binding of libvkv: no extension to compile. KV
regions are exposed as torch.Tensors that view vkv's memory without a copy
(CPU tensors on the host backend, CUDA tensors on the cuda backend), so
unchanged attention code reads them directly.

    import torch, vkv
    ctx = vkv.Context(backend="host", page_size="4K")
    cache = ctx.cache(layers=2, kv_heads=4, head_dim=64, dtype=torch.float16,
                      max_slots=8, max_context=4096)
    slot = cache.alloc()
    cache.step([slot], [17])          # tokens [0, 17) of slot are backed
    k, v = cache.kv(0)                # [max_slots, max_context, kv_heads, head_dim]
    k[slot, :17] = ...

See python/README.md. libvkv.so is found through $VKV_LIBRARY, the build
tree (../../build/lib) or the system's library path.
"""
import errno

from ._lib import VkvError, K, V, load as _load
from .cache import Context, KVCache, RegionInfo, SlotInfo
from ._stats import read_segment as stats, segment_path as stats_path
from ._tier import Op, available as _tier_available

Region = KVCache  # the C API's name for it

__all__ = ["Context", "KVCache", "Region", "Op", "VkvError", "RegionInfo", "SlotInfo", "K", "V",
           "stats", "stats_path", "library_version", "library_path", "has_tiering",
           "strerror"]
__version__ = "0.1.0"
VkvError.__module__ = __name__  # shown (and pickled) as vkv.VkvError


def library_version():
    """libvkv's version string ("0.1.0")."""
    return _load().vkv_version().decode()


def library_path():
    """The path libvkv.so was loaded from."""
    return _load().path


def has_tiering():
    """True when the loaded libvkv has the tiering API (evict/restore)."""
    return _tier_available()


def strerror(err):
    """vkv_strerror(err): text of an errno code (with this thread's last
    failure's detail when it matches)."""
    from ._lib import strerror as s
    return s(-abs(err))


del errno
