"""The volunteer's terminal UI: a dashboard over one running engine, and its controls.

The engine runs on its own thread and knows nothing of Textual; its events arrive here as
`EngineEvent` messages, are folded into a `ViewState`, and the panels are redrawn from it.
Controls call the engine's thread-safe methods (pause, resume, stop, quit, apply). Settings
changed here are applied live and saved to the settings file. The dashboard screen itself
is in dashboard.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol

from textual.app import App
from textual.binding import Binding, BindingType
from textual.screen import Screen

from allmende.client.engine.events import Event, Stopped
from allmende.client.engine.runner import EngineConfig
from allmende.client.probes import HardwareProbe
from allmende.client.settings import SettingsFile, VolunteerSettings
from allmende.client.tui.dashboard import Dashboard
from allmende.client.tui.device_rows import DeviceBoard, lanes_of
from allmende.client.tui.messages import EngineEvent
from allmende.client.tui.screens import SettingsScreen, WelcomeScreen
from allmende.client.tui.state import ViewState

# Dashboard lived here before it had a module of its own; importers keep working.
__all__ = ["Dashboard", "EngineFactory", "EngineHandle", "VolunteerApp"]

# The keys the first-run screen sets; all saved, even those that came from flags.
WELCOME_KEYS = ("coordinator", "fingerprint", "display_name", "device", "threads", "batch_size")


class EngineHandle(Protocol):
    """What the UI needs of an engine (VolunteerEngine, or a fake in tests)."""

    def run(self) -> int: ...
    def stop(self, device: str | None = None) -> None: ...
    def quit(self) -> None: ...
    def pause(self, device: str | None = None) -> None: ...
    def resume(self, device: str | None = None) -> None: ...
    def apply(self, config: EngineConfig) -> list[str]: ...


EngineFactory = Callable[[EngineConfig, Callable[[Event], None]], EngineHandle]


class VolunteerApp(App[int]):
    """`allmende volunteer` in a terminal."""

    TITLE = "Allmende volunteer"
    ENABLE_COMMAND_PALETTE = False
    CSS = """
    #title { height: 1; padding: 0 1; background: $panel; }
    #banner { height: auto; max-height: 3; padding: 0 1; display: none; }
    #banner.bad { display: block; background: $error 30%; }
    #banner.warn { display: block; background: $warning 25%; }
    Dashboard { overflow: hidden hidden; }
    #connection, #hardware, #contribution, #unit { text-wrap: nowrap; text-overflow: ellipsis; }
    #connection, #hardware { max-height: 8; }
    .panel {
        height: auto; border: round $primary-darken-1; border-title-color: $text-accent;
        padding: 0 1;
    }
    #top, #middle { height: auto; }
    #connection { width: 2fr; }
    #hardware { width: 3fr; }
    #throughput-panel { width: 1fr; height: auto; }
    #contribution { width: 1fr; }
    #sparkline { height: 2; }
    #log { height: 1fr; min-height: 4; border: round $primary-darken-1; padding: 0 1;
           border-title-color: $text-accent; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+c", "quit_engine", "Quit", show=False, priority=True),
    ]

    def __init__(
        self,
        *,
        settings: VolunteerSettings,
        home: Path,
        engine_factory: EngineFactory,
        settings_file: SettingsFile | None = None,
        overridden: list[str] | None = None,
        probe: HardwareProbe | None = None,
        lookup: Callable[[str], str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = datetime.now,
        engine_extra: dict[str, Any] | None = None,
        first_run: bool | None = None,
        tick_s: float = 1.0,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.home = home
        self.engine_factory = engine_factory
        self.settings_file = settings_file
        self.overridden = overridden or []
        self.probe = probe
        self.lookup = lookup or _default_lookup
        self.clock = clock
        self.engine_extra = engine_extra or {}
        self.first_run = (not settings.configured) if first_run is None else first_run
        self.tick_s = tick_s
        self.state = ViewState(clock, wall, settings.device)
        devices = lanes_of(settings.device, probe)
        if len(devices) > 1:  # lanes are fixed for the app's life: the table is composed once
            self.state.board = DeviceBoard(devices)
        self.engine: EngineHandle | None = None
        self.engine_thread: threading.Thread | None = None
        self.user_paused = False
        self.quitting = False
        # Every engine event as it arrived on the UI thread (tests read it).
        self.events: list[Event] = []

    # ------------------------------------------------------------------ lifecycle

    def get_default_screen(self) -> Screen[Any]:
        return Dashboard()

    def on_mount(self) -> None:
        self.set_interval(self.tick_s, self._tick)
        if self.first_run:
            devices = self.probe.devices() if self.probe is not None else [("cpu", "CPU")]
            self.push_screen(WelcomeScreen(self.settings, devices, self.lookup), self._welcomed)
        else:
            self.start_engine()

    def _welcomed(self, settings: VolunteerSettings | None) -> None:
        if settings is None:
            self._leave(0)
            return
        self._save(settings, WELCOME_KEYS)
        self.start_engine()

    def _tick(self) -> None:
        if isinstance(self.screen, Dashboard):
            self.screen.update_view()

    @property
    def dashboard(self) -> Dashboard | None:
        for screen in self.screen_stack:
            if isinstance(screen, Dashboard):
                return screen
        return None

    # ------------------------------------------------------------------ the engine

    @property
    def engine_running(self) -> bool:
        return self.engine is not None and self.state.stopped is None

    def start_engine(self) -> None:
        if self.engine_running:
            return
        config = self.settings.engine_config(self.home, **self.engine_extra)
        self.state.stopped = None
        self.state.connection = "connecting"
        self.state.device = self.settings.device
        self.user_paused = False
        if self.state.board is not None:
            self.state.board.reset()
        self.engine = self.engine_factory(config, self._from_engine)
        self.engine_thread = threading.Thread(target=self.engine.run, name="engine", daemon=True)
        self.engine_thread.start()
        self._refresh()

    def _from_engine(self, event: Event) -> None:
        """Called on engine threads (and on this one, for control calls)."""
        self.post_message(EngineEvent(event))

    def on_engine_event(self, message: EngineEvent) -> None:
        event = message.event
        self.events.append(event)
        self.state.apply(event)
        if isinstance(event, Stopped):
            self.user_paused = False
            if self.quitting:
                self._leave(event.exit_code)
                return
        self._refresh()

    def _refresh(self) -> None:
        dashboard = self.dashboard
        if dashboard is not None and dashboard.is_mounted:
            dashboard.update_view()

    # ------------------------------------------------------------------ controls

    def pause(self, device: str | None = None) -> None:
        """Pause all devices, or the one given (of several)."""
        if self.engine is None:
            return
        if device is not None and self.state.board is not None:
            self.state.board.rows[device].paused_by_you = True
            self.engine.pause(device)
        else:
            self.user_paused = True
            self.state.pause_requested = True
            self.engine.pause()
        self._refresh()

    def resume(self, device: str | None = None) -> None:
        """Resume all devices (each one's own pause too), or the one given."""
        if self.engine is None:
            return
        if device is not None and self.state.board is not None:
            self.state.board.rows[device].paused_by_you = False
            self.engine.resume(device)
        else:
            self.user_paused = False
            self.state.pause_requested = False
            if self.state.board is not None:
                for row in self.state.board.rows.values():
                    row.paused_by_you = False
            self.engine.resume()
        self._refresh()

    def finish(self, device: str | None = None) -> None:
        """Finish the current unit, then stop: all devices, or the one given."""
        if self.engine_running and self.engine is not None:
            if device is not None and self.state.board is not None:
                self.engine.stop(device)
            else:
                self.engine.stop()
            self._refresh()

    def action_quit_engine(self) -> None:
        """Quit: hand back units not finished, keep unsent results on disk, then exit.
        A second press while that is under way exits at once (results are on disk)."""
        if not self.engine_running or self.engine is None:
            self._leave(self.state.stopped.exit_code if self.state.stopped else 0)
            return
        if self.quitting:
            self._leave(130)
            return
        self.quitting = True
        self.engine.quit()
        self._refresh()

    def _leave(self, code: int) -> None:
        self.exit(code, return_code=code)

    def action_quit_now(self) -> None:
        self._leave(0)

    def open_settings(self) -> None:
        devices = self.probe.devices() if self.probe is not None else [("cpu", "CPU")]
        self.push_screen(
            SettingsScreen(self.settings, devices, self.overridden), self._settings_done
        )

    def _settings_done(self, settings: VolunteerSettings | None) -> None:
        if settings is None:
            return
        self.apply_settings(settings)

    def apply_settings(self, settings: VolunteerSettings) -> None:
        """Save what changed and give it to the running engine."""
        if not settings.changed_from(self.settings):
            return
        self._save(settings)
        self.state.device = settings.device
        if self.engine_running and self.engine is not None:
            self.engine.apply(settings.engine_config(self.home, **self.engine_extra))
        self._refresh()

    def _save(self, settings: VolunteerSettings, always: tuple[str, ...] = ()) -> None:
        """Save the keys that changed (and `always` those), not values from flags."""
        changes = settings.changed_from(self.settings)
        changes.update({name: getattr(settings, name) for name in always})
        self.settings = settings
        if self.settings_file is not None and changes:
            try:
                self.settings_file.save(changes)
            except OSError as exc:
                self.state.note(
                    f"could not save settings to {self.settings_file.path}: {exc}", "bad"
                )
                return
            self.overridden = [name for name in self.overridden if name not in changes]
            self.state.note(f"settings saved to {self.settings_file.path}")


def _default_lookup(address: str) -> str:
    from allmende.client.engine.trust import lookup_fingerprint

    return lookup_fingerprint(address)
