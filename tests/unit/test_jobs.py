"""Tests of job settings, input checks and planning a job into signed, deduplicated units."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from allmende.coordinator.domain.jobs import (
    DEFAULT_LEASE_SECONDS,
    DEFAULT_REDUNDANCY,
    DEFAULT_TAU,
    DEFAULT_UNIT_SIZE,
    MAX_TEXT_BYTES,
    MAX_UNIT_BYTES,
    InputRecord,
    JobRequest,
    check_items,
    plan_job,
    resolve_settings,
)
from allmende.coordinator.store.records import NewUnit
from allmende.protocol.errors import IntegrityError, InvalidArgument
from allmende.protocol.models import DEFAULT_MODEL, ModelRegistry, ModelSpec
from allmende.protocol.signing import SigningKey
from allmende.protocol.wire import WorkUnit, open_unit

REQ = JobRequest(model=DEFAULT_MODEL)


@pytest.fixture(scope="module")
def registry() -> ModelRegistry:
    return ModelRegistry()


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate()


def records(texts: list[str]) -> list[InputRecord]:
    return [InputRecord(f"id-{n}", text, n + 1) for n, text in enumerate(texts)]


# ------------------------------------------------------------------ resolve_settings


def test_resolve_settings_fills_defaults(registry: ModelRegistry) -> None:
    s = resolve_settings(REQ, registry)
    model = registry.get(DEFAULT_MODEL)
    assert s.kind == "embed-text"
    assert s.model == DEFAULT_MODEL
    assert s.model_sha256 == model.weights_sha256
    assert s.dims == 384
    assert s.redundancy == DEFAULT_REDUNDANCY
    assert s.unit_size == DEFAULT_UNIT_SIZE
    assert s.tau == DEFAULT_TAU
    assert s.max_replicas == DEFAULT_REDUNDANCY + 3
    assert s.lease_seconds == DEFAULT_LEASE_SECONDS
    assert s.result_dtype == "float16"


def test_resolve_settings_keeps_valid_explicit_values(registry: ModelRegistry) -> None:
    req = dataclasses.replace(REQ, redundancy=3, unit_size=10, tau=0.95, max_replicas=3,
                              lease_seconds=60, result_dtype="int8", name="n" * 200)
    s = resolve_settings(req, registry)
    assert (s.redundancy, s.unit_size, s.tau, s.max_replicas, s.lease_seconds,
            s.result_dtype) == (3, 10, 0.95, 3, 60, "int8")


def test_default_max_replicas_is_capped(registry: ModelRegistry) -> None:
    assert resolve_settings(dataclasses.replace(REQ, redundancy=16), registry).max_replicas == 19
    assert resolve_settings(dataclasses.replace(REQ, redundancy=1), registry).max_replicas == 4


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"kind": "mine-bitcoin"}, "kind"),
        ({"kind": ""}, "kind"),
        ({"model": ""}, "model"),
        ({"model": "gpt-17"}, "model"),
        ({"redundancy": -1}, "redundancy"),
        ({"redundancy": 17}, "redundancy"),
        ({"unit_size": -3}, "unit_size"),
        ({"unit_size": 8193}, "unit_size"),
        ({"tau": 1.0000001}, "tau"),
        ({"tau": -0.5}, "tau"),
        ({"tau": float("nan")}, "tau"),
        ({"redundancy": 4, "max_replicas": 3}, "max_replicas"),
        ({"max_replicas": 33}, "max_replicas"),
        ({"lease_seconds": -1}, "lease_seconds"),
        ({"lease_seconds": 7 * 24 * 3600 + 1}, "lease_seconds"),
        ({"result_dtype": "float32"}, "result_dtype"),
        ({"result_dtype": "bf16"}, "result_dtype"),
        ({"name": "n" * 201}, "name"),
    ],
)
def test_resolve_settings_names_the_invalid_field(
    registry: ModelRegistry, changes: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidArgument) as err:
        resolve_settings(dataclasses.replace(REQ, **changes), registry)  # type: ignore[arg-type]
    assert err.value.field == field
    assert err.value.message.startswith(f"{field}:")


def test_resolve_settings_refuses_a_model_without_the_kind() -> None:
    clip = ModelSpec(name="tiny-clip", dims=512, weights_sha256="00" * 32, max_seq_length=77,
                     task_kinds=("embed-image",), source="/nowhere")
    with pytest.raises(InvalidArgument) as err:
        resolve_settings(dataclasses.replace(REQ, model="tiny-clip"), ModelRegistry((clip,)))
    assert err.value.field == "model"
    assert "embed-text" in err.value.message


# ------------------------------------------------------------------ check_items


def test_check_items_accepts_good_input() -> None:
    check_items(records(["a", "b", "a"]))


def test_check_items_refuses_empty_input() -> None:
    with pytest.raises(InvalidArgument) as err:
        check_items([])
    assert err.value.field == "input"


def test_check_items_refuses_an_empty_id_naming_the_line() -> None:
    recs = [*records(["a", "b"]), InputRecord("", "c", 7)]
    with pytest.raises(InvalidArgument) as err:
        check_items(recs)
    assert err.value.field == "id"
    assert "line 7" in err.value.message


def test_check_items_refuses_duplicate_ids_naming_both_lines() -> None:
    recs = [InputRecord("x", "a", 3), InputRecord("y", "b", 4), InputRecord("x", "c", 9)]
    with pytest.raises(InvalidArgument) as err:
        check_items(recs)
    assert err.value.field == "id"
    assert "'x'" in err.value.message
    assert "line 9" in err.value.message
    assert "line 3" in err.value.message


def test_check_items_refuses_an_oversized_text_and_id() -> None:
    check_items([InputRecord("a", "x" * MAX_TEXT_BYTES, 1)])
    with pytest.raises(InvalidArgument) as err:
        check_items([InputRecord("a", "x" * (MAX_TEXT_BYTES + 1), 1)])
    assert err.value.field == "text"
    # the limit is in UTF-8 bytes, not characters
    with pytest.raises(InvalidArgument):
        check_items([InputRecord("a", "é" * (MAX_TEXT_BYTES // 2 + 1), 1)])
    with pytest.raises(InvalidArgument) as err:
        check_items([InputRecord("i" * 1025, "x", 1)])
    assert err.value.field == "id"


# ------------------------------------------------------------------ plan_job


def open_all(units: list[NewUnit], key: SigningKey) -> list[WorkUnit]:
    return [open_unit(u.blob, u.signature, key.public_key) for u in units]


def test_plan_job_computes_identical_texts_once(registry: ModelRegistry, key: SigningKey) -> None:
    texts = ["alpha", "beta", "alpha", "gamma", "beta", "alpha"]
    settings = resolve_settings(REQ, registry)
    job, units, items = plan_job("job-1", REQ, settings, records(texts), key, 1000)
    opened = open_all(units, key)
    all_texts = [t for u in opened for t in u.texts]
    assert sorted(all_texts) == ["alpha", "beta", "gamma"]
    assert job.items == 6
    assert job.unique_items == 3
    # every id is still mapped, to the slot holding its own text
    assert [i.item_id for i in items] == [f"id-{n}" for n in range(6)]
    assert [i.seq for i in items] == list(range(6))
    for item, text in zip(items, texts, strict=True):
        assert opened[item.unit_seq].texts[item.row] == text
        assert item.content_sha256 == hashlib.sha256(text.encode()).digest()
    assert items[0].row == items[2].row == items[5].row


def test_plan_job_cuts_units_by_unit_size(registry: ModelRegistry, key: SigningKey) -> None:
    req = dataclasses.replace(REQ, unit_size=3)
    settings = resolve_settings(req, registry)
    texts = [f"text {i}" for i in range(10)]
    _, units, items = plan_job("job-2", req, settings, records(texts), key, 1000)
    assert [u.rows for u in units] == [3, 3, 3, 1]
    assert [u.seq for u in units] == [0, 1, 2, 3]
    assert [u.unit_id for u in units] == [f"job-2-u{n:06d}" for n in range(4)]
    assert [(i.unit_seq, i.row) for i in items] == [(n // 3, n % 3) for n in range(10)]
    opened = open_all(units, key)
    assert [list(u.texts) for u in opened] == [texts[0:3], texts[3:6], texts[6:9], texts[9:]]


def test_duplicates_do_not_count_toward_unit_size(registry: ModelRegistry, key: SigningKey) -> None:
    req = dataclasses.replace(REQ, unit_size=2)
    settings = resolve_settings(req, registry)
    _, units, _ = plan_job("job-3", req, settings, records(["a", "a", "a", "b", "c"]), key, 1)
    assert [u.rows for u in units] == [2, 1]


def test_every_unit_is_signed_and_carries_the_settings(
    registry: ModelRegistry, key: SigningKey
) -> None:
    req = dataclasses.replace(REQ, unit_size=4, result_dtype="int8", name="my job")
    settings = resolve_settings(req, registry)
    job, units, _ = plan_job("job-4", req, settings, records([str(i) for i in range(9)]), key,
                             1234)
    assert job.name == "my job"
    assert job.settings == settings
    for unit, opened in zip(units, open_all(units, key), strict=True):
        assert opened.unit_id == unit.unit_id
        assert opened.job_id == "job-4"
        assert opened.kind == "embed-text"
        assert opened.model == DEFAULT_MODEL
        assert opened.model_sha256 == settings.model_sha256
        assert opened.dims == 384
        assert opened.result_dtype == "int8"
        assert opened.created_ms == 1234
        assert len(opened.texts) == unit.rows
        with pytest.raises(IntegrityError):
            open_unit(unit.blob, unit.signature, SigningKey.generate().public_key)


def test_plan_job_runs_the_item_checks(registry: ModelRegistry, key: SigningKey) -> None:
    settings = resolve_settings(REQ, registry)
    with pytest.raises(InvalidArgument):
        plan_job("job-5", REQ, settings, [], key, 1)
    dup = [InputRecord("a", "x", 1), InputRecord("a", "y", 2)]
    with pytest.raises(InvalidArgument):
        plan_job("job-5", REQ, settings, dup, key, 1)


def test_units_are_also_cut_by_size(registry: ModelRegistry, key: SigningKey) -> None:
    settings = resolve_settings(dataclasses.replace(REQ, unit_size=8192), registry)
    big = [f"{i:04d}" + "x" * (MAX_TEXT_BYTES - 4) for i in range(20)]
    _, units, _ = plan_job("job-6", REQ, settings, records(big), key, 1)
    assert len(units) > 1
    assert sum(u.rows for u in units) == 20
    for unit in units:
        assert len(unit.blob) <= MAX_UNIT_BYTES + 1024


def test_a_unit_of_multibyte_text_fits_one_grpc_message(
    registry: ModelRegistry, key: SigningKey
) -> None:
    # The size cut counts characters; 4-byte UTF-8 text is the worst case for the wire.
    from allmende.protocol.limits import MAX_MESSAGE_BYTES
    from allmende.v1 import allmende_pb2 as pb

    settings = resolve_settings(dataclasses.replace(REQ, unit_size=8192), registry)
    per_text = MAX_TEXT_BYTES // 4 - 2
    texts = [chr(0x1F600 + i % 64) * per_text + f"{i:02d}" for i in range(70)]
    _, units, _ = plan_job("job-7", REQ, settings, records(texts), key, 1)
    for unit in units:
        response = pb.LeaseWorkResponse(
            lease=pb.Lease(lease_id="L" * 64, deadline_unix_ms=2**62,
                           unit=pb.SignedWorkUnit(unit=unit.blob, signature=unit.signature)),
            work_remaining=True, retry_after_ms=2**31,
        )
        assert response.ByteSize() <= MAX_MESSAGE_BYTES
