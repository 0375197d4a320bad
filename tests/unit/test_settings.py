"""Settings come from environment variables, converted by the field's type."""

from __future__ import annotations

import pytest

from worker.api.settings import ApiSettings
from worker.config import Settings


def test_worker_settings_from_env() -> None:
    settings = Settings.from_env(
        {
            "SPEAKING_WORKER_ID": "pbx7",
            "SPEAKING_METRICS_PORT": "0",
            "SPEAKING_WIDEBAND_WEBSOCKET": "no",
            "SPEAKING_ARI_PASSWORD": "s3cret",
            "SPEAKING_REDIS_URL": "redis://user:pw@db:6379/0",
        }
    )
    assert (settings.worker_id, settings.metrics_port, settings.wideband_websocket) == (
        "pbx7",
        0,
        False,
    )
    shown = settings.redacted()
    assert shown["ari_password"] == "***" and shown["redis_url"] == "redis://***@db:6379/0"
    assert "s3cret" not in str(shown) and "pw@" not in str(shown)


def test_api_settings_from_env_and_defaults() -> None:
    assert ApiSettings.from_env({}).default_provider == "elevenlabs"
    settings = ApiSettings.from_env(
        {
            "SPEAKING_API_PORT": "9090",
            "SPEAKING_API_TENANCY_CHECK": "0",
            "SPEAKING_API_DEFAULT_PROVIDER": "offline",
            "SPEAKING_API_COMMAND_TIMEOUT_S": "2.5",
        }
    )
    assert (settings.port, settings.tenancy_check) == (9090, False)
    assert (settings.default_provider, settings.command_timeout_s) == ("offline", 2.5)


def test_a_number_that_does_not_parse_names_its_variable() -> None:
    with pytest.raises(
        ValueError, match="SPEAKING_MAX_SESSIONS must be a whole number, got 'lots'"
    ):
        Settings.from_env({"SPEAKING_MAX_SESSIONS": "lots"})
    with pytest.raises(ValueError, match="SPEAKING_API_COMMAND_TIMEOUT_S must be a number"):
        ApiSettings.from_env({"SPEAKING_API_COMMAND_TIMEOUT_S": "10s"})
