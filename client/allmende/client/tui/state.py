"""What the dashboard shows, folded from engine events. Plain Python (no textual), so the
arithmetic (ETA, throughput, credit, energy) is tested without a terminal.

Clocks are injected: `clock` (monotonic seconds) for countdowns and rates, `wall` for the
times in the log, so tests and snapshots are deterministic. How numbers and units are worded
is in wording.py; the throughput history in throughput.py.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from allmende.client.engine import events as ev
from allmende.client.engine.energy import EnergyMeter
from allmende.client.probes import GpuSample, HardwareSample
from allmende.client.tui.device_rows import DeviceBoard
from allmende.client.tui.throughput import Throughput
from allmende.client.tui.wording import format_bytes, handed_back, short_unit, work_given_up

LOG_LINES = 200


@dataclass
class UnitView:
    unit_id: str
    job_id: str
    kind: str
    model: str
    items: int
    measured: bool
    started_at: float
    done: int = 0
    rate: float = 0.0  # items/s within this unit (measured progress)
    computed: bool = False


@dataclass
class DownloadView:
    """A served model being fetched from the coordinator (engine/model_cache.py)."""

    model: str
    done: int
    total: int


@dataclass(frozen=True)
class LogLine:
    at: str
    level: str  # "info", "good", "warn", "bad"
    text: str


class ViewState:
    def __init__(
        self,
        clock: Callable[[], float],
        wall: Callable[[], datetime],
        device: str = "auto",
    ) -> None:
        self.clock = clock
        self.wall = wall
        self.device = device
        # connection
        self.address = ""
        self.fingerprint = ""
        self.connection = "connecting"  # connected, retrying, refused, unreachable, stopped
        self.connection_detail = ""
        self.rtt_ms: float | None = None
        self.retry_at: float | None = None
        # engine state
        self.paused: str | None = None
        self.pause_requested = False
        self.stopping: str | None = None
        self.stopped: ev.Stopped | None = None
        self.idle: str | None = None
        # work
        self.unit: UnitView | None = None
        self.download: DownloadView | None = None
        self.last_rate: float | None = None
        self._throughput = Throughput()
        # contribution: counted from this session's answers until the coordinator's lifetime
        # totals arrive (CreditTotals), then those totals, the figures `volunteers list` shows
        self.accepted = 0
        self.pending = 0
        self.rejected = 0
        self.errors = 0
        self.refused = 0
        self.items_sent = 0
        self.credit = 0  # granted, in the coordinator's credit unit
        self.totals: ev.CreditTotals | None = None
        self.verdicts: dict[str, int] = {}  # this session's verdicts by kind
        self.spooled = 0
        self.energy = EnergyMeter(device)
        # hardware
        self.sample: HardwareSample | None = None
        self.log: deque[LogLine] = deque(maxlen=LOG_LINES)
        self.new_lines: list[LogLine] = []
        # Several devices: a row each, and the unit each computes (None with one device).
        self.board: DeviceBoard | None = None
        self.lane_units: dict[str, UnitView] = {}

    # ------------------------------------------------------------------ derived

    @property
    def computing(self) -> bool:
        return self.unit is not None and not self.unit.computed and self.paused is None

    def retry_in_s(self) -> int | None:
        if self.retry_at is None:
            return None
        return max(0, math.ceil(self.retry_at - self.clock()))

    def unit_progress(self) -> tuple[float, str]:
        """(fraction done, "measured" | "estimated") for the current unit."""
        unit = self.unit
        if unit is None or unit.items == 0:
            return 0.0, "measured"
        if unit.computed:
            return 1.0, "measured"
        if unit.measured:
            return min(unit.done / unit.items, 1.0), "measured"
        if not self.last_rate:
            return 0.0, "estimated"
        elapsed = self.clock() - unit.started_at
        return min(elapsed * self.last_rate / unit.items, 0.99), "estimated"

    def unit_rate(self) -> float | None:
        unit = self.unit
        if unit is not None and unit.measured and unit.rate > 0:
            return unit.rate
        return self.last_rate

    def eta_s(self) -> float | None:
        unit = self.unit
        rate = self.unit_rate()
        if unit is None or unit.computed or not rate:
            return None
        fraction, _ = self.unit_progress()
        return max(0.0, (1.0 - fraction) * unit.items / rate)

    def throughput(self) -> list[float]:
        """items/s per bucket, oldest first, the last BUCKETS buckets up to now."""
        return self._throughput.rates(self.clock())

    def gpu_in_use(self) -> GpuSample | None:
        if self.sample is None or self.device == "cpu":
            return None
        return self.sample.gpu(self.device)

    # ------------------------------------------------------------------ folding

    def _count(self, items: float) -> None:
        self._throughput.count(items, self.clock())

    def note(self, text: str, level: str = "info") -> None:
        line = LogLine(self.wall().strftime("%H:%M:%S"), level, text)
        self.log.append(line)
        self.new_lines.append(line)

    def take_new_lines(self) -> list[LogLine]:
        lines, self.new_lines = self.new_lines, []
        return lines

    def apply(self, event: ev.Event) -> None:
        if self.board is not None:
            line = self.board.apply(event)
            device: str = getattr(event, "device", "")
            lanes = (ev.Paused, ev.Resumed, ev.Stopping, ev.DeviceStopped)
            if device and isinstance(event, lanes):
                # one device of several: the engine as a whole goes on
                if isinstance(event, ev.Paused):
                    self.pause_requested = False
                self.paused = self.board.all_paused()
                if line is not None:
                    level = "info" if isinstance(event, ev.Resumed) else "warn"
                    self.note(line, level)
                return
        handler = getattr(self, "_on_" + type(event).__name__, None)
        if handler is not None:
            handler(event)

    def _connected(self) -> None:
        if self.connection != "connected":
            self.connection = "connected"
            self.connection_detail = ""
        self.retry_at = None

    def _on_Connected(self, e: ev.Connected) -> None:
        self.address, self.fingerprint = e.address, e.fingerprint
        self.rtt_ms = e.rtt_ms
        self._connected()
        self.note(f"connected to {e.address} as {e.volunteer_id[:12]}", "good")

    def _on_KeyRotated(self, e: ev.KeyRotated) -> None:
        self.note(
            f"coordinator key rotated from the pinned {e.pinned[:16]}… to {e.current[:16]}…; "
            "every rotation was signed by the key before it",
            "warn",
        )

    def _on_Retrying(self, e: ev.Retrying) -> None:
        first = self.connection != "retrying"
        self.connection = "retrying"
        self.connection_detail = e.error
        self.retry_at = self.clock() + e.delay_s
        if first:
            self.note(f"coordinator unreachable ({e.error}); retrying with backoff", "warn")

    def _on_Reconnected(self, e: ev.Reconnected) -> None:
        # The lease and the submit thread may both report it; one line is enough.
        if self.connection != "connected":
            self.note(f"coordinator reachable again after {e.down_s:.0f} s", "good")
        self._connected()

    def _on_RoundTrip(self, e: ev.RoundTrip) -> None:
        self.rtt_ms = e.rtt_ms
        self._connected()

    def _on_Idle(self, e: ev.Idle) -> None:
        self._connected()
        idle = e.notice or (
            "waiting for replicas of others" if e.work_remaining else "no work available"
        )
        if self.unit is not None and self.unit.computed:
            self.unit = None
        if idle != self.idle:
            self.note(f"idle: {idle}")
        self.idle = idle

    def _on_UnitLeased(self, e: ev.UnitLeased) -> None:
        self.idle = None
        self.unit = UnitView(
            e.unit_id, e.job_id, e.kind, e.model, e.items, e.measured_progress, self.clock()
        )
        if e.device:
            self.lane_units[e.device] = self.unit

    def _unit_of(self, device: str) -> UnitView | None:
        """The unit an event is about: its device's with several, else the current one."""
        return self.lane_units.get(device) if device else self.unit

    def _on_UnitProgress(self, e: ev.UnitProgress) -> None:
        unit = self._unit_of(e.device)
        if unit is None or unit.unit_id != e.unit_id:
            return
        self._count(max(0, e.done - unit.done))
        unit.done, unit.rate = e.done, e.items_per_s

    def _on_UnitComputed(self, e: ev.UnitComputed) -> None:
        unit = self._unit_of(e.device)
        if unit is not None and unit.unit_id == e.unit_id:
            self._count(max(0, e.items - unit.done))
            unit.done, unit.computed = e.items, True
        else:
            self._count(e.items)
        self.last_rate = e.items_per_s

    def _on_ModelFetching(self, e: ev.ModelFetching) -> None:
        self.download = DownloadView(e.model, e.cached_bytes, e.total_bytes)
        have = f", {format_bytes(e.cached_bytes)} already here" if e.cached_bytes else ""
        self.note(
            f"downloading model {e.model}: {e.files} files, {format_bytes(e.total_bytes)}{have}"
        )

    def _on_ModelProgress(self, e: ev.ModelProgress) -> None:
        self.download = DownloadView(e.model, e.done_bytes, e.total_bytes)

    def _on_ModelReady(self, e: ev.ModelReady) -> None:
        self.download = None
        self.note(
            f"model {e.model} ready: every file matches the signed manifest "
            f"({format_bytes(e.downloaded_bytes)} in {e.seconds:.1f} s)",
            "good",
        )

    def _on_UnitRefused(self, e: ev.UnitRefused) -> None:
        self.download = None  # a download that failed refuses its unit
        self.refused += 1
        self.note(f"unit {short_unit(e.unit_id)} {e.reason}", "bad")

    def _on_UnitReleased(self, e: ev.UnitReleased) -> None:
        if self.unit is not None and self.unit.unit_id == e.unit_id:
            self.unit = None
        work = f"; {work_given_up(e.done, e.items, e.seconds)}" if e.done else ""
        self.note(f"unit {short_unit(e.unit_id)} handed back ({e.reason}){work}")

    def _on_ResultSubmitted(self, e: ev.ResultSubmitted) -> None:
        self._connected()
        if self.unit is not None and self.unit.unit_id == e.unit_id:
            self.unit = None
        unit = short_unit(e.unit_id)
        again = " (from disk)" if e.resent else ""
        if e.status == "accepted":
            self.accepted += 1
            self.items_sent += e.items
            self.note(f"result {unit}{again} accepted by quorum", "good")
        elif e.status == "pending":
            self.pending += 1
            self.items_sent += e.items
            why = f": {e.reason}" if e.reason else ""
            self.note(f"result {unit}{again} sent, pending validation{why}")
        elif e.status == "rejected":
            self.rejected += 1
            self.note(f"result {unit}{again} rejected: {e.reason or 'no reason given'}", "bad")
        else:
            self.errors += 1
            self.note(f"result {unit}{again} not accepted: {e.reason}", "bad")
        if e.resent:
            self.spooled = max(0, self.spooled - 1)

    def _on_ResultVerdict(self, e: ev.ResultVerdict) -> None:
        self.verdicts[e.verdict] = self.verdicts.get(e.verdict, 0) + 1
        unit = short_unit(e.unit_id)
        if e.verdict == "valid":
            self.note(f"result {unit} valid: +{e.credit:,} credit", "good")
        elif e.verdict == "cancelled":
            self.note(f"result {unit} cancelled: {e.reason}", "warn")
        else:
            self.note(f"result {unit} {e.verdict}: {e.reason or 'no reason given'}", "bad")

    def _on_CreditTotals(self, e: ev.CreditTotals) -> None:
        first = self.totals is None
        self.totals = e
        self.accepted, self.pending, self.rejected = (
            e.results_valid,
            e.results_pending,
            e.results_invalid,
        )
        self.credit = e.credit
        if first:
            source = "remembered from the last run" if e.remembered else "at the coordinator"
            self.note(
                f"lifetime {source}: {e.results_valid:,} valid, {e.results_invalid:,} invalid, "
                f"{e.results_pending:,} pending; credit {e.credit:,}"
            )

    def _on_ResultSpooled(self, e: ev.ResultSpooled) -> None:
        self.spooled = e.waiting
        self.note(f"result {short_unit(e.unit_id)} {e.reason}", "warn")

    def _on_Paused(self, e: ev.Paused) -> None:
        self.paused = e.reason
        self.pause_requested = False
        self.note(e.reason if e.reason.startswith("paused") else f"paused: {e.reason}", "warn")

    def _on_Resumed(self, e: ev.Resumed) -> None:
        self.paused = None
        self.note("resumed")

    def _on_Stopping(self, e: ev.Stopping) -> None:
        self.stopping = e.how
        self.note(f"stopping: {e.how}", "warn")

    def _on_SettingsApplied(self, e: ev.SettingsApplied) -> None:
        self.note(f"settings applied: {e.changes}")

    @property
    def energy_wh(self) -> float:
        return self.energy.wh

    @property
    def energy_measured(self) -> bool | None:
        """True: the GPU's energy counter; False: estimated; None: nothing counted yet."""
        return self.energy.measured

    def _on_HardwareSampled(self, e: ev.HardwareSampled) -> None:
        self.sample = e.sample
        self.energy.add(e.sample, self.computing)

    def _on_Stopped(self, e: ev.Stopped) -> None:
        self.stopped = e
        self.stopping = None
        self.paused = None
        self.unit = None
        self.spooled = e.spooled
        if e.exit_code == 3:
            self.connection, self.connection_detail = "refused", e.reason
        elif e.exit_code == 4:
            self.connection, self.connection_detail = "unreachable", e.reason
        elif e.exit_code:
            self.connection, self.connection_detail = "error", e.reason
        else:
            self.connection, self.connection_detail = "stopped", e.reason
        self.retry_at = None
        kept = f"; {e.spooled} result(s) kept on disk for next time" if e.spooled else ""
        level = "bad" if e.exit_code else "info"
        self.note(f"stopped ({e.reason}){kept}{handed_back(e)}", level)
