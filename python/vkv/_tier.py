# SPDX-License-Identifier: MIT
"""_tier.py - evict/restore through libvkv's tiering API (vkv_evict,
vkv_restore, vkv_op_*), and Op, the handle of an asynchronous one.

The tiering API is optional here: a libvkv built without it loads fine,
KVCache.evict/restore then raise VkvError(ENOSYS), and available() says
False.
"""
import ctypes
import errno
import threading

from . import _lib
from ._lib import VkvError, check

TIERS = {"dram": 1, "nvme": 2}  # enum vkv_stats_tier_id
EINPROGRESS = errno.EINPROGRESS

_bound = False


def bind(lib):
    """Give the tiering functions their prototypes when lib exports them."""
    global _bound
    names = ("vkv_evict", "vkv_restore", "vkv_op_poll", "vkv_op_wait", "vkv_op_free")
    if not all(hasattr(lib, n) for n in names):
        _bound = False
        return
    vp, u32p = ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32)
    lib.vkv_evict.argtypes = [vp, u32p, ctypes.c_size_t, ctypes.c_uint, ctypes.POINTER(vp)]
    lib.vkv_restore.argtypes = [vp, u32p, ctypes.c_size_t, ctypes.POINTER(vp)]
    for n in names:
        getattr(lib, n).restype = ctypes.c_int
    for n in ("vkv_op_poll", "vkv_op_wait", "vkv_op_free"):
        getattr(lib, n).argtypes = [vp]
    _bound = True


def available():
    _lib.load()
    return _bound


class Op:
    """An evict or restore in flight (vkv_op). done() polls without
    blocking, wait() blocks; both raise VkvError when the operation failed.
    The Op keeps its KVCache open until it finished."""

    def __init__(self, cache, what, slots, handle, result=None):
        self.cache, self.what, self.slots = cache, what, tuple(slots)
        self._handle = handle
        self._result = result
        self._lock = threading.Lock()

    def __repr__(self):
        state = "running" if self._result is None else "result %d" % self._result
        return "<vkv.Op %s %s %s>" % (self.what, list(self.slots), state)

    def _finish(self, rc):
        # lock held; rc is the operation's result
        self._result = rc
        if self._handle is not None:
            _lib.load().vkv_op_free(self._handle)
            self._handle = None

    def done(self):
        """True when finished (raises VkvError if it failed), else False."""
        with self._lock:
            if self._result is None:
                rc = _lib.load().vkv_op_poll(self._handle)
                if rc == -EINPROGRESS:
                    return False
                self._finish(rc)
                if rc < 0:  # the detail is this thread's only now
                    check(rc, "vkv_op_poll(%s)" % self.what)
            return self._raise()

    def wait(self):
        """Block until finished; raises VkvError if it failed."""
        with self._lock:
            if self._result is None:
                rc = _lib.load().vkv_op_wait(self._handle)
                self._finish(rc)
                if rc < 0:
                    check(rc, "vkv_op_wait(%s)" % self.what)
            return self._raise()

    def _raise(self):
        if self._result < 0:
            raise VkvError(-self._result, _lib.strerror(self._result), "vkv_" + self.what)
        return True

    def __del__(self):
        h = getattr(self, "_handle", None)
        if h is not None:
            try:
                _lib.load().vkv_op_free(h)  # a running operation completes on its own
            except Exception:  # interpreter shutdown
                pass


def submit(cache, what, slots, tier, wait):
    """vkv_evict / vkv_restore of a batch of slots of one cache."""
    if not available():
        raise VkvError(errno.ENOSYS, "this libvkv has no tiering API (vkv_evict/"
                       "vkv_restore); evict/restore are unavailable", "vkv.KVCache." + what)
    if isinstance(slots, int):
        slots = [slots]
    slots = list(slots)
    arr = (ctypes.c_uint32 * len(slots))(*slots)
    lib = _lib.load()
    with cache._lock:
        h = cache._h()
        args = [h, arr, len(slots)]
        if what == "evict":
            tier = TIERS.get(tier, tier)
            if tier not in TIERS.values():
                raise ValueError("vkv: tier must be 1/'dram' or 2/'nvme', not %r" % (tier,))
            args.append(tier)
        fn = getattr(lib, "vkv_" + what)
        if wait:
            check(fn(*args, None), "vkv_" + what)
            return Op(cache, what, slots, None, 0)
        handle = ctypes.c_void_p()
        check(fn(*args, ctypes.byref(handle)), "vkv_" + what)
        op = Op(cache, what, slots, handle)
        cache._ops.add(op)
        return op
