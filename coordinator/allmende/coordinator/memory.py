"""Giving the memory of large requests back to the system once they are answered.

A request of several MiB is read by grpc in many small buffers and copied into one Python
bytes object. With glibc's defaults that memory is kept by the process after the call:
buffers of 128 KiB and more are mapped on their own only until the first such mapping is
freed, after which malloc raises its threshold (up to 32 MiB) and serves them from the heap
and from per-thread arenas, which do not shrink. So a flood of refused 15 MiB requests left
the coordinator's resident size 100+ MiB higher, for good. Fixing the threshold keeps large
buffers mapped (one mmap and munmap per buffer, cheap next to reading MiBs), and a trim
after large requests hands back the free pages of the heap and arenas.

Only glibc needs this; elsewhere these calls do nothing.
"""

from __future__ import annotations

import ctypes
import logging
import platform
import threading

log = logging.getLogger("allmende.coordinator")

# mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
# Buffers this large or larger are mapped on their own and unmapped when freed.
MMAP_THRESHOLD = 256 * 1024
# A request this large marks the heap for a trim (see `trim_if_due`).
LARGE_REQUEST = 1024 * 1024


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


_LIBC = _glibc()
_due = threading.Event()


def keep_large_buffers_mapped() -> None:
    """Fix malloc's mmap threshold for this process (the coordinator calls it at start)."""
    if _LIBC is not None and not _LIBC.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD):
        log.warning("mallopt(M_MMAP_THRESHOLD) failed; large requests may stay resident")


def note_request(size: int) -> None:
    """Called for each request's size as it is read: a large one makes a trim due."""
    if size >= LARGE_REQUEST:
        _due.set()


def trim_if_due() -> None:
    """Return free heap and arena pages to the system, if a large request came in since the
    last trim (the housekeeper calls this every few seconds)."""
    if _LIBC is not None and _due.is_set():
        _due.clear()
        _LIBC.malloc_trim(0)
