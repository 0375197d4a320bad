"""Settings come from environment variables, converted by the field's type."""

from __future__ import annotations

import pytest

from worker.api.settings import ApiSettings
from worker.config import Settings, redact_url


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


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://user:pw@db:6379/0", "redis://***@db:6379/0"),
        ("redis://:pw@db:6379/0", "redis://***@db:6379/0"),
        ("rediss://db:6380/0?password=pw&db=2", "rediss://db:6380/0?password=***&db=2"),
        ("redis://db/0?username=u&PASSWORD=pw", "redis://db/0?username=u&PASSWORD=***"),
        ("unix:///run/redis.sock?password=pw", "unix:///run/redis.sock?password=***"),
        (
            "redis+sentinel://:pw@h1:26379,h2:26379/speaking/1",
            "redis+sentinel://***@h1:26379,h2:26379/speaking/1",
        ),
        ("redis+cluster://u:p@w@h1:1,h2:2", "redis+cluster://***@h1:1,h2:2"),
        ("redis://db:6379/0?socket_timeout=5", "redis://db:6379/0?socket_timeout=5"),
        ("redis://db:6379/0", "redis://db:6379/0"),
    ],
)
def test_every_form_of_a_redis_url_is_redacted(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "pw" not in redact_url(url)


@pytest.mark.parametrize("address", ["9464", "127.0.0.1:", "127.0.0.1:99999", ":9464", "h:x"])
def test_a_metrics_address_must_be_host_and_port(address: str) -> None:
    with pytest.raises(ValueError, match="must be host:port"):
        ApiSettings.from_env({"SPEAKING_API_METRICS_ADDRESS": address})
