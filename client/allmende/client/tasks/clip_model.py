"""CLIP through `transformers`' `CLIPModel`, with its tokenizer and PIL image processor.

A model is a folder in Hugging Face layout (config.json, model.safetensors, tokenizer and
preprocessor files), loaded from that folder only: safetensors weights, no hub access, no
remote code. `CLIPImageProcessor` resizes, centre-crops and normalises with PIL and numpy,
so no torchvision is needed. Embeddings are the projections (`get_image_features`,
`get_text_features`) scaled to unit length in float32; on CUDA the model runs under fp16
autocast, as embed-text does.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from allmende.protocol.errors import FailedPrecondition, InvalidArgument


class ClipModel:
    def __init__(self, model_dir: Path, device: str = "cpu", threads: int | None = None) -> None:
        if threads is not None:
            if threads < 1:
                raise InvalidArgument("threads", f"a positive integer, got {threads}")
            torch.set_num_threads(threads)
        # Imported here: transformers is heavy, and only a volunteer that computes needs it.
        from transformers import AutoTokenizer, CLIPModel

        try:  # transformers 5 names the PIL backend; without torchvision it is the one used
            from transformers import CLIPImageProcessorPil as CLIPImageProcessor
        except ImportError:  # transformers 4: the processor is PIL-based already
            from transformers import CLIPImageProcessor  # type: ignore[assignment]

        folder = Path(model_dir)
        if not (folder / "model.safetensors").is_file():
            raise FailedPrecondition(f"CLIP model folder {folder} has no model.safetensors")
        if device == "auto":  # as the text embedder does: a GPU when there is one
            device = "cuda:0" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        loaded: Any = CLIPModel.from_pretrained(
            str(folder), local_files_only=True, use_safetensors=True, trust_remote_code=False
        )
        self.model: Any = loaded.eval().to(self.device)
        self.tokenizer: Any = AutoTokenizer.from_pretrained(
            str(folder), local_files_only=True, trust_remote_code=False
        )
        self.processor: Any = CLIPImageProcessor.from_pretrained(str(folder), local_files_only=True)
        config: Any = self.model.config
        self.max_tokens = int(config.text_config.max_position_embeddings)
        self.dims = int(config.projection_dim)

    def _autocast(self) -> AbstractContextManager[Any]:
        if self.device.type == "cuda":
            return torch.autocast(device_type="cuda", dtype=torch.float16)
        return nullcontext()

    def pixels(self, image: Image.Image) -> np.ndarray:
        """One RGB image as the processor prepares it: float32 (3, H, W)."""
        out = self.processor(images=[image], return_tensors="np")["pixel_values"][0]
        return np.asarray(out, dtype=np.float32)

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Unit-normalised float32 image embeddings of a (N, 3, H, W) batch."""
        if len(pixels) == 0:
            return np.zeros((0, self.dims), dtype=np.float32)
        with torch.inference_mode(), self._autocast():
            batch = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device)
            features = self.model.get_image_features(pixel_values=batch)
        return _unit(_tensor(features))

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Unit-normalised float32 embeddings of captions (cut at the model's 77 tokens)."""
        if not texts:
            return np.zeros((0, self.dims), dtype=np.float32)
        tokens = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        )
        with torch.inference_mode(), self._autocast():
            features = self.model.get_text_features(
                input_ids=tokens["input_ids"].to(self.device),
                attention_mask=tokens["attention_mask"].to(self.device),
            )
        return _unit(_tensor(features))


def _tensor(features: Any) -> np.ndarray:
    # transformers 5 returns a model output whose pooler_output is the projection.
    if not isinstance(features, torch.Tensor):
        features = features.pooler_output
    return np.asarray(features.float().cpu().numpy(), dtype=np.float32)


def _unit(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows.astype(np.float64), axis=1, keepdims=True)
    return np.asarray(rows / np.where(norms > 0, norms, 1.0), dtype=np.float32)
