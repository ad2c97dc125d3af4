"""Real texts for benchmarks: STS-B sentences from tests/data/stsb (deduplicated)."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STSB = ROOT / "tests" / "data" / "stsb"

# Let the scripts run from a checkout without an install.
for source_root in ("client", "coordinator", "protos"):
    path = str(ROOT / source_root)
    if path not in sys.path:
        sys.path.append(path)


def stsb_texts(limit: int | None = None) -> list[str]:
    """Unique STS-B sentences (train, then dev), in file order."""
    seen: dict[str, None] = {}
    for split in ("train", "dev"):
        with (STSB / f"sts-{split}.csv").open(encoding="utf-8") as handle:
            for fields in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
                seen.setdefault(fields[5])
                seen.setdefault(fields[6])
    texts = list(seen)
    return texts[:limit] if limit else texts
