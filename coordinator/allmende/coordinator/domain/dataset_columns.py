"""What each column of a job's dataset holds, in words, for the manifest's "columns" (and
so the dataset card): read from the task kind's declaration of its result columns and
inputs, never from a kind's name. assimilate.py writes it into the manifest.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from allmende.protocol.kinds import ResultShape
from allmende.protocol.kinds.columns import LabelColumn, VectorColumn
from allmende.protocol.kinds.exact_columns import HashColumn, IntColumn, StatusColumn


def column_notes(
    shape: ResultShape,
    keep: bool,
    rule: Mapping[str, Any],
    inputs: Sequence[str] = ("text",),
    url: bool = False,
) -> dict[str, str]:
    """What each dataset column holds, from the kind's declaration."""
    notes = {"id": "input id (string)"}
    if "text" in inputs:
        notes["text"] = "the input text"
    if url:
        notes["url"] = (
            "string; where the row's image came from: the URL volunteers fetched it from, "
            "or the source URL given with its bytes (null where the row had none)"
        )
    for column, layout, _ in shape.columns:
        if isinstance(column, VectorColumn):
            kind = f"fixed_size_list<float32>[{layout.width}]"
            stored = f", stored as {layout.dtype}"
        elif isinstance(column, StatusColumn):
            kind, stored = "string", f", one of {', '.join(column.labels)}"
        elif isinstance(column, HashColumn):
            kind, stored = "string", f", {column.size} bytes as hex"
        elif isinstance(column, IntColumn):
            kind, stored = "int32", ""
        elif isinstance(column, LabelColumn):
            kind, stored = "string", f", one of the model's {len(shape.model.labels)} labels"
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
        "verified_by": "quorum (independent results agreed), solo+gold (one result, its "
        "unit's hidden gold rows agreed) or solo (one result, unchecked)",
        "replicas": "how many independent volunteer results agreed on the row",
        "agreement": f"lowest {agreed.measure_name} ({shape.agreement}) between agreeing "
        "replicas of the unit; null where one result was accepted (nothing compared)",
        "gold_passed": "hidden gold rows (known answers) the unit's agreeing results passed",
        "tau": "the agreement threshold in force when the unit was decided (null: not "
        "recorded, decided by a coordinator before it kept it)",
        "model_sha256": "sha256 of the model weights that computed the row",
    }
    return notes


_CONTENT_NOTES = {
    ("text",): "sha256 of the text (UTF-8), hex",
    ("image",): "sha256 of the image file (of b'url:' and the URL for a row fetched from "
    "a URL), hex (rows with equal values were computed once)",
    ("image", "text"): "sha256 of the text's UTF-8 length (8 bytes, big-endian), the text "
    "and the image file (b'url:' and the URL for a row fetched from a URL), hex (rows with "
    "equal values were computed once)",
}
