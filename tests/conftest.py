"""Fixtures: an app on SQLite or PostgreSQL (INTEGRATION_TEST_DATABASE_URL), a sandbox store
served over real HTTP, and our app served over real HTTP for end-to-end flows."""

from __future__ import annotations

import logging

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, text

from integration import create_app
from integration.extensions import db
from integration.models import User
from integration.sandbox import SandboxState, create_sandbox

from .servers import Served, csrf_from  # noqa: F401 - fixtures and tests use them

KEYS = (Fernet.generate_key().decode(), Fernet.generate_key().decode())
PASSWORD = "correct horse battery"
# The in-process servers log every request; keep pytest's output for pytest.
logging.getLogger("werkzeug").setLevel(logging.WARNING)


def pytest_report_header(config):
    return f"database: {_database_url_for_header()}"


def _database_url_for_header():
    import os

    return os.environ.get("INTEGRATION_TEST_DATABASE_URL") or "sqlite (temporary file)"


@pytest.fixture(scope="session", autouse=True)
def instance_folder(tmp_path_factory):
    """Never the checkout's own instance/ (its settings.env, keys or sandbox state)."""
    import os

    path = tmp_path_factory.mktemp("instance")
    os.environ["INTEGRATION_INSTANCE_PATH"] = str(path)
    return path


@pytest.fixture(scope="session")
def database_url(tmp_path_factory):
    import os

    url = os.environ.get("INTEGRATION_TEST_DATABASE_URL")
    if not url:
        return f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.sqlite'}"
    engine = create_engine(url)
    with engine.begin() as conn:  # a clean schema, then the real migrations
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    return url


@pytest.fixture(scope="session")
def migrated(database_url, tmp_path_factory):
    """Run the Alembic migrations once per session: the schema under test is the migrated one."""
    from flask_migrate import upgrade

    app = create_app(_config(database_url, tmp_path_factory.mktemp("instance")))
    with app.app_context():
        upgrade()
        db.engine.dispose()
    return database_url


def _config(database_url, instance, **extra):
    return {
        "TESTING": True,
        "SQLALCHEMY_DATABASE_URI": database_url,
        "SECRET_KEY": "t" * 64,
        "ENCRYPTION_KEYS": KEYS[:1],
        "ALLOWED_STORE_HOSTS": ("127.0.0.1", "localhost"),
        "STRICT_STORE_HOSTS": False,
        "LOGIN_RATE_LIMIT": "1000 per minute",
        "ACCOUNT_RATE_LIMIT": "1000 per minute",
        "CALLBACK_RATE_LIMIT": "1000 per minute",
        "IDENTITY_RATE_LIMIT": "1000 per minute",
        "DEVICE_RATE_LIMIT": "1000 per minute",
        "STORE_TIMEOUT": 5.0,
        "SERVER_NAME": None,
        # Most tests log in as admins with a password only; the 2FA tests set the policy themselves.
        "REQUIRE_2FA": "off",
        # Feeds are looked at every 30 s, not 5: a test's embedded runner syncs its linked store only
        # when the test asks (the feed tests queue their syncs themselves).
        "SYNC_TICK": 30.0,
        # API audit rows written within their request, so each test sees its own (and no batch
        # lands in the next test's tables); tests/test_api_audit.py runs the batched default.
        "API_AUDIT_FLUSH_SECONDS": 0,
        **extra,
    }


@pytest.fixture
def app_config(migrated, tmp_path):
    return _config(migrated, tmp_path)


@pytest.fixture
def app(app_config):
    app = create_app(app_config)
    yield app
    with app.app_context():
        db.session.remove()
        with db.engine.begin() as conn:
            for table in reversed(db.metadata.sorted_tables):
                conn.execute(table.delete())
        db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


def _account(app, email: str, role: str) -> int:
    with app.app_context():
        u = User(email=email, role=role)
        u.set_password(PASSWORD)
        db.session.add(u)
        db.session.commit()
        return u.id


@pytest.fixture
def user(app):
    return _account(app, "owner@example.com", "member")


@pytest.fixture
def admin(app):
    return _account(app, "admin@example.com", "admin")


@pytest.fixture
def sandbox():
    """A sandbox store on a real port; ``sandbox.state`` is its in-memory store."""
    state = SandboxState(products=60)
    served = Served(create_sandbox(state))
    served.state = state
    yield served
    served.stop()


@pytest.fixture
def live_app(app, sandbox):
    """Our app on a real port, with the sandbox's first integration pointing at it."""
    served = Served(app)
    served.app = app
    sandbox.state.add_integration("Companion", f"{served.url}/magento/callback", f"{served.url}/magento/identity")
    yield served
    served.stop()



@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.rep_call = report


@pytest.fixture
def linked(app, sandbox, user):
    """A store linked through the real callback + identity flow; returns (link id, sandbox integration)."""
    from integration.models import StoreLink
    from integration.sandbox.oauth_provider import new_verifier

    client = app.test_client()
    integration = sandbox.state.add_integration("Linked", "x", "y")
    verifier = new_verifier(integration).verifier
    assert client.post("/magento/callback", data={
        "oauth_consumer_key": integration.consumer_key, "oauth_consumer_secret": integration.consumer_secret,
        "store_base_url": sandbox.url + "/", "oauth_verifier": verifier}).status_code == 200
    url = f"/magento/identity?oauth_consumer_key={integration.consumer_key}&success_call_back="
    page = client.get(url).get_data(as_text=True)
    response = client.post("/magento/identity", data={
        "csrf_token": csrf_from(page), "oauth_consumer_key": integration.consumer_key, "success_call_back": "",
        "email": "owner@example.com", "password": PASSWORD})
    assert response.status_code == 200, response.get_data(as_text=True)
    with app.app_context():
        return StoreLink.by_consumer_key(integration.consumer_key).id, integration


@pytest.fixture
def receiver():
    """A webhook receiver on a real port (tests/receiver.py)."""
    from .receiver import Receiver

    r = Receiver()
    yield r
    r.stop()


@pytest.fixture
def runner(app):
    """The app's job runner (webhook deliveries, syncs) started for the test."""
    from integration import jobs

    jobs.start(app)
    yield
    jobs.stop(app)
