"""`allmende model add|list`: models the coordinator serves to volunteers.

`add` reads a model folder (Hugging Face layout), checks every file here first with the same
rules the coordinator applies (protocol/model_manifest.py: safetensors, JSON and tokenizer
text only, no pickle, no remote code), hashes it, and uploads it in chunks; the model's pin
(what work units name) is printed last, on stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from allmende.api.channel import UPLOAD_TIMEOUT_S
from allmende.api.client import ApiClient
from allmende.cli.common import EXIT_OK, err, out, out_json
from allmende.cli.remote import call
from allmende.cli.tokens import read_token, reader_token
from allmende.protocol.errors import InvalidArgument
from allmende.protocol.limits import MODEL_CHUNK_BYTES
from allmende.protocol.model_manifest import (
    MAX_MODEL_FILES,
    check_head,
    check_json,
    check_path,
    new_manifest,
    scan_folder,
    spec_hints,
)
from allmende.protocol.models import ModelFile
from allmende.v1 import allmende_pb2 as pb


def read_folder(folder: Path) -> list[tuple[ModelFile, Path]]:
    """Every file of the folder, checked and hashed; hidden entries are skipped (and named)."""
    found, skipped = scan_folder(folder)
    for name in skipped:
        err(f"skipping hidden {name}")
    if len(found) > MAX_MODEL_FILES:
        raise InvalidArgument("--path", f"a folder of at most {MAX_MODEL_FILES} files")
    files: list[tuple[ModelFile, Path]] = []
    for rel, path in found:
        check_path(rel)
        digest = hashlib.sha256()
        size = 0
        head = b""
        with path.open("rb") as handle:
            while chunk := handle.read(MODEL_CHUNK_BYTES):
                if not head:
                    head = chunk[:16]
                    check_head(rel, head)
                digest.update(chunk)
                size += len(chunk)
        if rel.lower().endswith(".json"):
            check_json(rel, path.read_bytes())
        files.append((ModelFile(rel, size, digest.hexdigest()), path))
    return files


def upload_requests(
    header: pb.AddModelHeader, files: Sequence[tuple[ModelFile, Path]]
) -> Iterator[pb.AddModelRequest]:
    """The AddModel stream: the header, then each file's bytes in chunks of 4 MiB."""
    yield pb.AddModelRequest(header=header)
    for entry, path in files:
        err(f"uploading {entry.path} ({entry.bytes} bytes)")
        with path.open("rb") as handle:
            while chunk := handle.read(MODEL_CHUNK_BYTES):
                yield pb.AddModelRequest(chunk=pb.ModelFileChunk(path=entry.path, data=chunk))


def add(args: argparse.Namespace) -> int:
    token = read_token(args.admin_token_file)
    folder = Path(args.path)
    files = read_folder(folder)
    hinted_dims, hinted_seq = spec_hints(folder)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    dims = args.dims if args.dims is not None else hinted_dims
    seq = args.max_seq_length if args.max_seq_length is not None else hinted_seq
    # The same checks the coordinator makes, before a byte is sent (kinds are its to judge).
    manifest = new_manifest(
        args.name,
        kinds,
        [f for f, _ in files],
        dims,
        seq,
        int(time.time() * 1000),
        args.weights_file,
    )
    header = pb.AddModelHeader(
        name=args.name,
        task_kinds=kinds,
        files=[
            pb.ModelFileInfo(path=f.path, bytes=f.bytes, sha256=f.sha256) for f in manifest.files
        ],
        dims=dims,
        max_seq_length=seq,
        weights_file=args.weights_file,
    )
    err(
        f"adding model {args.name}: {len(files)} files, {manifest.total_bytes} bytes, "
        f"{dims}-d, kinds {', '.join(kinds)}, to {args.coordinator}"
    )
    ordered = sorted(files, key=lambda pair: pair[0].path)
    # Ten minutes, or as long as the bytes take at 1 MiB/s (large models, slow links).
    timeout_s = max(UPLOAD_TIMEOUT_S, manifest.total_bytes / (1 << 20))
    with ApiClient(args.coordinator, admin_token=token) as client:
        info = call(
            lambda: client.add_model(upload_requests(header, ordered), timeout_s),
            args.coordinator,
        )
    err(f"added: model {info.name}, {info.files} files, {info.bytes} bytes; its pin:")
    out(info.pin)
    return EXIT_OK


def _as_dict(m: pb.ModelInfo) -> dict[str, object]:
    return {
        "name": m.name,
        "pin": m.pin,
        "task_kinds": list(m.task_kinds),
        "dims": m.dims,
        "files": m.files,
        "bytes": m.bytes,
        "created_unix_ms": m.created_unix_ms,
    }


def list_models(args: argparse.Namespace) -> int:
    with ApiClient(args.coordinator, admin_token=reader_token(args)) as client:
        models = call(client.list_models, args.coordinator)
    if args.json:
        out_json([_as_dict(m) for m in models])
        return EXIT_OK
    if not models:
        out("no served models")
        return EXIT_OK
    out(f"{'NAME':<28} {'KINDS':<24} {'FILES':>5} {'BYTES':>12}  PIN")
    for m in models:
        kinds = ",".join(m.task_kinds)
        out(f"{m.name:<28} {kinds:<24} {m.files:>5} {m.bytes:>12}  {m.pin}")
    return EXIT_OK
