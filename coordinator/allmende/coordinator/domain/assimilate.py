"""The assimilator: canonical rows of a validated job → Parquet shards + signed manifest.

Shards are written into a temporary folder and renamed into place, so a crash leaves either
no dataset or a whole one; the job is marked complete only after the rename. After a key
rotation the folder also holds the rotation chain (key-chain.json), so that researchers who
pinned an earlier coordinator key can verify it offline.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from allmende.coordinator.domain.jobs import job_rule
from allmende.coordinator.store.base import Store
from allmende.coordinator.store.records import JobRecord
from allmende.protocol.errors import InvalidArgument
from allmende.protocol.kinds import ResultShape, get_kind
from allmende.protocol.kinds.columns import (
    HashColumn,
    IntColumn,
    LabelColumn,
    Layout,
    ResultColumn,
    StatusColumn,
    VectorColumn,
)
from allmende.protocol.manifest import (
    FORMAT,
    MANIFEST_NAME,
    SIGNATURE_NAME,
    encode_manifest,
    merkle_root,
    sha256_file,
    sign_manifest,
)
from allmende.protocol.models import ModelRegistry
from allmende.protocol.rotation import CHAIN_NAME, encode_chain
from allmende.protocol.signing import SigningKey
from allmende.protocol.wire import decode_envelope, decode_unit

ROWS_PER_SHARD = 100_000


def _arrow_type(column: ResultColumn, layout: Layout) -> pa.DataType:
    if isinstance(column, VectorColumn):
        return pa.list_(pa.float32(), layout.width)
    if isinstance(column, LabelColumn | StatusColumn | HashColumn):
        return pa.string()  # label names; digests as hex
    if isinstance(column, IntColumn):
        return pa.int32()
    return pa.float32()


def _schema(shape: ResultShape, keep: bool, text: bool) -> pa.Schema:
    fields = [
        pa.field("id", pa.string(), nullable=False),
        *([pa.field("text", pa.string(), nullable=False)] if text else []),
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
        pa.field("replicas", pa.int16(), nullable=False),
        pa.field("agreement", pa.float32(), nullable=False),
    ]
    return pa.schema(fields)


class _ShardWriter:
    """Rows of the dataset, written in shards of ROWS_PER_SHARD: the inputs, the result
    columns as the kind declares them, `keep` where the kind has a rule (applied here, to
    the agreed values), and provenance."""

    def __init__(
        self,
        folder: Path,
        shape: ResultShape,
        keep: Callable[..., np.ndarray] | None,
        text: bool = True,
    ) -> None:
        self.folder = folder
        self.shape = shape
        self.keep = keep
        self.text = text  # the kind takes text: the dataset has a `text` column
        self.schema = _schema(shape, keep is not None, text)
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
        unit_id: str,
        replicas: int,
        agreement: float,
    ) -> None:
        c = self._columns
        c["id"].append(item_id)
        c["text"].append(text)
        c["content_sha256"].append(content.hex())
        c["unit_id"].append(unit_id)
        c["replicas"].append(replicas)
        c["agreement"].append(agreement)
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
            pa.array(c["content_sha256"], pa.string()),
            pa.array(c["unit_id"], pa.string()),
            pa.array(c["replicas"], pa.int16()),
            pa.array(c["agreement"], pa.float32()),
        ]
        table = pa.Table.from_arrays(arrays, schema=self.schema)
        name = f"part-{len(self.shards):05d}.parquet"
        path = self.folder / name
        pq.write_table(table, path, compression="zstd")
        self.shards.append(
            {
                "name": name,
                "rows": table.num_rows,
                "bytes": path.stat().st_size,
                "sha256": sha256_file(path),
            }
        )
        self._columns = {name: [] for name in _ROW_FIELDS}
        self._rows = []


_ROW_FIELDS = ("id", "text", "content_sha256", "unit_id", "replicas", "agreement")


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
    units: dict[str, tuple[tuple[str, ...], np.ndarray, int, float]] = {}
    for unit in store.dataset_units(job.job_id):
        content = decode_unit(unit.blob)
        matrix = shape.decode(unit.payload, len(content.texts))
        units[unit.unit_id] = (content.texts, matrix, unit.replicas, unit.agreement)
    writer = _ShardWriter(staging, shape, keeper, kind.takes_text)
    rows = 0
    min_agreement = 1.0
    for item in store.dataset_items(job.job_id):
        texts, matrix, replicas, agreement = units[item.unit_id]
        writer.add(
            item.item_id,
            texts[item.row],
            matrix[item.row],
            item.content_sha256,
            item.unit_id,
            replicas,
            agreement,
        )
        min_agreement = min(min_agreement, agreement)
        rows += 1
    writer.flush()
    manifest = {
        "format": FORMAT,
        "job": {
            "id": job.job_id,
            "name": job.name,
            "kind": s.kind,
            "source": job.source_name,
            "created_ms": job.created_ms,
            "redundancy": s.redundancy,
            "unit_size": s.unit_size,
            "tau": s.tau,
            "max_replicas": s.max_replicas,
            "result_dtype": s.result_dtype,
            **({"rule": rule} if kind.rule else {}),
        },
        "model": {"name": s.model, "weights_sha256": s.model_sha256, "dims": s.dims},
        "rows": rows,
        **({"rows_kept": writer.kept} if keep is not None else {}),
        "unique_items": job.unique_items,
        "units": len(units),
        "columns": _column_notes(shape, keep is not None, rule, kind.inputs),
        "shards": writer.shards,
        "merkle_root": merkle_root([shard["sha256"] for shard in writer.shards]),
        "min_agreement": min_agreement if rows else 0.0,
        "coordinator_fingerprint": key.fingerprint,
        "created_ms": now_ms,
        "energy": job_energy(store.result_envelopes(job.job_id), rows),
    }
    manifest_bytes = encode_manifest(manifest)
    signature = sign_manifest(key, manifest_bytes)
    (staging / MANIFEST_NAME).write_bytes(manifest_bytes)
    (staging / SIGNATURE_NAME).write_bytes(signature)
    if key_chain:
        (staging / CHAIN_NAME).write_bytes(encode_chain(key_chain))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    store.complete_job(job.job_id, manifest_bytes, signature, now_ms)
    return target


def _column_notes(
    shape: ResultShape, keep: bool, rule: Mapping[str, Any], inputs: Sequence[str] = ("text",)
) -> dict[str, str]:
    """What each dataset column holds, from the kind's declaration."""
    notes = {"id": "input id (string)"}
    if "text" in inputs:
        notes["text"] = "the input text"
    for column, layout, _ in shape.columns:
        if isinstance(column, VectorColumn):
            kind = f"fixed_size_list<float32>[{layout.width}]"
            stored = f", stored as {layout.dtype}"
        elif isinstance(column, LabelColumn):
            kind, stored = "string", f", one of the model's {len(shape.model.labels)} labels"
        elif isinstance(column, StatusColumn):
            kind, stored = "string", f", one of {', '.join(column.labels)}"
        elif isinstance(column, HashColumn):
            kind, stored = "string", f", {column.size} bytes as hex"
        elif isinstance(column, IntColumn):
            kind, stored = "int32", ""
        else:
            kind, stored = "float32", ""
        notes[column.name] = f"{kind}; {column.description}{stored}"
    if keep:
        notes["keep"] = (
            "bool; the job's rule applied by the coordinator to the agreed values "
            f"({json.dumps(dict(rule), sort_keys=True)}); every input row is kept in the "
            "dataset, filter on this column"
        )
    agreed = dict((c.name, c) for c, _, _ in shape.columns)[shape.agreement]
    notes |= {
        "content_sha256": _CONTENT_NOTES.get(tuple(inputs), _CONTENT_NOTES[("image", "text")]),
        "unit_id": "the work unit that computed the row",
        "replicas": "how many independent volunteer results agreed on the row",
        "agreement": f"lowest {agreed.measure_name} ({shape.agreement}) between agreeing "
        "replicas of the unit",
    }
    return notes


_CONTENT_NOTES = {
    ("text",): "sha256 of the text (UTF-8), hex",
    ("image",): "sha256 of the image file, hex (rows with equal values were computed once)",
    ("image", "text"): "sha256 of the text's UTF-8 length (8 bytes, big-endian), the text "
    "and the image file, hex (rows with equal values were computed once)",
}


def job_energy(envelopes: Iterable[bytes], rows: int) -> dict[str, Any]:
    """What computing the job cost, as its volunteers reported it with their results
    (energy per 1,000 items times the result's rows), every replica counted: the total in Wh,
    per 1,000 dataset rows, how many results reported it, and whether any figure was an
    estimate (power times time) rather than a GPU's own energy counter."""
    total = 0.0
    results = reporting = 0
    estimated = False
    for blob in envelopes:
        results += 1
        try:
            envelope = decode_envelope(blob)
        except InvalidArgument:  # checked when it arrived; never fail a dataset over it
            continue
        if envelope.energy_wh_per_1000 > 0:
            reporting += 1
            total += envelope.energy_wh_per_1000 * envelope.rows / 1000
            estimated = estimated or envelope.energy_estimated
    return {
        "wh": round(total, 6),
        "wh_per_1000_rows": round(total / rows * 1000, 6) if rows else 0.0,
        "results": results,
        "results_reporting": reporting,
        "estimated": estimated,
    }
