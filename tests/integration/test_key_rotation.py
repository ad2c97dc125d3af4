"""Coordinator key rotation end to end: the data folder, the database, volunteers and datasets
follow a rotation signed by the old key, and nothing else."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from allmende.api.dataset import pull
from allmende.cli.main import main as cli
from allmende.client.connection import CoordinatorClient
from allmende.client.engine import EngineConfig, Event, VolunteerEngine
from allmende.client.engine.events import Connected, KeyRotated, Stopped
from allmende.coordinator.app import RunningCoordinator, serve
from allmende.coordinator.domain.keys import adopt_rotation
from allmende.coordinator.home import CoordinatorHome
from allmende.coordinator.store import open_store
from allmende.protocol.errors import FailedPrecondition, IntegrityError
from allmende.protocol.manifest import verify_folder
from allmende.protocol.rotation import CHAIN_NAME, load_chain, save_chain, sign_rotation
from allmende.protocol.signing import CTX_KEY_ROTATION, SigningKey
from allmende.v1 import allmende_pb2 as pb
from tests.conftest import job_requests
from tests.integration.volunteers import HashComputer

TEXTS = [f"rotation sentence {i}" for i in range(40)]


def run_engine(address: str, pinned: str, home: Path) -> tuple[int, list[Event]]:
    events: list[Event] = []
    config = EngineConfig(
        coordinator=address,
        fingerprint=pinned,
        home=home,
        device="cpu",
        exit_when_idle=True,
        give_up_after_s=10,
    )
    code = VolunteerEngine(config, on_event=events.append, computer=HashComputer()).run()
    return code, events


def wait_complete(client: CoordinatorClient, job_id: str) -> None:
    for _ in range(200):
        if client.get_job(job_id).state == "complete":
            return
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} is {client.get_job(job_id).state}, not complete")


def bind(home: CoordinatorHome, fingerprint: str) -> None:
    """What `coordinator init` does to the folder's database."""
    store = open_store(home.db_url)
    try:
        store.bind_coordinator(fingerprint)
    finally:
        store.close()


# ------------------------------------------------------------------ the data folder


def test_rotate_key_replaces_the_key_and_writes_the_chain(
    coordinator_home: CoordinatorHome,
) -> None:
    first = coordinator_home.load_key()
    old, new = coordinator_home.rotate_key("scheduled")
    assert old.fingerprint == first.fingerprint != new.fingerprint
    assert coordinator_home.load_key().fingerprint == new.fingerprint
    assert coordinator_home.key_path.stat().st_mode & 0o777 == 0o600
    assert not coordinator_home.pending_key_path.exists()
    assert len(coordinator_home.load_chain()) == 1
    _, newest = coordinator_home.rotate_key()
    chain = coordinator_home.load_chain()
    assert len(chain) == 2
    # The old key is gone: nothing in the folder holds its private half.
    pems = [p.read_bytes() for p in coordinator_home.root.rglob("*") if p.is_file()]
    assert old.to_pem() not in pems and new.to_pem() not in pems
    assert newest.to_pem() in pems


def test_a_crash_before_the_chain_is_written_keeps_the_old_key(
    coordinator_home: CoordinatorHome,
) -> None:
    old = coordinator_home.load_key()
    coordinator_home.pending_key_path.write_bytes(SigningKey.generate().to_pem())
    assert coordinator_home.load_key().fingerprint == old.fingerprint
    assert not coordinator_home.pending_key_path.exists()
    assert coordinator_home.load_chain() == []


def test_a_crash_half_way_through_writing_the_new_key_keeps_the_old_key(
    coordinator_home: CoordinatorHome,
) -> None:
    old = coordinator_home.load_key()
    coordinator_home.pending_key_path.write_bytes(SigningKey.generate().to_pem()[:40])
    assert coordinator_home.load_key().fingerprint == old.fingerprint
    assert not coordinator_home.pending_key_path.exists()


def test_a_crash_after_the_chain_is_written_finishes_the_rotation(
    coordinator_home: CoordinatorHome,
) -> None:
    old = coordinator_home.load_key()
    new = SigningKey.generate()
    new.save(coordinator_home.pending_key_path)
    save_chain(coordinator_home.chain_path, [sign_rotation(old, new.public_key, "", 1)])
    assert coordinator_home.load_key().fingerprint == new.fingerprint
    assert not coordinator_home.pending_key_path.exists()
    assert len(coordinator_home.load_chain()) == 1


def test_a_chain_that_does_not_end_at_the_key_stops_the_server(
    coordinator_home: CoordinatorHome,
) -> None:
    old = coordinator_home.load_key()
    elsewhere = sign_rotation(old, SigningKey.generate().public_key, "", 1)
    save_chain(coordinator_home.chain_path, [elsewhere])
    with pytest.raises(IntegrityError, match=CHAIN_NAME), serve(coordinator_home.root):
        pass


def test_the_cli_rotates_and_prints_both_fingerprints(
    coordinator_home: CoordinatorHome, capsys: pytest.CaptureFixture[str]
) -> None:
    old = coordinator_home.load_key().fingerprint
    root = str(coordinator_home.root)
    assert cli(["coordinator", "rotate-key", "--data", root, "--reason", "scheduled"]) == 0
    printed = capsys.readouterr().out
    new = coordinator_home.load_key().fingerprint
    assert f"old fingerprint: {old}" in printed and f"new fingerprint: {new}" in printed
    assert "follow automatically" in printed
    assert printed.strip().splitlines()[-1] == new
    assert cli(["coordinator", "rotate-key", "--data", root, "--reason", "x" * 300]) == 2


# ------------------------------------------------------------------ the database


def test_the_database_follows_the_chain_to_the_new_key(
    coordinator_home: CoordinatorHome,
) -> None:
    old = coordinator_home.load_key()
    bind(coordinator_home, old.fingerprint)
    _, new = coordinator_home.rotate_key()
    store = open_store(coordinator_home.db_url)
    try:
        assert store.bound_coordinator() == old.fingerprint
        assert adopt_rotation(store, new, coordinator_home.load_chain(), 5)
        assert store.bound_coordinator() == new.fingerprint
        assert not adopt_rotation(store, new, coordinator_home.load_chain(), 6)  # done once
        store.bind_coordinator(new.fingerprint)  # what `serve --db` checks next
        with pytest.raises(FailedPrecondition):
            store.rebind_coordinator(old.fingerprint, SigningKey.generate().fingerprint, 7)
        assert store.bound_coordinator() == new.fingerprint
    finally:
        store.close()


def test_a_database_of_an_unrelated_key_is_refused_despite_a_chain(
    coordinator_home: CoordinatorHome,
) -> None:
    bind(coordinator_home, SigningKey.generate().fingerprint)
    coordinator_home.rotate_key()
    with pytest.raises(FailedPrecondition, match="does not lead"), serve(coordinator_home.root):
        pass


# ------------------------------------------------------------------ volunteers and datasets


@pytest.fixture
def rotated(coordinator_home: CoordinatorHome) -> tuple[CoordinatorHome, str, str]:
    """A coordinator whose database and a running job date from before a rotation."""
    old = coordinator_home.load_key().fingerprint
    bind(coordinator_home, old)
    _, new = coordinator_home.rotate_key("scheduled")
    return coordinator_home, old, new.fingerprint


def test_a_volunteer_pinned_to_the_old_key_follows_the_rotation(
    coordinator_home: CoordinatorHome, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = coordinator_home.load_key().fingerprint
    bind(coordinator_home, old)
    with serve(coordinator_home.root, drain_s=0.2) as running:
        admin = CoordinatorClient(running.address, coordinator_home.load_token())
        before = admin.create_job(job_requests(TEXTS[:16], redundancy=1, unit_size=8)).job_id
        admin.close()
    _, new = coordinator_home.rotate_key("scheduled")
    with serve(coordinator_home.root, tls=True, drain_s=0.2) as running:
        admin = CoordinatorClient(running.address, coordinator_home.load_token())
        after = admin.create_job(job_requests(TEXTS[16:], redundancy=1, unit_size=8)).job_id
        # Units of both jobs, the older planned under the old key, verify under the new one.
        code, events = run_engine(running.address, old, tmp_path / "volunteer")
        assert code == 0, events[-1]
        rotated = [e for e in events if isinstance(e, KeyRotated)]
        assert rotated == [KeyRotated(old, new.fingerprint)]
        connected = next(e for e in events if isinstance(e, Connected))
        assert connected.fingerprint == new.fingerprint
        for job_id in (before, after):
            wait_complete(admin, job_id)

        # The dataset is signed by the new key; the folder carries the chain.
        folder = coordinator_home.datasets / after
        assert load_chain(folder / "_allmende" / CHAIN_NAME) == running.coordinator.key_chain
        assert verify_folder(folder, old).rows == len(TEXTS) - 16
        assert verify_folder(folder, new.fingerprint).rows == len(TEXTS) - 16

        # A researcher pinned to the old key pulls over TLS and verifies offline.
        out = tmp_path / "pulled"
        assert pull(admin, after, old, out).rows == len(TEXTS) - 16
        assert (out / "_allmende" / CHAIN_NAME).exists()
        admin.close()
    capsys.readouterr()
    assert cli(["dataset", "verify", str(out), "--fingerprint", old]) == 0
    assert "ok:" in capsys.readouterr().out

    tampered = tmp_path / "tampered"
    shutil.copytree(out, tampered)
    raw = bytearray((tampered / "_allmende" / CHAIN_NAME).read_bytes())
    # Flip one character of the base64 signature: still well formed, no longer valid.
    at = raw.index(b'"signature": "') + len(b'"signature": "') + 5
    raw[at] = ord("A") if raw[at] != ord("A") else ord("B")
    (tampered / "_allmende" / CHAIN_NAME).write_bytes(bytes(raw))
    assert cli(["dataset", "verify", str(tampered), "--fingerprint", old]) == 1
    assert "link 1" in capsys.readouterr().err

    (tampered / "_allmende" / CHAIN_NAME).write_bytes(b"{not json")
    assert cli(["dataset", "verify", str(tampered), "--fingerprint", old]) == 1
    assert "key-chain.json" in capsys.readouterr().err

    (tampered / "_allmende" / CHAIN_NAME).unlink()
    assert cli(["dataset", "verify", str(tampered), "--fingerprint", old]) == 1
    assert "does not match the pinned" in capsys.readouterr().err
    # The new fingerprint needs no chain.
    assert cli(["dataset", "verify", str(tampered), "--fingerprint", new.fingerprint]) == 0


def test_a_dataset_from_before_the_rotation_keeps_verifying_under_the_old_pin(
    coordinator_home: CoordinatorHome, tmp_path: Path
) -> None:
    old = coordinator_home.load_key().fingerprint
    with serve(coordinator_home.root, drain_s=0.2) as running:
        admin = CoordinatorClient(running.address, coordinator_home.load_token())
        job_id = admin.create_job(job_requests(TEXTS[:8], redundancy=1)).job_id
        assert run_engine(running.address, old, tmp_path / "v")[0] == 0
        wait_complete(admin, job_id)
        admin.close()
    assert not (coordinator_home.datasets / job_id / "_allmende" / CHAIN_NAME).exists()
    _, new = coordinator_home.rotate_key()
    with serve(coordinator_home.root, drain_s=0.2) as running:
        admin = CoordinatorClient(running.address, coordinator_home.load_token())
        assert pull(admin, job_id, old, tmp_path / "old-pin").rows == 8
        assert not (tmp_path / "old-pin" / "_allmende" / CHAIN_NAME).exists()
        # Signed by the retired key: a newer pin does not vouch for it.
        with pytest.raises(IntegrityError, match="does not match the pinned"):
            pull(admin, job_id, new.fingerprint, tmp_path / "new-pin")
        admin.close()


def forge(running: RunningCoordinator, pinned: SigningKey) -> None:
    """Serve a chain claiming `pinned` handed over to the coordinator's key, signed by
    someone else: what an impostor holding only its own key could offer."""
    attacker = SigningKey.generate()
    rotation = pb.KeyRotation(
        old_public_key=pinned.public_key,
        new_public_key=running.coordinator.key.public_key,
        created_unix_ms=1,
        reason="trust me",
    ).SerializeToString()
    running.coordinator.key_chain = [(rotation, attacker.sign(CTX_KEY_ROTATION, rotation))]


def test_a_forged_chain_is_refused_by_volunteers_and_researchers(
    coordinator_home: CoordinatorHome, tmp_path: Path
) -> None:
    victim = SigningKey.generate()  # the key volunteers pinned; the impostor lacks it
    with serve(coordinator_home.root, tls=True, drain_s=0.2) as running:
        admin = CoordinatorClient(running.address, coordinator_home.load_token())
        admin.create_job(job_requests(TEXTS[:8], redundancy=1))
        forge(running, victim)
        code, events = run_engine(running.address, victim.fingerprint, tmp_path / "v")
        assert code == 3
        last = events[-1]
        assert isinstance(last, Stopped)
        assert "does not match the pinned" in last.reason and "link 1" in last.reason
        assert not any(isinstance(e, Connected) for e in events)
        with pytest.raises(IntegrityError, match="link 1"):
            pull(admin, "job-whatever", victim.fingerprint, tmp_path / "data")
        admin.close()


def test_a_volunteer_pinned_to_an_unrelated_key_is_refused_despite_a_valid_chain(
    rotated: tuple[CoordinatorHome, str, str], tmp_path: Path
) -> None:
    home, _, _ = rotated
    with serve(home.root, drain_s=0.2) as running:
        assert running.coordinator.key_chain
        code, events = run_engine(
            running.address, SigningKey.generate().fingerprint, tmp_path / "v"
        )
    assert code == 3
    assert "starts from the pinned key" in getattr(events[-1], "reason", "")
