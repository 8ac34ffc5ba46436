# SPDX-License-Identifier: MIT
"""cache.py - Context and KVCache: the C API of include/vkv.h in Python.

A Context is one vkv_ctx (a backend, its page pool, its worker); a KVCache
is one vkv_region on it, whose K/V tensors are torch.Tensors viewing vkv's
memory directly. Every method maps to one C call; a negative return code
becomes a VkvError carrying the errno and vkv_strerror()'s message.

Lifetime rules, enforced here rather than left to luck:
  - a KVCache holds its Context; a Context cannot be closed while caches
    on it are open;
  - every tensor (and every view of one) holds its KVCache; closing a
    cache while any of them lives is refused with EBUSY, because the
    region's memory would vanish under them;
  - both close on garbage collection when nothing refers to them anymore.
"""
import array
import ctypes
import errno
import gc
import os
import threading
import weakref
from collections import namedtuple

from . import _lib, _tensor
from ._lib import VkvError, call

_SIZE_SUFFIX = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _size(v, what):
    """Bytes from an int or a string with a K/M/G/T suffix ("2M")."""
    if v is None or isinstance(v, int):
        return v
    if isinstance(v, str):
        s = v.strip().upper().rstrip("B").rstrip("I")
        mul = _SIZE_SUFFIX.get(s[-1:], 1)
        num = s[:-1] if s[-1:] in _SIZE_SUFFIX else s
        if num.isdigit():
            return int(num) * mul
    raise ValueError("vkv: %s must be a byte count or a size like '2M', not %r" % (what, v))


def _choice(v, table, what):
    if v is None or isinstance(v, int):
        return v
    try:
        return table[v]
    except KeyError:
        raise ValueError("vkv: %s must be one of %s, not %r"
                         % (what, ", ".join(sorted(table)), v)) from None


def _tuple_of(struct_obj, name):
    fields = [n for n, _ in struct_obj._fields_ if not n.startswith(("pad", "reserved"))]
    cls = namedtuple(name, fields)
    vals = []
    for n in fields:
        v = getattr(struct_obj, n)
        vals.append(v.decode("utf-8", "replace") if isinstance(v, bytes) else v)
    return cls(*vals)


RegionInfo = namedtuple("RegionInfo", [
    "layers", "kv_heads", "head_dim", "elem_size", "max_slots", "max_context",
    "layout", "lookahead", "page_size", "token_bytes", "tokens_per_page",
    "reserved_bytes", "committed_bytes", "slots_active", "slots_cached"])
SlotInfo = namedtuple("SlotInfo", [n for n, _ in _lib.SlotInfo._fields_])


class Context:
    """One vkv context (vkv_ctx): a backend, a page pool, a worker.

    Keyword arguments override the VKV_* environment options (which
    vkv_ctx_config_init applies first); None keeps them:
      backend   "auto" | "host" | "cuda" | "kmod"
      device    CUDA ordinal (cuda) / NUMA node
      page_size bytes or "4K"/"2M"; 0 = the backend's default
      budget    cap on physical memory, bytes or "1G"; 0 = no cap
      pool_low, pool_high   the free list's watermarks
      unbacked  "zero" (reads of unbacked memory see zeros) or "fault"
                (any access to unbacked memory is a SIGSEGV, or an illegal
                address on a GPU). Python default: "zero" unless
                VKV_UNBACKED is set, so that printing a tensor or a stray
                read cannot kill the interpreter. Writes to unbacked memory
                fault in both modes.
      worker    False: no background thread, all work inline
      stats     False: do not publish the stats segment
    """

    def __init__(self, backend=None, device=None, page_size=None, budget=None,
                 pool_low=None, pool_high=None, unbacked=None, worker=None,
                 stats=None):
        lib = _lib.load()
        self._lock = threading.RLock()
        self._caches = weakref.WeakSet()
        self._handle = None
        cfg = _lib.CtxConfig()
        lib.vkv_ctx_config_init(ctypes.byref(cfg))
        if unbacked is None and not os.environ.get("VKV_UNBACKED"):
            unbacked = "zero"
        for name, val in (("backend", _choice(backend, _lib.BACKENDS, "backend")),
                          ("device", device),
                          ("page_size", _size(page_size, "page_size")),
                          ("budget", _size(budget, "budget")),
                          ("pool_low", _size(pool_low, "pool_low")),
                          ("pool_high", _size(pool_high, "pool_high")),
                          ("unbacked", _choice(unbacked, _lib.UNBACKED, "unbacked"))):
            if val is not None:
                setattr(cfg, name, val)
        for flag, on in ((_lib.CTX_NO_WORKER, worker), (_lib.CTX_NO_STATS, stats)):
            if on is not None:
                cfg.flags = (cfg.flags & ~flag) if on else (cfg.flags | flag)
        h = ctypes.c_void_p()
        call("vkv_ctx_create", ctypes.byref(cfg), ctypes.byref(h))
        self._handle = h
        self._info = self.info()

    # -- plumbing
    def _h(self):
        h = self._handle
        if h is None:
            raise VkvError(errno.EBADF, "context is closed", "vkv.Context")
        return h

    @property
    def closed(self):
        return self._handle is None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        if self.closed:
            return "<vkv.Context closed>"
        return "<vkv.Context %s %s>" % (self._info.backend_name, self._info.backend_detail)

    # -- the C API
    def info(self):
        """vkv_ctx_info as a namedtuple (backend, page_size, pages_*, ...)."""
        info = _lib.CtxInfo()
        call("vkv_ctx_info", self._h(), ctypes.byref(info))
        return _tuple_of(info, "CtxInfo")

    @property
    def backend(self):
        return self._info.backend_name

    @property
    def device(self):
        """None for host memory (host, kmod), the CUDA ordinal under cuda."""
        return self._info.device if self._info.backend == _lib.BACKEND_CUDA else None

    @property
    def page_size(self):
        return self._info.page_size

    def set_stream(self, stream):
        """Register the engine's CUDA stream (a torch.cuda.Stream, its
        cuda_stream int, or None for the legacy default stream)."""
        ptr = getattr(stream, "cuda_stream", stream)
        call("vkv_ctx_set_stream", self._h(), ctypes.c_void_p(ptr or None))

    def quiesce(self):
        """Wait until the background worker has nothing queued."""
        call("vkv_ctx_quiesce", self._h())

    def trim(self):
        """Give back cached pages and the free list; returns bytes freed."""
        freed = ctypes.c_uint64()
        call("vkv_ctx_trim", self._h(), ctypes.byref(freed))
        return freed.value

    def stats(self):
        """This process's stats segment as a dict (see vkv.stats())."""
        from ._stats import read_segment
        return read_segment()

    def cache(self, **kw):
        """A new KVCache on this context; see KVCache for the arguments."""
        return KVCache(self, **kw)

    def close(self):
        """Destroy the context. Refused with EBUSY while caches are open."""
        with self._lock:
            if self._handle is None:
                return
            open_caches = [c for c in self._caches if not c.closed]
            if open_caches:
                gc.collect()  # caches only a cycle still holds close now
                open_caches = [c for c in self._caches if not c.closed]
            if open_caches:
                raise VkvError(errno.EBUSY, "context still has %d open KVCache(s); "
                               "close them first" % len(open_caches), "vkv.Context.close")
            call("vkv_ctx_destroy", self._handle)
            self._handle = None

    def __del__(self):
        if getattr(self, "_handle", None) is not None:
            try:
                self.close()
            except Exception:  # interpreter shutdown: nothing left to report to
                pass


class KVCache:
    """One KV region (vkv_region): K and V for every layer, as tensors of
    shape [max_slots, max_context, kv_heads, head_dim] over vkv's virtual
    memory, with the real strides (a slot's row is page-aligned, so
    slot_stride is usually larger than max_context * token_stride).

      cache = KVCache(ctx, layers=32, kv_heads=8, head_dim=128,
                      dtype=torch.float16, max_slots=256, max_context=32768)
      k, v = cache.kv(layer)        # no copy: the same memory vkv manages

    Arguments: layers, kv_heads, head_dim, max_slots, max_context (required);
    dtype (torch dtype or name) or elem_size (1, 2, 4, 8; default 2 ->
    float16); layout "per_layer" (default) or "all_layers"; lookahead
    (tokens committed ahead by the worker; 0 = one page's worth).

    Memory: only tokens [0, backed_tokens) of an allocated slot are backed
    (ensure/step back them). Everything else is unbacked virtual memory:
    reading it gives zeros under unbacked="zero" (the Python default) and
    a SIGSEGV under unbacked="fault"; writing it always faults. Python
    cannot catch that signal: index tensors by slot and length
    (k[slot, :n]), never touch a freed or evicted slot's rows.
    """

    def __init__(self, ctx, *, layers, kv_heads, head_dim, max_slots, max_context,
                 dtype=None, elem_size=None, layout="per_layer", lookahead=0):
        lib = _lib.load()
        self._handle = None
        self._ctx = ctx
        self._lock = threading.RLock()
        self._mem = None          # weakref to the reservation's owner object
        self._raw = None          # weakref to the 1-D uint8 tensor over it
        self._views = {}          # (layer, kv) -> weakref to a tensor
        self._ops = weakref.WeakSet()  # evict/restore operations in flight
        self.dtype, es = _tensor.dtype_of(dtype, elem_size)
        cfg = _lib.RegionConfig()
        lib.vkv_region_config_init(ctypes.byref(cfg))
        for name, val, bits in (("layers", layers, 32), ("kv_heads", kv_heads, 32),
                                ("head_dim", head_dim, 32), ("elem_size", es, 32),
                                ("max_slots", max_slots, 32), ("max_context", max_context, 64),
                                ("lookahead", lookahead, 32)):
            # ctypes would wrap a negative or oversized value silently
            if not isinstance(val, int) or not 0 <= val < 1 << bits:
                raise ValueError("vkv: %s must be an integer in [0, 2^%d), not %r"
                                 % (name, bits, val))
            setattr(cfg, name, val)
        cfg.layout = _choice(layout, _lib.LAYOUTS, "layout")
        h = ctypes.c_void_p()
        with ctx._lock:
            call("vkv_region_create", ctx._h(), ctypes.byref(cfg), ctypes.byref(h))
            ctx._caches.add(self)
        self._handle = h
        info = self._region_info()
        c = info.config
        self.layers, self.kv_heads, self.head_dim = c.layers, c.kv_heads, c.head_dim
        self.elem_size, self.max_slots, self.max_context = c.elem_size, c.max_slots, c.max_context
        self.layout = {v: k for k, v in _lib.LAYOUTS.items()}[c.layout]
        self.lookahead = c.lookahead
        self.page_size = info.page_size
        self.token_bytes = info.token_bytes
        self.tokens_per_page = info.tokens_per_page
        self.reserved_bytes = info.reserved_bytes
        self._descs = [[self._tensor_desc(layer, kv) for kv in (_lib.K, _lib.V)]
                       for layer in range(self.layers)]
        self.base = min(d.addr for pair in self._descs for d in pair)

    # -- plumbing
    def _h(self):
        h = self._handle
        if h is None:
            raise VkvError(errno.EBADF, "KV cache is closed", "vkv.KVCache")
        return h

    @property
    def closed(self):
        return self._handle is None

    @property
    def context(self):
        return self._ctx

    @property
    def shape(self):
        return (self.max_slots, self.max_context, self.kv_heads, self.head_dim)

    @property
    def device(self):
        """None for host memory, else the CUDA ordinal."""
        return self._ctx.device

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        state = "closed" if self.closed else "layers=%d kv_heads=%d head_dim=%d " \
            "dtype=%s max_slots=%d max_context=%d %s" % (
                self.layers, self.kv_heads, self.head_dim, self.dtype,
                self.max_slots, self.max_context, self.layout)
        return "<vkv.KVCache %s>" % state

    def _region_info(self):
        info = _lib.RegionInfo()
        call("vkv_region_info", self._h(), ctypes.byref(info))
        return info

    def _tensor_desc(self, layer, kv):
        t = _lib.Tensor()
        call("vkv_region_tensor", self._h(), layer, kv, ctypes.byref(t))
        return t

    # -- tensors
    def _reservation(self):
        """The 1-D uint8 tensor over the reservation (lock held)."""
        raw = self._raw() if self._raw else None
        if raw is None:
            mem = self._mem() if self._mem else None
            if mem is not None:
                # The owner lives on through some view; rebuilding the 1-D
                # tensor from it keeps one owner per cache.
                raw = _tensor.rewrap(mem, self.base, self.reserved_bytes, self.device)
            else:
                raw, mem = _tensor.reservation(self, self.base, self.reserved_bytes,
                                               self.device)
                self._mem = weakref.ref(mem)
            self._raw = weakref.ref(raw)
        return raw

    def tensor(self, layer, kv):
        """K (kv=0) or V (kv=1) of one layer: a torch.Tensor of shape
        [max_slots, max_context, kv_heads, head_dim] viewing vkv's memory."""
        if self.dtype is None:
            _tensor.torch()  # not installed: ImportError with the hint
            self.dtype, _ = _tensor.dtype_of(None, self.elem_size)
        if not 0 <= layer < self.layers or kv not in (_lib.K, _lib.V):
            raise IndexError("vkv: layer %r kv %r out of range (%d layers)"
                             % (layer, kv, self.layers))
        with self._lock:
            self._h()
            ref = self._views.get((layer, kv))
            t = ref() if ref else None
            if t is None:
                t = _tensor.view(self._reservation(), self.base, self.dtype,
                                 self._descs[layer][kv], *self.shape)
                self._views[(layer, kv)] = weakref.ref(t)
            return t

    def k(self, layer):
        return self.tensor(layer, _lib.K)

    def v(self, layer):
        return self.tensor(layer, _lib.V)

    def kv(self, layer):
        """(K, V) of one layer."""
        return self.tensor(layer, _lib.K), self.tensor(layer, _lib.V)

    def strides(self, layer=0, kv=_lib.K):
        """struct vkv_tensor of one tensor as a dict (bytes)."""
        d = self._descs[layer][kv]
        return {n: getattr(d, n) for n, _ in d._fields_ if n != "pad0"}

    def tensors_alive(self):
        """True while any tensor or view of this cache's memory lives."""
        return bool(self._mem and self._mem() is not None)

    # -- slots
    def alloc(self, hint_tokens=0):
        """Allocate a slot for a request expected to reach hint_tokens."""
        s = ctypes.c_uint32()
        call("vkv_slot_alloc", self._h(), hint_tokens, ctypes.byref(s))
        return s.value

    def alloc_at(self, slot):
        call("vkv_slot_alloc_at", self._h(), slot)
        return slot

    def free(self, slot):
        call("vkv_slot_free", self._h(), slot)

    def ensure(self, slot, tokens):
        """Back tokens [0, tokens) of a slot now."""
        call("vkv_slot_ensure", self._h(), slot, tokens)

    def prefetch(self, slot, tokens):
        """Ask the worker to back tokens [0, tokens) ahead of need."""
        call("vkv_slot_prefetch", self._h(), slot, tokens)

    def step(self, slots, lens=None):
        """The one call per iteration: slots[i] holds lens[i] tokens after it.
        Takes two sequences, or one mapping {slot: tokens}."""
        if lens is None:
            slots, lens = list(slots.keys()), list(slots.values())
        s, n = array.array("I", slots), array.array("Q", lens)
        if len(s) != len(n):
            raise ValueError("vkv: step: %d slots but %d lengths" % (len(s), len(n)))
        call("vkv_step", self._h(), s.buffer_info()[0] if s else None,
             n.buffer_info()[0] if n else None, len(s))

    def share_prefix(self, dst, src, tokens):
        """Make tokens [0, tokens) of dst hold src's data (full pages shared)."""
        call("vkv_slot_share_prefix", self._h(), dst, src, tokens)

    def slot_info(self, slot):
        info = _lib.SlotInfo()
        call("vkv_slot_info", self._h(), slot, ctypes.byref(info))
        return SlotInfo(*(getattr(info, n) for n in SlotInfo._fields))

    def info(self):
        """vkv_region_info as a RegionInfo namedtuple."""
        i = self._region_info()
        c = i.config
        return RegionInfo(c.layers, c.kv_heads, c.head_dim, c.elem_size, c.max_slots,
                          c.max_context, self.layout, c.lookahead, i.page_size,
                          i.token_bytes, i.tokens_per_page, i.reserved_bytes,
                          i.committed_bytes, i.slots_active, i.slots_cached)

    def write(self, slot, layer, kv, first, data):
        """Copy `data` (bytes-like, or a host tensor of whole tokens) into
        tokens [first, first + n) of one layer's K or V through the C API."""
        buf, n = self._host_buffer(data)
        call("vkv_slot_write", self._h(), slot, layer, kv, first, n, buf)

    def read(self, slot, layer, kv, first, count):
        """Tokens [first, first + count) of one layer's K or V, copied out
        through the C API: a host tensor [count, kv_heads, head_dim] (bytes
        when the cache has no torch dtype)."""
        out = ctypes.create_string_buffer(count * self.token_bytes)
        call("vkv_slot_read", self._h(), slot, layer, kv, first, count, out)
        if self.dtype is None:
            return out.raw
        t = _tensor.torch()
        return t.frombuffer(bytearray(out.raw), dtype=t.uint8).view(self.dtype).reshape(
            count, self.kv_heads, self.head_dim)

    def _host_buffer(self, data):
        if hasattr(data, "detach"):
            t = data.detach().to("cpu").contiguous()
            buf = ctypes.string_at(t.data_ptr(), t.numel() * t.element_size())
        else:
            buf = bytes(data)
        if len(buf) % self.token_bytes:
            raise ValueError("vkv: %d bytes is not a whole number of %d-byte tokens"
                             % (len(buf), self.token_bytes))
        return buf, len(buf) // self.token_bytes

    # -- tiering (see _tier.py; present when libvkv exports it)
    def evict(self, slots, tier="dram", wait=True):
        """Move slots' data to a lower tier ("dram" = 1, "nvme" = 2) and
        free their pages; the tensors keep their addresses, but the slots'
        rows are unbacked until restore (see the class docstring). The
        engine's work that writes those rows must have finished. Returns an
        Op (already finished when wait=True). Needs libvkv's tiering API."""
        from . import _tier
        return _tier.submit(self, "evict", slots, tier, wait)

    def restore(self, slots, wait=True):
        """Bring evicted slots back at the same virtual addresses. Returns an
        Op (finished when wait=True)."""
        from . import _tier
        return _tier.submit(self, "restore", slots, None, wait)

    # -- teardown
    def close(self):
        """Destroy the region. Refused with EBUSY while tensors of it live."""
        with self._lock:
            if self._handle is None:
                return
            for op in list(self._ops):
                try:
                    op.wait()  # the region must outlive its copies
                except VkvError:
                    pass  # its failure is the Op's owner's to see
            if self.tensors_alive():
                gc.collect()  # cycles may hold the last views
            if self.tensors_alive():
                raise VkvError(errno.EBUSY, "tensors of this KV cache are still alive; "
                               "delete them (and their views) before closing it",
                               "vkv.KVCache.close")
            with self._ctx._lock:
                h, self._handle = self._handle, None
                self._ctx._caches.discard(self)
                # vkv_region_destroy frees the region even when it reports
                # a failed unmap, so the handle is gone either way.
                call("vkv_region_destroy", h)

    def __del__(self):
        if getattr(self, "_handle", None) is not None:
            try:
                self.close()
            except Exception:  # interpreter shutdown: nothing left to report to
                pass
