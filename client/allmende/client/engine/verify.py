"""Checks on a leased unit before any of it is used.

Every unit's signature must verify over the exact bytes received, and the unit must name a
task kind this client knows and a model and weights hash from the local registry. A served
model the registry lacks is fetched first (model_cache.py), after the signature checked out.
A unit with URL rows is refused by a volunteer that did not opt in to fetching. A unit
that fails is handed back with the reason.
"""

from __future__ import annotations

from collections.abc import Callable

from allmende.protocol.errors import IntegrityError
from allmende.protocol.kinds import KINDS, VECTOR_DTYPES
from allmende.protocol.models import ModelRegistry
from allmende.protocol.wire import WorkUnit, open_unit
from allmende.v1 import allmende_pb2 as pb


class UrlsNotWanted(IntegrityError):
    """A unit with URL rows for a volunteer that does not fetch them."""


def check_unit(
    lease: pb.Lease,
    coordinator_key: bytes,
    registry: ModelRegistry,
    ensure_model: Callable[[str, str], None] | None = None,
    fetch_urls: bool = False,
) -> WorkUnit:
    """Verify signature, then that we know the task kind, model and weights hash.
    `ensure_model(name, pin)` fetches a served model the registry lacks. A unit with rows
    to fetch from URLs is refused unless the volunteer opted in (`fetch_urls`)."""
    blob = lease.unit.unit
    unit = open_unit(blob, lease.unit.signature, coordinator_key)
    if unit.lease_id and unit.lease_id != lease.lease_id:
        raise IntegrityError(f"unit was signed for lease {unit.lease_id[:16]}, not this one")
    kind = KINDS.get(unit.kind)
    if kind is None:
        raise IntegrityError(f"unknown task kind {unit.kind!r}")
    if ensure_model is not None:
        ensure_model(unit.model, unit.model_sha256)
    spec = registry.get(unit.model)
    if unit.model_sha256 != spec.weights_sha256:
        raise IntegrityError(
            f"model {unit.model} weights hash {unit.model_sha256[:16]}… is not the pinned "
            f"{spec.weights_sha256[:16]}…"
        )
    if unit.kind not in spec.task_kinds or unit.dims != kind.vector_dims(spec):
        raise IntegrityError(f"model {unit.model} does not produce {unit.dims}-d {unit.kind}")
    if unit.result_dtype not in VECTOR_DTYPES:
        raise IntegrityError(f"unsupported result dtype {unit.result_dtype!r}")
    if not unit.texts:
        raise IntegrityError("unit has no inputs")
    wanted = len(unit.texts) if kind.takes_images else 0
    all_urls = bool(unit.urls) and all(unit.urls)  # may come without (empty) images
    if len(unit.images) != wanted and not (all_urls and not unit.images):
        raise IntegrityError(
            f"a {unit.kind} unit of {len(unit.texts)} rows carries {wanted} images, "
            f"this one {len(unit.images)}"
        )
    if any(unit.urls):
        check_urls(unit, fetch_urls)
    return unit


def check_urls(unit: WorkUnit, fetch_urls: bool) -> None:
    """A unit with URL rows: one URL or one image per row, and only for a volunteer that
    opted in (it never fetches otherwise)."""
    if not fetch_urls:
        raise UrlsNotWanted(
            "the unit has rows to fetch from URLs and this volunteer did not opt in to "
            "fetching (--fetch-urls); the coordinator should not have sent it"
        )
    if not KINDS[unit.kind].takes_images or len(unit.urls) != len(unit.texts):
        raise IntegrityError(
            f"a {unit.kind} unit of {len(unit.texts)} rows carries {len(unit.urls)} URLs"
        )
    if any(url and image for url, image in zip(unit.urls, unit.images, strict=False)):
        raise IntegrityError("a row of the unit has both an image and a URL")


def unit_id_hint(lease: pb.Lease) -> str:
    """The unit id from an unverified unit, for messages only."""
    message = pb.WorkUnit()
    try:
        message.ParseFromString(lease.unit.unit)
    except Exception:
        return "(unreadable unit)"
    return message.unit_id[:96] or "(no id)"
