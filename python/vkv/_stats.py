# SPDX-License-Identifier: MIT
"""_stats.py - reading a process's statistics segment (include/vkv_stats.h).

libvkv publishes $VKV_STATS_DIR/vkv-stats.<pid> (default /dev/shm), written
under a seqlock. This reader maps it read-only, copies it between two reads
of `seq` (retrying while a write is in progress), checks magic, version and
size, and returns plain dicts. The ctypes mirror below follows the header
field for field; fields are only ever appended there, so a longer segment
is accepted and its tail ignored.
"""
import ctypes
import errno
import mmap
import os
import struct

from ._lib import VkvError

u64 = ctypes.c_uint64
MAGIC = 0x31545453564b56
VERSION = 1
PREFIX = "vkv-stats."
HIST_BUCKETS = 40
TIER_NAMES = ("device", "dram", "nvme")


class _Tier(ctypes.Structure):
    _fields_ = [(n, u64) for n in (
        "bytes_capacity", "bytes_used", "evictions", "restores", "bytes_in",
        "bytes_out", "ns_in", "ns_out", "errors", "file_bytes")] + [
        ("reserved", u64 * 6)]


class _Preload(ctypes.Structure):
    _fields_ = [(n, u64) for n in (
        "reserved_bytes", "mapped_bytes", "in_use_bytes", "peak_in_use",
        "peak_mapped", "chunks", "largest_free", "allocs", "frees", "ooms",
        "limit_bytes", "passthrough")] + [("reserved", u64 * 4)]


class _Segment(ctypes.Structure):
    _fields_ = [
        ("magic", u64), ("version", ctypes.c_uint32), ("size", ctypes.c_uint32),
        ("seq", u64), ("pid", ctypes.c_int32), ("backend", ctypes.c_uint32),
        ("start_ns", u64), ("update_ns", u64),
        ("comm", ctypes.c_char * 32), ("backend_detail", ctypes.c_char * 64),
    ] + [(n, u64) for n in (
        "page_size", "budget", "reserved_bytes", "committed_bytes",
        "in_use_bytes", "cached_bytes", "peak_committed", "pages_free",
        "pages_shared", "contexts", "regions", "slots_active", "slots_cached",
        "pages_created", "pages_released", "maps_sync", "maps_async",
        "unmaps", "reclaims", "enomem", "steps", "step_ns_total",
        "step_ns_max")] + [
        ("step_hist", u64 * HIST_BUCKETS),
        ("tiers", _Tier * 3),
        ("preload", _Preload),
        ("reserved", u64 * 32),
    ]


SEQ_OFFSET = _Segment.seq.offset


def stats_dir():
    return os.environ.get("VKV_STATS_DIR") or "/dev/shm"


def segment_path(pid=None, directory=None):
    return os.path.join(directory or stats_dir(),
                        "%s%d" % (PREFIX, os.getpid() if pid is None else pid))


def _plain(struct_obj):
    out = {}
    for name, _ in struct_obj._fields_:
        if name == "reserved":
            continue
        v = getattr(struct_obj, name)
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        elif isinstance(v, ctypes.Array):
            v = list(v)
        out[name] = v
    return out


def _snapshot(mm, size, tries=1000):
    for _ in range(tries):
        s1 = struct.unpack_from("<Q", mm, SEQ_OFFSET)[0]
        if s1 & 1:
            continue
        data = mm[:size]
        s2 = struct.unpack_from("<Q", mm, SEQ_OFFSET)[0]
        if s1 == s2:
            return data
    raise VkvError(errno.EAGAIN, "stats segment kept changing while read", "stats")


def read_segment(pid=None, directory=None):
    """The stats segment of process `pid` (default: this one) as a dict:
    the header's fields, `tiers` as {"device"|"dram"|"nvme": {...}} and
    `preload` as a dict. Raises VkvError(ENOENT) when the process publishes
    none (no context yet, VKV_STATS=0) and EPROTO for a foreign file."""
    path = segment_path(pid, directory)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as e:
        raise VkvError(e.errno, "cannot open %s: %s" % (path, e.strerror),
                       "stats") from None
    try:
        size = os.fstat(fd).st_size
        if size < ctypes.sizeof(_Segment):
            raise VkvError(errno.EPROTO, "%s: %d bytes is too short" % (path, size),
                           "stats")
        with mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ) as mm:
            data = _snapshot(mm, ctypes.sizeof(_Segment))
    finally:
        os.close(fd)
    seg = _Segment.from_buffer_copy(data)
    if (seg.magic != MAGIC or seg.version != VERSION or
            seg.size < ctypes.sizeof(_Segment)):
        raise VkvError(errno.EPROTO, "%s: not a vkv stats segment (magic %#x, "
                       "version %d)" % (path, seg.magic, seg.version), "stats")
    out = _plain(seg)
    out["tiers"] = {TIER_NAMES[i]: _plain(seg.tiers[i]) for i in range(3)}
    out["preload"] = _plain(seg.preload)
    out["path"] = path
    return out
