"""The volunteer's own key and home folder (default: the platform's user data folder)."""

from __future__ import annotations

from pathlib import Path

import platformdirs

from allmende.protocol.signing import SigningKey

KEY_NAME = "volunteer.key"


def default_home() -> Path:
    return Path(platformdirs.user_data_dir("allmende", appauthor=False)) / "volunteer"


def load_identity(home: Path) -> SigningKey:
    """Load the volunteer key, generating it (mode 0600) on first run."""
    return SigningKey.load_or_create(home / KEY_NAME)
