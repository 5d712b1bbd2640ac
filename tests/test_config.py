"""Configuration: refuse to run in production without real secrets; development keeps its own."""

from __future__ import annotations

import pytest

from integration import create_app
from integration.config import ConfigError


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in ("SECRET_KEY", "ENCRYPTION_KEYS", "ENV", "DATABASE_URL"):
        monkeypatch.delenv(f"INTEGRATION_{name}", raising=False)
    monkeypatch.setenv("INTEGRATION_INSTANCE_PATH", str(tmp_path / "instance"))
    monkeypatch.setenv("INTEGRATION_DATABASE_URL", f"sqlite:///{tmp_path / 'x.sqlite'}")
    return monkeypatch


def test_production_refuses_to_start_without_a_secret_key(clean_env):
    with pytest.raises(ConfigError, match="INTEGRATION_SECRET_KEY"):
        create_app()


def test_production_refuses_a_placeholder_secret_key(clean_env):
    clean_env.setenv("INTEGRATION_SECRET_KEY", "changeme")
    with pytest.raises(ConfigError, match="at least 32"):
        create_app()


def test_production_refuses_to_start_without_encryption_keys(clean_env):
    clean_env.setenv("INTEGRATION_SECRET_KEY", "x" * 40)
    with pytest.raises(ConfigError, match="INTEGRATION_ENCRYPTION_KEYS"):
        create_app()


def test_production_refuses_a_malformed_encryption_key(clean_env):
    clean_env.setenv("INTEGRATION_SECRET_KEY", "x" * 40)
    clean_env.setenv("INTEGRATION_ENCRYPTION_KEYS", "not-a-key")
    with pytest.raises(ConfigError, match="not a Fernet key"):
        create_app()


def test_development_creates_and_keeps_its_keys(clean_env, tmp_path):
    clean_env.setenv("INTEGRATION_ENV", "development")
    first = create_app()
    second = create_app()
    assert first.config["SECRET_KEY"] == second.config["SECRET_KEY"]
    assert first.config["ENCRYPTION_KEYS"] == second.config["ENCRYPTION_KEYS"]
    assert (tmp_path / "instance" / "secret_key").stat().st_mode & 0o077 == 0


def test_unknown_environment_name_is_refused(clean_env):
    clean_env.setenv("INTEGRATION_ENV", "staging")
    with pytest.raises(ConfigError, match="production' or 'development"):
        create_app()


def test_allowed_hosts_and_public_url_come_from_the_environment(clean_env):
    clean_env.setenv("INTEGRATION_ENV", "development")
    clean_env.setenv("INTEGRATION_ALLOWED_STORE_HOSTS", "shop.internal, .corp.example")
    clean_env.setenv("INTEGRATION_PUBLIC_URL", "https://companion.example/")
    app = create_app()
    assert app.config["ALLOWED_STORE_HOSTS"] == ("shop.internal", ".corp.example")
    assert app.config["PUBLIC_URL"] == "https://companion.example"
    assert app.config["SESSION_COOKIE_SECURE"] is True


def test_public_url_is_what_the_pages_tell_admins_to_enter(app_config):
    app = create_app({**app_config, "PUBLIC_URL": "https://companion.example"})
    page = app.test_client().get("/magento/callback").get_data(as_text=True)
    assert "https://companion.example/magento/callback" in page
    assert "https://companion.example/magento/identity" in page


@pytest.mark.parametrize("name, value, said", [
    ("SYNC_ENTITIES", "products,invoices", "invoices not known"),
    ("SYNC_TICK", "0", "SYNC_TICK must be a positive"),
])
def test_feed_settings_that_make_no_sense_are_refused(clean_env, name, value, said):
    clean_env.setenv("INTEGRATION_SECRET_KEY", "x" * 40)
    clean_env.setenv("INTEGRATION_ENCRYPTION_KEYS", "hAeHU1j0T8pl4WoCyk7E3ICaFXG7Xa7aSL2ZVLrE7ws=")
    clean_env.setenv(f"INTEGRATION_{name}", value)
    with pytest.raises(ConfigError, match=said):
        create_app()


def test_an_api_rate_limit_that_is_not_a_rate_stops_the_start(clean_env):
    clean_env.setenv("INTEGRATION_SECRET_KEY", "x" * 40)
    clean_env.setenv("INTEGRATION_ENCRYPTION_KEYS", "hAeHU1j0T8pl4WoCyk7E3ICaFXG7Xa7aSL2ZVLrE7ws=")
    clean_env.setenv("INTEGRATION_API_RATE_LIMIT", "lots")
    with pytest.raises(ConfigError, match="INTEGRATION_API_RATE_LIMIT must be a rate"):
        create_app()
