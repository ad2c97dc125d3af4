"""A small CLIP with random weights (fixed seed), saved in Hugging Face layout, for
`allmende demo --kind clip-filter` and the tests.

No package ships the real ViT-B/32 and neither the demo nor the tests may fetch it, so both
build this one (about 350 kB): config.json and model.safetensors from
`CLIPModel.save_pretrained`, a byte-level BPE
tokenizer (vocab.json with the 256 byte symbols alone and with the end-of-word mark, a few
merges, CLIP's two special tokens; saved by `CLIPTokenizer`) and the preprocessor config of
openai/clip-vit-base-patch32 with a smaller crop. The real loading, tokenising,
preprocessing and comparison code runs on it; only its similarity values mean nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from allmende.protocol.models import ModelSpec

NAME = "tiny-clip"
DIMS = 32
IMAGE_SIZE = 64
SEED = 20261203


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map, which CLIP's BPE uses."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def write_tokenizer(folder: Path, merges: list[str]) -> dict[str, int]:
    """A byte-level BPE tokenizer in CLIP's format (vocab.json, merges.txt and what
    CLIPTokenizer saves) with the given merges; returns its vocabulary."""
    from transformers import CLIPTokenizer

    symbols = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for token in [*symbols, *(s + "</w>" for s in symbols)]:
        vocab.setdefault(token, len(vocab))
    for merge in merges:
        vocab.setdefault(merge.replace(" ", ""), len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    tokenizer.save_pretrained(str(folder))
    return vocab


def build(folder: Path) -> ModelSpec:
    """Write the tiny CLIP into `folder` (created) and return its registry entry."""
    import torch
    from transformers import CLIPConfig, CLIPModel
    from transformers.utils import logging as hf_logging

    # Without torchvision, transformers warns that this name falls back to the PIL processor
    # (which saves the same preprocessor config): nothing for the demo's reader to act on.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity(logging.ERROR)
    try:
        from transformers import CLIPImageProcessor
    finally:
        hf_logging.set_verbosity(verbosity)

    folder.mkdir(parents=True, exist_ok=True)
    vocab = write_tokenizer(folder, ["t h", "th e</w>", "a n", "o n", "i n", "e r", "a t"])

    config = CLIPConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 77,
            "bos_token_id": vocab["<|startoftext|>"],
            "eos_token_id": vocab["<|endoftext|>"],
            "pad_token_id": vocab["<|endoftext|>"],
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": IMAGE_SIZE,
            "patch_size": 16,
        },
        projection_dim=DIMS,
    )
    torch.manual_seed(SEED)
    model: Any = CLIPModel(config)
    model.eval()
    model.save_pretrained(str(folder), safe_serialization=True)
    CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    ).save_pretrained(str(folder))
    return clip_spec(NAME, DIMS, folder)


def clip_spec(name: str, dims: int, folder: Path) -> ModelSpec:
    """The registry entry of a CLIP folder in Hugging Face layout, pinned by its weights."""
    weights = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    return ModelSpec(
        name=name,
        dims=dims,
        weights_sha256=weights,
        max_seq_length=77,
        task_kinds=("clip-filter", "embed-image"),
        source=str(folder.resolve()),
    )
