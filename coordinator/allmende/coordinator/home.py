"""The coordinator's data folder: signing key, admin token, database, datasets.

DIR/coordinator.key   Ed25519 private key, PEM, mode 0600
DIR/admin.token       bearer token for admin RPCs, mode 0600
DIR/coordinator.db    the embedded SQLite database (WAL)
DIR/datasets/JOB/     finished datasets: shards, manifest.json, manifest.sig
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from allmende.protocol.errors import AlreadyExists, FailedPrecondition
from allmende.protocol.signing import SigningKey

KEY_NAME = "coordinator.key"
TOKEN_NAME = "admin.token"
DB_NAME = "coordinator.db"
DATASETS = "datasets"


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

    def init(self) -> SigningKey:
        """Create the key, token, database folder. Refuses to overwrite an existing key."""
        if self.key_path.exists():
            raise AlreadyExists(f"{self.key_path} exists; this folder is already initialised")
        self.root.mkdir(parents=True, exist_ok=True)
        key = SigningKey.generate()
        key.save(self.key_path)
        fd = os.open(self.token_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
        self.datasets.mkdir(exist_ok=True)
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
