"""Tests of the download progress display: a rewritten line on a terminal, plain lines off one."""

from __future__ import annotations

import io

from allmende.cli.progress import DownloadProgress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_each_finished_file_gets_one_plain_line() -> None:
    stream = io.StringIO()
    bar = DownloadProgress(stream)
    bar.total = 300
    for done in (0, 50, 100, 100):
        bar.update("data/a.parquet", done, 100)
    bar.update("data/b.parquet", 200, 200)
    bar.close()
    assert stream.getvalue().splitlines() == [
        "  data/a.parquet: 100 bytes, sha256 ok",
        "  data/b.parquet: 200 bytes, sha256 ok",
    ]


def test_on_a_terminal_one_line_shows_bytes_share_rate_and_eta() -> None:
    stream = Terminal()
    bar = DownloadProgress(stream, interval_s=0)
    bar.total = 4 << 20
    bar.update("data/a.parquet", 0, 4 << 20)
    bar.update("data/a.parquet", 1 << 20, 4 << 20)
    line = stream.getvalue().split("\r")[-1]
    assert "1.0 MiB / 4.0 MiB" in line and "25%" in line and "/s" in line and "ETA" in line
    assert "\n" not in stream.getvalue()
    bar.close()
    assert stream.getvalue().endswith("\n")


def test_a_resumed_file_does_not_count_its_old_bytes_as_speed() -> None:
    bar = DownloadProgress(io.StringIO())
    bar.total = 100
    bar.update("data/a.parquet", 90, 100)  # resumed: 90 bytes were already there
    assert "ETA --:--" in bar.line(now=bar._start + 10)
