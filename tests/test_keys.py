"""Key rotation: every stored secret ends up under the newest key, resumably."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import text

from integration import create_app
from integration.crypto import rotate_all
from integration.extensions import db

from .test_callback import KEY, SECRET, VERIFIER, post


def raw_secrets(app):
    with app.app_context():
        return (db.session.execute(text("SELECT consumer_secret FROM store_links")).scalars().all() +
                db.session.execute(text("SELECT verifier FROM activations")).scalars().all())


def test_rotate_re_encrypts_everything_under_the_newest_key(app, app_config, client):
    for i in range(7):
        post(client, oauth_consumer_key=KEY[:-2] + f"{i:02d}")
    old_key = app_config["ENCRYPTION_KEYS"][0]
    new_key = Fernet.generate_key().decode()
    rotated_app = create_app({**app_config, "ENCRYPTION_KEYS": (new_key, old_key)})
    # Until rotated, the new key alone cannot read them.
    with pytest.raises(InvalidToken):
        Fernet(new_key).decrypt(raw_secrets(app)[0].encode())
    result = rotated_app.test_cli_runner().invoke(args=["keys", "rotate", "--batch-size", "3"])
    assert result.exit_code == 0, result.output
    assert "store_links: 7 rows re-encrypted" in result.output and "activations: 7 rows" in result.output
    for token in raw_secrets(app):
        assert Fernet(new_key).decrypt(token.encode()).decode() in (SECRET, VERIFIER)
    # The new key alone now reads everything through the models.
    only_new = create_app({**app_config, "ENCRYPTION_KEYS": (new_key,)})
    with only_new.app_context():
        from integration.models import StoreLink

        assert StoreLink.by_consumer_key(KEY[:-2] + "03").consumer_secret == SECRET
    again = rotated_app.test_cli_runner().invoke(args=["keys", "rotate"])
    assert "store_links: 0 rows re-encrypted" in again.output


def test_interrupted_rotation_resumes(app, app_config, client):
    for i in range(6):
        post(client, oauth_consumer_key=KEY[:-2] + f"{i:02d}")
    new_key = Fernet.generate_key().decode()
    rotated_app = create_app({**app_config, "ENCRYPTION_KEYS": (new_key, app_config["ENCRYPTION_KEYS"][0])})

    class Interrupted(Exception):
        pass

    def stop_after_first_batch(table, done):
        raise Interrupted

    with rotated_app.app_context(), pytest.raises(Interrupted):
        rotate_all(batch_size=2, on_batch=stop_after_first_batch)
    under_new = sum(1 for t in raw_secrets(app) if _readable(new_key, t))
    assert under_new == 2  # the first batch was committed
    with rotated_app.app_context():
        counts = rotate_all(batch_size=2)
    assert counts == {"users": 0, "store_links": 4, "activations": 6, "webhook_endpoints": 0, "intake_sources": 0}
    assert all(_readable(new_key, t) for t in raw_secrets(app))


def test_generate_prints_a_usable_key(app):
    key = app.test_cli_runner().invoke(args=["keys", "generate"]).output.strip()
    Fernet(key)


def _readable(key, token):
    try:
        Fernet(key).decrypt(token.encode())
        return True
    except InvalidToken:
        return False
