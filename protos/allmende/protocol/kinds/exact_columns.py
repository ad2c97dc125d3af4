"""Result columns compared for equality between replicas: a digest of an input
(`HashColumn`), a whole number (`IntColumn`) and a row status whose labels the kind declares
(`StatusColumn`). See columns.py for the column contract and the float columns.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from allmende.protocol.errors import InvalidArgument
from allmende.protocol.kinds.columns import EqualColumn, Layout
from allmende.protocol.models import ModelSpec

if TYPE_CHECKING:  # numpy is imported where used: reading the declarations needs none
    import numpy as np


@dataclass(frozen=True)
class HashColumn(EqualColumn):
    """A digest of `size` bytes per row (e.g. the sha256 of an image), sent as uint8 values;
    replicas agree only when the digests are equal. Published as lower-case hex."""

    name: str
    description: str
    size: int = 32
    # The input whose sha256 this is ("image"), which the coordinator then checks against
    # the unit's own bytes; "" for a digest of something else.
    of_input: str = ""
    measure_name = "hash equality"

    def check_input(self, values: np.ndarray, inputs: Sequence[bytes | None]) -> None:
        """Refuse digests that are not the sha256 of the rows' inputs (InvalidArgument
        naming the first wrong row; rows whose input is None are not checked)."""
        import numpy as np

        for row, data in enumerate(inputs):
            if data is None:
                continue
            digest = np.frombuffer(hashlib.sha256(data).digest(), dtype=np.uint8)
            if not np.array_equal(values[row], digest):
                raise InvalidArgument(
                    "payload",
                    f"column {self.name!r} holds the sha256 of each row's {self.of_input}; "
                    f"row {row} does not",
                )

    def layout(self, dims: int, vector_dtype: str) -> Layout:
        return Layout(self.name, "uint8", self.size)

    def check(self, values: np.ndarray, model: ModelSpec, layout: Layout) -> None:
        _check_whole(self.name, values, 0, 255)

    def combine(self, group: Sequence[np.ndarray]) -> np.ndarray:
        import numpy as np

        return np.asarray(group[0], dtype=np.float32)  # agreeing rows hold equal digests

    def show(self, values: np.ndarray, model: ModelSpec) -> list[object]:
        import numpy as np

        return [bytes(np.rint(row).astype(np.uint8)).hex() for row in values]

    def read(self, shown: Sequence[object], model: ModelSpec, width: int) -> np.ndarray:
        """Hex digests back to their bytes; anything else (missing, not hex, another
        length) becomes NaN, which agrees with nothing."""
        import numpy as np

        matrix = np.full((len(shown), width), np.nan, dtype=np.float32)
        for row, value in enumerate(shown):
            try:
                digest = bytes.fromhex(value) if isinstance(value, str) else b""
            except ValueError:
                continue
            if len(digest) == width:
                matrix[row] = np.frombuffer(digest, dtype=np.uint8)
        return matrix


@dataclass(frozen=True)
class IntColumn(EqualColumn):
    """A whole number per row in [low, high] (e.g. an image's width), sent as int32;
    replicas agree only when the numbers are equal. `high` stays below 2**24, where float32
    (the matrix results are held in) still counts in ones."""

    name: str
    description: str
    low: int = 0
    high: int = (1 << 24) - 1
    measure_name = "integer equality"

    def layout(self, dims: int, vector_dtype: str) -> Layout:
        return Layout(self.name, "int32", 1)

    def check(self, values: np.ndarray, model: ModelSpec, layout: Layout) -> None:
        _check_whole(self.name, values, self.low, self.high)

    def combine(self, group: Sequence[np.ndarray]) -> np.ndarray:
        import numpy as np

        return np.asarray(group[0], dtype=np.float32)

    def show(self, values: np.ndarray, model: ModelSpec) -> list[object]:
        return [int(v) for v in values[:, 0]]

    def read(self, shown: Sequence[object], model: ModelSpec, width: int) -> np.ndarray:
        """Whole numbers back as floats; anything else becomes NaN."""
        import numpy as np

        return np.asarray(
            [
                [float(v) if isinstance(v, int) and not isinstance(v, bool) else np.nan]
                for v in shown
            ],
            dtype=np.float32,
        ).reshape(len(shown), 1)


@dataclass(frozen=True)
class StatusColumn(EqualColumn):
    """One of the kind's own labels per row (not the model's): what became of the row's
    input, e.g. ok / undecodable / too-large. Sent as an index into `labels`, compared for
    equality; a row whose status is not the first label carries no model output."""

    name: str
    description: str
    labels: tuple[str, ...] = ("ok",)
    # Labels only a row the volunteer fetched from a URL may have (a fetch failed): a
    # result that reports one on a row sent with its bytes is refused.
    fetched_only: tuple[str, ...] = ()
    # The label the coordinator sets, never a volunteer, on a fetched row whose replicas
    # fetched different bytes (or some fetched and some could not): '' for none. A result
    # that reports it is refused.
    unstable: str = ""
    measure_name = "status equality"

    def check_sources(self, values: np.ndarray, fetched: Sequence[bool]) -> None:
        """Refuse the coordinator's own label on any row, and a fetch-only label on a row
        that was sent with its bytes (InvalidArgument naming the column and row)."""
        import numpy as np

        codes = np.rint(values[:, 0]).astype(np.int64)
        if self.unstable:
            bad = np.flatnonzero(codes == self.index(self.unstable))
            if bad.size:
                raise InvalidArgument(
                    "payload",
                    f"column {self.name!r}: {self.unstable!r} is set by the coordinator, "
                    f"never reported by a volunteer; row {int(bad[0])} has it",
                )
        if not self.fetched_only:
            return
        only = np.isin(codes, [self.index(label) for label in self.fetched_only])
        had_bytes = ~np.asarray(list(fetched) + [False] * (len(codes) - len(fetched)), bool)
        bad = np.flatnonzero(only & had_bytes[: len(codes)])
        if bad.size:
            row = int(bad[0])
            raise InvalidArgument(
                "payload",
                f"column {self.name!r}: {self.labels[codes[row]]!r} is for rows fetched from "
                f"a URL only; row {row} was sent with its bytes",
            )

    def layout(self, dims: int, vector_dtype: str) -> Layout:
        return Layout(self.name, "label", 1)

    def check(self, values: np.ndarray, model: ModelSpec, layout: Layout) -> None:
        _check_whole(self.name, values, 0, len(self.labels) - 1)

    def combine(self, group: Sequence[np.ndarray]) -> np.ndarray:
        import numpy as np

        return np.asarray(group[0], dtype=np.float32)

    def show(self, values: np.ndarray, model: ModelSpec) -> list[object]:
        return [self.labels[int(v)] for v in values[:, 0]]

    def read(self, shown: Sequence[object], model: ModelSpec, width: int) -> np.ndarray:
        """Labels back to their indices; a label the kind does not have becomes -1, which
        equals no honest result."""
        import numpy as np

        index = {label: i for i, label in enumerate(self.labels)}
        return np.asarray(
            [[index.get(v, -1) if isinstance(v, str) else -1] for v in shown], dtype=np.float32
        ).reshape(len(shown), 1)

    def index(self, label: str) -> int:
        return self.labels.index(label)


def _check_whole(name: str, values: np.ndarray, low: int, high: int) -> None:
    import numpy as np

    bad = (values < low) | (values > high) | (values != np.floor(values))
    if bad.any():
        row, col = (int(x) for x in np.argwhere(bad)[0])
        raise InvalidArgument(
            "payload",
            f"column {name!r} holds whole numbers from {low} to {high}; row {row} has "
            f"{float(values[row, col]):g}",
        )
