"""Pixels: the first-run screen, the dashboard busy (80x24 and wide), paused, the settings
screen and an error state, from scripted events on fixed clocks and fake hardware."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.pilot import Pilot

from allmende.client.engine import events as ev
from allmende.client.settings import VolunteerSettings
from tests.tui.fakes import ADDRESS, FP, busy_script, feed, make_app, until


def test_first_run_screen(snap_compare: Any, tmp_path: Path) -> None:
    app, _ = make_app(tmp_path, settings=VolunteerSettings())

    async def run_before(pilot: Pilot[Any]) -> None:
        await pilot.press(*ADDRESS, "enter")
        await until(pilot, lambda: bool(app.screen.presented))  # type: ignore[attr-defined]

    assert snap_compare(app, run_before=run_before, terminal_size=(80, 24))


def _busy(app: Any, clock: Any) -> Any:
    async def run_before(pilot: Pilot[Any]) -> None:
        feed(app, clock, busy_script())
        await pilot.pause()

    return run_before


def test_dashboard_busy(snap_compare: Any, tmp_path: Path) -> None:
    app, clock = make_app(tmp_path)
    assert snap_compare(app, run_before=_busy(app, clock), terminal_size=(80, 24))


def test_dashboard_busy_wide(snap_compare: Any, tmp_path: Path) -> None:
    app, clock = make_app(tmp_path)
    assert snap_compare(app, run_before=_busy(app, clock), terminal_size=(160, 48))


def test_dashboard_paused(snap_compare: Any, tmp_path: Path) -> None:
    app, clock = make_app(tmp_path)

    async def run_before(pilot: Pilot[Any]) -> None:
        feed(app, clock, busy_script())
        await pilot.press("p")
        await until(pilot, lambda: app.state.paused is not None)

    assert snap_compare(app, run_before=run_before, terminal_size=(80, 24))


def test_settings_screen(snap_compare: Any, tmp_path: Path) -> None:
    app, clock = make_app(tmp_path, overridden=["--batch-size"])

    async def run_before(pilot: Pilot[Any]) -> None:
        feed(app, clock, busy_script())
        await pilot.press("s")
        await pilot.pause()

    assert snap_compare(app, run_before=run_before, terminal_size=(80, 24))


def test_error_state_unreachable_with_a_result_kept_on_disk(
    snap_compare: Any,
    tmp_path: Path,
) -> None:
    app, clock = make_app(tmp_path)

    async def run_before(pilot: Pilot[Any]) -> None:
        script = busy_script()[:12]
        script += [
            (
                40,
                ev.ResultSpooled(
                    "job-0123456789ab-u000002",
                    "kept on disk to send later (coordinator unreachable)",
                    1,
                ),
            ),
            (41, ev.Retrying("failed to connect to all addresses", 8.0)),
            (
                42,
                ev.UnitRefused(
                    "job-0123456789ab-u000077",
                    "refused: model all-MiniLM-L6-v2 weights hash 9f… is not the pinned 53aa…",
                ),
            ),
        ]
        feed(app, clock, script)
        await pilot.pause()

    assert snap_compare(app, run_before=run_before, terminal_size=(80, 24))


def test_error_state_refused_coordinator_key(snap_compare: Any, tmp_path: Path) -> None:
    app, clock = make_app(tmp_path)

    async def run_before(pilot: Pilot[Any]) -> None:
        feed(
            app,
            clock,
            [
                (
                    0,
                    ev.Stopped(
                        3,
                        f"refusing all work: coordinator key fingerprint {'0' * 64} does "
                        f"not match the pinned fingerprint {FP}",
                        0,
                        0,
                        0,
                    ),
                )
            ],
        )
        await pilot.pause()

    assert snap_compare(app, run_before=run_before, terminal_size=(80, 24))
