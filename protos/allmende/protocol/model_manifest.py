"""Models served by a coordinator: which files a model folder may hold, and its signed manifest.

A served model is a folder in Hugging Face layout pinned by the sha256 of every file. The
coordinator writes a manifest (canonical JSON: name, task kinds, the `ModelSpec` fields a
volunteer needs, every file's path, size and sha256) and signs it under its own context. The
model's pin, the hash a work unit names as `model_sha256`, is the sha256 of the canonical file
list, so naming the pin pins every file.

Only data travels, never code (DESIGN.md, principle 1). Allowed files:

- `*.safetensors`: tensors behind a JSON header; loading them runs no code. The first bytes
  must look like one (an 8-byte header length, then `{`).
- `*.json`: configs, tokenizers, preprocessors. Each must parse as JSON, and none may
  ask for remote code (`auto_map`, `trust_remote_code`): transformers would import Python
  from the hub for such a model, which is code we were sent.
- `*.txt`: tokenizer vocabularies and BPE merges (`vocab.txt`, `merges.txt`); `*.md`: the
  model card. Read as text or not at all.

Everything else is refused, by name and by content: PyTorch's `.bin/.pt/.pth/.ckpt` (pickle,
or zip archives of pickle), `.pkl/.pickle`, `.py`, and any file whose first bytes are a pickle
protocol opcode (0x80) or a zip header (`PK\\x03\\x04`, PyTorch's format). SentencePiece
`*.model` files are refused too: they are a binary protobuf parsed by native code, and no model
this project serves needs one (CLIP and MiniLM tokenise from JSON and text files); allowing
them is a decision for the day a model needs them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from allmende.protocol.errors import IntegrityError, InvalidArgument, shown
from allmende.protocol.models import ModelFile, ModelSpec
from allmende.protocol.signing import CTX_MODEL_MANIFEST, SigningKey, verify

FORMAT: Final = "allmende-model/1"
ALLOWED_SUFFIXES: Final = (".safetensors", ".json", ".txt", ".md")
REFUSED_SUFFIXES: Final = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".py", ".model")
# Keys in a JSON file that make transformers fetch and run code.
REMOTE_CODE_KEYS: Final = ("auto_map", "trust_remote_code")

MAX_MODEL_FILES: Final = 64
MAX_MODEL_FILE_BYTES: Final = 8 * 1024**3
MAX_MODEL_BYTES: Final = 16 * 1024**3
# JSON files are read whole to check them; the largest tokenizer.json files are ~20 MiB.
MAX_JSON_BYTES: Final = 64 * 1024**2
MAX_PATH_CHARS: Final = 200
MAX_PATH_DEPTH: Final = 4
MAX_NAME_CHARS: Final = 128
MAX_MANIFEST_BYTES: Final = 64 * 1024

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_HEX64 = re.compile(r"[0-9a-f]{64}")
PICKLE_PROTO: Final = 0x80
ZIP_MAGIC: Final = b"PK\x03\x04"


def check_model_name(name: str) -> str:
    if not (0 < len(name) <= MAX_NAME_CHARS) or not _NAME.fullmatch(name) or ".." in name:
        raise InvalidArgument(
            "name",
            f"a model name of 1 to {MAX_NAME_CHARS} letters, digits, '.', '_' or '-' "
            f"(not starting with '.' or '-'), got {shown(name)}",
        )
    return name


def check_path(path: str) -> str:
    """A file's path inside a model folder: relative, '/'-separated, no '..', nothing hidden,
    an allowed suffix."""
    field = f"file {shown(path)}"
    if not path or len(path) > MAX_PATH_CHARS:
        raise InvalidArgument(field, f"a path of 1 to {MAX_PATH_CHARS} characters")
    if path.startswith("/") or "\\" in path or ":" in path:
        raise InvalidArgument(field, "a relative path with '/' separators (not absolute)")
    parts = path.split("/")
    if ".." in parts:
        raise InvalidArgument(field, "a path inside the model folder (no '..')")
    if len(parts) > MAX_PATH_DEPTH:
        raise InvalidArgument(field, f"at most {MAX_PATH_DEPTH} levels of folders")
    for part in parts:
        if part.startswith("."):
            raise InvalidArgument(field, "no hidden files or folders (names starting with '.')")
        if not _PART.fullmatch(part):
            raise InvalidArgument(field, "names of letters, digits, '.', '_' and '-' only")
    lower = path.lower()
    if lower.endswith(REFUSED_SUFFIXES):
        raise InvalidArgument(
            field,
            "safetensors, JSON or tokenizer text files only; pickle-based weights "
            "(.bin, .pt, .pth, .ckpt, .pkl), code (.py) and sentencepiece .model files "
            "are refused",
        )
    if not lower.endswith(ALLOWED_SUFFIXES):
        raise InvalidArgument(field, f"a file ending in one of {', '.join(ALLOWED_SUFFIXES)}")
    return path


def check_head(path: str, head: bytes) -> None:
    """Refuse a file by its first bytes: pickle or zip anywhere, and a safetensors file that
    does not start like one."""
    field = f"file {shown(path)}"
    if head[:1] == bytes([PICKLE_PROTO]):
        raise InvalidArgument(field, "no pickle data (the file starts with a pickle opcode)")
    if head[:4] == ZIP_MAGIC:
        raise InvalidArgument(field, "no zip archive (PyTorch's pickle-in-zip format)")
    if path.lower().endswith(".safetensors") and (len(head) < 9 or head[8:9] != b"{"):
        raise InvalidArgument(field, "a safetensors file (8-byte header length, then '{')")


def check_json(path: str, data: bytes) -> None:
    """A JSON file must parse, and an object must not ask for remote code (lists are fine:
    sentence-transformers' modules.json and data_config.json are lists)."""
    field = f"file {shown(path)}"
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidArgument(field, f"valid JSON ({exc})") from None
    if not isinstance(value, dict):
        return
    asked = [key for key in REMOTE_CODE_KEYS if key in value]
    if asked:
        raise InvalidArgument(
            field, f"no remote code ({', '.join(asked)} asks transformers to run Python)"
        )


def check_files(files: Sequence[ModelFile]) -> tuple[ModelFile, ...]:
    """The declared file list, checked and sorted by path."""
    if not files:
        raise InvalidArgument("files", "at least one file (the model folder is empty)")
    if len(files) > MAX_MODEL_FILES:
        raise InvalidArgument("files", f"at most {MAX_MODEL_FILES} files, got {len(files)}")
    seen: set[str] = set()
    total = 0
    for f in files:
        check_path(f.path)
        if f.path.lower() in seen:
            raise InvalidArgument(f"file {shown(f.path)}", "each path once")
        seen.add(f.path.lower())
        if not 0 < f.bytes <= MAX_MODEL_FILE_BYTES:
            raise InvalidArgument(
                f"file {shown(f.path)}", f"1 to {MAX_MODEL_FILE_BYTES} bytes, got {f.bytes}"
            )
        if f.path.lower().endswith(".json") and f.bytes > MAX_JSON_BYTES:
            raise InvalidArgument(f"file {shown(f.path)}", f"at most {MAX_JSON_BYTES} bytes")
        if not _HEX64.fullmatch(f.sha256):
            raise InvalidArgument(f"file {shown(f.path)}", "a sha256 of 64 lowercase hex digits")
        total += f.bytes
    if total > MAX_MODEL_BYTES:
        raise InvalidArgument("files", f"at most {MAX_MODEL_BYTES} bytes in all, got {total}")
    return tuple(sorted(files, key=lambda f: f.path))


def model_pin(files: Iterable[ModelFile]) -> str:
    """sha256 of the canonical file list: what a work unit names as the model's hash."""
    listing = [
        {"path": f.path, "bytes": f.bytes, "sha256": f.sha256}
        for f in sorted(files, key=lambda f: f.path)
    ]
    return hashlib.sha256(_canonical(listing)).hexdigest()


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


@dataclass(frozen=True)
class ModelManifest:
    name: str
    task_kinds: tuple[str, ...]
    dims: int
    max_seq_length: int
    weights_file: str
    labels: tuple[str, ...]
    files: tuple[ModelFile, ...]
    created_ms: int

    @property
    def pin(self) -> str:
        return model_pin(self.files)

    @property
    def total_bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    def to_bytes(self) -> bytes:
        return _canonical(
            {
                "format": FORMAT,
                "name": self.name,
                "task_kinds": list(self.task_kinds),
                "dims": self.dims,
                "max_seq_length": self.max_seq_length,
                "weights_file": self.weights_file,
                "labels": list(self.labels),
                "files": [
                    {"path": f.path, "bytes": f.bytes, "sha256": f.sha256} for f in self.files
                ],
                "pin": self.pin,
                "created_ms": self.created_ms,
            }
        )

    def spec(self, folder: Path) -> ModelSpec:
        """The registry entry of this model, its files in `folder`."""
        return ModelSpec(
            name=self.name,
            dims=self.dims,
            weights_sha256=self.pin,
            max_seq_length=self.max_seq_length,
            task_kinds=self.task_kinds,
            source=str(folder),
            weights_file=self.weights_file,
            labels=self.labels,
            files=self.files,
        )


def new_manifest(
    name: str,
    task_kinds: Sequence[str],
    files: Sequence[ModelFile],
    dims: int,
    max_seq_length: int,
    created_ms: int,
    weights_file: str = "model.safetensors",
    labels: Sequence[str] = (),
) -> ModelManifest:
    """A manifest, every field checked (task kinds against the known ones by the caller)."""
    check_model_name(name)
    checked = check_files(files)
    if not task_kinds or len(set(task_kinds)) != len(task_kinds):
        raise InvalidArgument("task_kinds", "one or more task kinds, each once")
    if not 0 <= dims <= 65536:
        raise InvalidArgument("dims", f"0 to 65536, got {dims}")
    if not 0 <= max_seq_length <= 1_000_000:
        raise InvalidArgument("max_seq_length", f"0 to 1000000, got {max_seq_length}")
    if weights_file not in {f.path for f in checked}:
        raise InvalidArgument("weights_file", f"a file of the model, got {shown(weights_file)}")
    if len(labels) > 100_000 or any(not 0 < len(label) <= 200 for label in labels):
        raise InvalidArgument("labels", "at most 100000 labels of 1 to 200 characters")
    return ModelManifest(
        name,
        tuple(task_kinds),
        dims,
        max_seq_length,
        weights_file,
        tuple(labels),
        checked,
        created_ms,
    )


def sign_manifest(manifest: ModelManifest, key: SigningKey) -> tuple[bytes, bytes]:
    data = manifest.to_bytes()
    return data, key.sign(CTX_MODEL_MANIFEST, data)


def parse_manifest(data: bytes) -> ModelManifest:
    """A manifest from its bytes, every field checked again (the bytes came over the wire)."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise IntegrityError(f"model manifest larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        raw = json.loads(data)
        if raw.get("format") != FORMAT:
            raise IntegrityError(f"model manifest format {shown(raw.get('format'))}, not {FORMAT}")
        manifest = new_manifest(
            name=str(raw["name"]),
            task_kinds=[str(k) for k in raw["task_kinds"]],
            files=[
                ModelFile(str(f["path"]), int(f["bytes"]), str(f["sha256"])) for f in raw["files"]
            ],
            dims=int(raw["dims"]),
            max_seq_length=int(raw["max_seq_length"]),
            created_ms=int(raw["created_ms"]),
            weights_file=str(raw["weights_file"]),
            labels=[str(label) for label in raw["labels"]],
        )
    except InvalidArgument as exc:
        raise IntegrityError(f"model manifest: {exc.message}") from None
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise IntegrityError(f"model manifest is malformed: {exc!r}") from None
    if raw.get("pin") != manifest.pin:
        raise IntegrityError("model manifest's pin is not the sha256 of its file list")
    if manifest.to_bytes() != data:
        raise IntegrityError("model manifest is not in canonical form")
    return manifest


def open_manifest(data: bytes, signature: bytes, coordinator_key: bytes) -> ModelManifest:
    """Verify the coordinator's signature over the exact bytes, then parse them."""
    verify(coordinator_key, CTX_MODEL_MANIFEST, data, signature)
    return parse_manifest(data)


def scan_folder(folder: Path) -> tuple[list[tuple[str, Path]], list[str]]:
    """The files of a model folder to upload, as (path in the manifest, local path), sorted,
    and the hidden entries skipped (`.gitattributes`, `.git/`, `.cache/`). Symbolic links are
    followed only to files."""
    if not folder.is_dir():
        raise InvalidArgument("--path", f"a model folder, got {shown(str(folder))}")
    found: list[tuple[str, Path]] = []
    skipped: list[str] = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if any(part.startswith(".") for part in rel.split("/")):
            if not any(part.startswith(".") for part in rel.split("/")[:-1]):
                skipped.append(rel)
            continue
        if path.is_file():
            found.append((rel, path))
    return found, skipped


def spec_hints(folder: Path) -> tuple[int, int]:
    """(dims, max_seq_length) as a Hugging Face folder states them: a CLIP model's
    `projection_dim` or a text model's `hidden_size`; sentence-transformers'
    `max_seq_length`, else the tokenizer's `model_max_length`, else the model's
    `max_position_embeddings`. 0 where the folder does not say."""

    def read(name: str) -> dict[str, Any]:
        try:
            value = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    config = read("config.json")
    dims = config.get("projection_dim") or config.get("hidden_size") or 0
    seq = read("sentence_bert_config.json").get("max_seq_length") or 0
    if not seq:
        tokenizer_max = read("tokenizer_config.json").get("model_max_length") or 0
        seq = tokenizer_max if isinstance(tokenizer_max, int) and tokenizer_max < 1_000_000 else 0
    if not seq:
        seq = config.get("max_position_embeddings") or 0
    return (int(dims) if isinstance(dims, int) else 0, int(seq) if isinstance(seq, int) else 0)


class FileCheck:
    """Checks one model file while its bytes arrive (an upload on the coordinator, a download
    on a volunteer): its first bytes, its size, its sha256, and a JSON file's content.

    `start` bytes already on disk (a resumed download) are fed first through `feed`, so the
    hash and the head check always cover the whole file."""

    HEAD = 16

    def __init__(self, declared: ModelFile) -> None:
        self.file = declared
        self.size = 0
        self._digest = hashlib.sha256()
        self._head = b""
        self._json: list[bytes] | None = [] if declared.path.lower().endswith(".json") else None

    def feed(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.file.bytes:
            raise InvalidArgument(
                f"file {shown(self.file.path)}",
                f"the declared {self.file.bytes} bytes, got more",
            )
        if len(self._head) < self.HEAD:
            self._head += data[: self.HEAD - len(self._head)]
            if len(self._head) >= min(self.HEAD, self.file.bytes):
                check_head(self.file.path, self._head)
        self._digest.update(data)
        if self._json is not None:
            self._json.append(data)

    def finish(self) -> None:
        """Raise unless the file was complete and exactly the declared one."""
        field = f"file {shown(self.file.path)}"
        if self.size != self.file.bytes:
            raise InvalidArgument(field, f"the declared {self.file.bytes} bytes, got {self.size}")
        check_head(self.file.path, self._head)
        actual = self._digest.hexdigest()
        if actual != self.file.sha256:
            raise InvalidArgument(field, f"the declared sha256 {self.file.sha256}, got {actual}")
        if self._json is not None:
            check_json(self.file.path, b"".join(self._json))
            self._json = []
