"""Whether the engine works now: the volunteer's controls and the pause rules.

The volunteer steers a running engine from any thread: `pause`/`resume`, `stop` (finish the
current unit, then stop) and `quit` (stop now). A monitor thread samples the hardware probe,
reports the samples, and pauses work outside the schedule, on battery, above a GPU
temperature or while the machine is in use. The work loop waits here while work is paused:
between units, or between batches for a computer that reports progress.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from datetime import time as daytime

from allmende.client.engine import events as ev
from allmende.client.engine.policy import Limits, Policy
from allmende.client.probes import HardwareProbe, HardwareSample
from allmende.protocol.errors import InvalidArgument

log = logging.getLogger("allmende.volunteer")

# Waits for a change of pause state look again this often (control calls also wake them).
_POLL_S = 0.5
PAUSED_BY_YOU = "paused by you"


class Cancelled(Exception):
    """Raised inside a computer's progress callback when the volunteer quits.

    `compute_unit` fills in the work the unit had got so far (rows done, seconds spent), so
    that handing it back can say what was given up."""

    done: int = 0
    seconds: float = 0.0


def default_probe() -> HardwareProbe | None:
    try:
        from allmende.client.probes import SystemProbe

        return SystemProbe()
    except Exception as exc:  # psutil missing or refused: no samples, policies see nothing
        log.warning("hardware probe unavailable: %s", exc)
        return None


class Controls:
    """Stop, quit and pause state, shared by the volunteer's threads, the monitor thread and
    the work loop. `state` guards it and wakes whoever waits on a change."""

    def __init__(
        self,
        policy: Policy,
        on_event: Callable[[ev.Event], None],
        probe: HardwareProbe | None,
        local_time: Callable[[], daytime],
    ) -> None:
        self._on_event = on_event
        self._probe = probe
        self._local_time = local_time
        self.stop_requested = threading.Event()
        self.quit_requested = threading.Event()
        # Reentrant: control calls may come from a signal handler on a thread holding it.
        self.state = threading.Condition(threading.RLock())
        self._user_paused = False
        self._policy = policy
        self._policy_reason: str | None = None
        self._last_sample: HardwareSample | None = None
        self._monitor_done = threading.Event()
        # Lanes of an engine that drives several devices (devices.py): each may be paused
        # or finishing on its own and has its own GPU temperature rule; empty with one device.
        self._lane_policies: dict[str, Policy] = {}
        self._lane_reasons: dict[str, str | None] = {}
        self._lanes_paused: set[str] = set()
        self._lanes_finishing: set[str] = set()

    # ------------------------------------------------------------------ the volunteer

    def stop(self) -> None:
        """Ask the engine to stop after the current unit (its result is still sent)."""
        if not self.stop_requested.is_set():
            self.stop_requested.set()
            self._on_event(ev.Stopping("finishing the current unit, then stopping"))
        self.wake()

    def quit(self) -> None:
        """Stop now: a unit in compute is cancelled where the computer allows it, units not
        started are handed back, finished results are sent or kept in the spool."""
        if not self.quit_requested.is_set():
            self.quit_requested.set()
            self.stop_requested.set()
            self._on_event(ev.Stopping("handing back units not finished, then stopping"))
        self.wake()

    def pause(self, device: str | None = None) -> None:
        with self.state:
            if device is None:
                self._user_paused = True
            else:
                self._lanes_paused.add(self._lane(device))
            self.state.notify_all()

    def resume(self, device: str | None = None) -> None:
        """Resume all (clearing every lane's own pause too), or one lane."""
        with self.state:
            if device is None:
                self._user_paused = False
                self._lanes_paused.clear()
            else:
                self._lanes_paused.discard(self._lane(device))
            self.state.notify_all()

    def finish(self, device: str) -> None:
        """Let one lane finish its current unit, then stop; the others go on."""
        with self.state:
            lane = self._lane(device)
            if lane not in self._lanes_finishing:
                self._lanes_finishing.add(lane)
                self._on_event(ev.Stopping("finishing the current unit, then stopping", lane))
            self.state.notify_all()

    def finishing(self, device: str | None) -> bool:
        """Whether the lane (or, with None, the engine) was asked to stop."""
        if self.stop_requested.is_set():
            return True
        with self.state:
            return device is not None and device in self._lanes_finishing

    def set_lanes(self, devices: list[str], policy: Policy) -> None:
        """Several devices: the engine-wide rules leave out the GPU temperature, which each
        lane judges for its own device."""
        with self.state:
            limits = policy.limits
            self._policy = Policy(dataclasses.replace(limits, max_gpu_temp_c=0.0))
            self._lane_policies = {
                d: Policy(Limits(device=d, max_gpu_temp_c=limits.max_gpu_temp_c)) for d in devices
            }
            self._lane_reasons = {d: None for d in devices}
            self._judge()

    def _lane(self, device: str) -> str:
        if device not in self._lane_policies:
            known = ", ".join(self._lane_policies) or "none: one device"
            raise InvalidArgument("device", f"one of the running devices ({known}), got {device!r}")
        return device

    def lane_reason(self, device: str | None) -> str | None:
        """Why one lane is paused now (the engine's reason first), or None."""
        with self.state:
            reason = self.pause_reason
            if reason is not None or device is None or device not in self._lane_policies:
                return reason
            if device in self._lanes_paused:
                return PAUSED_BY_YOU
            return self._lane_reasons.get(device)

    @property
    def pause_reason(self) -> str | None:
        """Why work is paused now (the volunteer, or a policy), or None."""
        with self.state:
            return PAUSED_BY_YOU if self._user_paused else self._policy_reason

    def set_policy(self, policy: Policy) -> None:
        """New pause rules, judged at once against the last hardware sample."""
        with self.state:
            if self._lane_policies:
                self.set_lanes(list(self._lane_policies), policy)
                return
            self._policy = policy
            self._policy_reason = policy.check(self._last_sample, self._local_time())
            self.state.notify_all()

    def _judge(self) -> None:
        """Judge every rule against the last sample; wake waiters when a reason changed.
        Called with `state` held."""
        now = self._local_time()
        changed = False
        reason = self._policy.check(self._last_sample, now)
        if reason != self._policy_reason:
            self._policy_reason, changed = reason, True
        for device, policy in self._lane_policies.items():
            reason = policy.check(self._last_sample, now)
            if reason != self._lane_reasons.get(device):
                self._lane_reasons[device], changed = reason, True
        if changed:
            self.state.notify_all()

    def wake(self) -> None:
        with self.state:
            self.state.notify_all()

    # ------------------------------------------------------------------ the monitor

    def sample(self) -> None:
        sample = None
        if self._probe is not None:
            try:
                sample = self._probe.sample()
            except Exception as exc:  # a flaky sensor must not stop the work
                log.debug("hardware probe failed: %s", exc)
        if sample is not None:
            self._on_event(ev.HardwareSampled(sample))
        with self.state:
            if sample is not None:
                self._last_sample = sample
            self._judge()

    def monitor(self, interval_s: Callable[[], float]) -> None:
        """The monitor thread: sample every `interval_s()` seconds until `stop_monitor`."""
        while not self._monitor_done.wait(interval_s()):
            self.sample()

    def stop_monitor(self) -> None:
        self._monitor_done.set()
        self.wake()

    # ------------------------------------------------------------------ the work loop

    def wait_while_paused(self, in_unit: bool, device: str | None = None) -> float:
        """Block while paused; returns the seconds spent paused. Inside a unit, quitting
        raises Cancelled and finishing ends the pause (the unit completes); between units,
        stopping ends it. With `device`, the lane's own pause and finish count too."""
        announced: str | None = None
        paused_at = time.perf_counter()
        lane = device or ""
        while True:
            with self.state:
                if in_unit and self.quit_requested.is_set():
                    raise Cancelled
                reason = self.lane_reason(device)
                if reason is None or self.finishing(device):
                    break
                if reason == announced:
                    self.state.wait(_POLL_S)
                    continue
            announced = reason
            self._on_event(ev.Paused(reason, lane))
        if announced is None:
            return 0.0
        paused_s = time.perf_counter() - paused_at
        self._on_event(ev.Resumed(lane))
        return paused_s

    def sleep(self, seconds: float) -> None:
        """Wait, but wake early for stop, quit, pause and new settings."""
        with self.state:
            if not self.stop_requested.is_set():
                self.state.wait(seconds)
