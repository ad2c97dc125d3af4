"""The dashboard while a served model downloads: a progress bar in the unit panel, the title
says so, and the event log tells the start and the end."""

from __future__ import annotations

from datetime import datetime

from allmende.client.engine import events as ev
from allmende.client.tui import render
from allmende.client.tui.state import ViewState


def test_download_shows_a_bar_then_a_log_line() -> None:
    state = ViewState(clock=lambda: 0.0, wall=lambda: datetime(2026, 1, 1, 21, 30))
    state.apply(ev.Connected("127.0.0.1:50051", "f" * 64, 1.0, "v" * 64))
    state.apply(ev.ModelFetching("clip-b32", "a" * 64, 5, 1000 * 1024, 250 * 1024))
    assert render.status_word(state)[0] == "downloading a model"
    text = render.unit(state, 80).plain
    assert "downloading model clip-b32" in text
    assert " 25%" in text and "250 KB/1000 KB" in text
    state.apply(ev.ModelProgress("clip-b32", 500 * 1024, 1000 * 1024, "model.safetensors"))
    assert " 50%" in render.unit(state, 80).plain
    state.apply(ev.ModelReady("clip-b32", "a" * 64, 750 * 1024, 2.0, "/home/v/models/aaa"))
    assert state.download is None
    assert render.status_word(state)[0] == "idle"
    lines = [line.text for line in state.log]
    assert lines[1] == "downloading model clip-b32: 5 files, 1000 KB, 250 KB already here"
    assert lines[2].startswith("model clip-b32 ready: every file matches the signed manifest")
