"""The coordinator's data folder: signing key, admin token, database, datasets.

DIR/coordinator.key   Ed25519 private key, PEM, mode 0600
DIR/admin.token       bearer token for admin RPCs, mode 0600
DIR/coordinator.db    the embedded SQLite database (WAL)
DIR/datasets/JOB/     finished datasets: shards, manifest.json, manifest.sig
DIR/tls.key, tls.crt  the TLS key (mode 0600) and certificate, self-signed unless given
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from allmende.protocol.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from allmende.protocol.signing import SigningKey
from allmende.protocol.tls import cert_sha256, make_self_signed

KEY_NAME = "coordinator.key"
TOKEN_NAME = "admin.token"
DB_NAME = "coordinator.db"
DATASETS = "datasets"
TLS_KEY_NAME = "tls.key"
TLS_CERT_NAME = "tls.crt"


@dataclass(frozen=True)
class CoordinatorHome:
    root: Path

    @property
    def key_path(self) -> Path:
        return self.root / KEY_NAME

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
