"""`filter-text`: language identification of text with fastText's lid.176 (`lid-176`).

Volunteers measure; the job decides. Each row gets the language fastText identifies
(`language`, one of the model's 176 labels) and its probability (`language_score`);
replicas agree when the labels are equal and the scores within 1e-3. The job's rule
(`--keep-languages`, `--min-language-score`, `--min-chars`, `--max-chars`) is applied by
the coordinator to the agreed values, as the dataset's `keep` column; every input row
stays in the dataset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from allmende.protocol.errors import InvalidArgument
from allmende.protocol.kinds.base import KindSpec, Rule, RuleParam
from allmende.protocol.kinds.columns import LabelColumn, ScoreColumn
from allmende.protocol.models import ModelSpec

if TYPE_CHECKING:  # numpy is imported where used: reading the declarations needs none
    import numpy as np

# Characters per credit: fastText reads a text's words and character n-grams once, a few
# hundred times cheaper per character than a transformer embeds it; one credit per 256
# characters (at least one per text) keeps a filter unit's credit below an embedding's.
CHARS_PER_CREDIT = 256
MAX_CHARS = 1 << 31


def credit(texts: Sequence[str]) -> int:
    return sum(max(1, len(text) // CHARS_PER_CREDIT) for text in texts)


def _languages(text: str, model: ModelSpec) -> list[str]:
    codes = [code.strip() for code in text.split(",") if code.strip()]
    if not codes:
        raise InvalidArgument("keep_languages", "a comma-separated list of language codes")
    unknown = [code for code in codes if code not in model.labels]
    if unknown:
        raise InvalidArgument(
            "keep_languages",
            f"language codes model {model.name} knows (one of its {len(model.labels)} "
            f"labels, e.g. de, en, fr), got {unknown[0]!r}",
        )
    return list(dict.fromkeys(codes))


def _score(text: str, model: ModelSpec) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise InvalidArgument("min_language_score", f"a probability from 0 to 1, got {text!r}")
    return value


def _chars(name: str) -> Any:
    def parse(text: str, model: ModelSpec) -> int:
        if not text.strip().isdigit() or not 0 <= int(text) <= MAX_CHARS:
            raise InvalidArgument(name, f"a whole number of characters, 0 or more, got {text!r}")
        return int(text)

    return parse


def _check(rule: Mapping[str, Any]) -> None:
    low, high = rule.get("min_chars", 0), rule.get("max_chars", MAX_CHARS)
    if low > high:
        raise InvalidArgument("rule.max_chars", f"at least min_chars ({low}), got {high}")


def keep(
    rule: Rule, texts: Sequence[str], values: Mapping[str, np.ndarray], model: ModelSpec
) -> np.ndarray:
    """The rule applied to agreed rows: language in the list, score at least the minimum,
    length (Unicode characters) within the bounds. A parameter not given does not filter."""
    import numpy as np

    kept = np.ones(len(texts), dtype=bool)
    if "keep_languages" in rule:
        wanted = [model.labels.index(code) for code in rule["keep_languages"]]
        kept &= np.isin(np.rint(values["language"][:, 0]).astype(np.int64), wanted)
    if "min_language_score" in rule:
        kept &= values["language_score"][:, 0] >= np.float32(rule["min_language_score"])
    if "min_chars" in rule or "max_chars" in rule:
        lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
        kept &= (lengths >= rule.get("min_chars", 0)) & (
            lengths <= rule.get("max_chars", MAX_CHARS)
        )
    return kept


FILTER_TEXT = KindSpec(
    name="filter-text",
    description="language identification of text (fastText lid.176), kept by the job's rule",
    inputs=("text",),
    results=(
        LabelColumn(
            "language",
            "the language fastText identifies, its code as fastText gives it (e.g. de)",
        ),
        ScoreColumn(
            "language_score",
            "the probability fastText gives that language; the agreeing replicas' mean",
            low=0.0,
            high=1.0,
            tolerance=1e-3,
        ),
    ),
    compute="allmende.client.tasks.filter_text:FilterText",
    default_model="lid-176",
    credit=credit,
    card_task="text-classification",
    agreement="language_score",
    rule=(
        RuleParam(
            "keep_languages",
            "keep rows in these languages (comma-separated codes, e.g. de,en)",
            _languages,
        ),
        RuleParam(
            "min_language_score",
            "keep rows whose language probability is at least this (0 to 1)",
            _score,
        ),
        RuleParam("min_chars", "keep rows of at least this many characters", _chars("min_chars")),
        RuleParam("max_chars", "keep rows of at most this many characters", _chars("max_chars")),
    ),
    rule_check=_check,
    keep=keep,
)
