"""Gold rows catch lone cheaters, and quarantine repairs what they touched: a real coordinator
in-process on port 0 (SQLite) whose gold computer knows the honest answers, raw volunteers
over gRPC (see trusthelp.py)."""

from __future__ import annotations

import grpc
import numpy as np

from allmende.coordinator.domain.trust import TrustPolicy
from allmende.coordinator.home import CoordinatorHome
from allmende.v1 import allmende_pb2 as pb
from tests.integration.rawclient import RawAdmin, expect_error, text_rows
from tests.integration.trusthelp import (
    launch,
    lockstep,
    random_rows,
    run_honest,
    sentences,
    unit_of,
)

KIND = "embed-text"


def test_a_volunteer_that_misses_a_gold_row_is_rejected_and_quarantined(
    coordinator_home: CoordinatorHome,
) -> None:
    with launch(coordinator_home, gold=True) as net:
        job = net.create(sentences(24), redundancy=2, unit_size=8, gold_fraction=0.25)
        assert net.store.gold_count(job) == 24  # computed by the coordinator at creation
        cheat, a, b = net.volunteer(), net.volunteer(), net.volunteer()
        lease = cheat.lease()
        assert lease is not None
        unit = unit_of(lease)
        positions = net.gold_positions(lease.lease_id)
        # 2 shared gold rows and 1 of its own (the first lease: nothing seen to repeat)
        assert len(unit.texts) == 11 and len(positions) == 3
        # honest everywhere except one of the two hidden gold rows
        matrix = cheat.honest(lease)
        matrix[positions[0]] = random_rows(1, unit.dims, seed=5)[0]
        response = cheat.submit(lease, matrix)
        assert response.status == "rejected"
        assert "missed 1 of 3 hidden gold row(s)" in response.reason

        assert net.lease_record(lease.lease_id).state == "rejected"
        assert net.results(unit.unit_id) == []  # nothing of it was stored
        rep = net.store.get_reputation(cheat.id)[KIND]
        assert (rep.faults, rep.gold_checked, rep.gold_missed, rep.valid) == (1, 1, 1, 0)
        volunteer = net.store.get_volunteer(cheat.id)
        assert volunteer is not None and volunteer.quarantined
        assert "gold" in volunteer.quarantine_reason
        expect_error(cheat.lease_response, grpc.StatusCode.PERMISSION_DENIED, "quarantined", "gold")
        expect_error(lambda: cheat.submit(lease), grpc.StatusCode.PERMISSION_DENIED, "quarantined")
        kinds = [event[1] for event in net.store.recent_events(100)]
        assert "volunteer.gold_missed" in kinds and "volunteer.quarantined" in kinds

        # honest volunteers get the slot the cheater lost, and finish the job untouched
        la = a.lease()
        assert la is not None and unit_of(la).unit_id == unit.unit_id
        assert a.submit(la).status == "pending"
        run_honest(net, [a, b])
        assert net.wait_state(job, "complete") == "complete"
        for honest in (a, b):
            rep = net.store.get_reputation(honest.id)[KIND]
            # gold rows on its first two units; the third has none left: every text of
            # this job sat in a unit it leased, and none reaches it as a gold row (issue 15)
            assert (rep.valid, rep.gold_checked, rep.gold_missed, rep.faults) == (3, 2, 0, 0)
            assert not net.store.get_volunteer(honest.id).quarantined  # type: ignore[union-attr]
        status = RawAdmin(net.running.address).get_job(job)
        assert status.results_rejected == 0 and status.units_accepted == 3


def test_quarantine_reopens_what_rested_on_the_volunteer_and_the_dataset_is_rebuilt(
    coordinator_home: CoordinatorHome,
) -> None:
    policy = TrustPolicy(adaptive_after=2, replication_floor=0.05, gold_streak=0)
    texts = sentences(24, "repaired")
    with launch(coordinator_home, policy, gold=True) as net:
        job = net.create(texts, redundancy=2, unit_size=2)
        units = net.units(job)
        x, y, z = net.volunteer(), net.volunteer(), net.volunteer()
        solo = lockstep(net, x, y)
        assert solo, "X was trusted for 10 units and never went alone"
        assert net.wait_state(job, "complete") == "complete"
        touched = [u for u in units if x.id in {r.volunteer_id for r in net.results(u)}]
        assert set(solo) < set(touched) and len(touched) == len(units)
        for unit_id in solo:
            row = net.unit(unit_id)
            assert (row.state, row.quorum, row.replicas) == ("accepted", 1, 1)
            assert net.canonical_volunteer(unit_id) == x.id
        net.admin.datasets.GetManifest(pb.GetManifestRequest(job_id=job), timeout=10)
        assert net.store.gold_count(job) > 24  # units X and Y agreed on yielded gold rows
        # The dataset says how each row was verified: X's lone results through the gold
        # rows of their unit (no agreement to report), the others by a quorum.
        first = net.dataset(job)
        how = {
            unit_id: (verified, agreement, gold)
            for unit_id, verified, agreement, gold in zip(
                first["unit_id"], first["verified_by"], first["agreement"],
                first["gold_passed"], strict=True,
            )
        }
        for unit_id in solo:
            verified, agreement, gold = how[unit_id]
            assert (verified, agreement) == ("solo+gold", None) and gold > 0
        quorum = {how[u] for u in units if u not in solo}
        assert {v for v, _, _ in quorum} == {"quorum"}
        assert all(a is not None and a >= 0.999 for _, a, _ in quorum)

        # X turns cheat on a new job: a gold miss quarantines it
        other = net.create(sentences(8, "bait"), redundancy=2, unit_size=4, gold_fraction=0.5)
        bait = x.lease()
        assert bait is not None and unit_of(bait).job_id == other
        assert x.submit(bait, x.miss_gold(bait)).status == "rejected"
        assert net.store.get_volunteer(x.id).quarantined  # type: ignore[union-attr]

        # every unit of the finished job rested on X (alone, or as one of two): re-verify
        assert net.job_state(job) == "running"
        assert "re-verifying" in net.store.get_job(job).reason  # type: ignore[union-attr]
        expect_error(
            lambda: net.admin.datasets.GetManifest(pb.GetManifestRequest(job_id=job), timeout=10),
            grpc.StatusCode.FAILED_PRECONDITION,
            "not ready",
        )
        for unit_id in units:
            row = net.unit(unit_id)
            assert row.state == "open" and row.canonical_result_id is None
            assert (row.quorum, row.target) == (2, 2)
            assert all(r.state == "invalid" for r in net.results(unit_id) if r.volunteer_id == x.id)
        assert net.store.gold_count(job) == 24  # only the coordinator's gold rows are left
        kinds = [event[1] for event in net.store.recent_events(500)]
        assert "job.reverifying" in kinds

        run_honest(net, [y, z])
        assert net.wait_state(job, "complete") == "complete"
        data = net.dataset(job)
        assert sorted(data["id"]) == sorted(f"id-{i}" for i in range(len(texts)))
        expected = text_rows(texts, 384)
        for item_id, vector in zip(data["id"], data["embedding"], strict=True):
            assert np.allclose(vector, expected[int(item_id.removeprefix("id-"))], atol=2e-3)
        replicas = dict(zip(data["unit_id"], data["replicas"], strict=False))
        for unit_id in units:
            row = net.unit(unit_id)
            assert row.state == "accepted"
            assert net.canonical_volunteer(unit_id) in (y.id, z.id)
            valid = [r.volunteer_id for r in net.results(unit_id) if r.state == "valid"]
            assert x.id not in valid and len(valid) == row.replicas == replicas[unit_id]
            assert len(valid) >= row.quorum
        for unit_id in solo:  # X's lone units now rest on volunteers in good standing
            assert len({r.volunteer_id for r in net.results(unit_id) if r.state == "valid"}) >= 1
        assert list(net.store.units_resting_on_quarantined(job)) == []
