"""The TUI against a real coordinator in-process and the real model: it finishes a job, and a
quit in the middle of another hands its units back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Static

from allmende.client.connection import CoordinatorClient
from allmende.client.engine import EngineConfig, VolunteerEngine
from allmende.client.probes import FakeProbe
from allmende.client.settings import SettingsFile, VolunteerSettings
from allmende.client.tui.app import VolunteerApp
from allmende.coordinator.app import RunningCoordinator
from tests.conftest import job_requests
from tests.tui.fakes import gpu_sample, until


def real_app(
    coordinator: RunningCoordinator, computer: object, tmp_path: Path, **extra: Any
) -> VolunteerApp:
    probe = FakeProbe([gpu_sample()])

    def engine(config: EngineConfig, on_event: Any) -> VolunteerEngine:
        return VolunteerEngine(
            config,
            on_event=on_event,
            computer=computer,  # type: ignore[arg-type]
            probe=probe,
        )

    settings = VolunteerSettings(
        coordinator=coordinator.address,
        fingerprint=coordinator.coordinator.key.fingerprint,
        device="cpu",
        display_name="tui-e2e",
    )
    return VolunteerApp(
        settings=settings,
        home=tmp_path / "home",
        engine_factory=engine,
        settings_file=SettingsFile(tmp_path / "volunteer.toml"),
        probe=probe,
        engine_extra={"sample_interval_s": 0.1, "give_up_after_s": 30, **extra},
    )


@pytest.mark.slow
async def test_the_tui_with_the_real_model_finishes_a_job(
    coordinator: RunningCoordinator,
    admin: CoordinatorClient,
    shared_computer: object,
    stsb_sentences: list[str],
    tmp_path: Path,
) -> None:
    texts = list(dict.fromkeys(stsb_sentences))[:96]
    created = admin.create_job(job_requests(texts, redundancy=1, unit_size=32))
    app = real_app(coordinator, shared_computer, tmp_path, exit_when_idle=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.state.stopped is not None, timeout_s=120)
        state = app.state
        assert state.stopped is not None and state.stopped.exit_code == 0, state.stopped
        assert state.stopped.reason == "no work left"
        assert (state.accepted, state.rejected, state.spooled) == (3, 0, 0)
        assert state.connection == "stopped"
        assert any(e.name == "unit.progress" for e in app.events)  # measured, not estimated
        # the verdicts arrived, with the coordinator's credit, as `volunteers list` has it
        assert state.verdicts == {"valid": 3}
        [listed] = admin.list_volunteers()
        assert (listed.results_valid, listed.credit) == (3, state.credit) and state.credit > 0
        contribution = str(app.screen.query_one("#contribution", Static).render())
        assert "valid 3" in contribution and f"credit {state.credit:,}" in contribution
        await pilot.press("q")
        await until(pilot, lambda: not app.is_running)
    assert app.return_value == 0
    job = admin.get_job(created.job_id)
    assert job.units_accepted == job.units_total == 3


@pytest.mark.slow
async def test_quitting_the_tui_mid_job_hands_the_units_back(
    coordinator: RunningCoordinator,
    admin: CoordinatorClient,
    shared_computer: object,
    stsb_sentences: list[str],
    tmp_path: Path,
) -> None:
    texts = list(dict.fromkeys(stsb_sentences))[:1200]
    created = admin.create_job(job_requests(texts, redundancy=1, unit_size=600))
    app = real_app(coordinator, shared_computer, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: any(e.name == "unit.progress" for e in app.events), timeout_s=60)
        await pilot.press("q")
        await until(pilot, lambda: not app.is_running, timeout_s=60)
    released = [e for e in app.events if e.name == "unit.released"]
    assert released, app.events
    assert admin.get_job(created.job_id).units_in_progress == 0
