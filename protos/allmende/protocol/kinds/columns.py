"""Result columns: what a task kind returns per row, how replicas are compared on it, and
which values a row may hold.

In memory a result is one float32 matrix, rows by the sum of its columns' widths, with the
columns side by side in the kind's order (`ResultShape`). Everything that moves rows around
(composing a lease, putting rows back in unit order, gold answers, consensus) works on that
matrix without knowing what the columns mean; what they mean is said here, once per column
type:

- `VectorColumn`: an embedding, compared by cosine (>= the job's tau), sent as float16 or
  int8 (the job's result dtype), optionally unit-normalised;
- `ScoreColumn`: a number in a declared range, compared by |a - b| <= a fixed tolerance,
  sent as float32;
- `LabelColumn`: one of the model's labels, compared for equality, sent as a uint16 index
  into the model's label list;
- `StatusColumn`: one of the kind's own labels (ok / undecodable / ...), the same way;
- `HashColumn`: a digest (sha256: 32 bytes), sent as uint8 values, compared for equality;
- `IntColumn`: a whole number (an image's width), sent as int32, compared for equality.

Each column compares two results row by row into a *measure* where 1 means identical and
rows agree when the measure reaches the column's threshold (cosine itself; 1 - |a - b|;
1 or 0). The same scale gives every kind the lone-result margin (half-way from the
threshold to 1) and the provenance figure `agreement`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from allmende.protocol.errors import InvalidArgument
from allmende.protocol.models import ModelSpec

if TYPE_CHECKING:  # numpy is imported where used: reading the declarations needs none
    import numpy as np

# The dtypes a vector column may travel in (the job's `result_dtype`).
VECTOR_DTYPES = ("float16", "int8")
# |norm - 1| allowed for unit-normalised rows after fp16 rounding: each component is
# rounded to 11 significant bits, which moves the norm of a unit row by well under 0.001.
FP16_NORM_TOLERANCE = 0.002


def norm_tolerance(dtype: str, dims: int) -> float:
    """|norm - 1| allowed for a unit-normalised row sent in `dtype` with `dims` columns.

    int8 stores round(x * 127): each component is off by up to 0.5 / 127 (uniform), which
    moves the norm by about 0.0023 (one standard deviation) plus dims / (24 * 127^2) on
    average (measured: 384-d rows within about 0.005). Four standard deviations and that
    mean."""
    from allmende.protocol.codec import INT8_SCALE

    if dtype == "int8":
        return 4 * 0.5 / INT8_SCALE / 3**0.5 + dims / (24 * INT8_SCALE**2)
    return FP16_NORM_TOLERANCE


@dataclass(frozen=True)
class Layout:
    """One result column as it travels: its name, wire dtype and values per row."""

    name: str
    dtype: str  # float16, int8, float32, label
    width: int


class ResultColumn(ABC):
    """A column of a kind's result. Subclasses are the column *types*; a kind lists
    instances with their names."""

    name: str
    description: str
    measure_name = "agreement"  # what `measure` says, in messages

    @abstractmethod
    def layout(self, dims: int, vector_dtype: str) -> Layout:
        """How the column travels for a job whose vectors are `dims` wide, in `vector_dtype`."""

    @abstractmethod
    def measure(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Per row, how alike `a` and `b` (both rows x width) are: 1 is identical."""

    @abstractmethod
    def threshold(self, tau: float) -> float:
        """The measure at which rows agree, given the job's tau."""

    @abstractmethod
    def check(self, values: np.ndarray, model: ModelSpec, layout: Layout) -> None:
        """Refuse values no honest volunteer sends (InvalidArgument naming the row)."""

    @abstractmethod
    def combine(self, group: Sequence[np.ndarray]) -> np.ndarray:
        """The value to publish for rows a group of results agreed on."""

    def show(self, values: np.ndarray, model: ModelSpec) -> list[object]:
        """The column's values as a dataset holds them, one per row."""
        return [row.tolist() for row in values]

    def read(self, shown: Sequence[object], model: ModelSpec, width: int) -> np.ndarray:
        """The inverse of `show`: a dataset's values of this column back as rows x `width`
        float32, as the kind's compute class returns them. A value that cannot be read
        (missing, the wrong length) becomes NaN, which agrees with nothing."""
        import numpy as np

        matrix = np.full((len(shown), width), np.nan, dtype=np.float32)
        for row, value in enumerate(shown):
            if isinstance(value, Sequence) and len(value) == width:
                try:
                    matrix[row] = np.asarray(value, dtype=np.float32)
                except (TypeError, ValueError):
                    continue
        return matrix


@dataclass(frozen=True)
class VectorColumn(ResultColumn):
    """An embedding of the model's width. Cosine ignores scale, so a unit-normalised
    column also checks every row's norm: scaled rows would otherwise agree with honest ones."""

    name: str
    description: str
    unit_norm: bool = True
    # Rows may be all zeros, meaning "no value" (an image that could not be decoded): such
    # a row passes the norm check, and agrees only with another all-zero row.
    allow_empty: bool = False
    measure_name = "row cosine"

    def layout(self, dims: int, vector_dtype: str) -> Layout:
        return Layout(self.name, vector_dtype, dims)

    def measure(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        import numpy as np

        cos = row_cosines(a, b)
        if self.allow_empty:
            empty_a, empty_b = ~a.any(axis=1), ~b.any(axis=1)
            cos = np.where(empty_a & empty_b, 1.0, np.where(empty_a | empty_b, 0.0, cos))
        return cos

    def threshold(self, tau: float) -> float:
        return tau

    def check(self, values: np.ndarray, model: ModelSpec, layout: Layout) -> None:
        import numpy as np

        if not self.unit_norm:
            return
        tolerance = norm_tolerance(layout.dtype, layout.width)
        norms = np.linalg.norm(values.astype(np.float64), axis=1)
        off = np.abs(norms - 1.0) > tolerance
        if self.allow_empty:
            off &= norms != 0.0
        if off.any():
            row = int(np.argmax(off))
            raise InvalidArgument(
                "payload",
                f"unit-normalised rows in column {self.name!r} (|norm - 1| <= "
                f"{tolerance:.4f} for {layout.dtype}); row {row} has norm {norms[row]:.4f}",
            )

    def combine(self, group: Sequence[np.ndarray]) -> np.ndarray:
        """The element-wise mean, each row scaled back to unit length when the column is
        unit-normalised. Not the first result's values: a replica whose rows are slightly
        rotated still agrees within tau, and must not decide alone what is published."""
        import numpy as np

        mean = np.mean(np.stack([m.astype(np.float64, copy=False) for m in group]), axis=0)
        if self.unit_norm:
            norms = np.linalg.norm(mean, axis=1, keepdims=True)
            mean = mean / np.where(norms > 0, norms, 1.0)
        return np.asarray(mean, dtype=np.float32)


@dataclass(frozen=True)
class ScoreColumn(ResultColumn):
    """One number per row in [low, high]; replicas agree within `tolerance`."""

    name: str
    description: str
    measure_name = "1 - |score difference|"
    low: float = 0.0
    high: float = 1.0
    tolerance: float = 1e-3

    def layout(self, dims: int, vector_dtype: str) -> Layout:
        return Layout(self.name, "float32", 1)

    def measure(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        import numpy as np

        diff = np.abs(a.astype(np.float64) - b.astype(np.float64)).max(axis=1)
        return np.asarray(1.0 - diff)

    def threshold(self, tau: float) -> float:
        return 1.0 - self.tolerance

    def check(self, values: np.ndarray, model: ModelSpec, layout: Layout) -> None:
        import numpy as np

        out = (values < self.low) | (values > self.high)
        if out.any():
            row = int(np.argwhere(out)[0][0])
            raise InvalidArgument(
                "payload",
                f"column {self.name!r} within [{self.low:g}, {self.high:g}]; row {row} is "
                f"{float(values[row, 0])!r}",
            )

    def combine(self, group: Sequence[np.ndarray]) -> np.ndarray:
        import numpy as np

        return np.asarray(np.mean(np.stack(group), axis=0), dtype=np.float32)

    def show(self, values: np.ndarray, model: ModelSpec) -> list[object]:
        return [float(v) for v in values[:, 0]]

    def read(self, shown: Sequence[object], model: ModelSpec, width: int) -> np.ndarray:
        import numpy as np

        return np.asarray(
            [[float(v) if isinstance(v, int | float) else np.nan] for v in shown],
            dtype=np.float32,
        ).reshape(len(shown), 1)


class EqualColumn(ResultColumn):
    """A column whose rows agree only when equal (labels, digests, whole numbers): the
    measure is 1 or 0 and the threshold 1."""

    def measure(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        import numpy as np

        return np.asarray((a == b).all(axis=1), dtype=np.float64)

    def threshold(self, tau: float) -> float:
        return 1.0


@dataclass(frozen=True)
class LabelColumn(EqualColumn):
    """One of the model's labels (`ModelSpec.labels`) per row, sent as its index."""

    name: str
    description: str
    measure_name = "label equality"

    def layout(self, dims: int, vector_dtype: str) -> Layout:
        return Layout(self.name, "label", 1)

    def check(self, values: np.ndarray, model: ModelSpec, layout: Layout) -> None:
        import numpy as np

        bad = (values < 0) | (values >= len(model.labels)) | (values != np.floor(values))
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise InvalidArgument(
                "payload",
                f"column {self.name!r} holds one of model {model.name}'s {len(model.labels)} "
                f"labels (index 0 to {len(model.labels) - 1}); row {row} has index "
                f"{float(values[row, 0]):g}",
            )

    def combine(self, group: Sequence[np.ndarray]) -> np.ndarray:
        import numpy as np

        return np.asarray(group[0], dtype=np.float32)  # agreeing rows hold equal labels

    def show(self, values: np.ndarray, model: ModelSpec) -> list[object]:
        return [model.labels[int(v)] for v in values[:, 0]]

    def read(self, shown: Sequence[object], model: ModelSpec, width: int) -> np.ndarray:
        """Labels back to their indices in the model's list; a label the model does not have
        becomes -1, which equals no honest result."""
        import numpy as np

        index = {label: i for i, label in enumerate(model.labels)}
        return np.asarray(
            [[index.get(v, -1) if isinstance(v, str) else -1] for v in shown], dtype=np.float32
        ).reshape(len(shown), 1)


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of `a` with the same row of `b` (zero rows give 0)."""
    import numpy as np

    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    a64 = a.astype(np.float64, copy=False)
    b64 = b.astype(np.float64, copy=False)
    dots = np.einsum("ij,ij->i", a64, b64)
    norms = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 0.0)
    return np.asarray(cos)
