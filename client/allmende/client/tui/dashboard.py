"""The volunteer's dashboard screen: the panels drawn from the app's `ViewState`, and the
keys that pause, resume, finish, restart and open the settings.

The screen belongs to `VolunteerApp` (app.py), which holds the engine, the state and the
settings; the screen reads them there and calls the app's controls. Its CSS lives in
`VolunteerApp.CSS`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, RichLog, Sparkline, Static

from allmende.client.tui import render
from allmende.client.tui.devices import DeviceTable

if TYPE_CHECKING:
    from allmende.client.tui.app import VolunteerApp

# From this many columns on, panels show GPU names and the whole fingerprint.
WIDE = 120
# Controls that act on the selected device, when one is.
PER_DEVICE = ("pause", "resume", "finish")


class Dashboard(Screen[None]):
    # Its CSS lives in VolunteerApp.CSS: the default screen does not load its own.
    # The log, as before devices had a table: no device is selected at first, p and f act on all.
    AUTO_FOCUS: ClassVar[str | None] = "#log"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "pause", "Pause"),
        Binding("p", "resume", "Resume"),
        Binding("f", "finish", "Finish & stop"),
        Binding("r", "restart", "Start again"),
        Binding("s", "settings", "Settings"),
        Binding("q", "app.quit_engine", "Quit"),
    ]

    def compose(self) -> ComposeResult:
        yield Static(id="title")
        yield Static(id="banner")
        with Horizontal(id="top"):
            yield Static(id="connection", classes="panel")
            yield Static(id="hardware", classes="panel")
        yield Static(id="unit", classes="panel")
        if self.volunteer.state.board is not None:
            yield DeviceTable(self.volunteer.state.board)
        with Horizontal(id="middle"):
            with Vertical(id="throughput-panel", classes="panel"):
                yield Sparkline([], id="sparkline")
                yield Static(id="throughput")
            yield Static(id="contribution", classes="panel")
        yield RichLog(
            id="log", max_lines=500, min_width=20, wrap=True, markup=False, auto_scroll=True
        )
        yield Footer()

    def on_mount(self) -> None:
        titles = {
            "#connection": "Coordinator",
            "#hardware": "Hardware",
            "#unit": "Current unit",
            "#throughput-panel": "Throughput, last 5 min",
            "#contribution": "Contribution",
            "#log": "Events",
        }
        for selector, title in titles.items():
            self.query_one(selector).border_title = title
        self.update_view()

    @property
    def volunteer(self) -> VolunteerApp:
        from allmende.client.tui.app import VolunteerApp  # the app imports this module

        app = self.app
        assert isinstance(app, VolunteerApp)
        return app

    def update_view(self) -> None:
        app = self.volunteer
        state = app.state
        settings = app.settings
        word, style = render.status_word(state)
        title = Text()
        title.append("Allmende volunteer", style="bold")
        if settings.display_name:
            title.append(f" · {settings.display_name}")
        title.append(" · ")
        title.append(word, style=style)
        if state.paused and state.paused != word:
            # without the "; resuming ..." tail, which the unit panel shows in full
            title.append(f": {state.paused.split(';')[0]}", style="yellow")
        self.query_one("#title", Static).update(title)
        banner = self.query_one("#banner", Static)
        problem = render.banner(state)
        banner.set_classes("" if problem is None else problem[1])
        banner.update(problem[0] if problem is not None else "")
        wide = self.size.width >= WIDE
        panel = self.query_one("#connection", Static)
        panel.update(
            render.connection(
                state,
                settings.coordinator,
                settings.fingerprint,
                wide,
                max(panel.content_size.width, 16),
            )
        )
        self.query_one("#hardware", Static).update(render.hardware(state, wide))
        unit = self.query_one("#unit", Static)
        unit.update(render.unit(state, max(unit.content_size.width, 40)))
        self.query_one("#sparkline", Sparkline).data = state.throughput()
        self.query_one("#throughput", Static).update(render.throughput_label(state))
        self.query_one("#contribution", Static).update(render.contribution(state))
        for table in self.query(DeviceTable):
            table.redraw()
        log = self.query_one("#log", RichLog)
        for line in state.take_new_lines():
            text = Text(f"{line.at} ", style="dim")
            text.append(line.text, style=render.STYLE[line.level])
            log.write(text)
        self.refresh_bindings()

    def on_resize(self) -> None:
        self.query_one("#sparkline").styles.height = 4 if self.size.height >= 40 else 2
        self.update_view()

    @property
    def selected_device(self) -> str | None:
        """The device row selected in the devices table, or None: all devices."""
        for table in self.query(DeviceTable):
            return table.selected
        return None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        app = self.volunteer
        running = app.engine_running
        device = self.selected_device
        if device is not None and app.state.board is not None and action in PER_DEVICE:
            row = app.state.board.rows[device]
            if action == "finish":
                return running and not row.finished
            return running and not row.finished and row.paused_by_you == (action == "resume")
        if action == "pause":
            return running and not app.user_paused
        if action == "resume":
            return running and app.user_paused
        if action == "finish":
            return running and not app.state.stopping
        if action == "restart":
            return not running and app.settings.configured
        return True

    def action_pause(self) -> None:
        self.volunteer.pause(self.selected_device)

    def action_resume(self) -> None:
        self.volunteer.resume(self.selected_device)

    def action_finish(self) -> None:
        self.volunteer.finish(self.selected_device)

    def action_restart(self) -> None:
        self.volunteer.start_engine()

    def action_settings(self) -> None:
        self.volunteer.open_settings()
