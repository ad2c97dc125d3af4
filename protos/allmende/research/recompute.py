"""Recompute a random sample of a dataset's rows with its pinned model and compare them with
the rows the dataset holds, column by column, as the kind's declaration says (the quorum's
own comparison, at the manifest's tau).

The sample's inputs are read from the dataset's input columns that the kind names
(`KindSpec.inputs`), its result columns are read back through `ResultColumn.read` (the
inverse of what the writer stored), and the recomputed rows travel through the job's wire
rounding (fp16 or int8) first, as a volunteer's would."""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from allmende.protocol.errors import FailedPrecondition, InvalidArgument
from allmende.protocol.kinds.compute import Computers
from allmende.protocol.models import ModelRegistry
from allmende.research.folder import read_manifest, read_rows, schema_names, shards, total_rows
from allmende.research.pinned import DatasetModel, dataset_model


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
    # Sampled rows not recomputed: rows of an image kind with a `url` (their image is not
    # in the dataset, and fetching it again may give other bytes than the volunteers got).
    rows_skipped: int = 0

    @property
    def ok(self) -> bool:
        return not self.disagreements


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
) -> RecomputeReport:
    """Recompute a sample of `folder`'s rows. The folder's signature and checksums are the
    caller's to check first (verify_folder); this checks what the rows say. `registry`:
    where the pinned model is looked up (this install's models unless given)."""
    manifest = read_manifest(folder)
    parts = shards(folder, manifest)
    total = total_rows(parts)
    count = sample_size(total, fraction, rows)
    pinned = dataset_model(manifest, registry)
    seed = secrets.randbelow(2**31 - 1) + 1 if seed is None else seed
    positions = np.sort(np.random.default_rng(seed).choice(total, size=count, replace=False))
    result_columns = [col.name for col, _, _ in pinned.shape.columns]
    skipped = 0
    if pinned.kind.takes_images and "url" in schema_names(parts) and count:
        urls = read_rows(parts, positions, ["url"])["url"]
        fetched = np.asarray([u is not None for u in urls], dtype=bool)
        skipped, positions = int(fetched.sum()), positions[~fetched]
        count = int(positions.size)
    if count == 0:  # nothing to recompute, no model to load
        empty = np.zeros((0, pinned.shape.width), dtype=np.float32)
        return replace(_compare(pinned, [], empty, empty, total, seed), rows_skipped=skipped)
    values = read_rows(parts, positions, ["id", *pinned.kind.inputs, *result_columns])
    stored = pinned.shape.read({name: values[name] for name in result_columns})
    if computers is None:
        from allmende.research.pinned import computers as make

        computers = make()
    fresh = pinned.shape.rounded(
        computers.run(pinned.kind.name, pinned.model.name, _inputs(pinned, values), progress)
    )
    report = _compare(pinned, [str(i) for i in values["id"]], stored, fresh, total, seed)
    return replace(report, rows_skipped=skipped)


def _inputs(pinned: DatasetModel, values: dict[str, list[object]]) -> list[str]:
    """What the kind's compute class takes, from the dataset's input columns. Compute classes
    take one list of texts today; a kind with other inputs (images by URI or bytes) gets its
    columns here when its compute class takes them."""
    if len(pinned.kind.inputs) != 1:
        raise FailedPrecondition(
            f"recomputing {pinned.kind.name} rows needs inputs {pinned.kind.inputs}; this "
            "version recomputes kinds with one text input"
        )
    return ["" if v is None else str(v) for v in values[pinned.kind.inputs[0]]]


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
