"""Models served by the coordinator, fetched when a unit names one this volunteer lacks.

A unit names a model and its pin (the sha256 of the model's file list). When the registry has
no model of that name, or only a served one with another pin, the volunteer:

1. fetches the model's manifest and checks the coordinator's signature over the exact bytes
   with the key the handshake pinned (a manifest signed by any other key is refused), and
   that the manifest's pin is the one the signed unit names;
2. checks the file list again here (safetensors, JSON and tokenizer text only: no pickle,
   no code, no remote code; protocol/model_manifest.py);
3. downloads each file into HOME/models/<pin>/, resumably: a partial `<file>.part` continues
   from its size, and every byte, old and new, goes through the same checks (first bytes,
   size, sha256, JSON content) before the file takes its name;
4. registers the model with that folder as its source, so the normal compute path loads it
   after checking every file once more (protocol/weights.py `verify_model`).

A file already cached that no longer matches (changed on disk) is downloaded again. Builtin
models are never fetched or replaced.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from allmende.client.connection import RemoteError
from allmende.client.engine import events as ev
from allmende.client.engine.link import CoordinatorLink
from allmende.protocol.errors import AllmendeError, FailedPrecondition, IntegrityError
from allmende.protocol.files import fsync_folder
from allmende.protocol.limits import MODEL_CHUNK_BYTES
from allmende.protocol.model_manifest import FileCheck, ModelManifest, open_manifest
from allmende.protocol.models import ModelFile, ModelRegistry
from allmende.protocol.weights import file_sha256
from allmende.v1 import allmende_pb2 as pb

log = logging.getLogger("allmende.volunteer")

PART = ".part"


class ModelCache:
    """Served models of one volunteer home, fetched from its coordinator on demand."""

    def __init__(
        self,
        root: Path,
        registry: ModelRegistry,
        link: CoordinatorLink,
        coordinator_key: bytes,
        on_event: Callable[[ev.Event], None],
    ) -> None:
        self.root = root.absolute()
        self.registry = registry
        self.link = link
        self.coordinator_key = coordinator_key
        self.on_event = on_event
        self._lock = threading.Lock()  # lanes of several devices fetch one model once
        # Pins whose files did not match their manifest, with the reason: later units naming
        # them are refused without downloading the model again in this run.
        self._bad: dict[str, str] = {}

    def ensure(self, name: str, pin: str) -> None:
        """Make `name` at `pin` computable here, fetching it if needed; raises
        IntegrityError (or another AllmendeError) when the coordinator's model is not one
        this volunteer may load, or the coordinator will not serve it."""
        with self._lock:
            if pin in self._bad:
                raise IntegrityError(self._bad[pin])
            try:
                self._ensure(name, pin)
            except IntegrityError as exc:
                self._bad[pin] = exc.message
                raise
            except RemoteError as exc:
                raise FailedPrecondition(
                    f"model {name}: the coordinator did not serve it ({exc.code}): {exc.details}"
                ) from None

    def _ensure(self, name: str, pin: str) -> None:
        known = self.registry.find(name)
        if known is not None and (not known.served or known.weights_sha256 == pin):
            return  # a builtin (check_unit compares its pin) or this very served model
        if self.registry.is_builtin(name):
            return
        manifest = self._manifest(name, pin)
        folder = self.root / manifest.pin
        self._fetch(manifest, folder)
        self.registry.register(manifest.spec(folder))

    def _manifest(self, name: str, pin: str) -> ModelManifest:
        client = self.link.client
        response = self.link.retrying(lambda: client.model_manifest(name))
        assert isinstance(response, pb.GetModelManifestResponse)
        try:
            manifest = open_manifest(response.manifest, response.signature, self.coordinator_key)
        except IntegrityError as exc:
            raise IntegrityError(f"model {name}: {exc.message}") from None
        if manifest.name != name:
            raise IntegrityError(
                f"model {name}: the coordinator sent the manifest of {manifest.name}"
            )
        if manifest.pin != pin:
            raise IntegrityError(
                f"model {name}: the signed manifest pins {manifest.pin[:16]}…, the unit "
                f"names {pin[:16]}…"
            )
        return manifest

    def _fetch(self, manifest: ModelManifest, folder: Path) -> None:
        started = time.monotonic()
        folder.mkdir(parents=True, exist_ok=True)
        have = {f.path: self._cached(folder, f) for f in manifest.files}
        cached = sum(f.bytes for f in manifest.files if have[f.path])
        total = manifest.total_bytes
        if cached == total:
            return
        self.on_event(
            ev.ModelFetching(manifest.name, manifest.pin, len(manifest.files), total, cached)
        )
        progress = _Progress(manifest.name, total, cached, self.on_event)
        downloaded = 0
        for f in manifest.files:
            if not have[f.path]:
                downloaded += self._download(manifest.name, f, folder, progress)
        fsync_folder(folder)
        seconds = time.monotonic() - started
        log.info(
            "model fetched name=%s pin=%s bytes=%d seconds=%.1f",
            manifest.name,
            manifest.pin,
            downloaded,
            seconds,
        )
        self.on_event(
            ev.ModelReady(manifest.name, manifest.pin, downloaded, round(seconds, 3), str(folder))
        )

    @staticmethod
    def _cached(folder: Path, f: ModelFile) -> bool:
        """Whether the file is here and matches; a file that does not is removed."""
        path = folder / f.path
        if not path.is_file():
            return False
        if path.stat().st_size == f.bytes and file_sha256(path) == f.sha256:
            return True
        log.warning("cached model file %s does not match its manifest; fetching it again", path)
        path.unlink()
        return False

    def _download(self, name: str, f: ModelFile, folder: Path, progress: _Progress) -> int:
        """Fetch one file (resuming a partial one), check it whole, give it its name.
        Returns the bytes fetched over the network."""
        target = folder / f.path
        part = target.with_name(target.name + PART)
        part.parent.mkdir(parents=True, exist_ok=True)
        fetched = 0
        base = progress.done

        def rest() -> None:
            nonlocal fetched
            progress.done = base  # a retry counts this file's bytes afresh
            check = FileCheck(f)
            size = part.stat().st_size if part.exists() else 0
            if size > f.bytes:
                part.unlink()
                size = 0
            with part.open("ab" if size else "wb") as out:
                if size:  # the bytes from before count too: hash and check them again
                    with part.open("rb") as old:
                        while chunk := old.read(MODEL_CHUNK_BYTES):
                            check.feed(chunk)
                    progress.add(size, f.path)
                for chunk in self.link.client.download_model_file(name, f.path, size):
                    check.feed(chunk)
                    out.write(chunk)
                    fetched += len(chunk)
                    progress.add(len(chunk), f.path)
                out.flush()
                os.fsync(out.fileno())
            try:
                check.finish()
            except AllmendeError as exc:
                part.unlink(missing_ok=True)  # a bad start must not be resumed
                raise IntegrityError(f"model {name}: {exc.message}") from None

        self.link.retrying(rest)
        part.replace(target)
        return fetched


class _Progress:
    """ModelProgress events at each further tenth of the model (the last one at 100 %), so
    a headless log gets about ten lines however many files the model has."""

    def __init__(
        self, model: str, total: int, done: int, on_event: Callable[[ev.Event], None]
    ) -> None:
        self.model = model
        self.total = max(total, 1)
        self.done = done
        self.on_event = on_event
        self._next = self._step(done)

    def _step(self, done: int) -> int:
        tenth = self.total // 10 or 1
        return (done // tenth + 1) * tenth

    def add(self, n: int, path: str) -> None:
        self.done += n
        if self.done >= self._next or (n and self.done == self.total):
            self._next = self._step(self.done)
            self.on_event(ev.ModelProgress(self.model, self.done, self.total, path))
