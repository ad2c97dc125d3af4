"""The volunteer's settings: one table of keys, read from TOML, the environment and flags.

Every setting is a key in ``volunteer.toml``, an ``ALLMENDE_<KEY>`` environment variable and
a command-line flag; later sources win (defaults < file < environment < flags). The file
lives in the platform's config folder, or beside the volunteer's key when ``--home`` (or
``ALLMENDE_HOME``) names a home, so a home is a self-contained volunteer; ``--config`` (or
``ALLMENDE_CONFIG``) names the file directly. A bad value names its key (or variable) and
what was expected. The TUI saves only the keys the volunteer changed in it, so a value given
once as a flag is not written to the file by accident. The table of keys, with each one's
check, is in setting_keys.py; its names are importable from here as before.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import platformdirs

from allmende.client.setting_keys import ENV_PREFIX, KEYS, KEYS_BY_NAME, Key
from allmende.protocol.errors import InvalidArgument
from allmende.protocol.limits import MAX_FETCH_BYTES, MAX_FETCH_SECONDS

if TYPE_CHECKING:
    from allmende.client.engine.runner import EngineConfig

# The key table's names (setting_keys.py) are part of this module's interface, as before.
__all__ = [
    "CONFIG_NAME",
    "ENV_PREFIX",
    "FETCH_WARNING",
    "KEYS",
    "KEYS_BY_NAME",
    "Key",
    "LoadedSettings",
    "SettingsFile",
    "VolunteerSettings",
    "add_setting_flags",
    "default_config_path",
    "flags_from",
    "load_settings",
    "parse_value",
    "resolve_config_path",
    "resolve_home",
    "validate",
]

CONFIG_NAME = "volunteer.toml"


@dataclass(frozen=True)
class VolunteerSettings:
    coordinator: str = ""
    fingerprint: str = ""
    display_name: str = ""
    device: str = "auto"
    batch_size: int = 64
    threads: int = 0
    gpu_memory_gb: float = 0.0
    idle_only: bool = False
    idle_cpu_percent: float = 25.0
    pause_on_battery: bool = False
    max_gpu_temp_c: int = 0
    schedule: str = ""
    max_cpu_temp_c: int = 0
    fetch_urls: bool = False
    allow_private_addresses: bool = False

    @property
    def configured(self) -> bool:
        """True once a coordinator and its fingerprint are known."""
        return bool(self.coordinator and self.fingerprint)

    def changed_from(self, other: VolunteerSettings) -> dict[str, Any]:
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        }

    def engine_config(self, home: Path, **extra: Any) -> EngineConfig:
        from allmende.client.engine.runner import EngineConfig

        return EngineConfig(
            coordinator=self.coordinator,
            fingerprint=self.fingerprint,
            home=home,
            device=self.device,
            batch_size=self.batch_size,
            threads=self.threads or None,
            display_name=self.display_name,
            gpu_memory_gb=self.gpu_memory_gb,
            idle_only=self.idle_only,
            idle_cpu_percent=self.idle_cpu_percent,
            pause_on_battery=self.pause_on_battery,
            max_gpu_temp_c=float(self.max_gpu_temp_c),
            max_cpu_temp_c=float(self.max_cpu_temp_c),
            schedule=self.schedule,
            fetch_urls=self.fetch_urls,
            allow_private_addresses=self.allow_private_addresses,
            **extra,
        )


# What opting in to --fetch-urls means, said wherever it is turned on.
FETCH_WARNING = (
    "Fetching URLs: your machine connects to whatever web servers the job's URLs name "
    "(the job's owner chooses them), downloads and sees their content, and reveals your IP "
    f"address to them. Only public addresses are fetched, at most "
    f"{MAX_FETCH_BYTES / 2**20:g} MiB and {MAX_FETCH_SECONDS:g} s an image."
)


def _typed(key: Key, value: Any, where: str) -> Any:
    """Check a file value's TOML type (ints pass for floats) and its range."""
    if key.type is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, key.type) or (key.type is int and isinstance(value, bool)):
        raise InvalidArgument(where, f"a {key.type.__name__}, got {value!r}")
    return _checked(key, value, where)


def _checked(key: Key, value: Any, where: str) -> Any:
    if isinstance(value, str):
        value = value.strip()
        if key.name == "fingerprint":
            value = value.lower().replace(":", "")
    problem = key.check(value)
    if problem is not None:
        raise InvalidArgument(where, f"{problem}, got {value!r}")
    return value


def _from_text(key: Key, text: str, where: str) -> Any:
    """Parse an environment value or flag."""
    if key.type is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise InvalidArgument(where, f"true or false, got {text!r}")
    if key.type is str:
        return _checked(key, text, where)
    try:
        number = key.type(text)
    except ValueError:
        what = "a whole number" if key.type is int else "a number"
        raise InvalidArgument(where, f"{what}, got {text!r}") from None
    return _checked(key, number, where)


# ---------------------------------------------------------------- locations


def default_config_path() -> Path:
    return Path(platformdirs.user_config_dir("allmende", appauthor=False)) / CONFIG_NAME


def resolve_home(flag: str | None, env: Mapping[str, str]) -> Path | None:
    """The volunteer home named by --home or ALLMENDE_HOME, or None for the default."""
    value = flag or env.get(ENV_PREFIX + "HOME")
    return Path(value).expanduser() if value else None


def resolve_config_path(flag: str | None, home: Path | None, env: Mapping[str, str]) -> Path:
    value = flag or env.get(ENV_PREFIX + "CONFIG")
    if value:
        return Path(value).expanduser()
    if home is not None:
        return home / CONFIG_NAME
    return default_config_path()


# ---------------------------------------------------------------- the file


class SettingsFile:
    """The TOML file: read whole, saved by merging changed keys, replaced atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, Any]:
        try:
            with self.path.open("rb") as handle:
                raw = tomllib.load(handle)
        except FileNotFoundError:
            return {}
        except tomllib.TOMLDecodeError as exc:
            raise InvalidArgument(str(self.path), f"a TOML file ({exc})") from None
        values = {}
        for name, value in raw.items():
            key = KEYS_BY_NAME.get(name)
            if key is None:
                known = ", ".join(KEYS_BY_NAME)
                raise InvalidArgument(f"{self.path}: {name}", f"one of the keys {known}")
            values[name] = _typed(key, value, f"{self.path}: {name}")
        return values

    def save(self, changes: Mapping[str, Any]) -> None:
        import tomli_w

        values = self.read()
        values.update(changes)
        ordered = {key.name: values[key.name] for key in KEYS if key.name in values}
        text = (
            "# Allmende volunteer settings. Every key is also an ALLMENDE_<KEY> variable and a\n"
            "# flag of `allmende volunteer`; both override this file.\n" + tomli_w.dumps(ordered)
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, self.path)


# ---------------------------------------------------------------- merging


@dataclass(frozen=True)
class LoadedSettings:
    settings: VolunteerSettings
    # Where each non-default value came from: "file", "env" or "flag".
    origins: dict[str, str]
    file: SettingsFile


def load_settings(
    path: Path, env: Mapping[str, str], flags: Mapping[str, Any] | None = None
) -> LoadedSettings:
    """Defaults < file < environment < flags (a flag given as None is not given)."""
    file = SettingsFile(path)
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for name, value in file.read().items():
        values[name], origins[name] = value, "file"
    for key in KEYS:
        if key.env in env:
            values[key.name] = _from_text(key, env[key.env], key.env)
            origins[key.name] = "env"
    for name, value in (flags or {}).items():
        if value is None:
            continue
        key = KEYS_BY_NAME[name]
        text = value if isinstance(value, str) else None
        if text is not None:
            values[name] = _from_text(key, text, key.flag)
        else:
            values[name] = _checked(key, value, key.flag)
        origins[name] = "flag"
    return LoadedSettings(VolunteerSettings(**values), origins, file)


def validate(settings: VolunteerSettings) -> VolunteerSettings:
    """Check every value (as the settings screen does before saving); returns it cleaned."""
    cleaned = {key.name: _checked(key, getattr(settings, key.name), key.name) for key in KEYS}
    return VolunteerSettings(**cleaned)


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per setting, each defaulting to None (not given)."""
    for key in KEYS:
        help_text = f"{key.help} [{key.env}]"
        if key.type is bool:
            parser.add_argument(
                key.flag, dest=key.name, action=argparse.BooleanOptionalAction, help=help_text
            )
        else:
            parser.add_argument(key.flag, dest=key.name, metavar=key.name.upper(), help=help_text)


def flags_from(args: argparse.Namespace) -> dict[str, Any]:
    return {key.name: getattr(args, key.name, None) for key in KEYS}


def parse_value(name: str, text: str, where: str | None = None) -> Any:
    """Parse one setting typed by the volunteer; errors name `where` (default the key)."""
    key = KEYS_BY_NAME[name]
    return _from_text(key, text, where or name)
