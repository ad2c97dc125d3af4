"""Recompute a random sample of a dataset's rows with its pinned model and compare them with
the rows the dataset holds, column by column, as the kind's declaration says (the quorum's
own comparison, at the manifest's tau).

The sample's inputs are read from the dataset's input columns that the kind names
(`KindSpec.inputs`; images, which datasets do not hold, from the files the researcher
supplies, matched by id and checked by sha256: recompute_images.py), its result columns
are read back through `ResultColumn.read` (the inverse of what the writer stored), and the
recomputed rows travel through the job's wire rounding (fp16 or int8) first, as a
volunteer's would."""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from allmende.protocol.errors import FailedPrecondition, InvalidArgument
from allmende.protocol.kinds.compute import Computers
from allmende.protocol.models import ModelRegistry
from allmende.research.folder import read_manifest, read_rows, shards, total_rows
from allmende.research.pinned import DatasetModel, dataset_model, needs_model_dir
from allmende.research.pinned import computers as make
from allmende.research.recompute_images import ImageMismatch, ImageRows, select
from allmende.research.supplied import image_files


@dataclass(frozen=True)
class Disagreement:
    id: str
    column: str
    measure: float  # the column's measure (cosine, 1 - |difference|, label equality)
    threshold: float


@dataclass(frozen=True)
class RecomputeReport:
    kind: str
    model: str
    tau: float
    rows_total: int
    rows_checked: int
    seed: int
    lowest_agreement: float  # of the kind's agreement column (1.0 when nothing was checked)
    measure: str  # what lowest_agreement measures
    lowest_id: str
    disagreements: list[Disagreement] = field(default_factory=list)
    # Sampled rows not recomputed: rows of an image kind whose image was not supplied
    # (`--images`; a URL row's image is not in the dataset, and fetching it again may give
    # other bytes than the volunteers got).
    rows_skipped: int = 0
    # Sampled rows whose supplied image is not the one the row was computed from (its
    # sha256 differs from the row's): not recomputed, and not a disagreement of the model.
    image_mismatches: list[ImageMismatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.disagreements and not self.image_mismatches


def sample_size(total: int, fraction: float | None, rows: int | None) -> int:
    """How many rows to recompute: a fraction of them (at least one), or a count (at most
    all of them). InvalidArgument names the flag for values out of range."""
    if (fraction is None) == (rows is None):
        raise InvalidArgument("--recompute", "either --recompute FRACTION or --recompute-rows N")
    if fraction is not None:
        if not 0.0 < fraction <= 1.0 or math.isnan(fraction):
            raise InvalidArgument("--recompute", f"a fraction in (0, 1], got {fraction}")
        return min(total, max(1, math.ceil(fraction * total)))
    assert rows is not None
    if rows < 1:
        raise InvalidArgument("--recompute-rows", f"a number of rows >= 1, got {rows}")
    return min(total, rows)


def recompute(
    folder: Path,
    fraction: float | None = None,
    rows: int | None = None,
    computers: Computers | None = None,
    seed: int | None = None,
    progress: Callable[[int], None] | None = None,
    registry: ModelRegistry | None = None,
    images: Sequence[Path] | None = None,
    model_dir: Path | None = None,
    device: str = "cpu",
    batch_size: int = 64,
) -> RecomputeReport:
    """Recompute a sample of `folder`'s rows. The folder's signature and checksums are the
    caller's to check first (verify_folder); this checks what the rows say. `registry`:
    where the pinned model is looked up (this install's models unless given); `model_dir`:
    the model's folder instead, checked against the dataset's pin. `images`: the job's
    input files (research/supplied.py) for kinds that take images; sampled rows of such
    kinds whose image is not supplied are skipped. `computers` (else made for `device`
    and `batch_size`) must know the model."""
    manifest = read_manifest(folder)
    parts = shards(folder, manifest)
    total = total_rows(parts)
    count = sample_size(total, fraction, rows)
    if model_dir is None and count:
        needs_model_dir(manifest, registry)
    pinned = dataset_model(manifest, registry, model_dir)
    if images is not None and not pinned.kind.takes_images:
        raise InvalidArgument(
            "--images",
            f"a dataset whose rows take images; {pinned.kind.name} rows take "
            f"{', '.join(pinned.kind.inputs)}",
        )
    files = image_files(images) if images else []
    seed = secrets.randbelow(2**31 - 1) + 1 if seed is None else seed
    positions = np.sort(np.random.default_rng(seed).choice(total, size=count, replace=False))
    result_columns = [col.name for col, _, _ in pinned.shape.columns]
    chosen = ImageRows(positions, {}, 0, [])
    if pinned.kind.takes_images and count:
        chosen = select(pinned, parts, positions, files)
        positions, count = chosen.positions, int(chosen.positions.size)
    if count == 0:  # nothing to recompute, no model to load
        empty = np.zeros((0, pinned.shape.width), dtype=np.float32)
        return _with(_compare(pinned, [], empty, empty, total, seed), chosen)
    texts = [name for name in pinned.kind.inputs if name == "text"]
    values = read_rows(parts, positions, ["id", *texts, *result_columns])
    ids = [str(i) for i in values["id"]]
    stored = pinned.shape.read({name: values[name] for name in result_columns})
    if computers is None:
        computers = make(pinned.registry, device=device, batch_size=batch_size)
    fresh = pinned.shape.rounded(
        computers.run(
            pinned.kind.name,
            pinned.model.name,
            _texts(pinned, values, len(ids)),
            progress,
            images=[chosen.images[i] for i in ids] if pinned.kind.takes_images else (),
        )
    )
    return _with(_compare(pinned, ids, stored, fresh, total, seed), chosen)


def _with(report: RecomputeReport, chosen: ImageRows) -> RecomputeReport:
    return replace(report, rows_skipped=chosen.skipped, image_mismatches=chosen.mismatches)


def _texts(pinned: DatasetModel, values: dict[str, list[object]], count: int) -> list[str]:
    """The texts the kind's compute class takes: the dataset's `text` column for kinds
    that read text, empty strings for the others (as their units carry)."""
    other = [name for name in pinned.kind.inputs if name not in ("text", "image")]
    if other:
        raise FailedPrecondition(
            f"recomputing {pinned.kind.name} rows needs inputs {pinned.kind.inputs}; this "
            "version recomputes kinds that take text and images"
        )
    if not pinned.kind.takes_text:
        return [""] * count
    return ["" if v is None else str(v) for v in values["text"]]


def _compare(
    pinned: DatasetModel,
    ids: list[str],
    stored: np.ndarray,
    fresh: np.ndarray,
    total: int,
    seed: int,
) -> RecomputeReport:
    shape = pinned.shape
    found: list[tuple[int, int, Disagreement]] = []
    lowest, lowest_row, measure_name = 1.0, -1, "agreement"
    for order, (col, measure, ok) in enumerate(shape.by_column(stored, fresh, pinned.tau)):
        limit = col.threshold(pinned.tau)
        found += [
            (int(row), order, Disagreement(ids[row], col.name, float(measure[row]), limit))
            for row in np.flatnonzero(~ok)
        ]
        if col.name == shape.agreement and measure.size:
            lowest_row = int(np.argmin(measure))
            lowest, measure_name = float(measure[lowest_row]), col.measure_name
    found.sort(key=lambda entry: entry[:2])
    return RecomputeReport(
        kind=pinned.kind.name,
        model=pinned.model.name,
        tau=pinned.tau,
        rows_total=total,
        rows_checked=len(ids),
        seed=seed,
        lowest_agreement=lowest,
        measure=measure_name,
        lowest_id=ids[lowest_row] if lowest_row >= 0 else "",
        disagreements=[entry[2] for entry in found],
    )
