"""Behaviour of every screen and control, driven by key presses against a fake engine that
records what it was asked to do."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from textual.widgets import Checkbox, Input, Static

from allmende.client.engine import events as ev
from allmende.client.settings import VolunteerSettings
from allmende.client.tui.app import Dashboard
from allmende.client.tui.messages import EngineEvent
from allmende.client.tui.screens import SettingsScreen, WelcomeScreen
from allmende.protocol.errors import FailedPrecondition
from tests.tui.fakes import ADDRESS, CONFIGURED, FP, FakeEngine, busy_script, feed, make_app, until


def engine() -> FakeEngine:
    return FakeEngine.instances[-1]


def saved(tmp_path: Path) -> dict[str, Any]:
    return tomllib.loads((tmp_path / "volunteer.toml").read_text())


def footer_keys(app: Any) -> set[str]:
    return {b.action for (_, b, enabled, _) in app.screen.active_bindings.values() if enabled}


async def test_first_run_asks_for_the_address_shows_the_key_and_wants_it_confirmed(
    tmp_path: Path,
) -> None:
    app, _ = make_app(tmp_path, settings=VolunteerSettings())
    async with app.run_test(size=(80, 24)) as pilot:
        assert isinstance(app.screen, WelcomeScreen) and not FakeEngine.instances
        await pilot.press(*"not an address", "enter")
        assert "HOST:PORT" in str(app.screen.query_one("#error", Static).render())
        app.screen.query_one("#coordinator", Input).value = ""
        await pilot.press(*ADDRESS, "enter")
        await until(pilot, lambda: app.screen.presented == FP)  # type: ignore[attr-defined]
        assert "3f2a9c1e 5d7b4a60" in str(app.screen.query_one("#fingerprint", Static).render())
        await pilot.press("ctrl+s")  # not confirmed yet
        assert "tick the box" in str(app.screen.query_one("#error", Static).render())
        assert isinstance(app.screen, WelcomeScreen)
        app.screen.query_one("#trust", Checkbox).value = True
        app.screen.query_one("#display_name", Input).value = "ada-desk"
        app.screen.query_one("#threads", Input).value = "2"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, Dashboard) and bool(FakeEngine.instances))
        config = engine().config
        assert (config.coordinator, config.fingerprint, config.threads) == (ADDRESS, FP, 2)
        assert config.display_name == "ada-desk" and config.home == tmp_path / "home"
    assert saved(tmp_path) == {
        "coordinator": ADDRESS,
        "fingerprint": FP,
        "display_name": "ada-desk",
        "device": "auto",
        "batch_size": 64,
        "threads": 2,
    }


async def test_first_run_warns_when_the_key_does_not_match_the_pinned_fingerprint(
    tmp_path: Path,
) -> None:
    other = "9" * 64
    app, _ = make_app(
        tmp_path, settings=VolunteerSettings(fingerprint=other), lookup=lambda address: FP
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press(*ADDRESS, "enter")
        await until(pilot, lambda: app.screen.presented == FP)  # type: ignore[attr-defined]
        shown = str(app.screen.query_one("#fingerprint", Static).render())
        assert "does NOT match" in shown
        await pilot.press("ctrl+s")
        assert "tick the box" in str(app.screen.query_one("#error", Static).render())
        assert not FakeEngine.instances


async def test_first_run_says_why_a_lookup_failed_and_escape_leaves(tmp_path: Path) -> None:
    def unreachable(address: str) -> str:
        raise FailedPrecondition(f"no answer from {address}: connection refused")

    app, _ = make_app(tmp_path, settings=VolunteerSettings(), lookup=unreachable)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press(*ADDRESS, "enter")
        label = app.screen.query_one("#fingerprint", Static)
        await until(pilot, lambda: "connection refused" in str(label.render()))
        await pilot.press("escape")
    assert app.return_code == 0 and not FakeEngine.instances


async def test_pause_and_resume_reach_the_engine_and_the_footer_follows(tmp_path: Path) -> None:
    app, clock = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: bool(FakeEngine.instances))
        feed(app, clock, busy_script())
        assert {"pause", "finish"} <= footer_keys(app) and "resume" not in footer_keys(app)
        await pilot.press("p")
        await until(pilot, lambda: app.state.paused == "paused by you")
        assert engine().calls[-1] == "pause" and app.user_paused
        assert "resume" in footer_keys(app) and "pause" not in footer_keys(app)
        assert "paused by you" in str(app.screen.query_one("#title", Static).render())
        await pilot.press("p")
        await until(pilot, lambda: app.state.paused is None)
        assert engine().calls[-1] == "resume" and not app.user_paused
        assert [type(e) for e in app.events[-2:]] == [ev.Paused, ev.Resumed]


async def test_a_pause_rule_is_shown_with_its_reason(tmp_path: Path) -> None:
    app, clock = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        feed(app, clock, [(0, ev.Paused("GPU 0 at 86 °C, above the 85 °C limit"))])
        await pilot.pause()
        title = str(app.screen.query_one("#title", Static).render())
        assert "paused: GPU 0 at 86 °C" in title
        assert "pause" in footer_keys(app)  # the volunteer did not pause; they still can


async def test_finish_stops_after_the_unit_and_r_starts_a_new_engine(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: bool(FakeEngine.instances))
        first = engine()
        await pilot.press("f")
        await until(pilot, lambda: app.state.stopped is not None)
        assert first.calls == ["run", "stop"]
        assert app.is_running and "restart" in footer_keys(app)
        assert "pause" not in footer_keys(app)
        await pilot.press("r")
        await until(pilot, lambda: len(FakeEngine.instances) == 2)
        assert app.state.stopped is None and app.engine_running
        await pilot.press("q")
        await until(pilot, lambda: not app.is_running)
    assert engine().calls == ["run", "quit"] and app.return_code == 0


async def test_quit_hands_back_then_exits_with_the_engine_code(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: bool(FakeEngine.instances))
        engine().exit_code = 4
        await pilot.press("ctrl+c")
        await until(pilot, lambda: not app.is_running)
    assert engine().calls == ["run", "quit"]
    assert app.return_code == 4
    assert any(isinstance(e, ev.Stopping) for e in app.events)


async def test_a_second_quit_while_stopping_leaves_at_once(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: bool(FakeEngine.instances))
        engine().quit = lambda: engine().calls.append("quit")  # type: ignore[method-assign]
        await pilot.press("q")
        await pilot.pause()
        assert app.is_running and app.quitting
        await pilot.press("q")
        await until(pilot, lambda: not app.is_running)
    assert app.return_code == 130


async def test_settings_apply_live_and_only_changed_keys_are_saved(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: bool(FakeEngine.instances))
        await pilot.press("s")
        assert isinstance(app.screen, SettingsScreen)
        screen = app.screen
        screen.query_one("#batch_size", Input).value = "lots"
        await pilot.press("ctrl+s")
        error = str(screen.query_one("#error", Static).render())
        assert "Batch size: expected a whole number" in error and "apply" not in engine().calls
        screen.query_one("#batch_size", Input).value = "32"
        screen.query_one("#schedule", Input).value = "22:00-07:00"
        screen.query_one("#max_gpu_temp_c", Input).value = "83"
        screen.query_one("#max_cpu_temp_c", Input).value = "90"
        screen.query_one("#pause_on_battery", Checkbox).value = True
        screen.query_one("#idle_only", Checkbox).value = True
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, Dashboard))
        [applied] = engine().applied
        assert (applied.batch_size, applied.schedule, applied.max_gpu_temp_c) == (
            32,
            "22:00-07:00",
            83.0,
        )
        assert applied.pause_on_battery and applied.idle_only
        assert applied.max_cpu_temp_c == 90.0
        assert app.settings.batch_size == 32
    assert saved(tmp_path) == {
        "batch_size": 32,
        "idle_only": True,
        "pause_on_battery": True,
        "max_gpu_temp_c": 83,
        "schedule": "22:00-07:00",
        "max_cpu_temp_c": 90,
    }


async def test_escape_leaves_the_settings_unchanged(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: bool(FakeEngine.instances))
        await pilot.press("s")
        app.screen.query_one("#batch_size", Input).value = "8"
        await pilot.press("escape")
        assert isinstance(app.screen, Dashboard)
        assert engine().applied == [] and app.settings == CONFIGURED
    assert not (tmp_path / "volunteer.toml").exists()


async def test_panels_show_progress_rate_eta_contribution_and_energy(tmp_path: Path) -> None:
    app, clock = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        feed(app, clock, busy_script())
        await pilot.pause()
        state = app.state
        # the coordinator's lifetime totals replace the session's own counts once they arrive
        assert (state.accepted, state.pending, state.rejected, state.refused) == (20, 4, 1, 1)
        assert (state.credit, state.items_sent) == (26_200, 3072)
        assert state.verdicts == {"valid": 1, "outvoted": 1}
        lines = [line.text for line in state.log]
        assert any(line.endswith("u000000 valid: +1,310 credit") for line in lines), lines
        assert any("u000003 outvoted: the quorum agreed" in line for line in lines)
        contribution = str(app.screen.query_one("#contribution", Static).render())
        assert "valid 20" in contribution and "invalid 1" in contribution
        assert "credit 26,200" in contribution
        assert state.unit_progress() == (0.5, "measured") and state.eta_s() == 128 / 30.5
        # 312 W while computing, summed every 2 s: an estimate (no energy counter here)
        assert state.energy_measured is False and 16 < state.energy_wh < 18
        assert "≈17.07 Wh, est. (GPU power)" in str(
            app.screen.query_one("#contribution", Static).render()
        )
        unit = str(app.screen.query_one("#unit", Static).render())
        assert "128/256" in unit and "30 items/s" in unit and "ETA 0:04" in unit
        assert max(state.throughput()) > 0
        assert "refused: signature" in state.log[-1].text


async def test_retrying_counts_down_and_a_refusal_is_explained(tmp_path: Path) -> None:
    app, clock = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        feed(app, clock, [(0, ev.Retrying("failed to connect to all addresses", 8.0))])
        clock.now += 3
        app.screen.update_view()  # type: ignore[attr-defined]
        banner = str(app.screen.query_one("#banner", Static).render())
        assert "retrying in 5 s" in banner and "failed to connect" in banner
        feed(app, clock, [(0, ev.Reconnected(3.0))])
        await pilot.pause()
        assert app.state.connection == "connected"
        assert str(app.screen.query_one("#banner", Static).render()) == ""
        feed(
            app, clock, [(0, ev.Stopped(3, "refusing all work: coordinator key differs", 0, 0, 0))]
        )
        await pilot.pause()
        assert "refusing all work" in str(app.screen.query_one("#banner", Static).render())
        assert app.state.connection == "refused"


def test_telemetry_messages_merge_but_state_changes_never_do() -> None:
    progress = EngineEvent(ev.UnitProgress("u", 10, 100, 5.0))
    newer = EngineEvent(ev.UnitProgress("u", 20, 100, 5.0))
    sample = EngineEvent(ev.RoundTrip(3.0))
    result = EngineEvent(ev.ResultSubmitted("u", "accepted", "", 1))
    assert progress.can_replace(newer)
    assert not progress.can_replace(sample) and not progress.can_replace(result)
    assert not result.can_replace(EngineEvent(ev.ResultSubmitted("v", "accepted", "", 1)))


def test_the_summary_after_quitting_says_what_was_handed_back() -> None:
    from datetime import datetime

    from allmende.client.cli.volunteer_cmds import summary
    from allmende.client.tui.state import ViewState

    state = ViewState(clock=lambda: 0.0, wall=lambda: datetime(2026, 1, 1, 21, 30))
    state.apply(ev.CreditTotals(7, 0, 2, 15_970, 1_792))
    state.apply(ev.UnitReleased("job-1-u000003", "stopping: quit", 120, 600, 4.25))
    state.apply(ev.Stopped(0, "stopped", 3, 768, 0, 2, 120, 4.25))
    lines = summary(state)
    assert lines[0].startswith("allmende: 7 result(s) valid, 2 pending validation, 0 invalid")
    assert "credit 15,970" in lines[0]
    assert lines[-1] == (
        "allmende: 2 unit(s) handed back to the coordinator "
        "(120 rows computed in 4.2 s, given up)"
    )
    assert "120 of 600 rows computed in 4.2 s, given up" in state.log[-2].text
    assert "2 unit(s) handed back" in state.log[-1].text


async def test_temperatures_show_and_a_hot_cpu_pause_says_when_it_resumes(tmp_path: Path) -> None:
    from allmende.client.probes import GpuSample, HardwareSample

    app, clock = make_app(tmp_path)
    hot = HardwareSample(
        at=0,
        cpu_count=8,
        cpu_percent=90,
        cpu_ours_percent=80,
        cpu_temperature_c=93.0,
        gpus=(GpuSample(0, "Test GPU", temperature_c=71.0),),
    )
    async with app.run_test(size=(80, 24)) as pilot:
        feed(
            app,
            clock,
            [
                (0, ev.HardwareSampled(hot)),
                (0, ev.Paused("CPU at 93 °C, above the 85 °C limit; resuming below 80 °C")),
            ],
        )
        await pilot.pause()
        panel = str(app.screen.query_one("#hardware", Static).render())
        assert "CPU  90% 93°C" in panel and "71°C" in panel
        assert "resuming below 80 °C" in app.state.log[-1].text
        unit = str(app.screen.query_one("#unit", Static).render())
        assert "CPU at 93 °C" in unit


async def test_a_schedule_pause_names_the_window_in_the_title_and_when_it_resumes(
    tmp_path: Path,
) -> None:
    app, clock = make_app(tmp_path)
    reason = "outside the schedule (03:00-04:00); resuming at 03:00"
    async with app.run_test(size=(80, 24)) as pilot:
        feed(app, clock, [(0, ev.Paused(reason))])
        await pilot.pause()
        title = str(app.screen.query_one("#title", Static).render())
        assert title.endswith("paused: outside the schedule (03:00-04:00)"), title
        assert reason in str(app.screen.query_one("#unit", Static).render())
