# SPDX-License-Identifier: MIT
"""_tensor.py - torch.Tensor views of a region's virtual memory, no copies.

One owner object stands for the region's whole reservation
[base, base + reserved_bytes). Every K/V tensor handed out is a view of one
1-D uint8 tensor over it, cast to the cache's dtype and as_strided with
vkv's real strides. The 1-D tensor comes from
  - host memory: torch.frombuffer over a ctypes array at the raw address;
  - CUDA memory: a DLPack capsule built here (kDLCUDA, the device given
    explicitly, so torch does not ask the driver about a pointer that may
    sit on an unbacked page), falling back to __cuda_array_interface__.
torch keeps the owner alive for as long as any tensor, view or storage
built on it lives, and the owner holds a strong reference to its KVCache:
so tensors keep the cache alive, and the cache can tell whether tensors are
still alive by holding only a weak reference to the owner.

Nothing here touches the memory: building a view of a mostly unbacked
reservation is free and safe. Reading or writing an unbacked page is not
(see KVCache's docstring).
"""
import ctypes

_torch = None


def torch():
    """torch, imported on first use (the rest of vkv works without it)."""
    global _torch
    if _torch is None:
        try:
            import torch as t
        except ImportError as e:
            raise ImportError("vkv: tensors need PyTorch (Debian: apt-get install "
                              "python3-torch): %s" % e) from None
        _torch = t
    return _torch


def dtype_of(dtype, elem_size):
    """(torch dtype or None, elem_size) from the user's dtype/elem_size."""
    if dtype is None:
        if elem_size is None:
            elem_size = 2
        try:
            t = torch()
        except ImportError:
            return None, elem_size
        return {1: t.uint8, 2: t.float16, 4: t.float32, 8: t.float64}.get(elem_size), elem_size
    t = torch()
    if isinstance(dtype, str):
        dt = getattr(t, dtype, None)
        if not isinstance(dt, t.dtype):
            raise ValueError("vkv: unknown torch dtype %r" % dtype)
        dtype = dt
    if not isinstance(dtype, t.dtype):
        raise TypeError("vkv: dtype must be a torch.dtype or its name, not %r" % (dtype,))
    size = t.empty((), dtype=dtype).element_size()
    if elem_size is not None and elem_size != size:
        raise ValueError("vkv: elem_size %d does not match %s (%d bytes)"
                         % (elem_size, dtype, size))
    return dtype, size


# ------------------------------------------------------------------ DLPack

KDL_CPU, KDL_CUDA = 1, 2
KDL_UINT = 1


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8),
                ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


class _DLManagedTensor(ctypes.Structure):
    pass


_DELETER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)  # void (*)(DLManagedTensor *)
_DLManagedTensor._fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", ctypes.c_void_p),
                             ("deleter", _DELETER)]

# What a capsule's tensor needs alive (the struct, its arrays, the owner),
# by the struct's address, until torch calls the deleter.
_dl_live = {}
_CAPSULE_NAME = b"dltensor"


def _dl_delete_py(addr, _live=_dl_live):
    # Bound defaults: at interpreter shutdown the module's globals may be
    # gone while torch still frees tensors.
    _live.pop(addr, None)


# The C thunk must outlive every tensor, even past module teardown (torch
# may free the last ones after it): one deliberate, permanent reference.
_dl_delete = _DELETER(_dl_delete_py)
ctypes.pythonapi.Py_IncRef(ctypes.py_object(_dl_delete))


_capsule_new = ctypes.pythonapi.PyCapsule_New
_capsule_new.restype = ctypes.py_object
_capsule_new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]


def dlpack_capsule(owner, base, nbytes, device_type, device_id):
    """A DLPack capsule of a 1-D uint8 tensor over [base, base + nbytes)
    that keeps `owner` alive until the consumer's tensor is freed."""
    m = _DLManagedTensor()
    shape, strides = (ctypes.c_int64 * 1)(nbytes), (ctypes.c_int64 * 1)(1)
    m.dl_tensor = _DLTensor(base, _DLDevice(device_type, device_id), 1,
                            _DLDataType(KDL_UINT, 8, 1), shape, strides, 0)
    m.deleter = _dl_delete
    _dl_live[ctypes.addressof(m)] = (m, shape, strides, owner)
    return _capsule_new(ctypes.addressof(m), _CAPSULE_NAME, None)


class _CudaMemory:
    """The owner of a CUDA reservation's tensors; also its
    __cuda_array_interface__ (version 2), the fallback to DLPack."""

    def __init__(self, base, nbytes):
        self.__cuda_array_interface__ = {
            "shape": (nbytes,), "typestr": "|u1", "data": (base, False),
            "strides": None, "version": 2,
        }


def _cuda_tensor(mem, base, nbytes, device):
    t = torch()
    try:
        raw = t.utils.dlpack.from_dlpack(dlpack_capsule(mem, base, nbytes, KDL_CUDA, device))
    except (RuntimeError, TypeError, ValueError):
        with t.cuda.device(device):
            raw = t.as_tensor(mem, device="cuda:%d" % device)
    if raw.data_ptr() != base or raw.device != t.device("cuda", device):
        raise RuntimeError("vkv: torch copied the CUDA reservation instead of viewing it")
    return raw


def reservation(owner, base, nbytes, device):
    """A 1-D uint8 tensor over [base, base + nbytes) and the object that owns
    it (weakly referenceable; alive while any view lives). `owner` is kept
    alive by it. device: None for host memory, a CUDA ordinal otherwise."""
    t = torch()
    if device is None:
        mem = type("VkvReservation", (ctypes.c_uint8 * nbytes,), {}).from_address(base)
        mem.owner = owner
        return t.frombuffer(mem, dtype=t.uint8), mem
    mem = _CudaMemory(base, nbytes)
    mem.owner = owner
    return _cuda_tensor(mem, base, nbytes, device), mem


def rewrap(mem, base, nbytes, device):
    """The 1-D tensor again, for an owner that outlived its first one."""
    t = torch()
    if device is None:
        return t.frombuffer(mem, dtype=t.uint8)
    return _cuda_tensor(mem, base, nbytes, device)


def view(raw, base, dtype, desc, max_slots, max_context, kv_heads, head_dim):
    """One K or V tensor [max_slots, max_context, kv_heads, head_dim] of the
    reservation `raw` (starting at `base`), from a struct vkv_tensor."""
    es = desc.elem_size
    typed = raw.view(dtype) if dtype != raw.dtype else raw
    for what in ("slot_stride", "token_stride", "head_stride"):
        if getattr(desc, what) % es:
            raise ValueError("vkv: %s %d is not a multiple of elem_size %d"
                             % (what, getattr(desc, what), es))
    return typed.as_strided(
        (max_slots, max_context, kv_heads, head_dim),
        (desc.slot_stride // es, desc.token_stride // es, desc.head_stride // es, 1),
        (desc.addr - base) // es)
