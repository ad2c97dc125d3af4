"""Settings: one key each in TOML, environment and flags; later sources win; bad values name
their key; the file keeps only what was saved and is replaced atomically."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from allmende.cli.main import build_parser
from allmende.client.settings import (
    KEYS,
    SettingsFile,
    VolunteerSettings,
    flags_from,
    load_settings,
    resolve_config_path,
    resolve_home,
    validate,
)
from allmende.protocol.errors import InvalidArgument

FP = "ab" * 32


def parse(*argv: str) -> dict[str, object]:
    return flags_from(build_parser().parse_args(["volunteer", *argv]))


def test_every_setting_has_a_key_a_variable_and_a_flag() -> None:
    parser_help = build_parser().parse_args(["volunteer"])
    names = {f for f in VolunteerSettings.__dataclass_fields__}
    assert {key.name for key in KEYS} == names
    for key in KEYS:
        assert key.env == "ALLMENDE_" + key.name.upper()
        assert hasattr(parser_help, key.name)


def test_defaults_then_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "volunteer.toml"
    path.write_text(
        f'coordinator = "file:1"\nfingerprint = "{FP}"\nbatch_size = 16\n'
        'threads = 2\nschedule = "22:00-07:00"\n'
    )
    env = {"ALLMENDE_BATCH_SIZE": "32", "ALLMENDE_THREADS": "3", "ALLMENDE_IDLE_ONLY": "yes"}
    loaded = load_settings(path, env, parse("--threads", "4", "--pause-on-battery"))
    s = loaded.settings
    assert (s.coordinator, s.fingerprint, s.schedule) == ("file:1", FP, "22:00-07:00")
    assert (s.batch_size, s.threads, s.idle_only, s.pause_on_battery) == (32, 4, True, True)
    assert s.device == "auto" and s.max_gpu_temp_c == 0  # defaults
    assert loaded.origins == {
        "coordinator": "file",
        "fingerprint": "file",
        "batch_size": "env",
        "threads": "flag",
        "schedule": "file",
        "idle_only": "env",
        "pause_on_battery": "flag",
    }


@pytest.mark.parametrize(
    ("source", "where", "expected"),
    [
        ("file", "batch_size", "a int"),
        ("env", "ALLMENDE_BATCH_SIZE", "a whole number"),
        ("flag", "--batch-size", "a whole number"),
        ("env", "ALLMENDE_IDLE_ONLY", "true or false"),
        ("flag", "--schedule", "22:00-07:00"),
        ("flag", "--device", "auto, cpu or cuda:N"),
        ("flag", "--fingerprint", "64-hex-digit"),
        ("file", "unknown_key", "one of the keys"),
    ],
)
def test_a_bad_value_names_its_key_and_what_was_expected(
    tmp_path: Path,
    source: str,
    where: str,
    expected: str,
) -> None:
    path = tmp_path / "volunteer.toml"
    env: dict[str, str] = {}
    argv: list[str] = []
    if source == "file":
        path.write_text(f'{where} = "lots"\n')
    elif source == "env":
        env[where] = "lots"
    else:
        argv = [where, "9-17" if where == "--schedule" else "gpu-please"]
    with pytest.raises(InvalidArgument) as error:
        load_settings(path, env, parse(*argv))
    assert where in error.value.message and expected in error.value.message


def test_the_file_saves_only_changed_keys_and_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "volunteer.toml"
    file = SettingsFile(path)
    file.save({"coordinator": "a:1", "batch_size": 8})
    file.save({"schedule": "22:00-07:00"})
    assert tomllib.loads(path.read_text()) == {
        "coordinator": "a:1",
        "batch_size": 8,
        "schedule": "22:00-07:00",
    }
    assert path.read_text().startswith("# Allmende volunteer settings")
    assert [p.name for p in path.parent.iterdir()] == ["volunteer.toml"]
    assert load_settings(path, {}).settings.batch_size == 8


def test_where_the_file_lives(tmp_path: Path) -> None:
    home = resolve_home(None, {"ALLMENDE_HOME": str(tmp_path / "h")})
    assert home == tmp_path / "h"
    assert resolve_config_path(None, home, {}) == tmp_path / "h" / "volunteer.toml"
    assert resolve_config_path("/x/v.toml", home, {}) == Path("/x/v.toml")
    assert resolve_config_path(None, None, {"ALLMENDE_CONFIG": "/y.toml"}) == Path("/y.toml")
    default = resolve_config_path(None, None, {})
    assert default.name == "volunteer.toml" and "allmende" in str(default)


def test_validate_cleans_and_checks_what_a_screen_collected() -> None:
    cleaned = validate(VolunteerSettings(coordinator=" h:1 ", fingerprint=FP.upper()))
    assert (cleaned.coordinator, cleaned.fingerprint) == ("h:1", FP)
    with pytest.raises(InvalidArgument, match="max_gpu_temp_c"):
        validate(VolunteerSettings(max_gpu_temp_c=5))


def test_engine_config_carries_every_runtime_setting(tmp_path: Path) -> None:
    s = VolunteerSettings(
        coordinator="h:1",
        fingerprint=FP,
        threads=0,
        max_gpu_temp_c=85,
        schedule="01:00-02:00",
        gpu_memory_gb=2.5,
    )
    config = s.engine_config(tmp_path, exit_when_idle=True)
    assert config.threads is None and config.max_gpu_temp_c == 85.0
    assert (config.schedule, config.gpu_memory_gb, config.exit_when_idle) == (
        "01:00-02:00",
        2.5,
        True,
    )
    assert config.home == tmp_path
