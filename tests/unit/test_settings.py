"""Settings: environment and file, precedence, errors that name what is wrong, documentation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from modelport.core.catalog import ConfigError
from modelport.settings import ENV_FIELDS, FILE_FIELDS, Settings, load_settings

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_defaults_without_environment() -> None:
    settings = load_settings({})
    assert settings == Settings()
    assert (settings.host, settings.port, settings.data_dir) == ("127.0.0.1", 8000, "./data")
    assert settings.resolved_database_url.startswith("sqlite:///")


def test_environment_values_are_converted() -> None:
    settings = load_settings({"MODELPORT_PORT": "9001", "MODELPORT_KEY_CACHE_TTL": "0.5"})
    assert settings.port == 9001
    assert settings.key_cache_ttl == 0.5


def test_local_models_load_on_first_use_unless_preload_is_set() -> None:
    assert load_settings({}).preload is False
    assert load_settings({"MODELPORT_PRELOAD": "true"}).preload is True
    assert load_settings({"MODELPORT_PRELOAD": "0"}).preload is False
    with pytest.raises(ConfigError, match="preload"):
        load_settings({"MODELPORT_PRELOAD": "sometimes"})


def test_environment_wins_over_file(tmp_path: Path) -> None:
    config = tmp_path / "modelport.toml"
    config.write_text('port = 7000\nhost = "0.0.0.0"\n')
    settings = load_settings({"MODELPORT_CONFIG": str(config), "MODELPORT_PORT": "7001"})
    assert (settings.host, settings.port) == ("0.0.0.0", 7001)


def test_unknown_environment_variable_lists_valid_names() -> None:
    with pytest.raises(ConfigError, match="MODELPORT_PROT.*MODELPORT_PORT"):
        load_settings({"MODELPORT_PROT": "1"})


def test_unknown_file_key_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match="unknown setting.*prot"):
        load_settings({"MODELPORT_CONFIG": str(config)})


def test_bad_value_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="port"):
        load_settings({"MODELPORT_PORT": "eighty"})


def test_missing_config_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MODELPORT_CONFIG"):
        load_settings({"MODELPORT_CONFIG": str(tmp_path / "absent.toml")})


def test_secret_references_resolve_and_unset_ones_fail(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        '[[models]]\nid = "qwen/qwen3-8b"\n[[models.backends]]\nkind = "openai_compat"\n'
        'url = "http://127.0.0.1:9/v1"\napi_key = "env:UPSTREAM_KEY"\n'
    )
    with pytest.raises(ConfigError, match="UPSTREAM_KEY"):
        load_settings({"MODELPORT_CONFIG": str(config)})
    settings = load_settings({"MODELPORT_CONFIG": str(config), "UPSTREAM_KEY": "s3cret"})
    assert settings.secrets == {"UPSTREAM_KEY": "s3cret"}


def test_every_setting_is_documented() -> None:
    text = DOCS.read_text()
    documented_env = set(re.findall(r"`(MODELPORT_[A-Z_]+)`", text))
    assert {f"MODELPORT_{name.upper()}" for name in ENV_FIELDS} <= documented_env
    documented_keys = set(re.findall(r"\| `([a-z_]+)` \|", text))
    assert set(FILE_FIELDS) <= documented_keys
    # And nothing documented that does not exist.
    assert documented_env <= {f"MODELPORT_{name.upper()}" for name in ENV_FIELDS}
