"""The assimilator: canonical rows of a validated job → Parquet shards + signed manifest.

The folder's layout is protocol/manifest.py's: `data/*.parquet`, and under `_allmende/` the
manifest, its signature, the dataset card and (after a key rotation) the rotation chain, so
that researchers who pinned an earlier coordinator key can verify it offline. Shards are
written into a temporary folder and renamed into place, so a crash leaves either no dataset
or a whole one; the job is marked complete only after the rename.

Every row says how it was verified (see `verified_by`), by how many replicas, their lowest
agreement (null where one result stood alone: nothing was compared), the gold rows its unit
passed, the tau in force when its unit was decided, and the model's weights hash. What each
column holds, in words for the manifest and card, is in dataset_columns.py.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from allmende.coordinator.domain.dataset_columns import column_notes
from allmende.coordinator.domain.dataset_cost import job_cost, job_energy
from allmende.coordinator.domain.jobs import job_rule
from allmende.coordinator.domain.publish import (
    next_version,
    published_version,
    shard_metadata,
    write_manifest,
    write_shard,
)
from allmende.coordinator.store.base import Store
from allmende.coordinator.store.records import DatasetUnit, JobRecord
from allmende.protocol.kinds import KindSpec, ResultShape, get_kind
from allmende.protocol.kinds.columns import LabelColumn, Layout, ResultColumn, VectorColumn
from allmende.protocol.kinds.exact_columns import HashColumn, IntColumn, StatusColumn
from allmende.protocol.manifest import FORMAT, merkle_root
from allmende.protocol.models import ModelRegistry, ModelSpec
from allmende.protocol.signing import SigningKey
from allmende.protocol.wire import decode_unit

__all__ = ["assimilate", "job_energy"]

ROWS_PER_SHARD = 100_000


def _arrow_type(column: ResultColumn, layout: Layout) -> pa.DataType:
    if isinstance(column, VectorColumn):
        return pa.list_(pa.float32(), layout.width)
    if isinstance(column, LabelColumn | StatusColumn | HashColumn):
        return pa.string()  # label names; digests as hex
    if isinstance(column, IntColumn):
        return pa.int32()
    return pa.float32()


def _schema(shape: ResultShape, keep: bool, text: bool = True, url: bool = False) -> pa.Schema:
    fields = [
        pa.field("id", pa.string(), nullable=False),
        *([pa.field("text", pa.string(), nullable=False)] if text else []),
        *([pa.field("url", pa.string(), nullable=True)] if url else []),
        *(
            pa.field(column.name, _arrow_type(column, layout), nullable=False)
            for column, layout, _ in shape.columns
        ),
    ]
    if keep:
        fields.append(pa.field("keep", pa.bool_(), nullable=False))
    fields += [
        pa.field("content_sha256", pa.string(), nullable=False),
        pa.field("unit_id", pa.string(), nullable=False),
        pa.field("verified_by", pa.string(), nullable=False),
        pa.field("replicas", pa.int16(), nullable=False),
        pa.field("agreement", pa.float32(), nullable=True),
        pa.field("gold_passed", pa.int16(), nullable=False),
        pa.field("tau", pa.float32(), nullable=True),
        pa.field("model_sha256", pa.string(), nullable=False),
    ]
    return pa.schema(fields)


@dataclass(frozen=True)
class Provenance:
    """How a unit's rows were verified, as its dataset rows state it."""

    unit_id: str
    verified_by: str
    replicas: int
    agreement: float | None  # None: one result, nothing compared
    gold_passed: int
    tau: float | None  # None: decided before coordinators recorded it


def verified_by(replicas: int, gold_passed: int) -> str:
    """`quorum`: independent results agreed. `solo+gold`: one result, accepted because the
    hidden gold rows of its unit agreed. `solo`: one result, unchecked (a job that asked for
    one result per unit)."""
    if replicas >= 2:
        return "quorum"
    return "solo+gold" if gold_passed > 0 else "solo"


def provenance(unit: DatasetUnit) -> Provenance:
    return Provenance(
        unit.unit_id,
        verified_by(unit.replicas, unit.gold_passed),
        unit.replicas,
        unit.agreement if unit.replicas >= 2 else None,
        unit.gold_passed,
        unit.tau,
    )


class _ShardWriter:
    """Rows of the dataset, written in shards of ROWS_PER_SHARD: the inputs, the result
    columns as the kind declares them, `keep` where the kind has a rule (applied here, to
    the agreed values), and provenance."""

    def __init__(
        self,
        folder: Path,
        shape: ResultShape,
        keep: Callable[..., np.ndarray] | None,
        metadata: dict[bytes, bytes],
        text: bool = True,
        url: bool = False,
    ) -> None:
        self.folder = folder
        self.shape = shape
        self.keep = keep
        self.metadata = metadata
        self.text = text  # the kind takes text: the dataset has a `text` column
        self.url = url  # some row has a URL: the dataset has a `url` column
        self.schema = _schema(shape, keep is not None, text, url)
        self.shards: list[dict[str, Any]] = []
        self.kept = 0
        self._columns: dict[str, list[Any]] = {name: [] for name in _ROW_FIELDS}
        self._rows: list[np.ndarray] = []

    def add(
        self,
        item_id: str,
        text: str,
        row: np.ndarray,
        content: bytes,
        p: Provenance,
        url: str = "",
    ) -> None:
        c = self._columns
        c["id"].append(item_id)
        c["text"].append(text)
        c["url"].append(url or None)
        c["content_sha256"].append(content.hex())
        c["unit_id"].append(p.unit_id)
        c["verified_by"].append(p.verified_by)
        c["replicas"].append(p.replicas)
        c["agreement"].append(p.agreement)
        c["gold_passed"].append(p.gold_passed)
        c["tau"].append(p.tau)
        c["model_sha256"].append(self.shape.model.weights_sha256)
        self._rows.append(row)
        if len(c["id"]) >= ROWS_PER_SHARD:
            self.flush()

    def flush(self) -> None:
        c = self._columns
        if not c["id"]:
            return
        matrix = np.stack(self._rows).astype(np.float32)
        values = self.shape.split(matrix)
        arrays = [pa.array(c["id"], pa.string())]
        if self.text:
            arrays.append(pa.array(c["text"], pa.string()))
        if self.url:
            arrays.append(pa.array(c["url"], pa.string()))
        for column, layout, _ in self.shape.columns:
            got = values[column.name]
            if isinstance(column, VectorColumn):
                flat = pa.array(np.ascontiguousarray(got).ravel(), type=pa.float32())
                arrays.append(pa.FixedSizeListArray.from_arrays(flat, layout.width))
            else:
                arrays.append(
                    pa.array(column.show(got, self.shape.model), _arrow_type(column, layout))
                )
        if self.keep is not None:
            kept = np.asarray(self.keep(c["text"], values), dtype=bool)
            self.kept += int(kept.sum())
            arrays.append(pa.array(kept, pa.bool_()))
        arrays += [
            pa.array(c[name], self.schema.field(name).type)
            for name in _ROW_FIELDS[3:]  # the provenance, in _schema's order
        ]
        table = pa.Table.from_arrays(arrays, schema=self.schema)
        self.shards.append(write_shard(table, self.folder, len(self.shards), self.metadata))
        self._columns = {name: [] for name in _ROW_FIELDS}
        self._rows = []


_ROW_FIELDS = (
    "id",
    "text",
    "url",
    "content_sha256",
    "unit_id",
    "verified_by",
    "replicas",
    "agreement",
    "gold_passed",
    "tau",
    "model_sha256",
)


def recipe(kind: KindSpec, model: ModelSpec, shape: ResultShape, dtype: str) -> dict[str, Any]:
    """How the rows were computed, from the model's and the kind's declarations."""
    normalised = [
        column.name
        for column, _, _ in shape.columns
        if isinstance(column, VectorColumn) and column.unit_norm
    ]
    return {
        "kind": kind.name,
        "model": model.name,
        "weights_sha256": model.weights_sha256,
        "max_seq_length": model.max_seq_length or None,
        "pooling": model.pooling,
        "normalisation": ", ".join(f"{name}: unit L2 norm" for name in normalised),
        "result_dtype": dtype,
        "languages": list(model.languages),
    }


def tau_history(
    created_ms: int, tau: float, changes: Sequence[tuple[int, float, float]]
) -> list[dict[str, Any]]:
    """The tau in force from each time on: the job's first, then every change."""
    first = changes[0][1] if changes else tau
    return [{"ms": created_ms, "tau": first}] + [{"ms": ms, "tau": new} for ms, _, new in changes]


def assimilate(
    store: Store,
    key: SigningKey,
    job: JobRecord,
    datasets_dir: Path,
    now_ms: int,
    key_chain: Sequence[tuple[bytes, bytes]] = (),
    registry: ModelRegistry | None = None,
) -> Path:
    """Write the dataset of a validated job and mark it complete. Returns its folder.

    `key_chain` is the rotation chain that leads to `key` (empty before any rotation)."""
    s = job.settings
    kind = get_kind(s.kind)
    model = (registry or ModelRegistry()).get(s.model)
    shape = kind.shape(model, s.result_dtype)
    rule = job_rule(s)
    keep = kind.keep
    keeper = None if keep is None else (lambda texts, values: keep(rule, texts, values, model))
    target = datasets_dir / job.job_id
    staging = datasets_dir / f".{job.job_id}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    units: dict[str, tuple[tuple[str, ...], np.ndarray, Provenance]] = {}
    for unit in store.dataset_units(job.job_id):
        content = decode_unit(unit.blob)
        matrix = shape.decode(unit.payload, len(content.texts))
        units[unit.unit_id] = (content.texts, matrix, provenance(unit))
    how = recipe(kind, model, shape, s.result_dtype)
    writer = _ShardWriter(
        staging,
        shape,
        keeper,
        shard_metadata(job.job_id, key.fingerprint, how),
        kind.takes_text,
        url=job.url_items > 0,
    )
    rows = 0
    agreements: list[float] = []
    verification: dict[str, int] = {}
    prior = published_version(target)
    withdrawn = {i for r in (prior or {}).get("removed", []) for i in r["ids"]}
    for item in store.dataset_items(job.job_id):
        if item.item_id in withdrawn:  # a takedown outlives re-verification
            continue
        texts, matrix, p = units[item.unit_id]
        writer.add(
            item.item_id, texts[item.row], matrix[item.row], item.content_sha256, p, item.url
        )
        if p.agreement is not None:
            agreements.append(p.agreement)
        verification[p.verified_by] = verification.get(p.verified_by, 0) + 1
        rows += 1
    writer.flush()
    cost, energy = job_cost(store.result_envelopes(job.job_id), rows)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "job": {
            "id": job.job_id,
            "name": job.name,
            "kind": s.kind,
            "description": kind.description,
            "task_category": kind.card_task,
            "source": job.source_name,
            "created_ms": job.created_ms,
            "redundancy": s.redundancy,
            "unit_size": s.unit_size,
            "tau": s.tau,
            "max_replicas": s.max_replicas,
            "result_dtype": s.result_dtype,
            "gold_fraction": s.gold_fraction,
            **({"rule": rule} if kind.rule else {}),
        },
        "license": s.license or "unknown",
        "model": {"name": s.model, "weights_sha256": s.model_sha256, "dims": s.dims},
        "recipe": how,
        "rows": rows,
        **({"rows_kept": writer.kept} if keep is not None else {}),
        "unique_items": job.unique_items,
        "units": len(units),
        "columns": column_notes(shape, keep is not None, rule, kind.inputs, job.url_items > 0),
        "shards": writer.shards,
        "merkle_root": merkle_root([shard["sha256"] for shard in writer.shards]),
        "min_agreement": min(agreements) if agreements else None,
        "verification": verification,
        "tau_history": tau_history(job.created_ms, s.tau, store.tau_changes(job.job_id)),
        "coordinator_fingerprint": key.fingerprint,
        "created_ms": now_ms,
        "cost": cost,
        "energy": energy,
        "version": next_version(target, staging, now_ms),
    }
    manifest_bytes, signature = write_manifest(staging, manifest, key, key_chain)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    store.complete_job(job.job_id, manifest_bytes, signature, now_ms)
    return target
