"""``flask users ...`` through Click's runner."""

from __future__ import annotations

from integration.extensions import db
from integration.models import User


def test_create_user_with_prompted_password_and_list(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["users", "create", "Ops@Example.com", "--admin"],
                           input="a long password\na long password\n")
    assert result.exit_code == 0, result.output
    assert "created admin ops@example.com" in result.output
    assert "a long password" not in result.output
    with app.app_context():
        user = User.by_email("ops@example.com")
        assert user.is_admin and user.check_password("a long password")
        assert "a long password" not in user.password_hash
    listing = runner.invoke(args=["users", "list"])
    assert "ops@example.com\tadmin\tactive" in listing.output


def test_create_user_refuses_duplicates_short_passwords_and_non_emails(app):
    runner = app.test_cli_runner()
    assert runner.invoke(args=["users", "create", "a@example.com", "--password", "long enough pw"]).exit_code == 0
    dup = runner.invoke(args=["users", "create", "a@example.com", "--password", "long enough pw"])
    assert dup.exit_code != 0 and "already exists" in dup.output
    short = runner.invoke(args=["users", "create", "b@example.com", "--password", "short"])
    assert short.exit_code != 0 and "at least 10" in short.output
    bad = runner.invoke(args=["users", "create", "not-an-email", "--password", "long enough pw"])
    assert bad.exit_code != 0 and "not an email" in bad.output
    with app.app_context():
        assert db.session.query(User).count() == 1
