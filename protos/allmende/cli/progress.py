"""A download progress display on stderr: one rewritten line with bytes, rate and ETA on a
terminal; a plain line per finished file otherwise (logs and pipes stay readable)."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


class DownloadProgress:
    """Feed it `update(name, done, size)` from any thread; `total` is set once known."""

    def __init__(self, stream: TextIO | None = None, interval_s: float = 0.2) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.interval_s = interval_s
        self.total = 0
        self._files: dict[str, int] = {}
        self._reported: set[str] = set()
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._first: dict[str, int] = {}
        self._shown = 0.0

    def update(self, name: str, done: int, size: int) -> None:
        with self._lock:
            self._first.setdefault(name, done)
            self._files[name] = done
            if done == size and name not in self._reported:
                self._reported.add(name)
                if not self.tty:
                    self.stream.write(f"  {name}: {size} bytes, sha256 ok\n")
                    self.stream.flush()
            now = time.monotonic()
            if self.tty and (now - self._shown >= self.interval_s or done == size):
                self._shown = now
                self.stream.write("\r" + self.line(now) + "\033[K")
                self.stream.flush()

    def line(self, now: float) -> str:
        done = sum(self._files.values())
        fetched = done - sum(self._first.values())  # bytes moved in this run
        elapsed = max(now - self._start, 1e-6)
        rate = fetched / elapsed
        total = max(self.total, done)
        left = total - done
        eta = "--:--" if rate <= 0 else time.strftime("%M:%S", time.gmtime(left / rate))
        share = 100 * done / total if total else 100
        return f"  {_size(done)} / {_size(total)}  {share:3.0f}%  {_size(rate)}/s  ETA {eta}"

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
