"""The first-run welcome screen and the settings screen.

Both return a new `VolunteerSettings` through `dismiss` (None: cancelled); the app saves and
applies it. Every field is checked with the same rules as the TOML file, the environment and
the flags, and an error names the field and what was expected.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Checkbox, Footer, Input, Label, Select, Static

from allmende.client.settings import FETCH_WARNING, VolunteerSettings, parse_value
from allmende.client.tui.messages import FingerprintLooked
from allmende.protocol.errors import AllmendeError, InvalidArgument

FORM_CSS = """
.row { height: 1; margin: 0; }
.gap { height: 1; }
.row > .label { width: 24; color: $text-muted; }
.row > Input, .row > Select { width: 1fr; max-width: 44; }
.row > Checkbox { width: auto; }
.hint { color: $text-muted; height: auto; margin: 0 0 1 24; }
#error { color: $error; height: auto; margin: 0 0 1 0; }
#buttons { height: 1; margin-top: 1; }
#buttons > Button { margin-right: 2; }
"""


def device_options(devices: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Select options (label, value): auto first, then what the probe found."""
    options = [("auto (a GPU when there is one)", "auto")]
    options += [(label, value) for value, label in devices if value != "auto"]
    return options


def grouped(fingerprint: str) -> str:
    """A fingerprint in groups of eight, four to a line, for comparing by eye."""
    groups = [fingerprint[i : i + 8] for i in range(0, len(fingerprint), 8)]
    return "\n".join(" ".join(groups[i : i + 4]) for i in range(0, len(groups), 4))


def _row(label: str, widget: Any) -> Horizontal:
    return Horizontal(Label(label, classes="label"), widget, classes="row")


class WelcomeScreen(Screen[VolunteerSettings | None]):
    """First run: which coordinator, is this its key, who am I, what may it use."""

    CSS = (
        FORM_CSS
        + """
    WelcomeScreen { padding: 1 2; }
    #intro { height: auto; margin-bottom: 1; }
    #fingerprint { height: auto; margin: 1 0 0 24; }
    """
    )
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.quit_now", "Quit"),
        Binding("ctrl+s", "start", "Start"),
    ]

    def __init__(
        self,
        settings: VolunteerSettings,
        devices: list[tuple[str, str]],
        lookup: Callable[[str], str],
    ) -> None:
        super().__init__()
        self.settings = settings
        self.devices = devices
        self.lookup = lookup
        # The fingerprint the coordinator presented, once looked up.
        self.presented = ""

    def compose(self) -> ComposeResult:
        s = self.settings
        with VerticalScroll():
            yield Static(
                "[b]Welcome to Allmende.[/b] Your computer will compute for open datasets "
                "(embeddings, language labels), checked against other volunteers' results. "
                "Nothing it is sent is code, and every unit is signed by the coordinator you "
                "choose here.",
                id="intro",
            )
            yield _row(
                "Coordinator address",
                Input(s.coordinator, placeholder="host:port", id="coordinator", compact=True),
            )
            yield Static("Press Enter to look up the coordinator's key.", id="fingerprint")
            yield _row(
                "",
                Checkbox(
                    "It matches the operator's published key",
                    value=False,
                    id="trust",
                    compact=True,
                ),
            )
            yield Static("", classes="gap")
            yield _row(
                "Display name (optional)",
                Input(
                    s.display_name,
                    placeholder="shown to the coordinator",
                    id="display_name",
                    compact=True,
                ),
            )
            yield _row(
                "Device",
                Select(
                    device_options(self.devices),
                    value=s.device,
                    allow_blank=False,
                    id="device",
                    compact=True,
                ),
            )
            yield _row(
                "CPU threads (0: all)",
                Input(str(s.threads), id="threads", type="integer", compact=True),
            )
            yield _row(
                "Batch size",
                Input(str(s.batch_size), id="batch_size", type="integer", compact=True),
            )
            yield Static("More in Settings (s) once running.", classes="hint")
            yield Static("", id="error")
            with Horizontal(id="buttons"):
                yield Button("Start", variant="primary", id="start", compact=True)
                yield Button("Quit", id="quit", compact=True)
        yield Footer()

    def on_mount(self) -> None:
        if self.settings.fingerprint:
            self._show_pinned()
        self.query_one("#coordinator", Input).focus()

    def _show_pinned(self) -> None:
        self.query_one("#fingerprint", Static).update(
            f"Pinned (--fingerprint):\n[b]{grouped(self.settings.fingerprint)}[/b]\n"
            "Enter looks up the coordinator's key to compare."
        )

    @on(Input.Submitted, "#coordinator")
    def _address_entered(self) -> None:
        address = self.query_one("#coordinator", Input).value.strip()
        try:
            parse_value("coordinator", address, "Coordinator address")
        except InvalidArgument as exc:
            self._error(exc.message)
            return
        self._error("")
        self.query_one("#fingerprint", Static).update(f"Asking {address} for its key…")
        self._look_up(address)

    @work(thread=True, exclusive=True, group="lookup")
    def _look_up(self, address: str) -> None:
        try:
            found, error = self.lookup(address), ""
        except AllmendeError as exc:
            found, error = "", exc.message
        self.post_message(FingerprintLooked(address, found, error))

    def on_fingerprint_looked(self, message: FingerprintLooked) -> None:
        label = self.query_one("#fingerprint", Static)
        if message.error:
            self.presented = ""
            label.update(f"[red]{message.error}[/red]")
            return
        self.presented = message.fingerprint
        pinned = self.settings.fingerprint
        if pinned and pinned != message.fingerprint:
            label.update(
                f"[b red]{message.address} presents key\n{grouped(message.fingerprint)}\nwhich "
                f"does NOT match the pinned\n{grouped(pinned)}[/b red]\nDo not continue unless "
                "its operator confirms the new key."
            )
        else:
            match = "\n✓ matches the pinned fingerprint" if pinned else ""
            label.update(
                f"{message.address} presents key fingerprint\n"
                f"[b]{grouped(message.fingerprint)}[/b]{match}"
            )
        self.query_one("#trust", Checkbox).focus()

    def _error(self, text: str) -> None:
        self.query_one("#error", Static).update(text)

    @on(Button.Pressed, "#quit")
    def _quit(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#start")
    def action_start(self) -> None:
        try:
            settings = self._collect()
        except AllmendeError as exc:
            self._error(exc.message)
            return
        self.dismiss(settings)

    def _collect(self) -> VolunteerSettings:
        address = parse_value(
            "coordinator", self.query_one("#coordinator", Input).value, "Coordinator address"
        )
        if not address:
            raise InvalidArgument("Coordinator address", "HOST:PORT")
        trusted = self.query_one("#trust", Checkbox).value
        if self.presented and trusted:
            fingerprint = self.presented
        elif self.settings.fingerprint and (
            not self.presented or self.presented == self.settings.fingerprint
        ):
            fingerprint = self.settings.fingerprint
        elif self.presented:
            raise InvalidArgument(
                "Fingerprint", "your confirmation (tick the box) that the key is the right one"
            )
        else:
            raise InvalidArgument("Fingerprint", "a lookup first: press Enter in the address")
        return dataclasses.replace(
            self.settings,
            coordinator=address,
            fingerprint=fingerprint,
            display_name=parse_value(
                "display_name", self.query_one("#display_name", Input).value, "Display name"
            ),
            device=str(self.query_one("#device", Select).value),
            threads=parse_value(
                "threads", self.query_one("#threads", Input).value or "0", "CPU threads"
            ),
            batch_size=parse_value(
                "batch_size", self.query_one("#batch_size", Input).value, "Batch size"
            ),
        )


# The settings screen's fields in order: (setting, label, hint); a setting of type bool is
# a checkbox (its label is the checkbox's), every other one a text field.
_FIELDS = (
    ("batch_size", "Batch size", "items per forward pass"),
    ("threads", "CPU threads", "0: all"),
    ("gpu_memory_gb", "GPU memory cap, GiB", "0: no cap"),
    ("max_gpu_temp_c", "Pause above GPU °C", "0: no limit"),
    ("max_cpu_temp_c", "Pause above CPU °C", "0: no limit"),
    ("pause_on_battery", "Pause on battery", ""),
    ("idle_only", "Only while the machine is idle", ""),
    ("idle_cpu_percent", "Idle: others' CPU below %", ""),
    ("schedule", "Daily schedule", "empty: any time"),
)


class SettingsScreen(ModalScreen[VolunteerSettings | None]):
    """Everything that can change while running; applied live and saved."""

    CSS = (
        FORM_CSS
        + """
    SettingsScreen { align: center middle; }
    #dialog {
        width: 76; max-width: 100%; height: auto; max-height: 100%;
        border: round $primary; border-title-color: $primary; padding: 0 1;
        background: $surface;
    }
    .row > .label { width: 28; }
    .row > Input { max-width: 18; }
    .row > .unit { color: $text-muted; margin-left: 1; width: 1fr; }
    #about { color: $text-muted; height: auto; margin-bottom: 1; }
    #fetch_warning { margin: 0 0 0 28; }
    #error { margin: 1 0 0 0; }
    """
    )
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "save", "Save"),
    ]

    def __init__(
        self, settings: VolunteerSettings, devices: list[tuple[str, str]], overridden: list[str]
    ) -> None:
        super().__init__()
        self.settings = settings
        self.devices = devices
        self.overridden = overridden

    def compose(self) -> ComposeResult:
        s = self.settings
        with VerticalScroll(id="dialog") as dialog:
            dialog.border_title = "Settings"
            about = f"{s.coordinator} · key {s.fingerprint[:16]}…"
            if self.overridden:
                about += f"\nset by flags or environment for this run: {', '.join(self.overridden)}"
            yield Static(about, id="about")
            yield _row(
                "Device",
                Select(
                    device_options(self.devices),
                    value=s.device,
                    allow_blank=False,
                    id="device",
                    compact=True,
                ),
            )
            for name, label, hint in _FIELDS:
                value = getattr(s, name)
                if isinstance(value, bool):
                    yield _row("", Checkbox(label, value=value, id=name, compact=True))
                    continue
                text = f"{value:g}" if isinstance(value, float) else str(value)
                placeholder = "e.g. 22:00-07:00" if name == "schedule" else ""
                yield Horizontal(
                    Label(label, classes="label"),
                    Input(text, id=name, placeholder=placeholder, compact=True),
                    Label(hint, classes="unit"),
                    classes="row",
                )
            yield _row(
                "",
                Checkbox(
                    "Fetch images from the web (URL jobs)",
                    value=s.fetch_urls,
                    id="fetch_urls",
                    compact=True,
                ),
            )
            yield Static(FETCH_WARNING, id="fetch_warning", classes="hint")
            yield Static("", id="error")
            with Horizontal(id="buttons"):
                yield Button("Save", variant="primary", id="save", compact=True)
                yield Button("Cancel", id="cancel", compact=True)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#device", Select).focus()

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#save")
    def action_save(self) -> None:
        try:
            settings = self._collect()
        except AllmendeError as exc:
            self.query_one("#error", Static).update(exc.message)
            return
        self.dismiss(settings)

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self.action_save()

    def _collect(self) -> VolunteerSettings:
        values: dict[str, Any] = {
            "device": str(self.query_one("#device", Select).value),
            "fetch_urls": self.query_one("#fetch_urls", Checkbox).value,
        }
        for name, label, _ in _FIELDS:
            if isinstance(getattr(self.settings, name), bool):
                values[name] = self.query_one(f"#{name}", Checkbox).value
            else:
                text = self.query_one(f"#{name}", Input).value
                values[name] = parse_value(name, text, label)
        return dataclasses.replace(self.settings, **values)
