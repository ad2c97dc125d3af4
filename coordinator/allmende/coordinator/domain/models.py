"""Models the coordinator serves: adding one from an operator's upload, and handing it out.

An upload declares every file (path, size, sha256) before any byte arrives; the bytes are
checked while they arrive (protocol/model_manifest.py `FileCheck`: first bytes, size, hash,
JSON content) into a staging folder beside the served ones. Only when every declared file has
arrived whole and matched is the manifest signed, the folder moved to `models/NAME/` and the
model recorded in the store, then in the registry, so `job create --model NAME` can name it.
Anything refused leaves nothing behind: no row, no folder.

Files go to disk before the row: a crash between the two leaves a folder without a row, which
the next upload of that name replaces; never a row without its files.

With several coordinator replicas on one PostgreSQL database, each serves models from its own
data folder: the folder `models/` must then be shared (or the model added on each replica's
folder); a replica without the files answers FAILED_PRECONDITION.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from allmende.coordinator.store.base import Store
from allmende.coordinator.store.records import ModelRecord
from allmende.protocol.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    shown,
)
from allmende.protocol.files import fsync_folder
from allmende.protocol.kinds import get_kind
from allmende.protocol.kinds.columns import VectorColumn
from allmende.protocol.model_manifest import (
    FileCheck,
    ModelManifest,
    check_model_name,
    new_manifest,
    parse_manifest,
    sign_manifest,
)
from allmende.protocol.models import ModelFile, ModelRegistry
from allmende.protocol.signing import SigningKey

log = logging.getLogger("allmende.coordinator.models")

_STAGING = ".incoming-"


@dataclass(frozen=True)
class ModelUpload:
    """What an upload declares before its bytes."""

    name: str
    task_kinds: tuple[str, ...]
    files: tuple[ModelFile, ...]
    dims: int = 0
    max_seq_length: int = 0
    weights_file: str = ""
    labels: tuple[str, ...] = ()


class ModelLibrary:
    """The served models of one coordinator: its store's rows, its data folder's files."""

    def __init__(
        self,
        store: Store,
        key: SigningKey,
        registry: ModelRegistry,
        folder: Path,
        clock: Callable[[], int],
    ) -> None:
        self.store = store
        self.key = key
        self.registry = registry
        self.folder = folder.absolute()  # a registry source must not depend on the cwd
        self.clock = clock
        self._finishing = threading.Lock()

    def load(self) -> None:
        """Put every served model in the registry (at start), and remove what uploads that
        a crash interrupted left behind."""
        if self.folder.is_dir():
            for stale in self.folder.glob(f"{_STAGING}*"):
                shutil.rmtree(stale, ignore_errors=True)
        for record in self.store.list_models():
            self._register(record)

    def refresh(self, name: str) -> None:
        """Register `name` if another replica (or an earlier run) added it since."""
        if self.registry.find(name) is None:
            record = self.store.get_model(name)
            if record is not None:
                self._register(record)

    def _register(self, record: ModelRecord) -> ModelManifest:
        manifest = parse_manifest(record.manifest)
        self.registry.register(manifest.spec(self.folder / manifest.name))
        return manifest

    # ------------------------------------------------------------------ adding

    def add(self, upload: ModelUpload, chunks: Iterable[tuple[str, bytes]]) -> ModelManifest:
        """Receive a model's files, check each against the declaration, sign and record it."""
        manifest = self._declared(upload)
        staging = self.folder / f"{_STAGING}{secrets.token_hex(8)}"
        staging.mkdir(parents=True)
        try:
            self._receive(manifest.files, chunks, staging)
            return self._finish(manifest, staging)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _declared(self, upload: ModelUpload) -> ModelManifest:
        name = check_model_name(upload.name)
        if self.registry.is_builtin(name) or self.store.get_model(name) is not None:
            raise AlreadyExists(f"model {name!r} exists already; choose another name")
        if self.registry.find(name) is not None:
            raise AlreadyExists(f"model {name!r} is registered already; choose another name")
        kinds = [get_kind(k).name for k in upload.task_kinds]
        weights_file = upload.weights_file or "model.safetensors"
        manifest = new_manifest(
            name,
            kinds,
            upload.files,
            upload.dims,
            upload.max_seq_length,
            self.clock(),
            weights_file,
            upload.labels,
        )
        for kind_name in kinds:
            kind = get_kind(kind_name)
            if any(isinstance(c, VectorColumn) for c in kind.results) and manifest.dims <= 0:
                raise InvalidArgument("dims", f"the width of the vectors {kind_name} returns")
        return manifest

    def _receive(
        self, files: Sequence[ModelFile], chunks: Iterable[tuple[str, bytes]], staging: Path
    ) -> None:
        declared = {f.path: f for f in files}
        done: set[str] = set()
        check: FileCheck | None = None
        handle: BinaryIO | None = None
        try:
            for path, data in chunks:
                if check is None or path != check.file.path:
                    if check is not None and handle is not None:
                        self._close(check, handle)
                        done.add(check.file.path)
                    if path not in declared:
                        raise InvalidArgument(
                            f"file {shown(path)}", "a file declared in the upload's file list"
                        )
                    if path in done:
                        raise InvalidArgument(
                            f"file {shown(path)}", "each file's chunks together, once"
                        )
                    check = FileCheck(declared[path])
                    target = staging / path
                    target.parent.mkdir(parents=True, exist_ok=True)
                    handle = target.open("xb")
                check.feed(data)
                assert handle is not None
                handle.write(data)
            if check is not None and handle is not None:
                self._close(check, handle)
                done.add(check.file.path)
                handle = None
        finally:
            if handle is not None:
                handle.close()
        missing = sorted(set(declared) - done)
        if missing:
            raise InvalidArgument(
                f"file {shown(missing[0])}",
                f"the bytes of every declared file ({len(missing)} never arrived)",
            )

    @staticmethod
    def _close(check: FileCheck, handle: BinaryIO) -> None:
        try:
            check.finish()
            handle.flush()
            os.fsync(handle.fileno())
        finally:
            handle.close()

    def _finish(self, manifest: ModelManifest, staging: Path) -> ModelManifest:
        data, signature = sign_manifest(manifest, self.key)
        target = self.folder / manifest.name
        with self._finishing:
            if self.store.get_model(manifest.name) is not None:
                raise AlreadyExists(f"model {manifest.name!r} exists already")
            if target.exists():  # files of an upload that crashed before its row was written
                log.warning("replacing unrecorded model folder %s", target)
                shutil.rmtree(target)
            staging.rename(target)
            fsync_folder(self.folder)
            record = ModelRecord(manifest.name, manifest.pin, data, signature, manifest.created_ms)
            try:
                self.store.add_model(record)
            except BaseException:
                shutil.rmtree(target, ignore_errors=True)
                raise
        self._register(record)
        log.info(
            "model added name=%s pin=%s files=%d bytes=%d",
            manifest.name,
            manifest.pin,
            len(manifest.files),
            manifest.total_bytes,
        )
        return manifest

    # ------------------------------------------------------------------ serving

    def _record(self, name: str) -> ModelRecord:
        record = self.store.get_model(name)
        if record is None:
            raise NotFound(f"no served model {shown(name)}")
        return record

    def list(self) -> list[ModelManifest]:
        return [parse_manifest(r.manifest) for r in self.store.list_models()]

    def manifest(self, name: str) -> tuple[bytes, bytes]:
        """The manifest exactly as signed, and its signature."""
        record = self._record(name)
        return record.manifest, record.signature

    def file(self, name: str, path: str) -> tuple[Path, int]:
        """The local file of a served model's manifest entry, and its declared size."""
        manifest = parse_manifest(self._record(name).manifest)
        entry = next((f for f in manifest.files if f.path == path), None)
        if entry is None:
            raise NotFound(f"model {name!r} has no file {shown(path)}")
        local = self.folder / name / entry.path
        if not local.is_file():
            raise FailedPrecondition(
                f"model {name!r}: file {entry.path} is not in this coordinator's data folder"
            )
        return local, entry.bytes
