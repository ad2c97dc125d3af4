"""The ``embed-text`` task kind: sentence embeddings with a pinned Sentence-Transformers model.

A volunteer resolves the model a work unit names to a local directory (:func:`resolve_model_dir`),
checks its weights against the registry's pinned hash (:func:`verify_weights`) and embeds the
unit's texts with :class:`TextEmbedder`. The embedder reads a Sentence-Transformers-format
directory (``modules.json``: Transformer, Pooling, Normalize) and reproduces what
``SentenceTransformer.encode`` computes for it, using only ``transformers`` and ``torch``, with
weights loaded from the local directory alone. It is tuned for throughput: the whole input is
tokenised once, sorted by exact token length so each batch is padded only to its own longest
text, and results are written straight into one output array in the caller's order.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import torch

from allmende.protocol.errors import FailedPrecondition, InvalidArgument
from allmende.protocol.models import ModelSpec
from allmende.protocol.weights import WEIGHTS_FILE, resolve_model_dir, verify_weights

__all__ = [
    "POOLING_MODES",
    "WEIGHTS_FILE",
    "TextEmbedder",
    "resolve_model_dir",
    "verify_weights",
]


POOLING_MODES: Final = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
"""Pooling modes understood, in the order Sentence-Transformers concatenates them."""

_LEGACY_POOLING_KEYS: Final = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


def _read_json(path: Path) -> Any:
    with path.open(encoding="utf-8") as fh:
        return json.load(fh)


def _pooling_modes(config: dict[str, Any]) -> tuple[str, ...]:
    """The pooling modes of a ``1_Pooling/config.json``, old (boolean keys) or new format."""
    raw = config.get("pooling_mode")
    if raw is None:
        modes = tuple(mode for key, mode in _LEGACY_POOLING_KEYS.items() if config.get(key, False))
        return modes or ("mean",)
    modes = (raw,) if isinstance(raw, str) else tuple(str(m) for m in raw)
    for mode in modes:
        if mode not in POOLING_MODES:
            raise InvalidArgument(
                "pooling_mode", f"one of {', '.join(POOLING_MODES)}, got {mode!r}"
            )
    return modes


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise InvalidArgument("device", f"'cpu', 'cuda[:N]' or 'auto', got {device!r}") from exc
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise FailedPrecondition(f"device {device!r} was asked for, but CUDA is not available")
        if resolved.index is None:
            resolved = torch.device("cuda", torch.cuda.current_device())
        elif resolved.index >= torch.cuda.device_count():
            raise InvalidArgument(
                "device", f"a CUDA device below {torch.cuda.device_count()}, got {device!r}"
            )
    elif resolved.type != "cpu":
        raise InvalidArgument("device", f"'cpu', 'cuda[:N]' or 'auto', got {device!r}")
    return resolved


class TextEmbedder:
    """Embeds texts with a Sentence-Transformers-format model directory.

    Rows of :meth:`embed` are L2-normalised float32 vectors equal (to float rounding) to
    ``SentenceTransformer(model_dir).encode(texts)``. On CUDA the transformer runs under fp16
    autocast and pooling in fp32; on CPU everything is fp32. ``device`` is ``"cpu"``,
    ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (``cuda:0`` when CUDA is available, else CPU).
    ``batch_size`` is the most texts per forward pass; ``max_seq_length`` overrides the model's
    truncation length in tokens; ``threads`` sets torch's intra-op thread count, which is a
    process-wide setting. Loading reads only the local directory (no hub access, no remote
    code); check the weights with :func:`verify_weights` first.
    """

    def __init__(
        self,
        model_dir: Path,
        device: str = "cpu",
        batch_size: int = 64,
        max_seq_length: int | None = None,
        threads: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise InvalidArgument("batch_size", f"a positive integer, got {batch_size}")
        if max_seq_length is not None and max_seq_length < 1:
            raise InvalidArgument("max_seq_length", f"a positive integer, got {max_seq_length}")
        if threads is not None:
            if threads < 1:
                raise InvalidArgument("threads", f"a positive integer, got {threads}")
            torch.set_num_threads(threads)

        self._model_dir = Path(model_dir)
        self._device = _resolve_device(device)
        self._batch_size = batch_size

        transformer_dir, pooling_modes = self._read_modules(self._model_dir)
        self._pooling_modes = pooling_modes

        st_config_path = transformer_dir / "sentence_bert_config.json"
        st_config: dict[str, Any] = _read_json(st_config_path) if st_config_path.is_file() else {}

        # Imported here: transformers is heavy, and only a volunteer that computes needs it.
        from transformers import AutoModel, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(transformer_dir), local_files_only=True)
        if not getattr(tokenizer, "is_fast", False):
            raise FailedPrecondition(f"model {self._model_dir} has no fast (Rust) tokenizer")
        # No remote code, ever: the architecture must be one transformers ships.
        model = AutoModel.from_pretrained(
            str(transformer_dir), local_files_only=True, trust_remote_code=False
        )
        model.eval()
        model.requires_grad_(False)
        # fp32 weights everywhere; CUDA gets its speed from fp16 autocast in embed().
        self._model: Any = model.to(device=self._device, dtype=torch.float32)

        config = model.config
        if max_seq_length is None:
            configured = st_config.get("max_seq_length")
            if configured is not None:
                max_seq_length = int(configured)
            else:
                max_seq_length = int(tokenizer.model_max_length)
                positions = getattr(config, "max_position_embeddings", -1)
                if isinstance(positions, int) and positions > 0:
                    max_seq_length = min(max_seq_length, positions)
        self._max_seq_length = max_seq_length

        # Work on the Rust tokenizer directly: truncate as Sentence-Transformers does
        # ("longest_first" at max_seq_length, the tokenizer's own side), never pad there.
        backend: Any = tokenizer.backend_tokenizer
        if st_config.get("do_lower_case", False):
            self._add_lowercase(backend)
        backend.no_padding()
        backend.enable_truncation(
            max_length=max_seq_length,
            strategy="longest_first",
            direction=getattr(tokenizer, "truncation_side", "right"),
        )
        self._tokenizer: Any = backend
        pad_id = tokenizer.pad_token_id
        self._pad_id = int(pad_id) if pad_id is not None else 0

        self._dims = int(config.hidden_size) * len(pooling_modes)

    @staticmethod
    def _read_modules(model_dir: Path) -> tuple[Path, tuple[str, ...]]:
        """Parse ``modules.json``: the Transformer's directory and the pooling modes.

        Rows are always L2-normalised (the embed-text contract), so a Normalize module after
        the Pooling one is accepted and needs nothing further.
        """
        modules_path = model_dir / "modules.json"
        if not modules_path.is_file():
            # A plain transformers directory: Sentence-Transformers uses mean pooling.
            return model_dir, ("mean",)
        transformer_dir: Path | None = None
        modes: tuple[str, ...] | None = None
        normalized = False
        for module in _read_json(modules_path):
            kind = str(module.get("type", "")).rsplit(".", 1)[-1]
            sub = model_dir / str(module.get("path", ""))
            if kind == "Transformer" and transformer_dir is None:
                transformer_dir = sub
            elif kind == "Pooling" and modes is None and transformer_dir is not None:
                pooling_config = sub / "config.json"
                modes = (
                    _pooling_modes(_read_json(pooling_config))
                    if pooling_config.is_file()
                    else ("mean",)
                )
            elif kind == "Normalize" and modes is not None and not normalized:
                normalized = True
            else:
                raise FailedPrecondition(
                    f"model {model_dir}: module {module.get('type')!r} is not supported by "
                    "embed-text (only Transformer, Pooling, Normalize in that order)"
                )
        if transformer_dir is None or modes is None:
            raise FailedPrecondition(
                f"model {model_dir}: modules.json must list a Transformer and a Pooling module"
            )
        return transformer_dir, modes

    @staticmethod
    def _add_lowercase(backend: Any) -> None:
        """Prepend a Lowercase normaliser unless one is there, as Sentence-Transformers does."""
        from tokenizers.normalizers import Lowercase
        from tokenizers.normalizers import Sequence as NormalizerSequence

        current = backend.normalizer
        if isinstance(current, Lowercase):
            return
        if isinstance(current, NormalizerSequence):
            members: list[Any] = list(iter(current))
            if any(isinstance(n, Lowercase) for n in members):
                return
            backend.normalizer = NormalizerSequence([Lowercase(), *members])
        elif current is None:
            backend.normalizer = NormalizerSequence([Lowercase()])
        else:
            backend.normalizer = NormalizerSequence([Lowercase(), current])

    @property
    def dims(self) -> int:
        """Length of each embedding."""
        return self._dims

    @property
    def device(self) -> torch.device:
        """The device the model runs on."""
        return self._device

    @property
    def max_seq_length(self) -> int:
        """Texts are truncated to this many tokens, special tokens included."""
        return self._max_seq_length

    @property
    def batch_size(self) -> int:
        """Most texts in one forward pass."""
        return self._batch_size

    def embed(
        self, texts: Sequence[str], progress: Callable[[int], None] | None = None
    ) -> npt.NDArray[np.float32]:
        """Embed ``texts``; returns float32 ``(len(texts), dims)``, rows L2-normalised, in order.

        ``progress``, when given, is called after each batch with the number of texts done.
        """
        n = len(texts)
        out = np.empty((n, self._dims), dtype=np.float32)
        if n == 0:
            return out
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InvalidArgument(f"texts[{i}]", f"a string, got {type(text).__name__}")

        encodings = self._tokenizer.encode_batch(list(texts))
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=n)
        # Longest first (as Sentence-Transformers does), so memory peaks on the first batch.
        order = np.argsort(-lengths, kind="stable")

        on_cuda = self._device.type == "cuda"
        autocast: AbstractContextManager[Any] = (
            torch.autocast(device_type="cuda", dtype=torch.float16) if on_cuda else nullcontext()
        )
        # On CUDA the rows stay on the device until the end, so batches are not synchronised.
        on_device = (
            torch.empty((n, self._dims), dtype=torch.float32, device=self._device)
            if on_cuda
            else None
        )
        with torch.inference_mode(), autocast:
            for start in range(0, n, self._batch_size):
                index = order[start : start + self._batch_size]
                rows = len(index)
                width = int(lengths[index[0]])
                ids = np.full((rows, width), self._pad_id, dtype=np.int64)
                mask = np.zeros((rows, width), dtype=np.int64)
                for row, k in enumerate(index):
                    length = int(lengths[k])
                    ids[row, :length] = encodings[k].ids
                    mask[row, :length] = 1
                input_ids = torch.from_numpy(ids)
                attention_mask = torch.from_numpy(mask)
                if on_cuda:
                    input_ids = input_ids.pin_memory().to(self._device, non_blocking=True)
                    attention_mask = attention_mask.pin_memory().to(self._device, non_blocking=True)
                hidden = self._model(
                    input_ids=input_ids, attention_mask=attention_mask
                ).last_hidden_state
                pooled = self._pool(hidden.float(), attention_mask)
                pooled = torch.nn.functional.normalize(pooled, p=2.0, dim=1)
                if on_device is not None:
                    on_device[start : start + rows] = pooled
                else:
                    out[index] = pooled.numpy()
                if progress is not None:
                    progress(start + rows)
        if on_device is not None:
            out[order] = on_device.cpu().numpy()
        return out

    def _pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pool right-padded token embeddings ``(B, T, H)`` as Sentence-Transformers does."""
        vectors: list[torch.Tensor] = []
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        token_counts: torch.Tensor | None = None
        for mode in self._pooling_modes:
            if mode == "cls":
                vectors.append(hidden[:, 0])
            elif mode == "max":
                vectors.append(hidden.masked_fill(mask == 0, float("-inf")).max(dim=1).values)
            elif mode in ("mean", "mean_sqrt_len_tokens"):
                if token_counts is None:
                    token_counts = torch.clamp(mask.sum(dim=1), min=1e-9)
                summed = (hidden * mask).sum(dim=1)
                denominator = token_counts if mode == "mean" else torch.sqrt(token_counts)
                vectors.append(summed / denominator)
            elif mode == "weightedmean":
                positions = torch.arange(
                    1, hidden.shape[1] + 1, device=hidden.device, dtype=hidden.dtype
                ).view(1, -1, 1)
                weights = mask * positions
                summed = (hidden * weights).sum(dim=1)
                vectors.append(summed / torch.clamp(weights.sum(dim=1), min=1e-9))
            else:  # lasttoken
                last = attention_mask.sum(dim=1) - 1
                vectors.append(hidden[torch.arange(hidden.shape[0], device=hidden.device), last])
        return vectors[0] if len(vectors) == 1 else torch.cat(vectors, dim=-1)


class EmbedText:
    """The compute class of the ``embed-text`` kind (see protocol/kinds/base.py)."""

    def __init__(
        self, model_dir: Path, spec: ModelSpec, device: str, batch_size: int, threads: int | None
    ) -> None:
        self.embedder = TextEmbedder(
            model_dir,
            device=device,
            batch_size=batch_size,
            max_seq_length=spec.max_seq_length,
            threads=threads,
        )

    def compute(
        self, texts: Sequence[str], progress: Callable[[int], None] | None = None
    ) -> npt.NDArray[np.float32]:
        return self.embedder.embed(list(texts), progress=progress)

    def warm_up(self) -> None:
        self.embedder.embed(["warm up"])
