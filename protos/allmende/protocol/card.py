"""The dataset card: a README.md with a Hugging Face YAML header and prose, made from the
signed manifest alone, so that anyone can re-render it and see that it says what the
manifest says (the manifest also carries its sha256).

The header carries what the Hub reads (license, task_categories, size_categories, language,
configs pointing at data/*.parquet); the prose says what the dataset is, how it was made,
the recipe, the job's rules, the verification it went through, statistics, cost, versions,
known limits, how to verify, how to open and how to cite.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from allmende.protocol.manifest import DATA_DIR

_SIZES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"))
_SIZES_LARGE = ((1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"))


def size_category(rows: int) -> str:
    for bound, name in (*_SIZES, *_SIZES_LARGE):
        if rows < bound:
            return name
    return "n>100M"


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _header(m: dict[str, Any]) -> list[str]:
    recipe = m.get("recipe", {})
    lines = [
        "---",
        f"license: {m.get('license', 'unknown')}",
        f"pretty_name: {json.dumps(m['job']['name'] or m['job']['id'])}",
    ]
    task = m["job"].get("task_category")
    if task:
        lines += ["task_categories:", f"- {task}"]
    languages = recipe.get("languages") or []
    if languages:
        lines += ["language:", *(f"- {code}" for code in languages)]
    lines += [
        "size_categories:",
        f"- {size_category(int(m['rows']))}",
        "tags:",
        "- allmende",
        "- volunteer-computing",
        "configs:",
        "- config_name: default",
        "  data_files:",
        "  - split: train",
        f"    path: {DATA_DIR}/*.parquet",
        "---",
    ]
    return lines


def _cost(m: dict[str, Any]) -> list[str]:
    cost = m.get("cost", {})
    energy = m.get("energy", {})
    overhead = cost.get("redundancy_overhead")
    lines = [
        "## What it cost",
        "",
        f"- volunteer compute time: {cost.get('volunteer_seconds', 0)} s",
        f"- items computed, every replica and hidden gold row counted: "
        f"{cost.get('items_computed', 0)} in {cost.get('results', 0)} result(s)",
        f"- redundancy overhead (computed ÷ accepted): {'n/a' if overhead is None else overhead}",
    ]
    if energy.get("results_reporting"):
        mark = " (estimated from power times time on some devices)" if energy["estimated"] else ""
        lines.append(
            f"- energy: {energy['wh']} Wh ({energy['wh_per_1000_rows']} Wh per 1,000 rows), "
            f"reported by {energy['results_reporting']} of {energy['results']} results{mark}"
        )
    else:
        lines.append("- energy: not measured by any volunteer")
    return [*lines, ""]


def _verification(m: dict[str, Any]) -> list[str]:
    job = m["job"]
    counts = m.get("verification", {})
    lines = [
        "## Verification",
        "",
        "Every row carries how it was verified (`verified_by`): `quorum` (independent "
        "volunteers agreed; `replicas` of them, `agreement` the lowest pairwise agreement), "
        "`solo+gold` (one result, accepted because its unit's hidden gold rows -- known "
        "answers -- agreed; `gold_passed` says how many), `solo` (one result, unchecked: "
        "the job asked for one result per unit). `agreement` is null where one result was "
        "accepted: there was nothing to compare it with.",
        "",
    ]
    lines += [f"- {how}: {n} rows" for how, n in sorted(counts.items())]
    low = m.get("min_agreement")
    lines.append(f"- lowest agreement of a quorum row: {'n/a' if low is None else low}")
    history = m.get("tau_history", [])
    if len(history) > 1:
        lines.append("- tau changed while the job ran; each row's `tau` says the one in force:")
        lines += [f"  - from {_when(h['ms'])}: {h['tau']}" for h in history]
    else:
        lines.append(f"- tau (agreement threshold): {job['tau']} throughout")
    return [*lines, ""]


def render_card(m: dict[str, Any]) -> str:
    """The card of a manifest (without its own `card` entry, which hashes this text)."""
    job, model, recipe = m["job"], m["model"], m.get("recipe", {})
    version = m.get("version", {"number": 1, "removed": []})
    removed = version.get("removed", [])
    name = job["name"] or job["id"]
    lines = [*_header(m), "", f"# {name}", ""]
    lines += [
        f"{m['rows']} rows of `{job['kind']}` ({job.get('description', '')}) computed by "
        f"volunteers of an Allmende network from `{job['source']}`: job `{job['id']}`, "
        f"written {_when(m['created_ms'])}, version {version['number']}.",
        "",
        "## Columns",
        "",
        *(f"- `{col}`: {note}" for col, note in m["columns"].items()),
        "",
        "## How it was made",
        "",
        f"The coordinator cut the {job.get('unit_size')}-item units, leased each to "
        "volunteers, compared their results and published the agreed rows; volunteers ran "
        f"the pinned model `{model['name']}` (weights sha256 `{model['weights_sha256']}`) "
        "and refuse any other.",
        "",
        "Recipe:",
        "",
        *(f"- {key}: {value}" for key, value in sorted(recipe.items()) if value not in ("", [])),
        "",
        "## The job's rules",
        "",
        f"- redundancy {job['redundancy']} (results wanted per unit), at most "
        f"{job['max_replicas']} replicas before a unit fails",
        f"- tau {job['tau']}, result dtype {job['result_dtype']}",
        f"- hidden gold rows: {job.get('gold_fraction', 0)} of each unit",
        *([f"- keep rule: `{json.dumps(job['rule'], sort_keys=True)}`"] if "rule" in job else []),
        "",
        *_verification(m),
        "## Statistics",
        "",
        f"- rows: {m['rows']} ({m['unique_items']} unique inputs) in {m['units']} units",
        *([f"- rows kept by the rule: {m['rows_kept']}"] if "rows_kept" in m else []),
        f"- shards: {len(m['shards'])}, {sum(s['bytes'] for s in m['shards'])} bytes",
        f"- Merkle root of the shards: `{m['merkle_root']}`",
        "",
        *_cost(m),
        "## Versions",
        "",
        f"This is version {version['number']}.",
        *(f"- {_when(r['ms'])}: {len(r['ids'])} row(s) removed: {r['reason']}" for r in removed),
        "",
        "## Known limits",
        "",
        "- Rows are what volunteers' machines computed and the quorum accepted; a row agreed "
        "by colluding volunteers who also passed the gold rows would not be caught.",
        "- `solo+gold` rows were checked only through the gold rows of their unit.",
        "- Float results travel as the job's dtype; the model's own output may differ from a "
        "row by up to the tolerance tau allows.",
        "- The texts are the job's inputs as given; their licence and content are the job "
        "creator's responsibility.",
        "",
        "## How to verify",
        "",
        "```",
        f"allmende dataset verify FOLDER --fingerprint {m['coordinator_fingerprint']}",
        "```",
        "",
        "checks the signature of `_allmende/manifest.json`, the sha256 of every shard and of "
        "this card, the row counts and the chain of versions.",
        "",
        "## How to open",
        "",
        "```python",
        "import pyarrow.dataset as ds; ds.dataset(FOLDER)",
        "import datasets; datasets.load_dataset(FOLDER)",
        "import polars as pl; pl.scan_parquet(f'{FOLDER}/**/*.parquet')",
        "import duckdb; duckdb.sql(f\"FROM '{FOLDER}/**/*.parquet'\")",
        "```",
        "",
        "DuckDB reads fixed-size list columns from Parquet as variable lists; cast for the "
        "array functions, e.g. `embedding::FLOAT[N]` with N the column's width.",
        "",
        "## How to cite",
        "",
        "```bibtex",
        f"@misc{{allmende_{job['id']},",
        f"  title = {{{name}}},",
        "  author = {Allmende volunteers},",
        f"  year = {{{datetime.fromtimestamp(m['created_ms'] / 1000, UTC).year}}},",
        f"  note = {{Allmende dataset {job['id']}, version {version['number']}, "
        f"Merkle root {m['merkle_root']}}}",
        "}",
        "```",
        "",
    ]
    return "\n".join(lines)
