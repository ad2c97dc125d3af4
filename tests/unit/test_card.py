"""Tests of the dataset card rendered from a manifest, and of per-row provenance."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from allmende.coordinator.domain.assimilate import provenance, tau_history, verified_by
from allmende.coordinator.store.records import DatasetUnit
from allmende.protocol.card import render_card, size_category


def manifest(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "job": {"id": "job-1", "name": "", "kind": "embed-text", "description": "embeddings",
                "task_category": "feature-extraction", "source": "in.jsonl", "unit_size": 4,
                "redundancy": 2, "max_replicas": 5, "tau": 0.998, "result_dtype": "float16",
                "gold_fraction": 0.02, "created_ms": 0},
        "license": "apache-2.0",
        "model": {"name": "m", "weights_sha256": "ab" * 32, "dims": 3},
        "recipe": {"pooling": "mean", "languages": []},
        "rows": 12_345, "unique_items": 12_000, "units": 4,
        "columns": {"id": "input id"}, "shards": [{"bytes": 10}], "merkle_root": "cd" * 32,
        "min_agreement": None, "verification": {"quorum": 12_345},
        "tau_history": [{"ms": 0, "tau": 0.999}, {"ms": 60_000, "tau": 0.998}],
        "coordinator_fingerprint": "ef" * 32, "created_ms": 120_000,
        "cost": {"volunteer_seconds": 5.5, "results": 8, "items_computed": 30_000,
                 "rows_accepted": 12_345, "redundancy_overhead": 2.43},
        "energy": {"wh": 1.5, "wh_per_1000_rows": 0.12, "results": 8, "results_reporting": 3,
                   "estimated": True},
    }
    return base | extra


def test_the_header_is_what_the_hub_reads() -> None:
    header = yaml.safe_load(render_card(manifest()).split("---\n")[1])
    assert header["license"] == "apache-2.0"
    assert header["pretty_name"] == "job-1"
    assert header["size_categories"] == ["10K<n<100K"]
    assert "language" not in header  # unknown languages are left out, not guessed


def test_the_prose_states_tau_changes_cost_and_estimated_energy() -> None:
    card = render_card(manifest())
    assert "from 1970-01-01 00:01:00 UTC: 0.998" in card
    assert "volunteer compute time: 5.5 s" in card
    assert "estimated from power times time" in card
    assert "lowest agreement of a quorum row: n/a" in card


@pytest.mark.parametrize(
    ("rows", "category"),
    [(0, "n<1K"), (999, "n<1K"), (1000, "1K<n<10K"), (999_999, "100K<n<1M"),
     (10**9, "n>100M")],
)
def test_size_categories(rows: int, category: str) -> None:
    assert size_category(rows) == category


def test_provenance_never_makes_up_an_agreement() -> None:
    def unit(replicas: int, gold: int, agreement: float = 1.0) -> DatasetUnit:
        return DatasetUnit("u", b"", b"", "float16", replicas, agreement, 0.999, gold)

    assert verified_by(2, 0) == "quorum" and verified_by(1, 3) == "solo+gold"
    assert verified_by(1, 0) == "solo"
    solo = provenance(unit(1, 2))
    assert (solo.verified_by, solo.agreement, solo.gold_passed) == ("solo+gold", None, 2)
    assert provenance(unit(3, 0, 0.9991)).agreement == 0.9991


def test_tau_history_starts_with_the_first_tau() -> None:
    assert tau_history(5, 0.999, []) == [{"ms": 5, "tau": 0.999}]
    assert tau_history(5, 0.99, [(9, 0.999, 0.995), (12, 0.995, 0.99)]) == [
        {"ms": 5, "tau": 0.999}, {"ms": 9, "tau": 0.995}, {"ms": 12, "tau": 0.99}]
