"""TLS: the coordinator's certificate is pinned through its key; plaintext is refused off
loopback unless asked for."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from allmende.api.dataset import pull
from allmende.client.connection import CoordinatorClient, RemoteError
from allmende.client.engine import EngineConfig, VolunteerEngine
from allmende.coordinator.app import serve
from allmende.coordinator.home import CoordinatorHome
from allmende.protocol.errors import FailedPrecondition, IntegrityError, InvalidArgument
from allmende.protocol.signing import CTX_TLS, SigningKey
from allmende.protocol.tls import check_binding
from tests.conftest import job_requests
from tests.integration.volunteers import HashComputer


def run_engine(address: str, fingerprint: str, home: Path) -> tuple[int, list[object]]:
    events: list[object] = []
    config = EngineConfig(
        coordinator=address,
        fingerprint=fingerprint,
        home=home,
        device="cpu",
        exit_when_idle=True,
        give_up_after_s=10,
    )
    code = VolunteerEngine(config, on_event=events.append, computer=HashComputer()).run()
    return code, events


def test_a_job_runs_over_tls_with_the_certificate_pinned_through_the_key(
    coordinator_home: CoordinatorHome, tmp_path: Path
) -> None:
    with serve(coordinator_home.root, "127.0.0.1:0", tls=True, drain_s=0.2) as running:
        assert running.tls
        admin = CoordinatorClient(running.address, coordinator_home.load_token())
        job_id = admin.create_job(job_requests([f"t{i}" for i in range(30)], redundancy=1)).job_id
        assert admin.tls_cert_sha256  # the client negotiated TLS by itself
        fp = running.coordinator.key.fingerprint
        code, _ = run_engine(running.address, fp, tmp_path / "v")
        assert code == 0
        for _ in range(100):
            if admin.get_job(job_id).state == "complete":
                break
            time.sleep(0.05)
        report = pull(admin, job_id, fp, tmp_path / "data")
        assert report.rows == 30
        admin.close()


def test_a_certificate_the_key_does_not_vouch_for_is_refused(
    coordinator_home: CoordinatorHome, tmp_path: Path
) -> None:
    with serve(coordinator_home.root, "127.0.0.1:0", tls=True, drain_s=0.2) as running:
        # As if someone in between presented their own certificate: the binding the
        # coordinator reports is for another certificate, signed by another key.
        impostor = SigningKey.generate()
        fake_hash = b"\x07" * 32
        running.coordinator.tls_binding = (fake_hash, impostor.sign(CTX_TLS, fake_hash))
        code, events = run_engine(
            running.address, running.coordinator.key.fingerprint, tmp_path / "v"
        )
        assert code == 3
        assert "TLS certificate is not the one" in getattr(events[-1], "reason", "")


def test_binding_checks_hash_and_signature() -> None:
    key = SigningKey.generate()
    digest = b"\x01" * 32
    check_binding(key.public_key, digest, digest, key.sign(CTX_TLS, digest))
    with pytest.raises(IntegrityError, match="interception"):
        check_binding(key.public_key, b"\x02" * 32, digest, key.sign(CTX_TLS, digest))
    with pytest.raises(IntegrityError):
        check_binding(key.public_key, digest, digest, SigningKey.generate().sign(CTX_TLS, digest))


def test_plaintext_off_loopback_needs_insecure(coordinator_home: CoordinatorHome) -> None:
    with (
        pytest.raises(InvalidArgument, match="--insecure"),
        serve(coordinator_home.root, "0.0.0.0:0", tls=False),
    ):
        pass
    with serve(coordinator_home.root, "0.0.0.0:0", drain_s=0.2) as running:
        assert running.tls  # TLS by default on a non-loopback address
    with serve(
        coordinator_home.root, "0.0.0.0:0", tls=False, insecure=True, drain_s=0.2
    ) as running:
        assert not running.tls


def _outside_address() -> str | None:
    """An address of this machine that is not loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent
            address = str(probe.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_a_client_refuses_plaintext_off_loopback_unless_insecure(
    coordinator_home: CoordinatorHome,
) -> None:
    outside = _outside_address()
    if outside is None:
        pytest.skip("this machine has no non-loopback address: needs a network interface up")
    with serve(
        coordinator_home.root, "0.0.0.0:0", tls=False, insecure=True, drain_s=0.2
    ) as running:
        address = f"{outside}:{running.port}"
        with pytest.raises(RemoteError, match="does not offer TLS"):
            CoordinatorClient(address).info()
        assert CoordinatorClient(address, insecure=True).info().fingerprint


def test_a_coordinator_without_a_certificate_says_how_to_get_one(
    coordinator_home: CoordinatorHome,
) -> None:
    coordinator_home.tls_cert_path.unlink()
    with (
        pytest.raises(FailedPrecondition, match=r"tls\.crt"),
        serve(coordinator_home.root, "127.0.0.1:0", tls=True),
    ):
        pass


def test_init_takes_a_given_certificate(tmp_path: Path) -> None:
    from allmende.protocol.tls import make_self_signed

    key_pem, cert_pem = make_self_signed(("coordinator.example.org",))
    (tmp_path / "c.pem").write_bytes(cert_pem)
    (tmp_path / "k.pem").write_bytes(key_pem)
    home = CoordinatorHome(tmp_path / "coord")
    home.init(tls_cert=tmp_path / "c.pem", tls_key=tmp_path / "k.pem")
    assert home.tls_cert_path.read_bytes() == cert_pem
    assert home.tls_key_path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(InvalidArgument, match="both"):
        CoordinatorHome(tmp_path / "other").init(tls_cert=tmp_path / "c.pem")
