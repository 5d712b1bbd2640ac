"""Profiles recorded before a request proved them are forgotten on upgrade."""

from __future__ import annotations

from flask_migrate import upgrade
from sqlalchemy import text

from integration import create_app
from integration.extensions import db

from .conftest import _config


def test_upgrade_forgets_unproven_signature_profiles(tmp_path):
    app = create_app(_config(f"sqlite:///{tmp_path / 'old.sqlite'}", tmp_path))
    with app.app_context():
        upgrade(revision="0002")
        db.session.execute(text(
            "INSERT INTO store_links (consumer_key, consumer_secret, base_url, store_host, status, "
            "signature_profile, created_at, updated_at) VALUES ('k', 's', 'https://shop.example/', 'shop.example', "
            "'linked', '2.4.8+', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
        db.session.commit()
        upgrade()
        assert db.session.execute(text("SELECT signature_profile FROM store_links")).scalar_one() is None
        db.engine.dispose()
