"""Finished results on disk until the coordinator has answered for them.

Every sealed result is written here before it is sent (write-ahead) and removed once the
coordinator gave a definite answer, so neither Ctrl-C, a crash, nor an unreachable
coordinator loses a result that was computed: the next start sends what is left, before any
new work. One folder per coordinator key (its fingerprint), so switching coordinators never
sends a result to the wrong one. Each entry is one file, written atomically (temporary file,
fsync, rename): the signed envelope, its signature and the encoded payload, each
length-prefixed, exactly the bytes that will be sent.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from allmende.protocol.errors import AllmendeError
from allmende.protocol.files import fsync_folder
from allmende.protocol.wire import decode_envelope

log = logging.getLogger("allmende.volunteer.spool")

MAGIC = b"ALLMENDE-SPOOL-1\n"
SUFFIX = ".result"
_LENGTH = struct.Struct(">I")
# Far above any real result (the wire limit is lower); a corrupt length cannot allocate more.
_MAX_PART = 1 << 30


@dataclass(frozen=True)
class SpooledResult:
    path: Path
    unit_id: str
    rows: int
    envelope: bytes
    signature: bytes
    payload: bytes

    @property
    def size(self) -> int:
        return len(self.envelope) + len(self.signature) + len(self.payload)


class Spool:
    """The results folder for one coordinator, under the volunteer's home."""

    def __init__(self, root: Path, coordinator_fingerprint: str) -> None:
        self.folder = root / coordinator_fingerprint[:32]

    def put(self, envelope: bytes, signature: bytes, payload: bytes) -> Path:
        """Write one result durably; returns its path. Rewriting the same result is harmless."""
        self.folder.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256(envelope).hexdigest()[:32] + SUFFIX
        path = self.folder / name
        temporary = self.folder / f".{name}.{os.getpid()}.tmp"
        with temporary.open("wb") as handle:
            handle.write(MAGIC)
            for part in (envelope, signature, payload):
                handle.write(_LENGTH.pack(len(part)))
                handle.write(part)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        fsync_folder(self.folder)
        return path

    def remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    def pending(self) -> Iterator[SpooledResult]:
        """Spooled results, oldest first. Unreadable files are moved aside, not sent."""
        if not self.folder.is_dir():
            return
        paths = sorted(self.folder.glob(f"*{SUFFIX}"), key=lambda p: (p.stat().st_mtime, p.name))
        for path in paths:
            try:
                yield _read(path)
            except (OSError, ValueError, AllmendeError) as exc:
                log.warning("spooled result %s is unreadable (%s); moved aside", path.name, exc)
                aside = self.folder / "unreadable"
                aside.mkdir(exist_ok=True)
                os.replace(path, aside / path.name)

    def count(self) -> int:
        return len(list(self.folder.glob(f"*{SUFFIX}"))) if self.folder.is_dir() else 0


def _read(path: Path) -> SpooledResult:
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        raise ValueError("not a spool file")
    offset = len(MAGIC)
    parts: list[bytes] = []
    for _ in range(3):
        if offset + _LENGTH.size > len(data):
            raise ValueError("truncated")
        (length,) = _LENGTH.unpack_from(data, offset)
        offset += _LENGTH.size
        if length > _MAX_PART or offset + length > len(data):
            raise ValueError("truncated")
        parts.append(data[offset : offset + length])
        offset += length
    if offset != len(data):
        raise ValueError("trailing bytes")
    envelope, signature, payload = parts
    header = decode_envelope(envelope)
    return SpooledResult(path, header.unit_id, header.rows, envelope, signature, payload)
