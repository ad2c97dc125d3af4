"""The settings screen's opt-in to fetching URL rows: off by default, shown with what it
means, saved and applied live when ticked (against the fake engine of tests/tui/fakes.py)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from textual.widgets import Checkbox, Static

from allmende.client.settings import FETCH_WARNING
from allmende.client.tui.app import Dashboard
from allmende.client.tui.screens import SettingsScreen
from tests.tui.fakes import FakeEngine, make_app, until


async def test_fetching_is_offered_with_its_warning_and_saved_when_ticked(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: bool(FakeEngine.instances))
        await pilot.press("s")
        assert isinstance(app.screen, SettingsScreen)
        screen = app.screen
        box = screen.query_one("#fetch_urls", Checkbox)
        assert box.value is False
        assert str(screen.query_one("#fetch_warning", Static).render()) == FETCH_WARNING
        box.value = True
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, Dashboard))
        [applied] = FakeEngine.instances[-1].applied
        assert applied.fetch_urls and not applied.allow_private_addresses
    saved = tomllib.loads((tmp_path / "volunteer.toml").read_text())
    assert saved == {"fetch_urls": True}
