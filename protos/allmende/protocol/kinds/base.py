"""What a task kind declares, and the result shape both sides derive from it.

A kind is data: one `KindSpec` in a module of its own under `protocol/kinds/`, torch-free.
The coordinator's jobs, quorum, gold rows, result checks and dataset writer read it and never
name a kind; the volunteer imports the compute class it names, lazily
(`allmende.protocol.kinds.compute`).

A compute class is constructed as ``cls(model_dir, spec, device, batch_size, threads)`` once
the model's files were checked against the registry, and offers ``compute(texts, progress)``
returning one float32 matrix, rows by `ResultShape.width`, its columns in the kind's order
(labels as their indices), and ``warm_up()``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from allmende.protocol.errors import InvalidArgument
from allmende.protocol.kinds.columns import Layout, ResultColumn, VectorColumn
from allmende.protocol.kinds.exact_columns import HashColumn, StatusColumn
from allmende.protocol.models import ModelSpec

if TYPE_CHECKING:  # numpy is imported where used: reading the declarations needs none
    import numpy as np

# A rule's parameters after parsing: JSON values (lists, numbers, strings).
Rule = Mapping[str, Any]


@dataclass(frozen=True)
class RuleParam:
    """One parameter of a kind's keep rule: `job create --<name with dashes>`, and a key of
    JobSpec.rule on the wire. `parse` validates the text given and returns a JSON value
    (InvalidArgument naming what was expected)."""

    name: str
    help: str
    parse: Callable[[str, ModelSpec], Any]

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class Comparison:
    """Two results compared row by row on every column."""

    agreement: float  # lowest measure of the kind's agreement column (cosine for vectors)
    worst_row: int  # the first row that disagrees, else the row of `agreement` (-1: none)
    agrees: bool  # every row agrees on every column
    column: str = ""  # the column that disagrees first ('' when all agree)
    measure: str = "agreement"  # what `agreement` measures, e.g. "row cosine"

    def describe(self) -> str:
        if self.agrees or not self.column:
            return f"lowest {self.measure} {self.agreement:.6f} at row {self.worst_row}"
        return f"column {self.column!r} disagrees at row {self.worst_row}"


@dataclass(frozen=True)
class ResultShape:
    """A kind's result for one job: its columns side by side in one float32 matrix."""

    columns: tuple[tuple[ResultColumn, Layout, slice], ...]
    agreement: str
    model: ModelSpec

    @property
    def width(self) -> int:
        return sum(layout.width for _, layout, _ in self.columns)

    @property
    def layouts(self) -> tuple[Layout, ...]:
        return tuple(layout for _, layout, _ in self.columns)

    def wire(self) -> list[tuple[str, str, int]]:
        """(name, dtype, width) per column, for codec.decode_columns."""
        return [(lay.name, lay.dtype, lay.width) for lay in self.layouts]

    def encoding(self) -> list[tuple[str, int]]:
        """(dtype, width) per column, for codec.encode_columns."""
        return [(lay.dtype, lay.width) for lay in self.layouts]

    def encode(self, matrix: np.ndarray) -> bytes:
        from allmende.protocol import codec

        return codec.encode_columns(matrix, self.encoding())[0]

    def decode(self, payload: bytes, rows: int) -> np.ndarray:
        from allmende.protocol import codec

        return codec.decode_columns(payload, self.wire(), rows)

    def rounded(self, matrix: np.ndarray) -> np.ndarray:
        """`matrix` as it is after a trip over the wire (fp16 or int8 rounding)."""
        return self.decode(self.encode(matrix), matrix.shape[0])

    def split(self, matrix: np.ndarray) -> dict[str, np.ndarray]:
        return {col.name: matrix[:, part] for col, _, part in self.columns}

    def read(self, shown: Mapping[str, Sequence[object]]) -> np.ndarray:
        """A dataset's result columns (values as `ResultColumn.show` gives them, by column
        name) back as the one float32 matrix the kind's compute class returns."""
        import numpy as np

        parts = [
            col.read(shown[col.name], self.model, layout.width) for col, layout, _ in self.columns
        ]
        return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]

    def by_column(
        self, a: np.ndarray, b: np.ndarray, tau: float
    ) -> list[tuple[ResultColumn, np.ndarray, np.ndarray]]:
        """Per column: its measure for every row (NaN counts as disagreeing: -inf) and
        whether each row reaches the column's threshold."""
        import numpy as np

        if a.shape != b.shape:
            raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
        found = []
        for col, _, part in self.columns:
            with np.errstate(invalid="ignore"):
                measure = np.nan_to_num(
                    col.measure(a[:, part], b[:, part]), nan=-np.inf, posinf=-np.inf
                )
            found.append((col, measure, measure >= col.threshold(tau)))
        return found

    def check(self, matrix: np.ndarray) -> None:
        for col, layout, part in self.columns:
            col.check(matrix[:, part], self.model, layout)

    def check_inputs(self, matrix: np.ndarray, images: Sequence[bytes | None]) -> None:
        """Refuse a result whose digests of its rows' images are not theirs (None: not
        known, not checked): a volunteer cannot claim to have seen other bytes than it was
        sent."""
        for col, _, part in self.columns:
            if isinstance(col, HashColumn) and col.of_input == "image" and images:
                col.check_input(matrix[: len(images), part], images)

    def check_sources(self, matrix: np.ndarray, fetched: Sequence[bool]) -> None:
        """Refuse statuses a volunteer may not report: the coordinator's own (`unstable`)
        on any row, a fetch failure on a row sent with its bytes (`fetched`: per row of
        `matrix`, whether the volunteer fetched it from a URL)."""
        for col, _, part in self.columns:
            if isinstance(col, StatusColumn):
                col.check_sources(matrix[:, part], fetched)

    def settle_fetched(
        self, matrices: Sequence[np.ndarray], fetched: Sequence[bool]
    ) -> tuple[list[np.ndarray], int]:
        """Replicas' results (unit order) with each fetched row whose replicas fetched
        different things made `unstable` in all of them, and how many rows that was.

        A URL can serve different bytes to different volunteers (a CDN's re-encoding, a
        changed page, a server that failed for one of them): then the digests of the
        image, or the statuses, differ, which is nobody's fault. Such a row becomes the
        status column's `unstable` label with its image's columns zero, the same in every
        replica (a caption's embedding is kept and compared as usual: it does not depend on
        the fetch), so the quorum compares the unit on its other rows and no volunteer is
        marked for it. Rows given by their bytes, and kinds without an `unstable` label,
        are left as they are. A lone result (adaptive replication) has nothing to differ
        from: its fetched rows stand on that volunteer alone (and its gold rows)."""
        import numpy as np

        status = next(
            ((col, part) for col, _, part in self.columns if isinstance(col, StatusColumn)),
            None,
        )
        rows = np.flatnonzero(np.asarray(fetched, dtype=bool))
        if status is None or not status[0].unstable or len(matrices) < 2 or not rows.size:
            return list(matrices), 0
        decisive = [status[1]] + [
            part
            for col, _, part in self.columns
            if isinstance(col, HashColumn) and col.of_input == "image"
        ]
        first = matrices[0]
        differ = np.zeros(first.shape[0], dtype=bool)
        for other in matrices[1:]:
            for part in decisive:
                differ |= np.any(first[:, part] != other[:, part], axis=1)
        unstable = rows[differ[rows]]
        if not unstable.size:
            return list(matrices), 0
        code = float(status[0].index(status[0].unstable))
        # Zeroed: every column but a vector that must hold a value (a caption's embedding,
        # which does not depend on the fetch and is compared as usual), as for a row whose
        # image could not be used.
        zeroed = [
            part
            for col, _, part in self.columns
            if not (isinstance(col, VectorColumn) and not col.allow_empty)
        ]
        settled = []
        for matrix in matrices:
            copy = np.array(matrix, dtype=np.float32, copy=True)
            for part in zeroed:
                copy[unstable, part] = 0.0
            copy[unstable, status[1]] = code
            settled.append(copy)
        return settled, int(unstable.size)

    def measures(self, a: np.ndarray, b: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray]:
        """Per row: does it agree on every column, and how close to 1 it comes relative to
        the thresholds (1: identical, 0: just agrees, below 0: disagrees)."""
        import numpy as np

        if a.shape != b.shape:
            raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
        ok = np.ones(a.shape[0], dtype=bool)
        slack = np.ones(a.shape[0], dtype=np.float64)
        for col, _, part in self.columns:
            measure = col.measure(a[:, part], b[:, part])
            limit = col.threshold(tau)
            ok &= measure >= limit
            room = 1.0 - limit
            slack = np.minimum(
                slack, (measure - limit) / room if room > 0 else np.where(measure >= 1, 1.0, -1.0)
            )
        return ok, slack

    def compare(self, a: np.ndarray, b: np.ndarray, tau: float) -> Comparison:
        import numpy as np

        if a.shape != b.shape:
            raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
        if a.shape[0] == 0:
            return Comparison(1.0, -1, True)
        agreement, named = np.ones(a.shape[0]), "agreement"
        first_bad, bad_column = a.shape[0], ""
        for col, _, part in self.columns:
            measure = col.measure(a[:, part], b[:, part])
            if col.name == self.agreement:
                agreement, named = measure, col.measure_name
            bad = np.flatnonzero(measure < col.threshold(tau))
            if bad.size and int(bad[0]) < first_bad:
                first_bad, bad_column = int(bad[0]), col.name
        if bad_column == self.agreement:  # say how far the worst row is off
            worst = int(np.argmin(agreement))
            return Comparison(float(agreement[worst]), worst, False, "", named)
        if bad_column:
            return Comparison(float(agreement.min()), first_bad, False, bad_column, named)
        worst = int(np.argmin(agreement))
        return Comparison(float(agreement[worst]), worst, True, "", named)

    def combine(self, group: Sequence[np.ndarray]) -> np.ndarray:
        """What to publish for a group of agreeing results (column by column)."""
        import numpy as np

        if len(group) == 1:
            return group[0]
        parts = [col.combine([m[:, part] for m in group]) for col, _, part in self.columns]
        return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]


@dataclass(frozen=True)
class KindSpec:
    """Everything the protocol and the coordinator need to know about a task kind."""

    name: str
    description: str
    inputs: tuple[str, ...]  # input columns a job's items carry besides "id"
    results: tuple[ResultColumn, ...]
    compute: str  # "module:Class" of the volunteer's compute class
    # Credit a volunteer claims for computing these inputs (the coordinator grants the
    # lowest claim of a quorum, capped at its own figure).
    credit: Callable[[Sequence[str]], int]
    default_model: str = ""  # the registry model a job of this kind uses unless told
    agreement: str = ""  # the column whose measure is a dataset's `agreement` (first if '')
    rule: tuple[RuleParam, ...] = ()
    # Applies a parsed rule to a dataset's rows: (rule, texts, columns by name) -> bool per
    # row. None: the kind keeps every row and its datasets have no `keep` column.
    keep: (
        Callable[[Rule, Sequence[str], Mapping[str, np.ndarray], ModelSpec], np.ndarray] | None
    ) = None
    # Checks across a rule's parameters once each was parsed (InvalidArgument).
    rule_check: Callable[[Mapping[str, Any]], None] | None = None
    # The Hugging Face task category its datasets serve (a dataset card's task_categories).
    card_task: str = ""
    # Parameters in force when a job does not give them (parsed values), so that a job's
    # recorded rule, and its dataset's manifest, say what decided `keep`.
    rule_defaults: Mapping[str, Any] = field(default_factory=dict)

    @property
    def takes_images(self) -> bool:
        return "image" in self.inputs

    @property
    def takes_text(self) -> bool:
        return "text" in self.inputs

    def content_digest(self, text: str, image: bytes, url: str = "") -> bytes:
        """sha256 of a row's inputs, as the kind reads them: what a job deduplicates on
        (rows with equal digests are computed once). Text alone: the sha256 of its UTF-8;
        an image alone: the sha256 of its bytes (the same as its `image_sha256`); both: the
        sha256 of the text's UTF-8 length (8 bytes, big-endian), the text, then the image.
        A row the volunteers fetch (`url`): the same with the image's bytes replaced by
        b"url:" and the URL's UTF-8, so that rows with one URL (and one caption) are
        fetched and computed once."""
        encoded = text.encode("utf-8", "surrogatepass") if self.takes_text else b""
        if not self.takes_images:
            return hashlib.sha256(encoded).digest()
        if url:
            image = b"url:" + url.encode("utf-8", "surrogatepass")
        if not self.takes_text:
            return hashlib.sha256(image).digest()
        return hashlib.sha256(len(encoded).to_bytes(8, "big") + encoded + image).digest()

    def shape(self, model: ModelSpec, vector_dtype: str) -> ResultShape:
        columns = []
        start = 0
        for col, layout in zip(
            self.results, self.layouts(self.vector_dims(model), vector_dtype), strict=True
        ):
            columns.append((col, layout, slice(start, start + layout.width)))
            start += layout.width
        return ResultShape(tuple(columns), self.agreement or self.results[0].name, model)

    def layouts(self, dims: int, vector_dtype: str) -> tuple[Layout, ...]:
        """The result's columns as they travel, for a unit of `dims`-wide vectors in
        `vector_dtype` (what a volunteer needs to encode its result)."""
        return tuple(col.layout(dims, vector_dtype) for col in self.results)

    def agreement_measure(self) -> str:
        """What a unit's agreement figure measures, e.g. "row cosine"."""
        name = self.agreement or self.results[0].name
        return next(c.measure_name for c in self.results if c.name == name)

    def vector_dims(self, model: ModelSpec) -> int:
        """The width of the kind's vector column (a work unit's `dims`), 0 without one."""
        return model.dims if any(isinstance(c, VectorColumn) for c in self.results) else 0

    def parse_rule(self, raw: Mapping[str, str], model: ModelSpec) -> dict[str, Any]:
        """Validate a job's rule parameters (the text given for each)."""
        known = {p.name: p for p in self.rule}
        parsed: dict[str, Any] = dict(self.rule_defaults)
        for name, text in sorted(raw.items()):
            param = known.get(name)
            if param is None:
                allowed = ", ".join(sorted(known)) or "none"
                raise InvalidArgument(
                    f"rule.{name}", f"a rule parameter of {self.name} jobs ({allowed})"
                )
            try:
                parsed[name] = param.parse(text, model)
            except InvalidArgument as exc:
                raise InvalidArgument(f"rule.{name}", exc.expected) from None
        if self.rule_check is not None:
            self.rule_check(parsed)
        return parsed


def rule_text(rule: Rule) -> dict[str, str]:
    """A parsed rule as the text its parameters are given in (lists comma-separated)."""
    return {
        name: ",".join(str(v) for v in value) if isinstance(value, list) else str(value)
        for name, value in rule.items()
    }


# Words and punctuation marks: within a few percent of a WordPiece/BPE token count on
# English text, and needs no tokenizer (STS-B: 5 % above an exact token count).
_TOKEN_LIKE = re.compile(r"\w+|[^\w\s]")
# [CLS] and [SEP], or their equivalents.
SPECIAL_TOKENS = 2


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate of a text's token count, special tokens excluded."""
    return sum(1 for _ in _TOKEN_LIKE.finditer(text))


def claimed_tokens(texts: Iterable[str]) -> int:
    """The work a volunteer claims credit for: estimated tokens processed, special tokens
    included. Every honest client computes the same figure for the same texts, so the
    coordinator can grant the lowest claim of a quorum and cap any claim at its own count."""
    return sum(estimate_tokens(text) + SPECIAL_TOKENS for text in texts)
