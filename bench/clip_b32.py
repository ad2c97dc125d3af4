"""A CLIP exactly the size of openai/clip-vit-base-patch32, with seeded random weights.

The real weights are not on this machine and cannot be fetched; a model with the same
configuration and random weights costs exactly what the real one costs to run, so the
clip-filter bench times it instead. Its embeddings and similarities mean nothing.

The folder is in Hugging Face layout (config.json, model.safetensors, tokenizer and
preprocessor files) and is cached under the user's cache directory
(`$XDG_CACHE_HOME/allmende-bench/`, default `~/.cache/...`), never in the repository;
the cache is keyed by this file's configuration, so a change rebuilds it.

The tokenizer is a byte-level BPE like CLIP's whose merges are learnt from the bench's
captions, so that each caption word is one token, as it is in CLIP's 49,408-token
vocabulary for plain English words; captions therefore have the token counts they would
have with the real tokenizer, which is what the text tower's cost depends on. The
preprocessor is openai/clip-vit-base-patch32's (shortest edge 224, centre crop 224, CLIP's
mean and std, bicubic).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Sequence
from pathlib import Path

from allmende.demo.tiny_clip import clip_spec, write_tokenizer
from allmende.protocol.models import ModelSpec

NAME = "clip-vit-b32-random"
DIMS = 512
SEED = 20261203

VISION = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "image_size": 224,
    "patch_size": 32,
    "hidden_act": "quick_gelu",
}
TEXT = {
    "vocab_size": 49408,
    "hidden_size": 512,
    "intermediate_size": 2048,
    "num_hidden_layers": 12,
    "num_attention_heads": 8,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
}
PREPROCESSOR = {
    "size": {"shortest_edge": 224},
    "crop_size": {"height": 224, "width": 224},
    "do_resize": True,
    "do_center_crop": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_convert_rgb": True,
    "resample": 3,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
}


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "allmende-bench"


def _merges(words: Sequence[str]) -> list[str]:
    """BPE merges (CLIP's form: the last symbol of a word carries `</w>`) learnt from
    `words` the way BPE learns them, the most frequent adjacent pair first, until every
    word is one token; applied in rank order they rebuild each word whole."""
    split = [[*w[:-1], w[-1] + "</w>"] for w in words if len(w) > 1]
    out: list[str] = []
    while True:
        counts: dict[tuple[str, str], int] = {}
        for symbols in split:
            for pair in itertools.pairwise(symbols):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            return out
        best = max(counts, key=lambda p: (counts[p], p))
        out.append(" ".join(best))
        for n, symbols in enumerate(split):
            merged: list[str] = []
            i = 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            split[n] = merged


def _key(words: Sequence[str]) -> str:
    text = json.dumps([VISION, TEXT, PREPROCESSOR, DIMS, SEED, sorted(words)], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build(captions: Sequence[str], root: Path | None = None) -> ModelSpec:
    """The cached folder for these captions' words (built the first time, ~600 MB, a
    minute or so) and its registry entry."""
    words = sorted({w for c in captions for w in c.lower().split()})
    folder = (root or cache_root()) / f"{NAME}-{_key(words)}"
    if not (folder / "model.safetensors").is_file():
        _write(folder, words)
    return clip_spec(NAME, DIMS, folder)


def _write(folder: Path, words: Sequence[str]) -> None:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel


    partial = folder.with_name(folder.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    vocab = write_tokenizer(partial, _merges(words))
    assert len(vocab) <= TEXT["vocab_size"]

    special = {
        "bos_token_id": vocab["<|startoftext|>"],
        "eos_token_id": vocab["<|endoftext|>"],
        "pad_token_id": vocab["<|endoftext|>"],
    }
    config = CLIPConfig(text_config={**TEXT, **special}, vision_config=VISION, projection_dim=DIMS)
    torch.manual_seed(SEED)
    model = CLIPModel(config).eval()
    model.save_pretrained(str(partial), safe_serialization=True)
    CLIPImageProcessor(**PREPROCESSOR).save_pretrained(str(partial))
    partial.rename(folder)
