# SPDX-License-Identifier: MIT
"""_tensor.py - torch.Tensor views of a region's virtual memory, no copies.

One `Reservation` object stands for the region's whole reservation
[base, base + reserved_bytes). Every K/V tensor handed out is a view of one
1-D uint8 tensor over it (host: torch.frombuffer over a ctypes array at the
raw address; cuda: torch.as_tensor over __cuda_array_interface__), cast to
the cache's dtype and as_strided with vkv's real strides. torch keeps the
buffer object alive for as long as any tensor, view or storage built on it
lives, and the buffer holds a strong reference to its KVCache: so tensors
keep the cache alive, and the cache can tell whether tensors are still
alive by holding only a weak reference to the buffer.

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


class _CudaMemory:
    """__cuda_array_interface__ (version 2) of the whole reservation as bytes."""

    def __init__(self, base, nbytes):
        self.__cuda_array_interface__ = {
            "shape": (nbytes,), "typestr": "|u1", "data": (base, False),
            "strides": None, "version": 2,
        }


def reservation(owner, base, nbytes, device):
    """A 1-D uint8 tensor over [base, base + nbytes) and the object that owns
    it (weakly referenceable; alive while any view lives). `owner` is kept
    alive by it. device: None for host memory, a CUDA ordinal otherwise."""
    t = torch()
    if device is None:
        mem = type("VkvReservation", (ctypes.c_uint8 * nbytes,), {}).from_address(base)
        mem.owner = owner
        raw = t.frombuffer(mem, dtype=t.uint8)
        return raw, mem
    mem = _CudaMemory(base, nbytes)
    mem.owner = owner
    with t.cuda.device(device):
        raw = t.as_tensor(mem, device="cuda:%d" % device)
    if raw.data_ptr() != base:
        raise RuntimeError("vkv: torch copied the CUDA reservation instead of viewing it")
    return raw, mem


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
