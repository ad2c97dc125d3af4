"""The volunteer engine: lease → verify → compute → encode → sign → submit, in a loop.

The engine trusts nothing it receives: the coordinator's key must match the pinned
fingerprint (handshake.py), every unit's signature must verify over the exact bytes received,
and the unit must name a model and weights hash from the local registry (verify.py), or a
model the coordinator serves, fetched and checked against its signed manifest first
(model_cache.py). A unit that fails is handed back with the reason. Submissions run on their
own thread so the next unit computes meanwhile, and every result goes through the spool on
disk, so none is lost (submission.py).

The volunteer steers a running engine from any thread: `pause`/`resume`, `stop` (finish the
current unit, then stop), `quit` (stop now; units not finished are handed back) and `apply`
(new settings, live). A monitor thread samples the hardware probe, reports the samples, and
pauses work outside the schedule, on battery, above a GPU temperature or while the machine
is in use (control.py). A computer whose ``compute`` takes a ``progress`` callback reports
progress within a unit and can be paused and cancelled between batches; others pause and
stop between units (compute.py).

This module holds `VolunteerEngine` itself: its controls, and the run from handshake to the
last result; the loop each lane runs (lease, verify, compute, submit) is in work.py.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from datetime import time as daytime

from allmende.client.connection import CoordinatorClient, RemoteError
from allmende.client.engine import events as ev
from allmende.client.engine.compute import (
    PROGRESS_INTERVAL_S,
    Computer,
    default_computer,
)
from allmende.client.engine.config import COMPUTE_FIELDS, RESTART_FIELDS, EngineConfig
from allmende.client.engine.control import PAUSED_BY_YOU, Cancelled, Controls, default_probe
from allmende.client.engine.devices import parse_devices
from allmende.client.engine.energy import EnergyMeter, PerThousand
from allmende.client.engine.exits import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    Stop,
)
from allmende.client.engine.handshake import CLIENT_VERSION, connect
from allmende.client.engine.lanes import Lane, run_lanes
from allmende.client.engine.leasing import BUFFER_S, MAX_BUFFER, units_wanted
from allmende.client.engine.link import CoordinatorLink
from allmende.client.engine.model_cache import ModelCache
from allmende.client.engine.policy import Policy
from allmende.client.engine.recover import recover_leases
from allmende.client.engine.spool import Spool
from allmende.client.engine.submission import Submitter
from allmende.client.engine.verdicts import VerdictBook
from allmende.client.engine.work import LaneWork, Metered
from allmende.client.probes import HardwareProbe
from allmende.protocol.errors import AllmendeError
from allmende.protocol.models import ModelRegistry
from allmende.protocol.signing import normalise_fingerprint

# Names that lived here before the engine was split into modules; importers keep working.
__all__ = [
    "BUFFER_S",
    "CLIENT_VERSION",
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_UNREACHABLE",
    "MAX_BUFFER",
    "PAUSED_BY_YOU",
    "PROGRESS_INTERVAL_S",
    "RESTART_FIELDS",
    "Cancelled",
    "Computer",
    "EngineConfig",
    "Stop",
    "VolunteerEngine",
    "units_wanted",
]

log = logging.getLogger("allmende.volunteer")


class VolunteerEngine:
    def __init__(
        self,
        config: EngineConfig,
        on_event: Callable[[ev.Event], None] = lambda e: None,
        computer: Computer | None = None,
        registry: ModelRegistry | None = None,
        *,
        probe: HardwareProbe | None = None,
        local_time: Callable[[], daytime] = lambda: datetime.now().time(),
        computers: Mapping[str, Computer] | None = None,
    ) -> None:
        """`computer` is the computer of a one-device engine; `computers` gives one per
        device by name (the lanes of --device cuda:0,cuda:1). Devices without one get the
        engine's own computer (torch)."""
        self.config = config
        self.on_event = on_event
        self.registry = registry or ModelRegistry()
        probe = self._probe = probe if probe is not None else default_probe()
        self._device_error = ""
        try:
            devices = parse_devices(config.device, probe)
        except AllmendeError as exc:
            devices, self._device_error = [config.device], exc.message
        given = dict(computers or {})
        if computer is not None and len(devices) == 1:
            given.setdefault(devices[0], computer)
        self._lanes = [
            Lane(
                d if len(devices) > 1 else None,
                d,
                given.get(d),
                d not in given,
            )
            for d in devices
        ]
        self._control = Controls(self._policy(config), self._emit, probe, local_time)
        if len(devices) > 1:
            self._control.set_lanes(devices, self._policy(config))
        self._link: CoordinatorLink | None = None
        self._models: ModelCache | None = None  # served models, once connected
        self._submitter: Submitter | None = None
        # Units handed back on the way out, and the rows and seconds given up with them.
        self._handed_back = (0, 0, 0.0)
        # Energy of the compute device while it computes, reported with each result.
        # With several devices it follows the first; the others' energy is not measured.
        self._energy = EnergyMeter(devices[0])
        self._per_thousand = PerThousand(self._energy)

    def _policy(self, config: EngineConfig) -> Policy:
        """The pause rules, with one device's GPU rule judged for the device it resolved to
        ("all" on a machine with one GPU is that GPU)."""
        limits = config.limits()
        if len(self._lanes) == 1:
            limits = dataclasses.replace(limits, device=self._lanes[0].device)
        return Policy(limits)

    @property
    def devices(self) -> list[str]:
        """The devices this engine computes on, one lane each."""
        return [lane.device for lane in self._lanes]

    def _emit(self, event: ev.Event) -> None:
        if isinstance(event, ev.HardwareSampled):
            self._energy.add(event.sample, self._lanes[0].computing)
        if isinstance(event, ev.UnitReleased) and event.reason.startswith("stopping"):
            units, rows, seconds = self._handed_back
            self._handed_back = (units + 1, rows + event.done, seconds + event.seconds)
        self.on_event(event)

    # ------------------------------------------------------------------ control

    def stop(self, device: str | None = None) -> None:
        """Ask the engine (or one device's lane) to stop after the current unit (its result
        is still sent). A lane that stops leaves the others computing."""
        if device is None or len(self._lanes) == 1:
            self._control.stop()
        else:
            self._control.finish(device)

    def quit(self) -> None:
        """Stop now: a unit in compute is cancelled where the computer allows it, units not
        started are handed back, finished results are sent or kept in the spool."""
        self._control.quit()

    def pause(self, device: str | None = None) -> None:
        """Pause all devices, or one of several."""
        self._control.pause(device if len(self._lanes) > 1 else None)

    def resume(self, device: str | None = None) -> None:
        """Resume all devices (each lane's own pause too), or one of several."""
        self._control.resume(device if len(self._lanes) > 1 else None)

    @property
    def pause_reason(self) -> str | None:
        """Why work is paused now (the volunteer, or a policy), or None."""
        return self._control.pause_reason

    def device_state(self, device: str) -> str:
        """One device's state in words: "paused: <why>", "finishing", "stopped: <how>" or
        "running"."""
        lane = next((lane for lane in self._lanes if lane.device == device), None)
        if lane is None:
            raise AllmendeError(f"no device {device!r} in this engine ({', '.join(self.devices)})")
        if lane.ended:
            return f"stopped: {lane.ended}"
        if self._control.finishing(lane.name):
            return "finishing"
        reason = self._control.lane_reason(lane.name)
        return f"paused: {reason}" if reason is not None else "running"

    def apply(self, config: EngineConfig) -> list[str]:
        """Take new settings live; returns the names of the fields that changed.

        Pause rules apply at once. Device, batch size, threads and the GPU memory cap apply
        from the next unit (a computer the engine made is rebuilt for them). Fields in
        RESTART_FIELDS are ignored here: they need a new engine.
        """
        # Lanes are fixed for a run: with several devices, a new device list needs a restart.
        several = len(self._lanes) > 1 or (
            config.device != self.config.device
            and len(parse_devices(config.device, self._probe)) > 1
        )
        fixed = RESTART_FIELDS + (("device",) if several else ())
        changed = [
            f.name
            for f in dataclasses.fields(config)
            if f.name not in fixed and getattr(config, f.name) != getattr(self.config, f.name)
        ]
        if not changed:
            return []
        Policy(config.limits())  # a bad schedule raises here, before anything changes
        with self._control.state:
            kept = {name: getattr(self.config, name) for name in fixed}
            self.config = dataclasses.replace(config, **kept)
            if "device" in changed:  # one device, moved (several are fixed, above)
                self._lanes[0].device = parse_devices(self.config.device, self._probe)[0]
            self._control.set_policy(self._policy(self.config))
            if any(name in COMPUTE_FIELDS for name in changed):
                for lane in self._lanes:
                    lane.rebuild = True
        self.on_event(ev.SettingsApplied(", ".join(changed)))
        return changed

    # ------------------------------------------------------------------ progress so far

    @property
    def volunteer_id(self) -> str:
        """The id the coordinator registered this volunteer under ("" before that)."""
        return self._link.volunteer_id if self._link is not None else ""

    @property
    def units_done(self) -> int:
        return self._submitter.units_done if self._submitter is not None else 0

    @property
    def items_done(self) -> int:
        return self._submitter.items_done if self._submitter is not None else 0

    @property
    def spooled(self) -> int:
        """Results on disk waiting to be sent to this coordinator."""
        return self._submitter.spooled if self._submitter is not None else 0

    # ------------------------------------------------------------------ main loop

    def run(self) -> int:
        """Run until idle (with exit_when_idle), stopped, or refused. Returns an exit code."""
        if self._device_error:
            return self._finish(EXIT_ERROR, self._device_error)
        try:
            pinned = normalise_fingerprint(self.config.fingerprint)
        except AllmendeError as exc:
            return self._finish(EXIT_ERROR, exc.message)
        control = self._control
        link = self._link = CoordinatorLink(
            CoordinatorClient(self.config.coordinator),
            lambda: self.config,
            control.stop_requested,
            self._emit,
        )
        submitter: Submitter | None = None
        verdicts = VerdictBook(self.config.home / "verdicts", pinned, self._emit)
        verdicts.announce()  # lifetime totals from the last run, before the coordinator answers
        control.sample()  # the pause rules hold from the first lease on
        monitor = threading.Thread(
            target=control.monitor,
            args=(lambda: self.config.sample_interval_s,),
            name="monitor",
            daemon=True,
        )
        monitor.start()
        code, reason = EXIT_ERROR, "interrupted"
        try:
            coordinator_key = connect(link, self.config, pinned, self._emit)
            self._models = ModelCache(
                self.config.home / "models", self.registry, link, coordinator_key, self._emit
            )
            spool = Spool(self.config.home / "spool", pinned)
            submitter = self._submitter = Submitter(
                link, spool, control.stop_requested, self._emit, verdicts
            )
            submitter.resend_spooled()
            submitter.poll_verdicts()
            recovered = recover_leases(link, spool)  # leases held from before, first
            for lane in self._lanes:
                self._current_computer(lane)  # load the model before leasing
            submitter.start()

            def stop_all() -> None:
                control.stop_requested.set()
                control.wake()

            work = LaneWork(
                link,
                submitter,
                coordinator_key,
                control,
                lambda: self.config,
                self.registry,
                self._models,
                self._current_computer,
                self._emit,
                self.on_event,
            )
            first = self._lanes[0]  # takes the recovered leases, and the energy meter follows it
            metered = Metered(self._energy, self._per_thousand)
            run_lanes(
                self._lanes,
                lambda lane: work.run(
                    lane,
                    recovered if lane is first else (),
                    metered if lane is first else None,
                ),
                stop_all,
                self._emit,
            )
            stopped = control.stop_requested.is_set()
            code, reason = EXIT_OK, "stopped" if stopped else "no work left"
        except Stop as stop:
            code, reason = stop.code, stop.reason
        except AllmendeError as exc:
            code, reason = EXIT_ERROR, exc.message
        except RemoteError as exc:
            code, reason = EXIT_ERROR, f"coordinator refused ({exc.code}): {exc.details}"
        except Exception as exc:  # a bug or a broken installation: report it, do not hang
            log.exception("volunteer engine failed")
            code, reason = EXIT_ERROR, f"unexpected error: {exc!r}"
        finally:
            if submitter is not None:
                submitter.close()
                if code == EXIT_OK and submitter.error is None:
                    submitter.poll_verdicts()  # the last word on what was sent
            control.stop_monitor()
            monitor.join()
            link.close()
        if submitter is not None and submitter.error is not None and code == EXIT_OK:
            code, reason = submitter.error.code, submitter.error.reason
        return self._finish(code, reason)

    def _finish(self, code: int, reason: str) -> int:
        units, rows, seconds = self._handed_back
        self.on_event(
            ev.Stopped(
                code,
                reason,
                self.units_done,
                self.items_done,
                self.spooled,
                units,
                rows,
                round(seconds, 3),
            )
        )
        return code

    def _current_computer(self, lane: Lane) -> Computer:
        """The lane's computer for the next unit, rebuilt when its settings changed."""
        with self._control.state:
            rebuild, lane.rebuild = lane.rebuild, False
            config = self.config
        if lane.computer is None or (rebuild and lane.owns_computer):
            if config.device != lane.device:  # a lane of several, or "all" with one GPU
                config = dataclasses.replace(config, device=lane.device)
            lane.computer = default_computer(self.registry, config)
        return lane.computer
