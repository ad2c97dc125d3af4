"""The results spool: durable, per coordinator, and careful with files it cannot read."""

from __future__ import annotations

from pathlib import Path

from allmende.client.engine.spool import Spool
from allmende.protocol.kinds.columns import Layout
from allmende.protocol.signing import SigningKey
from allmende.protocol.wire import ResultEnvelope, encode_envelope


def envelope(unit_id: str, rows: int = 3) -> bytes:
    return encode_envelope(
        ResultEnvelope(
            unit_id=unit_id,
            lease_id="lease-1",
            volunteer_id="v" * 64,
            rows=rows,
            columns=(Layout("embedding", "float16", 4),),
            codec="shuffle+zstd",
            payload_sha256=b"\0" * 32,
            unit_sha256=b"\1" * 32,
            model_sha256="m" * 64,
            device="cpu",
            compute_ms=1,
            created_ms=1,
        )
    )


def test_a_result_survives_as_the_exact_bytes_and_leaves_no_temporary_files(
    tmp_path: Path,
) -> None:
    fp = SigningKey.generate().fingerprint
    spool = Spool(tmp_path / "spool", fp)
    path = spool.put(envelope("job-1-u000001", rows=3), b"sig", b"payload bytes")
    assert spool.count() == 1
    # a new process (a new Spool) finds it
    [item] = list(Spool(tmp_path / "spool", fp).pending())
    assert (item.unit_id, item.rows, item.signature, item.payload) == (
        "job-1-u000001",
        3,
        b"sig",
        b"payload bytes",
    )
    assert item.envelope == envelope("job-1-u000001", rows=3)
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    spool.remove(path)
    assert spool.count() == 0 and list(spool.pending()) == []


def test_results_are_kept_apart_per_coordinator(tmp_path: Path) -> None:
    a = Spool(tmp_path, SigningKey.generate().fingerprint)
    b = Spool(tmp_path, SigningKey.generate().fingerprint)
    a.put(envelope("u1"), b"s", b"p")
    assert a.count() == 1 and b.count() == 0


def test_an_unreadable_file_is_moved_aside_not_sent(tmp_path: Path) -> None:
    spool = Spool(tmp_path, SigningKey.generate().fingerprint)
    good = spool.put(envelope("u1"), b"s", b"p")
    broken = spool.put(envelope("u2"), b"s", b"p")
    broken.write_bytes(broken.read_bytes()[:-3])  # truncated
    assert [item.unit_id for item in spool.pending()] == ["u1"]
    assert (spool.folder / "unreadable" / broken.name).exists()
    assert good.exists()
