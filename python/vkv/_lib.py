# SPDX-License-Identifier: MIT
"""_lib.py - loading libvkv.so with ctypes, and the C API's types.

The binding is pure Python: the C structs of include/vkv.h are mirrored
here as ctypes Structures (fields in the header's order, with its padding),
and every function gets its argtypes/restype so that a wrong argument fails
in Python instead of corrupting memory. When the header changes, change
this file with it.

The library is found, in order: $VKV_LIBRARY (a path to libvkv.so), the
build tree next to this package (../../build/lib/libvkv.so, and any
../../build*/lib when that one is missing), then the system's search path
(libvkv.so.0 as installed by `make install`).
"""
import ctypes
import ctypes.util
import errno
import glob
import os
import threading

c_int = ctypes.c_int
c_u32 = ctypes.c_uint32
c_u64 = ctypes.c_uint64
c_size = ctypes.c_size_t
c_voidp = ctypes.c_void_p
c_char_p = ctypes.c_char_p

# enum vkv_backend_kind
BACKEND_AUTO, BACKEND_HOST, BACKEND_CUDA, BACKEND_KMOD = 0, 1, 2, 3
BACKENDS = {"auto": BACKEND_AUTO, "host": BACKEND_HOST, "cuda": BACKEND_CUDA,
            "kmod": BACKEND_KMOD}
# enum vkv_unbacked
UNBACKED_FAULT, UNBACKED_ZERO = 0, 1
UNBACKED = {"fault": UNBACKED_FAULT, "zero": UNBACKED_ZERO}
# context flags
CTX_NO_WORKER = 1 << 0
CTX_NO_STATS = 1 << 1
# enum vkv_layout
LAYOUT_PER_LAYER, LAYOUT_ALL_LAYERS = 0, 1
LAYOUTS = {"per_layer": LAYOUT_PER_LAYER, "all_layers": LAYOUT_ALL_LAYERS}
K, V = 0, 1


class CtxConfig(ctypes.Structure):
    _fields_ = [
        ("struct_size", c_u32),
        ("backend", c_int),
        ("device", c_int),
        ("flags", c_u32),
        ("unbacked", c_int),
        ("pad0", c_u32),
        ("page_size", c_u64),
        ("budget", c_u64),
        ("pool_low", c_u64),
        ("pool_high", c_u64),
        ("reserved", c_u64 * 8),
    ]


class CtxInfo(ctypes.Structure):
    _fields_ = [
        ("backend", c_int),
        ("unbacked", c_int),
        ("device", c_int),
        ("worker", c_u32),
        ("page_size", c_u64),
        ("budget", c_u64),
        ("pool_low", c_u64),
        ("pool_high", c_u64),
        ("pages_total", c_u64),
        ("pages_free", c_u64),
        ("pages_mapped", c_u64),
        ("reserved_bytes", c_u64),
        ("backend_name", ctypes.c_char * 16),
        ("backend_detail", ctypes.c_char * 64),
    ]


class RegionConfig(ctypes.Structure):
    _fields_ = [
        ("struct_size", c_u32),
        ("layers", c_u32),
        ("kv_heads", c_u32),
        ("head_dim", c_u32),
        ("elem_size", c_u32),
        ("max_slots", c_u32),
        ("max_context", c_u64),
        ("layout", c_int),
        ("lookahead", c_u32),
        ("reserved", c_u64 * 6),
    ]


class Tensor(ctypes.Structure):
    _fields_ = [
        ("addr", c_u64),
        ("slot_stride", c_u64),
        ("token_stride", c_u64),
        ("head_stride", c_u64),
        ("elem_size", c_u32),
        ("pad0", c_u32),
    ]


class RegionInfo(ctypes.Structure):
    _fields_ = [
        ("config", RegionConfig),
        ("page_size", c_u64),
        ("token_bytes", c_u64),
        ("tokens_per_page", c_u64),
        ("reserved_bytes", c_u64),
        ("committed_bytes", c_u64),
        ("slots_active", c_u32),
        ("slots_cached", c_u32),
    ]


class SlotInfo(ctypes.Structure):
    _fields_ = [
        ("allocated", c_u32),
        ("tier", c_u32),
        ("backed_tokens", c_u64),
        ("pages", c_u64),
        ("shared_pages", c_u64),
        ("last_len", c_u64),
    ]


# name: (restype, argtypes). Every fallible call returns int (0 or -errno).
_PROTOS = {
    "vkv_strerror": (c_char_p, [c_int]),
    "vkv_last_error": (c_char_p, []),
    "vkv_version": (c_char_p, []),
    "vkv_ctx_config_init": (None, [ctypes.POINTER(CtxConfig)]),
    "vkv_ctx_create": (c_int, [ctypes.POINTER(CtxConfig), ctypes.POINTER(c_voidp)]),
    "vkv_ctx_destroy": (c_int, [c_voidp]),
    "vkv_ctx_info": (c_int, [c_voidp, ctypes.POINTER(CtxInfo)]),
    "vkv_backend_name": (c_char_p, [c_int]),
    "vkv_ctx_set_stream": (c_int, [c_voidp, c_voidp]),
    "vkv_ctx_quiesce": (c_int, [c_voidp]),
    "vkv_ctx_trim": (c_int, [c_voidp, ctypes.POINTER(c_u64)]),
    "vkv_region_config_init": (None, [ctypes.POINTER(RegionConfig)]),
    "vkv_region_create": (c_int, [c_voidp, ctypes.POINTER(RegionConfig),
                                  ctypes.POINTER(c_voidp)]),
    "vkv_region_destroy": (c_int, [c_voidp]),
    "vkv_region_tensor": (c_int, [c_voidp, c_u32, c_int, ctypes.POINTER(Tensor)]),
    "vkv_region_info": (c_int, [c_voidp, ctypes.POINTER(RegionInfo)]),
    "vkv_slot_alloc": (c_int, [c_voidp, c_u64, ctypes.POINTER(c_u32)]),
    "vkv_slot_alloc_at": (c_int, [c_voidp, c_u32]),
    "vkv_slot_free": (c_int, [c_voidp, c_u32]),
    "vkv_slot_ensure": (c_int, [c_voidp, c_u32, c_u64]),
    "vkv_slot_prefetch": (c_int, [c_voidp, c_u32, c_u64]),
    # slots and lens: addresses of uint32/uint64 arrays (array.array is
    # several times cheaper to fill than a ctypes array on this hot path)
    "vkv_step": (c_int, [c_voidp, c_voidp, c_voidp, c_size]),
    "vkv_slot_share_prefix": (c_int, [c_voidp, c_u32, c_u32, c_u64]),
    "vkv_slot_info": (c_int, [c_voidp, c_u32, ctypes.POINTER(SlotInfo)]),
    "vkv_slot_write": (c_int, [c_voidp, c_u32, c_u32, c_int, c_u64, c_u64, c_voidp]),
    "vkv_slot_read": (c_int, [c_voidp, c_u32, c_u32, c_int, c_u64, c_u64, c_voidp]),
}


class VkvError(OSError):
    """A libvkv call failed. `errno` is the positive errno code, `strerror`
    vkv_strerror()'s text with the detail of the failure, `call` the C
    function that failed."""

    def __init__(self, err, message, call=None):
        super().__init__(err, message)
        self.call = call

    def __str__(self):
        where = "%s: " % self.call if self.call else ""
        return "%s[Errno %d %s] %s" % (where, self.errno,
                                       errno.errorcode.get(self.errno, "?"),
                                       self.strerror)


def _candidates():
    env = os.environ.get("VKV_LIBRARY")
    if env:
        return [env], True
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.normpath(os.path.join(here, "..", ".."))
    paths = [os.path.join(root, "build", "lib", "libvkv.so")]
    paths += sorted(glob.glob(os.path.join(root, "build*", "lib", "libvkv.so")))
    found = ctypes.util.find_library("vkv")
    paths += ["libvkv.so.0"] + ([found] if found else [])
    return paths, False


_lock = threading.Lock()
_lib = None


def load():
    """The loaded libvkv (a ctypes.CDLL), loaded on first use."""
    global _lib
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is not None:
            return _lib
        paths, explicit = _candidates()
        tried = []
        for p in paths:
            if os.path.sep in p and not os.path.exists(p):
                tried.append("%s (missing)" % p)
                continue
            try:
                lib = ctypes.CDLL(p)
            except OSError as e:
                tried.append("%s (%s)" % (p, e))
                continue
            _bind(lib)
            lib.path = os.path.abspath(p) if os.path.sep in p else p
            _lib = lib
            return lib
        hint = ("VKV_LIBRARY=%s could not be loaded" % paths[0] if explicit else
                "build it with `make lib` or set VKV_LIBRARY=/path/to/libvkv.so")
        raise ImportError("vkv: cannot load libvkv.so: %s; tried: %s"
                          % (hint, "; ".join(tried)))


def _bind(lib):
    for name, (res, args) in _PROTOS.items():
        fn = getattr(lib, name)
        fn.restype = res
        fn.argtypes = args
    from . import _tier
    _tier.bind(lib)


def has(name):
    """True when the loaded libvkv exports `name` (for optional parts)."""
    try:
        getattr(load(), name)
    except AttributeError:
        return False
    return True


def strerror(err):
    return load().vkv_strerror(err).decode("utf-8", "replace")


def check(rc, call):
    """Raise VkvError for a negative return code of C function `call`.
    Must run on the thread that made the call: vkv_strerror's detail is
    thread-local."""
    if rc < 0:
        raise VkvError(-rc, strerror(rc), call)
    return rc


def call(name, *args):
    """Call C function `name` and raise VkvError on a negative result."""
    return check(getattr(load(), name)(*args), name)
