"""Leasing work: admitting a volunteer, composing each unit for it, and handing units back.

Part of the `Coordinator` facade (a mixin, as submit.py). A lease call judges its volunteer
(registered, not banned or quarantined, within its daily quota and its cap on unexpired
leases) from the standing the store reads inside the first lease's transaction, so that on
PostgreSQL the check costs no round trip of its own. Lease calls are rate-limited per address
block before anything is read; the store keeps one block from holding more than its share of
a job's replica slots.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from allmende.coordinator.domain.compose import MAX_COMPOSED_BYTES, Viewer, compose, new_rng
from allmende.coordinator.domain.part import CoordinatorPart
from allmende.coordinator.domain.ratelimit import TokenBuckets, refuse
from allmende.coordinator.domain.trust import DAY_MS, utc_day
from allmende.coordinator.store.records import (
    LeaseCandidate,
    LeaseGrant,
    LeasePlan,
    Reputation,
    VolunteerRecord,
)
from allmende.protocol.errors import InvalidArgument, NotFound, PermissionDenied, shown
from allmende.protocol.limits import MAX_MESSAGE_BYTES
from allmende.protocol.signing import SigningKey

log = logging.getLogger("allmende.coordinator")

IDLE_RETRY_MS = 2000
SEEN_EVERY_MS = 10_000
WAIT_RETRY_MS = 1000
# Units one LeaseWork call may ask for (and results one SubmitResults call may carry).
MAX_LEASE_UNITS = 32
# Unit bytes one ListLeases answer carries at most: a message's limit, less room for framing.
MAX_HELD_BYTES = MAX_MESSAGE_BYTES - 1024 * 1024
# Told to a volunteer that did not opt in to fetching URLs when only jobs with URL rows
# have work left (it gets work_remaining False: nothing will come for it as it runs).
FETCH_URLS_NOTICE = (
    "the work left here is images fetched from URLs, which only volunteers that opted in "
    "are given: opt in with --fetch-urls (or in the settings screen) to take it"
)


@dataclass(frozen=True)
class LeaseOffer:
    grant: LeaseGrant | None
    work_remaining: bool
    retry_after_ms: int
    notice: str = ""
    more: tuple[LeaseGrant, ...] = ()  # further grants, when several units were asked for

    @property
    def grants(self) -> tuple[LeaseGrant, ...]:
        return () if self.grant is None else (self.grant, *self.more)


@dataclass
class _Admission:
    """One lease call's judgement of its volunteer, made when the store has read its
    standing (the store's `Admit`): raises for a volunteer that may not work, and says how
    many units it may take, or why none (`refusal`)."""

    leasing: Leasing
    volunteer_id: str
    count: int
    now: int
    day: int
    refusal: LeaseOffer | None = None
    allowed: int = 0
    cap: int = 0  # unexpired leases the volunteer may hold at once
    reputation: Mapping[str, Reputation] = field(default_factory=dict)
    viewer: Viewer | None = None  # what the volunteer has seen (gold rows it must not get)

    def __call__(self, record: VolunteerRecord | None, reputation: dict[str, Reputation]) -> bool:
        leasing, now = self.leasing, self.now
        volunteer = leasing._admitted(self.volunteer_id, record)
        leasing._seen(self.volunteer_id, now)
        if leasing.draining.is_set():
            self.refusal = LeaseOffer(None, True, WAIT_RETRY_MS * 5)
            return False
        valid = sum(r.valid for r in reputation.values())
        quota = leasing.policy.quota(valid)
        used = volunteer.leased_today if volunteer.quota_day == self.day else 0
        if used >= quota:
            self.refusal = LeaseOffer(
                None,
                True,
                min(DAY_MS - now % DAY_MS, 10 * 60 * 1000),
                f"daily quota of {quota} units reached; it grows by "
                f"{leasing.policy.quota_per_valid} per validated result and resets at 00:00 UTC",
            )
            return False
        cap = self.cap = leasing.policy.lease_cap(valid)
        if volunteer.live_leases >= cap:
            self.refusal = LeaseOffer(
                None,
                True,
                WAIT_RETRY_MS * 5,
                f"holding {volunteer.live_leases} unfinished leases, the most a volunteer with "
                f"{valid} validated result(s) may hold at once ({cap}); it grows by "
                f"{leasing.policy.leases_per_valid} per validated result",
            )
            return False
        self.allowed = min(self.count, quota - used, cap - volunteer.live_leases)
        self.reputation = reputation
        return True


class Leasing(CoordinatorPart):
    key: SigningKey
    draining: threading.Event
    _last_seen: dict[str, int]
    _seen_due: dict[str, int]
    _seen_lock: threading.Lock
    lease_calls: TokenBuckets

    def lease_work(
        self, volunteer_id: str, address: str = "", count: int = 1, fetch_urls: bool = False
    ) -> LeaseOffer:
        """Lease up to `count` units, each composed for this volunteer alone (see
        domain/compose.py) and each a lease of its own; the daily quota counts each.

        `address` is the volunteer's network address ('' for a local socket). Its address
        block (TrustPolicy.block) is rate-limited, may hold only a share of a job's replica
        slots, and replicas of a unit go to distinct blocks unless the policy says
        otherwise. A refused call changes nothing.

        `fetch_urls`: the volunteer opted in to fetching images from URLs; only then does
        it get units of jobs with URL rows. A volunteer that did not, while only such work
        is left, gets no lease, `work_remaining` False (nothing will come for it) and a
        notice saying that --fetch-urls would get it work."""
        if not 1 <= count <= MAX_LEASE_UNITS:
            raise InvalidArgument("max_units", f"1 to {MAX_LEASE_UNITS} units, got {count}")
        if not volunteer_id:
            raise InvalidArgument("volunteer_id", "the id returned by RegisterVolunteer")
        now = self.clock()
        block = self.policy.block(address)
        if block:
            wait = self.lease_calls.take(block, now)
            if wait:
                raise refuse("lease calls", block, self.lease_calls, wait)
        admission = _Admission(self, volunteer_id, count, now, utc_day(now))
        self.gold.refresh()
        admission.viewer = self.gold.viewer(volunteer_id)
        grants: list[LeaseGrant] = []
        with self.store.batch():  # one commit (SQLite)
            grant = self._lease_one(admission, block, fetch_urls, admit=True)
            if admission.refusal is not None:
                return admission.refusal
            used = 0
            while grant is not None:
                grants.append(grant)
                used += len(grant.blob) + len(grant.signature)
                # One response is one message: stop while another unit as large as a
                # composed unit can be would still fit (image units weigh megabytes).
                if len(grants) >= admission.allowed or used + MAX_COMPOSED_BYTES > MAX_HELD_BYTES:
                    break
                grant = self._lease_one(admission, block, fetch_urls)
        if grants:
            return LeaseOffer(grants[0], True, 0, more=tuple(grants[1:]))
        remaining = self.store.work_remaining(volunteer_id, now, fetch_urls)
        notice = ""
        if not remaining and not fetch_urls and self.store.work_remaining(volunteer_id, now, True):
            notice = FETCH_URLS_NOTICE
        return LeaseOffer(
            None, remaining, WAIT_RETRY_MS if remaining else IDLE_RETRY_MS, notice=notice
        )

    def _lease_one(
        self, admission: _Admission, block: str, fetch_urls: bool, admit: bool = False
    ) -> LeaseGrant | None:
        """One lease from address block `block`; with `admit`, the one whose transaction
        judges the volunteer."""
        lease_id = uuid.uuid4().hex
        now = admission.now

        def plan(candidate: LeaseCandidate) -> LeasePlan:
            rng = new_rng()
            # Adaptive replication: only the unit's first lease may send it out alone.
            reputation = admission.reputation.get(candidate.kind)
            wants_alone = candidate.busy == 0 and self.policy.goes_alone(reputation, rng)
            c = compose(
                self.key,
                candidate,
                lease_id,
                self.gold.rows(candidate.job_id),
                rng,
                now,
                earlier=self.gold.cached(candidate.gold_ids),
                viewer=admission.viewer,
                own_row=not wants_alone,
            )
            self.gold.saw(admission.volunteer_id, candidate.unit_id, c.gold_ids, c.sample)
            if admission.viewer is not None:  # the next unit of this call knows this one
                admission.viewer = admission.viewer.after(candidate.unit_id, c.gold_ids, c.sample)
            alone = bool(c.gold_ids) and wants_alone
            return LeasePlan(
                c.blob,
                c.signature,
                c.unit_sha256,
                c.composition,
                c.gold_ids,
                solo=alone,
                shared=c.shared,
            )

        return self.store.lease_unit(
            admission.volunteer_id,
            lease_id,
            now,
            plan,
            address=block,
            day=admission.day,
            admit=admission if admit else None,
            distinct=self.policy.distinct_addresses,
            block_share=self.policy.block_share,
            # the first lease's `admit` judges the cap; the store holds the later ones to it
            held_cap=None if admit else admission.cap,
            fetch_urls=fetch_urls,
        )

    def _seen(self, volunteer_id: str, now: int) -> None:
        """Note that a volunteer is alive, at most every SEEN_EVERY_MS per volunteer. The
        notes reach the store in batches (`flush_seen`), not as a write per lease."""
        if now - self._last_seen.get(volunteer_id, 0) >= SEEN_EVERY_MS:
            self._last_seen[volunteer_id] = now
            with self._seen_lock:
                self._seen_due[volunteer_id] = now

    def flush_seen(self) -> None:
        """Write the last-seen times noted since the previous flush, in one transaction.
        The server calls it every few seconds and on shutdown; listings call it first."""
        with self._seen_lock:
            due, self._seen_due = self._seen_due, {}
        if not due:
            return
        try:
            self.store.touch_volunteers(due)
        except BaseException:  # kept for the next flush, unless a newer time is there
            with self._seen_lock:
                self._seen_due = {**due, **self._seen_due}
            raise

    def volunteers_online(self, window_ms: int = 120_000) -> int:
        """Volunteers that asked this process for work recently."""
        now = self.clock()
        return sum(1 for seen in list(self._last_seen.values()) if now - seen < window_ms)

    def held_leases(
        self, volunteer_id: str, budget: int = MAX_HELD_BYTES
    ) -> tuple[LeaseGrant, ...]:
        """BOINC's "resend lost results": the unexpired leases `volunteer_id` holds on open
        units, oldest first, each as the very unit it was handed (the same signed bytes, so
        its signature and the lease's `unit_sha256` still match), for a volunteer that lost
        its local state. Units up to `budget` bytes in all; the rest, and a lease whose unit
        the store lacks (from before migration 0007) or whose bytes no longer match its
        sha256, are left to expire as before. Changes nothing but the last-seen time."""
        self._volunteer(volunteer_id)
        now = self.clock()
        self._seen(volunteer_id, now)
        grants: list[LeaseGrant] = []
        for held in self.store.held_leases(volunteer_id, now):
            if held.blob is None or held.signature is None:
                continue
            if held.unit_sha256 is not None and hashlib.sha256(held.blob).digest() != bytes(
                held.unit_sha256
            ):
                log.warning("lease %s: stored unit does not match its sha256", held.lease_id)
                continue
            budget -= len(held.blob) + len(held.signature)
            if budget < 0:
                break
            grants.append(
                LeaseGrant(held.lease_id, held.unit_id, held.deadline_ms, held.blob, held.signature)
            )
        return tuple(grants)

    def release_work(self, volunteer_id: str, lease_id: str, reason: str) -> None:
        self._volunteer(volunteer_id)
        lease = self.store.get_lease(lease_id)
        if lease is None:
            raise NotFound(f"lease {shown(lease_id)} does not exist")
        if lease.volunteer_id != volunteer_id:
            raise PermissionDenied(f"lease {shown(lease_id)} belongs to another volunteer")
        self.store.release_lease(lease_id, reason[:500] or "handed back", self.clock())
        log.info("lease released lease=%s unit=%s reason=%s", lease_id, lease.unit_id, reason)
