"""The coordinator's data folder: signing key, admin token, database, datasets.

DIR/coordinator.key   Ed25519 private key, PEM, mode 0600
DIR/admin.token       bearer token for admin RPCs, mode 0600
DIR/coordinator.db    the embedded SQLite database (WAL)
DIR/datasets/JOB/     finished datasets: shards, manifest.json, manifest.sig (+ key-chain.json)
DIR/models/NAME/      models served to volunteers (`allmende model add`), as uploaded
DIR/tls.key, tls.crt  the TLS key (mode 0600) and certificate, self-signed unless given
DIR/key-chain.json    the signed key rotations leading to coordinator.key, oldest first

Key rotation (`rotate_key`) writes the new key as coordinator.key.new, then the chain with
the rotation signed by the old key (the commit point), then renames the new key over the
old one. A crash before the chain is written leaves the old key in charge (the stray new key
is removed at the next start); a crash after it leaves a chain that already names the new
key, and the next start finishes the rename. Either way the folder starts. An advisory
lock (.rotation.lock) keeps a start that races a rotation from taking it for a crashed one.

Retired keys are deleted, not kept: a retired key can still sign what holders of its pin
accept (a manifest, or a rotation to a key of the signer's choosing), so a copy lying in the
folder or its backups is only a liability, and nothing needs it once it has signed the
rotation away from itself.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from allmende.protocol.errors import (
    AlreadyExists,
    FailedPrecondition,
    IntegrityError,
    InvalidArgument,
)
from allmende.protocol.files import fsync_folder
from allmende.protocol.rotation import (
    CHAIN_NAME,
    MAX_CHAIN_LINKS,
    load_chain,
    parse_rotation,
    save_chain,
    sign_rotation,
    verify_chain,
)
from allmende.protocol.signing import SigningKey
from allmende.protocol.tls import cert_sha256, make_self_signed

log = logging.getLogger("allmende.coordinator")

KEY_NAME = "coordinator.key"
PENDING_KEY_NAME = "coordinator.key.new"
ROTATION_LOCK_NAME = ".rotation.lock"
TOKEN_NAME = "admin.token"
DB_NAME = "coordinator.db"
DATASETS = "datasets"
MODELS = "models"
TLS_KEY_NAME = "tls.key"
TLS_CERT_NAME = "tls.crt"


@dataclass(frozen=True)
class CoordinatorHome:
    root: Path

    @property
    def key_path(self) -> Path:
        return self.root / KEY_NAME

    @property
    def pending_key_path(self) -> Path:
        return self.root / PENDING_KEY_NAME

    @property
    def chain_path(self) -> Path:
        return self.root / CHAIN_NAME

    @property
    def token_path(self) -> Path:
        return self.root / TOKEN_NAME

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.root / DB_NAME}"

    @property
    def datasets(self) -> Path:
        return self.root / DATASETS

    @property
    def models(self) -> Path:
        return self.root / MODELS

    @property
    def tls_key_path(self) -> Path:
        return self.root / TLS_KEY_NAME

    @property
    def tls_cert_path(self) -> Path:
        return self.root / TLS_CERT_NAME

    def load_tls(self) -> tuple[bytes, bytes] | None:
        """(key PEM, certificate PEM), or None when this coordinator has no certificate."""
        if not (self.tls_key_path.exists() and self.tls_cert_path.exists()):
            return None
        return self.tls_key_path.read_bytes(), self.tls_cert_path.read_bytes()

    def init(
        self,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        tls_names: tuple[str, ...] = (),
    ) -> SigningKey:
        """Create the key, token, TLS certificate and datasets folder.

        Refuses to overwrite an existing key. Without `tls_cert`/`tls_key` the certificate
        is self-signed; `tls_names` adds host names or addresses to it.
        """
        if (tls_cert is None) != (tls_key is None):
            raise InvalidArgument("--tls-cert/--tls-key", "both files, or neither")
        if tls_cert is not None and tls_key is not None:
            try:
                cert_pem, key_pem = tls_cert.read_bytes(), tls_key.read_bytes()
                cert_sha256(cert_pem)
            except (OSError, ValueError) as exc:
                raise InvalidArgument("--tls-cert", f"a readable PEM certificate ({exc})") from None
        else:
            key_pem, cert_pem = make_self_signed(tls_names)
        if self.key_path.exists():
            raise AlreadyExists(f"{self.key_path} exists; this folder is already initialised")
        self.root.mkdir(parents=True, exist_ok=True)
        key = SigningKey.generate()
        key.save(self.key_path)
        fd = os.open(self.token_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
        self.datasets.mkdir(exist_ok=True)
        fd = os.open(self.tls_key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key_pem)
        self.tls_cert_path.write_bytes(cert_pem)
        return key

    def load_key(self) -> SigningKey:
        if self.pending_key_path.exists():
            with self._rotation_lock():
                self._finish_rotation()
        return self._read_key()

    def _read_key(self) -> SigningKey:
        if not self.key_path.exists():
            raise FailedPrecondition(
                f"{self.key_path} not found; run `allmende coordinator init --data {self.root}`"
            )
        mode = self.key_path.stat().st_mode & 0o777
        if mode & 0o077:
            raise FailedPrecondition(
                f"{self.key_path} is readable by others (mode {mode:o}); chmod 600 it"
            )
        return SigningKey.load(self.key_path)

    def load_token(self) -> str:
        return self.token_path.read_text().strip()

    @property
    def reader_token_path(self) -> Path:
        return self.root / "reader.token"

    def reader_token(self) -> str:
        """The token researchers need when the coordinator serves with `--private` (made on
        first use, mode 600; hand it to the people who may read jobs and datasets)."""
        if not self.reader_token_path.exists():
            fd = os.open(self.reader_token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(32) + "\n")
        return self.reader_token_path.read_text().strip()

    def load_chain(self, key: SigningKey | None = None) -> list[tuple[bytes, bytes]]:
        """The rotations leading to this folder's key, oldest first (none before the first
        rotation), checked link by link to end at the key itself."""
        current = key or self.load_key()
        try:
            chain = load_chain(self.chain_path)
            verify_chain(chain, current.public_key)
        except IntegrityError as exc:
            raise IntegrityError(f"{self.chain_path}: {exc.message}") from None
        return chain

    def rotate_key(
        self, reason: str = "", now_ms: int | None = None
    ) -> tuple[SigningKey, SigningKey]:
        """Replace the signing key with a new one that the old one vouches for.

        Returns (old key, new key). The order of the writes keeps the folder startable at
        every point (see the module docstring); the old key is gone afterwards.
        """
        with self._rotation_lock():
            self._finish_rotation()
            old = self._read_key()
            chain = self.load_chain(old)
            if len(chain) >= MAX_CHAIN_LINKS:
                raise FailedPrecondition(
                    f"{self.chain_path} holds {len(chain)} rotations, the most volunteers accept"
                )
            new = SigningKey.generate()
            when = int(time.time() * 1000) if now_ms is None else now_ms
            link = sign_rotation(old, new.public_key, reason, when)
            _write_private(self.pending_key_path, new.to_pem())
            save_chain(self.chain_path, [*chain, link])  # the commit point
            os.replace(self.pending_key_path, self.key_path)
            fsync_folder(self.root)
        log.info("coordinator key rotated old=%s new=%s", old.fingerprint, new.fingerprint)
        return old, new

    @contextmanager
    def _rotation_lock(self) -> Iterator[None]:
        """Hold off a `serve` starting mid-rotation from mistaking it for a crashed one."""
        try:
            import fcntl
        except ImportError:  # no advisory locks here (Windows): rotate with servers stopped
            yield
            return
        with (self.root / ROTATION_LOCK_NAME).open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _finish_rotation(self) -> None:
        """Complete or undo a rotation that a crash interrupted (with the rotation lock)."""
        pending = self.pending_key_path
        if not pending.exists():
            return
        try:
            new: SigningKey | None = SigningKey.load(pending)
        except (ValueError, InvalidArgument):  # cut short while being written
            new = None
        try:
            chain = load_chain(self.chain_path)
        except IntegrityError as exc:  # whether the rotation committed cannot be told
            raise FailedPrecondition(
                f"{pending} is left from an interrupted key rotation, and {exc.message}; "
                f"restore {self.chain_path} from a backup"
            ) from None
        committed = (
            new is not None
            and bool(chain)
            and parse_rotation(chain[-1][0], len(chain)).new_public_key == new.public_key
        )
        if committed:
            os.replace(pending, self.key_path)
            log.warning("finished an interrupted key rotation; the key is now the new one")
        else:
            pending.unlink()
            log.warning("removed the new key of a key rotation that never completed")
        fsync_folder(self.root)


def _write_private(path: Path, data: bytes) -> None:
    """Write a secret readable by its owner only, flushed to disk before it is relied on."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
