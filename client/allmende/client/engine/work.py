"""The loop one lane runs: lease → check → compute → hand the result to the submitter.

`LaneWork` holds what the loop needs from the engine, passed in by name: the link to the
coordinator, the submitter, the coordinator's key, the controls, the live settings, the model
registry and cache, and how to get a lane's current computer. The engine (runner.py) makes
one per run and runs `LaneWork.run` on each lane (lanes.py).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from allmende.client.engine import events as ev
from allmende.client.engine.compute import Computer, compute_unit, takes_progress
from allmende.client.engine.config import EngineConfig
from allmende.client.engine.control import Cancelled, Controls
from allmende.client.engine.energy import EnergyMeter, PerThousand
from allmende.client.engine.exits import EXIT_REFUSED, Stop
from allmende.client.engine.lanes import Lane
from allmende.client.engine.leasing import hand_back, units_wanted
from allmende.client.engine.link import CoordinatorLink
from allmende.client.engine.model_cache import ModelCache
from allmende.client.engine.submission import Submitter
from allmende.client.engine.verify import UrlsNotWanted, check_unit, unit_id_hint
from allmende.protocol.errors import AllmendeError
from allmende.protocol.models import ModelRegistry
from allmende.v1 import allmende_pb2 as pb


@dataclass(frozen=True)
class Metered:
    """The energy meter and its per-thousand account, given to the lane it follows (the
    first device's; the others' energy is not measured)."""

    meter: EnergyMeter
    per_thousand: PerThousand


@dataclass(frozen=True)
class LaneWork:
    """The engine's collaborators for the work loop of one run, shared by its lanes."""

    link: CoordinatorLink
    submitter: Submitter
    coordinator_key: bytes
    control: Controls
    config: Callable[[], EngineConfig]  # the settings now (they change live)
    registry: ModelRegistry
    models: ModelCache | None
    computer_for: Callable[[Lane], Computer]  # the lane's computer for the next unit
    emit: Callable[[ev.Event], None]  # the engine's events, before a lane names its device
    on_event: Callable[[ev.Event], None]  # the volunteer's callback, as given

    def run(
        self, lane: Lane, recovered: Sequence[pb.Lease] = (), metered: Metered | None = None
    ) -> None:
        """Lease, verify and compute units on `lane` until idle or stopped; `recovered`
        leases (held from an earlier run, recover.py) come first. `metered` is given to
        the lane the energy meter follows.

        Units are leased a few at a time, about `BUFFER_S` of this volunteer's compute (one
        at a time on a slow machine, up to `MAX_BUFFER` on a fast GPU), and the next lease
        call runs while the last unit in hand computes; results are encoded, signed and sent
        on the submit thread, so the compute device rarely waits.
        """
        control = self.control
        link = self.link
        submitter = self.submitter
        emit = lane.tag(self.emit)
        refusals = 0
        fetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lease")
        ahead: Future[object] | None = None
        held: deque[pb.Lease] = deque(recovered)  # leased, not started
        want = 1
        try:
            while not control.finishing(lane.name):
                if submitter.error is not None:
                    raise submitter.error
                if control.lane_reason(lane.name) is not None:
                    hand_back(link, held, ahead, "paused: not started", emit)  # keep none
                    ahead = None
                    control.wait_while_paused(in_unit=False, device=lane.name)
                    continue
                if not held:
                    response = ahead.result() if ahead else link.lease(want)
                    ahead = None
                    assert isinstance(response, pb.LeaseWorkResponse)
                    if not response.HasField("lease"):
                        if self.config().exit_when_idle and not response.work_remaining:
                            if response.notice:  # why none is left for it, e.g. --fetch-urls
                                emit(ev.Idle(False, 0.0, response.notice[:300]))
                            submitter.wait_idle()  # nothing left in flight
                            lane.ended = "no work left"
                            return
                        wait = max(response.retry_after_ms, 200) / 1000
                        emit(ev.Idle(response.work_remaining, wait, response.notice[:300]))
                        submitter.poll_verdicts(only_if_due=True)
                        control.sleep(wait)
                        continue
                    held.extend([response.lease, *response.more_leases])
                lease = held.popleft()
                try:
                    ensure = self.models.ensure if self.models is not None else None
                    unit = check_unit(
                        lease, self.coordinator_key, self.registry, ensure, self.config().fetch_urls
                    )
                except AllmendeError as exc:
                    # Leased before fetching was turned off: handed back, not held against
                    # the coordinator.
                    turned_off = isinstance(exc, UrlsNotWanted) and link.asked_for_urls
                    refusals += 0 if turned_off else 1
                    reason = f"refused: {exc.message}"
                    self.on_event(ev.UnitRefused(unit_id_hint(lease), reason))
                    link.release(lease.lease_id, reason)
                    if refusals >= self.config().max_refusals:
                        raise Stop(
                            EXIT_REFUSED, f"refused {refusals} units in a row; last: {reason}"
                        ) from None
                    continue
                refusals = 0
                computer = self.computer_for(lane)
                measured = takes_progress(computer)
                emit(
                    ev.UnitLeased(
                        unit.unit_id,
                        unit.job_id,
                        unit.kind,
                        unit.model,
                        len(unit.texts),
                        measured,
                    )
                )
                if not held and not control.finishing(lane.name):
                    ahead = fetcher.submit(link.lease, want)
                if metered is not None:
                    metered.meter.device = computer.device
                lane.computing = True
                try:
                    matrix, seconds = compute_unit(
                        computer,
                        unit,
                        measured,
                        emit,
                        lambda: control.wait_while_paused(in_unit=True, device=lane.name),
                    )
                except Cancelled as cancelled:
                    reason = "stopping: the volunteer quit before the unit was finished"
                    link.release_quietly(lease.lease_id, reason)
                    emit(
                        ev.UnitReleased(
                            unit.unit_id,
                            reason,
                            cancelled.done,
                            len(unit.texts),
                            round(cancelled.seconds, 3),
                        )
                    )
                    return
                finally:
                    lane.computing = False
                rate = len(unit.texts) / seconds if seconds > 0 else 0.0
                emit(ev.UnitComputed(unit.unit_id, len(unit.texts), seconds, rate))
                energy = (  # the meter follows the first device only
                    metered.per_thousand.unit_done(len(unit.texts))
                    if metered is not None
                    else (0.0, True)
                )
                submitter.put((lease, unit, matrix, computer.device, seconds, energy))
                want = units_wanted(seconds)
        finally:  # units leased but never started go back
            hand_back(link, held, ahead, "stopping: not started", emit)
            fetcher.shutdown(wait=True)
