"""The leases a volunteer holds, with the units as handed out (ListLeases), on every backend."""

from __future__ import annotations

import hashlib

from sqlalchemy import select

from allmende.coordinator.store import schema as t
from allmende.coordinator.store.records import LeaseCandidate, LeasePlan
from allmende.coordinator.store.sql import SqlStore
from tests.store.helpers import LEASE_S, T0, lease, make_job, submit


def composed(candidate: LeaseCandidate) -> LeasePlan:
    """A plan whose blob differs from the unit's, as a composed unit's does."""
    blob = candidate.blob + b"|composed for this lease"
    return LeasePlan(
        blob, b"lease-sig", hashlib.sha256(blob).digest(), b"\x01\x00\x00\x00", (), False
    )


def test_held_leases_return_the_units_as_handed_out_and_only_live_ones(store: SqlStore) -> None:
    make_job(store, texts=8, unit_size=2, redundancy=2)
    grants = [store.lease_unit("v1", f"L{i}", T0 + i, composed) for i in range(3)]
    plain = lease(store, "v1", T0 + 3)  # handed out uncomposed: the unit's own bytes
    assert all(grants) and plain is not None
    others = lease(store, "v2", T0)
    assert others is not None

    held = store.held_leases("v1", T0 + 10)
    assert [h.lease_id for h in held] == ["L0", "L1", "L2", plain[0]]  # oldest first
    for grant, h in zip(grants, held, strict=False):
        assert grant is not None
        assert (h.blob, h.signature, h.deadline_ms) == (
            grant.blob,
            b"lease-sig",
            grant.deadline_ms,
        )
        assert h.unit_sha256 == hashlib.sha256(grant.blob).digest()
    unit = store.get_unit(plain[1])
    assert unit is not None and held[3].blob == unit.blob and held[3].unit_sha256 is None

    store.release_lease("L1", "handed back", T0 + 11)
    submit(store, "L2", grants[2].unit_id, "v1")  # type: ignore[union-attr]
    assert [h.lease_id for h in store.held_leases("v1", T0 + 12)] == ["L0", plain[0]]
    assert [h.lease_id for h in store.held_leases("v2", T0 + 12)] == [others[0]]
    assert store.held_leases("v3", T0 + 12) == []
    # Past their deadlines: nothing, swept or not.
    assert store.held_leases("v1", T0 + 3 + LEASE_S * 1000) == []
    # A lease that is no longer live keeps no copy of its unit; a live one does.
    store.lease_unit("v3", "L9", T0 + 2 * LEASE_S * 1000, composed)  # sweeps the expired
    le = t.leases
    with store.engine.connect() as conn:
        kept = dict(conn.execute(select(le.c.lease_id, le.c.unit_blob)).all())
    assert {lease_id for lease_id, blob in kept.items() if blob is not None} == {"L9"}
