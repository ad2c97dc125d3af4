"""Turning a job request and its input items into a signed, deduplicated set of work units."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from allmende.coordinator.store.records import JobSettings, NewItem, NewJob, NewUnit
from allmende.protocol.errors import InvalidArgument
from allmende.protocol.input_urls import url_problem
from allmende.protocol.kinds import (
    DEFAULT_KIND,
    VECTOR_DTYPES,
    ResultShape,
    check_model_for_kind,
    get_kind,
)
from allmende.protocol.kinds.base import KindSpec, estimate_tokens
from allmende.protocol.kinds.embed_text import EMBED_TEXT
from allmende.protocol.limits import MAX_ID_CHARS, MAX_IMAGE_BYTES, MAX_TEXT_BYTES
from allmende.protocol.models import ModelRegistry
from allmende.protocol.signing import SigningKey
from allmende.protocol.wire import WorkUnit, sign_unit

DEFAULT_REDUNDANCY = 2
DEFAULT_UNIT_SIZE = 256
DEFAULT_TAU = 0.999
DEFAULT_LEASE_SECONDS = 600
DEFAULT_GOLD_FRACTION = 0.02
MAX_GOLD_FRACTION = 0.5
MAX_REDUNDANCY = 16
MAX_UNIT_SIZE = 8192
MAX_REPLICAS = 32
MAX_LEASE_SECONDS = 7 * 24 * 3600
# Units are also cut by size so that one work unit always fits in one gRPC message.
MAX_UNIT_BYTES = 4 * 1024 * 1024
MAX_NAME_CHARS = 200
# A dataset licence: the Hub's identifiers (cc-by-4.0, apache-2.0, odc-by, other, ...).
LICENSE_PATTERN = re.compile(r"[a-z0-9][a-z0-9.+-]{0,63}")


@dataclass(frozen=True)
class JobRequest:
    name: str = ""
    kind: str = DEFAULT_KIND
    model: str = ""
    redundancy: int = 0
    unit_size: int = 0
    tau: float = 0.0
    max_replicas: int = 0
    lease_seconds: int = 0
    result_dtype: str = ""
    source_name: str = ""
    gold_fraction: float | None = None  # None: the default
    # The keep rule's parameters as given (e.g. {"keep_languages": "de,en"}), checked
    # against the kind's declaration.
    rule: Mapping[str, str] = field(default_factory=dict)
    license: str = ""  # '' for unknown (see LICENSE_PATTERN)


@dataclass(frozen=True)
class InputRecord:
    item_id: str
    text: str
    line: int
    # Image kinds: the image file's bytes (b'': a file of 0 bytes; None: no image given).
    image: bytes | None = None
    url: str = ""  # image kinds: where volunteers fetch the image (instead of `image`)
    # Image kinds: where an image given by its bytes came from (recorded, never fetched).
    source_url: str = ""


def resolve_settings(req: JobRequest, registry: ModelRegistry) -> JobSettings:
    """Fill defaults and validate every field of a job request."""
    kind = get_kind(req.kind)
    if not req.model:
        raise InvalidArgument("model", "a model name")
    model = registry.get(req.model)
    check_model_for_kind(kind, model)
    redundancy = req.redundancy or DEFAULT_REDUNDANCY
    if not 1 <= redundancy <= MAX_REDUNDANCY:
        raise InvalidArgument("redundancy", f"1 to {MAX_REDUNDANCY}, got {redundancy}")
    unit_size = req.unit_size or DEFAULT_UNIT_SIZE
    if not 1 <= unit_size <= MAX_UNIT_SIZE:
        raise InvalidArgument("unit_size", f"1 to {MAX_UNIT_SIZE}, got {unit_size}")
    tau = req.tau or DEFAULT_TAU
    if not 0.0 < tau <= 1.0:
        raise InvalidArgument("tau", f"a cosine threshold in (0, 1], got {tau}")
    max_replicas = req.max_replicas or min(redundancy + 3, MAX_REPLICAS)
    if not redundancy <= max_replicas <= MAX_REPLICAS:
        raise InvalidArgument(
            "max_replicas", f"{redundancy} (the redundancy) to {MAX_REPLICAS}, got {max_replicas}"
        )
    lease_seconds = req.lease_seconds or DEFAULT_LEASE_SECONDS
    if not 1 <= lease_seconds <= MAX_LEASE_SECONDS:
        raise InvalidArgument("lease_seconds", f"1 to {MAX_LEASE_SECONDS}, got {lease_seconds}")
    dtype = req.result_dtype or "float16"
    if dtype not in VECTOR_DTYPES:
        raise InvalidArgument("result_dtype", f"one of {list(VECTOR_DTYPES)}, got {dtype!r}")
    gold = DEFAULT_GOLD_FRACTION if req.gold_fraction is None else req.gold_fraction
    if not 0.0 <= gold <= MAX_GOLD_FRACTION:
        raise InvalidArgument("gold_fraction", f"0 to {MAX_GOLD_FRACTION}, got {gold}")
    if len(req.name) > MAX_NAME_CHARS:
        raise InvalidArgument("name", f"at most {MAX_NAME_CHARS} characters")
    rule = kind.parse_rule(req.rule, model)
    if req.license and not LICENSE_PATTERN.fullmatch(req.license):
        raise InvalidArgument(
            "license",
            "a licence identifier as the Hugging Face Hub spells it (lowercase letters, "
            f"digits, '.', '-', '+'; e.g. cc-by-4.0, apache-2.0), got {req.license[:80]!r}",
        )
    return JobSettings(
        kind=kind.name,
        model=model.name,
        model_sha256=model.weights_sha256,
        dims=kind.vector_dims(model),
        redundancy=redundancy,
        unit_size=unit_size,
        tau=tau,
        max_replicas=max_replicas,
        lease_seconds=lease_seconds,
        result_dtype=dtype,
        gold_fraction=gold,
        rule=json.dumps(rule, sort_keys=True, separators=(",", ":")) if rule else "",
        license=req.license,
    )


def result_shape(settings: JobSettings, registry: ModelRegistry) -> ResultShape:
    """The result columns of a job, as its kind declares them for its model and dtype."""
    return get_kind(settings.kind).shape(registry.get(settings.model), settings.result_dtype)


def job_rule(settings: JobSettings) -> dict[str, object]:
    """The job's parsed keep rule ({} for none)."""
    loaded: dict[str, object] = json.loads(settings.rule) if settings.rule else {}
    return loaded


def check_items(records: list[InputRecord], kind: KindSpec = EMBED_TEXT) -> None:
    """Refuse empty input, empty or duplicate ids, oversized texts, and inputs the kind
    does not take (an image kind's row needs its image; a text kind's has none); name the
    line."""
    if not records:
        raise InvalidArgument("input", "at least one item, got none")
    first_seen: dict[str, int] = {}
    for rec in records:
        where = f"line {rec.line}" if rec.line else f"item {rec.item_id!r}"
        if not rec.item_id:
            raise InvalidArgument("id", f"a non-empty id ({where})")
        if len(rec.item_id) > MAX_ID_CHARS:
            raise InvalidArgument("id", f"at most {MAX_ID_CHARS} characters ({where})")
        if len(rec.text.encode("utf-8", "surrogatepass")) > MAX_TEXT_BYTES:
            raise InvalidArgument("text", f"at most {MAX_TEXT_BYTES} bytes of UTF-8 ({where})")
        _check_inputs(rec, kind, where)
        if rec.item_id in first_seen:
            raise InvalidArgument(
                "id",
                f"unique ids; {rec.item_id!r} on line {rec.line} repeats line "
                f"{first_seen[rec.item_id]}",
            )
        first_seen[rec.item_id] = rec.line


def _check_inputs(rec: InputRecord, kind: KindSpec, where: str) -> None:
    """What one item carries against what the kind takes (its `inputs`)."""
    if not kind.takes_images:
        if rec.image is not None or rec.url or rec.source_url:
            field = "image" if rec.image is not None else "url" if rec.url else "source_url"
            raise InvalidArgument(field, f"no {field}: {kind.name} takes text only ({where})")
        return
    if rec.image is not None and rec.url:
        raise InvalidArgument("image", f"an image or a url, not both ({where})")
    if rec.image is None and not rec.url:
        raise InvalidArgument("image", f"the item's image ({kind.name} rows are images; {where})")
    if rec.url:
        # A row the volunteers fetch (those that opted in, see domain/leasing.py): checked
        # here for its form only; its bytes and status come from the volunteers.
        _check_url("url", rec.url, where)
        if rec.source_url:
            raise InvalidArgument("source_url", f"only with an image's bytes ({where})")
        if not kind.takes_text and rec.text:
            raise InvalidArgument("text", f"no text: {kind.name} takes an image only ({where})")
        return
    if rec.source_url:
        _check_url("source_url", rec.source_url, where)
    size = len(rec.image or b"")
    if size > MAX_IMAGE_BYTES:
        raise InvalidArgument("image", f"at most {MAX_IMAGE_BYTES} bytes, got {size} ({where})")
    # A 0-byte image is not refused: it is a row whose status says `empty`, as a volunteer
    # reports it (an input file may hold one, and its row stays in the dataset).
    if not kind.takes_text and rec.text:
        raise InvalidArgument("text", f"no text: {kind.name} takes an image only ({where})")


def _check_url(field: str, url: str, where: str) -> None:
    problem = url_problem(url)
    if problem:
        raise InvalidArgument(field, f"{problem} ({where})")


def new_job_id() -> str:
    return "job-" + uuid.uuid4().hex[:12]


def plan_job(
    job_id: str,
    req: JobRequest,
    settings: JobSettings,
    records: list[InputRecord],
    key: SigningKey,
    now_ms: int,
) -> tuple[NewJob, list[NewUnit], list[NewItem]]:
    """Deduplicate rows by the sha256 of the kind's inputs (identical images, and identical
    URLs, are computed once), cut units by rows and bytes, sign each one.

    Unique texts are ordered by an estimate of their token count before they are cut into
    units, so each unit holds texts of similar length and a volunteer's batches need little
    padding: on CPU this is worth ~25 % of throughput against units cut in input order.
    Items keep input order.
    """
    kind = get_kind(settings.kind)
    check_items(records, kind)
    first: dict[bytes, int] = {}  # content hash -> index into `unique`
    unique: list[tuple[str, bytes, str, int]] = []  # (text, image, url, bytes)
    digests: list[bytes] = []
    for rec in records:
        text = rec.text if kind.takes_text else ""
        image = rec.image or b""
        digest = kind.content_digest(text, image, rec.url)
        digests.append(digest)
        if digest not in first:
            first[digest] = len(unique)
            # A URL row travels as its URL: its bytes count like an image's.
            size = len(text.encode("utf-8", "surrogatepass")) + len(image) + len(rec.url)
            unique.append((text, image, rec.url, size))
    order = sorted(range(len(unique)), key=lambda i: (estimate_tokens(unique[i][0]), unique[i][3]))
    slot_of: list[tuple[int, int]] = [(0, 0)] * len(unique)
    unit_rows: list[list[tuple[str, bytes, str]]] = [[]]
    unit_bytes = 0
    for index in order:
        text, image, url, size = unique[index]
        size += 24  # protobuf field overhead (a text, an image and a url field)
        if unit_rows[-1] and (
            len(unit_rows[-1]) >= settings.unit_size or unit_bytes + size > MAX_UNIT_BYTES
        ):
            unit_rows.append([])
            unit_bytes = 0
        unit_rows[-1].append((text, image, url))
        unit_bytes += size
        slot_of[index] = (len(unit_rows) - 1, len(unit_rows[-1]) - 1)
    items = [
        NewItem(seq, rec.item_id, *slot_of[first[digest]], digest, rec.url or rec.source_url)
        for seq, (rec, digest) in enumerate(zip(records, digests, strict=True))
    ]
    units = []
    for seq, rows in enumerate(unit_rows):
        texts = [text for text, _, _ in rows]
        # `urls` only in units that hold a URL row (the wire's contract: '' beside bytes).
        urls = tuple(url for _, _, url in rows) if any(url for _, _, url in rows) else ()
        unit = WorkUnit(
            unit_id=f"{job_id}-u{seq:06d}",
            job_id=job_id,
            kind=settings.kind,
            model=settings.model,
            model_sha256=settings.model_sha256,
            texts=tuple(texts),
            dims=settings.dims,
            result_dtype=settings.result_dtype,
            created_ms=now_ms,
            images=tuple(image for _, image, _ in rows) if kind.takes_images else (),
            urls=urls,
        )
        blob, signature = sign_unit(key, unit)
        units.append(NewUnit(unit.unit_id, seq, len(texts), blob, signature))
    job = NewJob(
        job_id=job_id,
        name=req.name or req.source_name or job_id,
        settings=settings,
        source_name=req.source_name,
        items=len(records),
        unique_items=len(unique),
        created_ms=now_ms,
        fetch_rows=sum(1 for rec in records if rec.url),
        url_items=sum(1 for rec in records if rec.url or rec.source_url),
    )
    return job, units, items
