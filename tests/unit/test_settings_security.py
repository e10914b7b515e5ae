"""Settings for abuse and browsers: lists from the environment, checked at load time."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelport.core.catalog import ConfigError
from modelport.settings import load_settings


def test_safe_defaults() -> None:
    settings = load_settings({})
    assert (settings.auth_failure_limit, settings.auth_failure_window) == (20, 60.0)
    assert settings.trusted_proxies == ()
    assert settings.cors_origins == ()


def test_lists_are_comma_separated_in_the_environment() -> None:
    settings = load_settings(
        {
            "MODELPORT_TRUSTED_PROXIES": "10.0.0.0/8, ::1,",
            "MODELPORT_CORS_ORIGINS": "https://a.example,http://localhost:5173",
        }
    )
    assert settings.trusted_proxies == ("10.0.0.0/8", "::1")
    assert settings.cors_origins == ("https://a.example", "http://localhost:5173")


def test_lists_are_arrays_in_the_file(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('cors_origins = ["*"]\ntrusted_proxies = ["127.0.0.1"]\n')
    settings = load_settings({"MODELPORT_CONFIG": str(config)})
    assert (settings.cors_origins, settings.trusted_proxies) == (("*",), ("127.0.0.1",))


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("TRUSTED_PROXIES", "proxy.internal", "trusted_proxies.*proxy.internal"),
        ("CORS_ORIGINS", "app.example", "cors_origins.*app.example"),
        ("CORS_ORIGINS", "https://app.example/path", "cors_origins.*no path"),
        ("AUTH_FAILURE_LIMIT", "-1", "auth_failure_limit"),
        ("AUTH_FAILURE_WINDOW", "0", "auth_failure_window"),
    ],
)
def test_bad_values_are_refused_naming_the_setting(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings({f"MODELPORT_{name}": value})
