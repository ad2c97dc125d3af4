"""The `coordinator top` application: jobs, volunteers, validation and the event log."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal

from textual import events, on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.geometry import Size
from textual.message import Message
from textual.widgets import DataTable, Footer, Header, Static

from allmende.coordinator.top.confirm import ConfirmScreen
from allmende.coordinator.top.format import short
from allmende.coordinator.top.rows import (
    NARROW,
    SHORT,
    event_row,
    job_columns,
    job_row,
    validation_text,
    volunteer_columns,
    volunteer_row,
)
from allmende.v1 import allmende_pb2 as pb

Fetch = Callable[[], pb.GetOverviewResponse]
Action = Callable[[str, str], str]  # (verb, id) -> message for the log line


@dataclass
class OverviewReceived(Message):
    overview: pb.GetOverviewResponse


@dataclass
class FetchFailed(Message):
    error: str
    code: str = ""  # the gRPC status name, where the failure came from the coordinator


# The coordinator answered and said no: retrying will not help, so top stops and says why.
REFUSALS = ("UNAUTHENTICATED", "PERMISSION_DENIED")


@dataclass
class ActionDone(Message):
    text: str  # what was done, or why it was refused
    severity: Literal["information", "error"]


class TopApp(App[None]):
    """Live coordinator monitor. `fetch` returns an overview; `act` performs admin actions."""

    TITLE = "allmende top"
    CSS = """
    #status { height: 1; padding: 0 1; background: $boost; }
    #status.error { background: $error; color: $text; }
    .pane { border: round $primary-darken-2; }
    .pane:focus-within { border: round $accent; }
    #jobs { height: auto; max-height: 14; min-height: 5; }
    #jobs DataTable { height: auto; max-height: 12; }
    #middle { height: 1fr; min-height: 7; }
    #volunteers { width: 2fr; }
    #validation { width: 1fr; padding: 0 1; }
    #events { height: 1fr; min-height: 5; }
    DataTable { height: 1fr; }
    .-compact #validation { width: 19; }
    .-compact DataTable { overflow-x: hidden; }
    .-short Header { display: none; }
    .-short #jobs { max-height: 9; }
    .-short #middle { min-height: 10; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("r", "refresh", "Refresh"),
        # Short words: at 80 columns the footer must show every key.
        Binding("p", "pause_resume", "Pause/resume"),
        Binding("c", "cancel_job", "Cancel job"),
        Binding("b", "ban", "Ban"),
        Binding("u", "unban", "Unban"),
    ]

    def __init__(
        self, fetch: Fetch, act: Action | None = None, address: str = "", interval_s: float = 1.0
    ) -> None:
        super().__init__()
        self.fetch = fetch
        self.act = act
        self.address = address
        self.interval_s = interval_s
        self.overview: pb.GetOverviewResponse | None = None
        self.last_error = ""
        self._jobs: list[pb.JobStatus] = []
        self._volunteers: list[pb.VolunteerStatus] = []
        self._log_lines: list[str] = []
        self.refused = ""  # why the coordinator refused us, once it has; top then exits
        self._compact: bool | None = None  # the layout the tables' columns were made for

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield Static("connecting …", id="status")
        with Vertical(id="jobs", classes="pane") as jobs:
            jobs.border_title = "Jobs"
            yield DataTable(id="jobs-table", cursor_type="row", zebra_stripes=True)
        with Horizontal(id="middle"):
            with Vertical(id="volunteers", classes="pane") as vols:
                vols.border_title = "Volunteers"
                yield DataTable(id="volunteers-table", cursor_type="row", zebra_stripes=True)
            with Vertical(id="validation", classes="pane") as validation:
                validation.border_title = "Validation"
                yield Static("", id="validation-text")
        with Vertical(id="events", classes="pane") as events:
            events.border_title = "Events"
            yield DataTable(id="events-table", cursor_type="none", show_cursor=False)
        yield Footer()

    def on_mount(self) -> None:
        self._fit(self.size)
        self.action_refresh()
        if self.interval_s > 0:
            self.set_interval(self.interval_s, self.action_refresh)

    def on_resize(self, event: events.Resize) -> None:
        self._fit(event.size)

    def _fit(self, size: Size) -> None:
        """The compact layout below `NARROW` columns (rows.py says what it keeps)."""
        self.set_class(size.height < SHORT, "-short")
        compact = size.width < NARROW
        if compact == self._compact:
            return
        self._compact = compact
        self.set_class(compact, "-compact")
        for table_id, columns in (
            ("#jobs-table", job_columns(compact)),
            ("#volunteers-table", volunteer_columns(compact)),
            ("#events-table", ("UTC", "event", "where", "message")),
        ):
            table = self.query_one(table_id, DataTable)
            table.clear(columns=True)
            table.add_columns(*columns)
        if self.overview is not None:
            self._show(self.overview)

    # ------------------------------------------------------------------ data

    @work(thread=True, exclusive=True, group="poll")
    def action_refresh(self) -> None:
        try:
            overview = self.fetch()
        except Exception as exc:  # shown, retried at the next tick; never a crash
            error = str(getattr(exc, "details", exc)) or repr(exc)
            self.post_message(FetchFailed(error, str(getattr(exc, "code", ""))))
            return
        self.post_message(OverviewReceived(overview))

    @on(FetchFailed)
    def _failed(self, message: FetchFailed) -> None:
        if not self.is_running:
            return  # a fetch that ended while the app shuts down: its widgets are gone
        self.last_error = message.error
        where = self.address or "coordinator"
        if message.code in REFUSALS:
            self.refused = f"{where} refused ({message.code}): {message.error}"
            self.exit(return_code=1)
            return
        status = self.query_one("#status", Static)
        status.add_class("error")
        unreachable = message.code in ("", "UNAVAILABLE", "DEADLINE_EXCEEDED")
        what = "unreachable" if unreachable else f"error {message.code}"
        status.update(f"{where} {what}: {message.error} — retrying every {self.interval_s:g}s")

    @on(OverviewReceived)
    def _received(self, message: OverviewReceived) -> None:
        if not self.is_running:
            return  # as in _failed: nothing left to show it on
        o = message.overview
        self.overview = o
        self.last_error = ""
        status = self.query_one("#status", Static)
        status.remove_class("error")
        online = sum(1 for v in o.volunteers if v.online)
        running = sum(1 for j in o.jobs if j.state == "running")
        status.update(
            f"{self.address} · key {short(o.fingerprint, 12)}… · "
            f"{running} running · {online} online"
        )
        self._show(o)

    def _show(self, o: pb.GetOverviewResponse) -> None:
        self._show_jobs(o)
        self._show_volunteers(o)
        self._show_validation(o)
        self._show_events(o)

    def _show_jobs(self, o: pb.GetOverviewResponse) -> None:
        table = self.query_one("#jobs-table", DataTable)
        keep = table.cursor_row
        table.clear()
        self._jobs = list(o.jobs)
        for job in self._jobs:
            table.add_row(*job_row(job, bool(self._compact)), key=job.job_id)
        if self._jobs:
            table.move_cursor(row=min(keep, len(self._jobs) - 1))

    def _show_volunteers(self, o: pb.GetOverviewResponse) -> None:
        table = self.query_one("#volunteers-table", DataTable)
        keep = table.cursor_row
        table.clear()
        self._volunteers = list(o.volunteers)
        for v in self._volunteers:
            table.add_row(
                *volunteer_row(v, o.now_unix_ms, bool(self._compact)), key=v.volunteer_id
            )
        if self._volunteers:
            table.move_cursor(row=min(keep, len(self._volunteers) - 1))

    def _show_validation(self, o: pb.GetOverviewResponse) -> None:
        text = validation_text(o.validation, bool(self._compact))
        self.query_one("#validation-text", Static).update(text)

    def _show_events(self, o: pb.GetOverviewResponse) -> None:
        table = self.query_one("#events-table", DataTable)
        table.clear()
        for line in self._log_lines[-5:]:
            table.add_row("", "top", "", line)
        for e in list(o.events)[-200:]:
            table.add_row(*event_row(e, bool(self._compact)))
        table.scroll_end(animate=False)

    # ------------------------------------------------------------------ actions

    def _selected_job(self) -> pb.JobStatus | None:
        table = self.query_one("#jobs-table", DataTable)
        if not self._jobs or table.cursor_row < 0:
            return None
        return self._jobs[min(table.cursor_row, len(self._jobs) - 1)]

    def _selected_volunteer(self) -> pb.VolunteerStatus | None:
        table = self.query_one("#volunteers-table", DataTable)
        if not self._volunteers or table.cursor_row < 0:
            return None
        return self._volunteers[min(table.cursor_row, len(self._volunteers) - 1)]

    def _do(self, verb: str, target: str) -> None:
        if self.act is None:
            self.notify("read-only view", severity="warning")
            return
        self._act_in_thread(verb, target)

    @work(thread=True, group="act")
    def _act_in_thread(self, verb: str, target: str) -> None:
        severity: Literal["information", "error"] = "information"
        try:
            message = self.act(verb, target) if self.act else ""
        except Exception as exc:
            message = f"{verb} {short(target)} refused: {getattr(exc, 'details', exc)}"
            severity = "error"
        # A message, not call_from_thread: that waits on the event loop, which may be
        # closing if the operator quit meanwhile; a message to a closed app is dropped.
        self.post_message(ActionDone(message, severity))

    @on(ActionDone)
    def _action_done(self, message: ActionDone) -> None:
        self._log_lines.append(message.text)
        if not self.is_running:
            return
        self.notify(message.text, severity=message.severity)
        self.action_refresh()

    def action_pause_resume(self) -> None:
        job = self._selected_job()
        if job is not None:
            self._do("resume" if job.state == "paused" else "pause", job.job_id)

    def _confirm_then(self, question: str, verb: str, target: str) -> None:
        """Cancel and ban cannot be taken back: ask first, act only on a yes."""

        def answered(yes: bool | None) -> None:
            if yes:
                self._do(verb, target)
            else:
                self._log_lines.append(f"{verb} {short(target)}: not confirmed, nothing done")

        self.push_screen(ConfirmScreen(question), answered)

    def action_cancel_job(self) -> None:
        job = self._selected_job()
        if job is not None:
            name = f" ({job.name})" if job.name else ""
            self._confirm_then(
                f"Cancel job {job.job_id}{name}?\n{job.units_accepted}/{job.units_total} "
                "units accepted; its leases out are cancelled. This cannot be undone.",
                "cancel",
                job.job_id,
            )

    def action_ban(self) -> None:
        volunteer = self._selected_volunteer()
        if volunteer is not None:
            name = volunteer.display_name or "no name"
            self._confirm_then(
                f"Ban volunteer {short(volunteer.volunteer_id, 16)} ({name})?\n"
                f"{volunteer.results_valid} valid results; its leases go back and its work "
                "is refused until `u` unbans it.",
                "ban",
                volunteer.volunteer_id,
            )

    def action_unban(self) -> None:
        volunteer = self._selected_volunteer()
        if volunteer is not None:
            self._do("unban", volunteer.volunteer_id)
