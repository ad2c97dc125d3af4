"""Where a model's files are, and the check that they are the ones the registry pins.

Torch-free and shared: a volunteer checks the models it computes with, and a coordinator the
models it computes gold answers with or serves.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import threading
from pathlib import Path
from typing import Final

from allmende.protocol.errors import FailedPrecondition, IntegrityError, InvalidArgument
from allmende.protocol.model_manifest import model_pin
from allmende.protocol.models import ModelSpec

WEIGHTS_FILE: Final = "model.safetensors"
"""The file whose sha256 the model registry pins, unless the model names another."""

_PACKAGE_PREFIX: Final = "package:"
_CHUNK: Final = 1 << 20

# (resolved path, st_dev, st_ino, st_mtime_ns, st_size) -> sha256 hex digest of that file.
_digests: dict[tuple[str, int, int, int, int], str] = {}
_digests_lock = threading.Lock()


def resolve_model_dir(spec: ModelSpec) -> Path:
    """Return the local directory holding the weights of ``spec``.

    ``spec.source`` is ``"package:<module>"`` (weights shipped in a Python package whose
    module offers ``get_model_path()``), ``"package:<module>/<folder>"`` (a folder inside an
    installed package, found without importing it) or a directory path.
    """
    source = spec.source
    if not source.startswith(_PACKAGE_PREFIX):
        return Path(source)
    module_name, _, folder = source[len(_PACKAGE_PREFIX) :].partition("/")
    if not module_name:
        raise InvalidArgument(
            "source", f"'package:<module>' for model {spec.name!r}, got {source!r}"
        )
    missing = (
        f"model {spec.name!r} needs the Python package providing module {module_name!r}, "
        "which is not installed"
    )
    if folder:  # a folder shipped inside the package
        found = importlib.util.find_spec(module_name)
        places = found.submodule_search_locations if found is not None else None
        if not places:
            raise FailedPrecondition(missing)
        return Path(next(iter(places))) / folder
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise FailedPrecondition(f"{missing} ({exc})") from exc
    get_model_path = getattr(module, "get_model_path", None)
    if not callable(get_model_path):
        raise FailedPrecondition(
            f"module {module_name!r} (source of model {spec.name!r}) has no get_model_path()"
        )
    return Path(get_model_path())


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file, remembered for this process under its path, inode, mtime and size
    (a file changed in place gets a new mtime, so it is hashed again)."""
    resolved = path.resolve(strict=True)
    st = resolved.stat()
    key = (str(resolved), st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
    with _digests_lock:
        actual = _digests.get(key)
    if actual is None:
        actual = _sha256_file(resolved)
        with _digests_lock:
            _digests[key] = actual
    return actual


def verify_model(model_dir: Path, spec: ModelSpec) -> None:
    """Check a model's files against its registry entry: every file of a served model (and
    that the list is the one its pin names), the one pinned weights file of any other."""
    if not spec.served:
        verify_weights(model_dir, spec.weights_sha256, spec.weights_file)
        return
    if model_pin(spec.files) != spec.weights_sha256:
        raise IntegrityError(f"model {spec.name}: its file list is not the one its pin names")
    for f in spec.files:
        path = Path(model_dir) / f.path
        try:
            actual = file_sha256(path)
        except OSError as exc:
            raise FailedPrecondition(f"model file {path} cannot be read: {exc}") from exc
        if actual != f.sha256:
            raise IntegrityError(
                f"model file {path} does not match the signed manifest: "
                f"expected sha256 {f.sha256}, got {actual}"
            )


def verify_weights(model_dir: Path, expected_sha256: str, weights_file: str = WEIGHTS_FILE) -> None:
    """Check that ``model_dir/weights_file`` has the sha256 ``expected_sha256``.

    Raises :class:`IntegrityError` naming the file and both hashes when it differs, and
    :class:`FailedPrecondition` when the file is missing. A file's digest is remembered for this
    process under its path, inode, mtime and size, so checking an unchanged file again is free.
    """
    path = Path(model_dir) / weights_file
    try:
        actual = file_sha256(path)
    except OSError as exc:
        raise FailedPrecondition(f"model weights {path} cannot be read: {exc}") from exc
    expected = expected_sha256.strip().lower()
    if actual != expected:
        raise IntegrityError(
            f"model weights {path} do not match the registry: "
            f"expected sha256 {expected}, got {actual}"
        )
