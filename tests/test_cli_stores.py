"""``flask stores ...``: through Click's runner, and one real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from integration.extensions import db
from integration.models import AuditEvent, StoreLink
from integration.sandbox.state import Token, random_string

from .conftest import KEYS


def run(app, *args, input=None):
    return app.test_cli_runner().invoke(args=["stores", *map(str, args)], input=input)


def link_of(app, link_id):
    from sqlalchemy.orm import undefer

    with app.app_context():
        return db.session.get(StoreLink, link_id, options=[undefer("*")])


def test_list_and_show(app, linked, sandbox):
    link_id, _ = linked
    plain = run(app, "list")
    key = link_of(app, link_id).consumer_key
    assert plain.exit_code == 0 and f"{link_id}\tlinked\t-\t{sandbox.url}/\t{key[:4]}…{key[-4:]}\t" in plain.output
    rows = [json.loads(line) for line in run(app, "list", "--json").output.splitlines()]
    assert rows[0]["status"] == "linked" and rows[0]["owner"] == "owner@example.com"
    shown = run(app, "show", link_id)
    assert "activations:" in shown.output and "activate" in shown.output and "linked" in shown.output


def test_store_text_from_outside_never_reaches_the_terminal_raw(app, linked):
    """Rows written before control characters were refused (past the ORM, whose listener now
    neutralises them) still print escaped: a store address must not drive the terminal."""
    link_id, _ = linked
    with app.app_context():
        table = StoreLink.__table__
        db.session.execute(table.update().where(table.c.id == link_id).values(
            label="shop\x1b[2J", base_url="https://shop.example/\u202egpj/", last_error="oops\x07"))
        db.session.commit()
    for args in (("list",), ("show", link_id)):
        out = run(app, *args).output
        assert "\x1b" not in out and "\u202e" not in out and "\x07" not in out
        assert "shop\\x1b[2J" in out and "\\u202egpj" in out
    assert "\\x07" in run(app, "show", link_id).output


def test_check_prints_version_and_configs_and_records_contact(app, linked):
    link_id, _ = linked
    result = run(app, "check", link_id)
    assert result.exit_code == 0, result.output
    assert "magento_version: Magento/2.4 (Community)" in result.output and '"code": "default"' in result.output
    assert link_of(app, link_id).magento_version == "Magento/2.4 (Community)"


def test_call_with_params_data_file_and_store_code(app, linked, tmp_path):
    link_id, _ = linked
    got = run(app, "call", link_id, "GET", "products", "--param", "searchCriteria[pageSize]=2",
              "--param", "searchCriteria[currentPage]=3")
    assert got.exit_code == 0, got.output
    assert [p["sku"] for p in json.loads(got.output)["items"]] == ["SB-00005", "SB-00006"]
    body = tmp_path / "product.json"
    body.write_text(json.dumps({"product": {"sku": "CLI-1", "name": "From a file"}}))
    posted = run(app, "call", link_id, "POST", "products", "--data", f"@{body}")
    assert posted.exit_code == 0 and json.loads(posted.output)["name"] == "From a file"
    configs = run(app, "call", link_id, "get", "store/storeConfigs", "--store-code", "all")
    assert json.loads(configs.output)[0]["code"] == "all"


def test_call_errors_exit_non_zero_with_magentos_message(app, linked):
    link_id, _ = linked
    missing = run(app, "call", link_id, "GET", "products/NOPE")
    assert missing.exit_code == 1
    assert "HTTP 404: The product that was requested doesn't exist" in missing.output
    bad = run(app, "call", link_id, "POST", "products", "--data", "{not json")
    assert bad.exit_code == 2 and "not JSON" in bad.output
    assert run(app, "call", link_id, "GET", "products", "--param", "novalue").exit_code == 2
    assert "no store with id 999" in run(app, "call", 999, "GET", "x").output


def test_call_refuses_dot_segments(app, linked, sandbox):
    link_id, _ = linked
    for path in ("products/..", "products/%2E%2E", "../../x"):
        result = run(app, "call", link_id, "DELETE", path)
        assert result.exit_code == 2 and "path segment is not allowed" in result.output
    assert len(sandbox.state.products) == 60


def test_deleted_integration_marks_the_link_revoked_with_the_time(app, linked, sandbox):
    link_id, integration = linked
    sandbox.state.integrations.pop(integration.id)
    result = run(app, "check", link_id)
    assert result.exit_code == 1 and "does not exist" in result.output
    link = link_of(app, link_id)
    assert link.status == "revoked" and link.revoked_at is not None
    with app.app_context():
        assert db.session.query(AuditEvent).filter_by(action="store.revoked").count() == 1


def test_older_store_generation_is_remembered_on_the_link(app, linked, sandbox):
    link_id, _ = linked
    sandbox.state.profile = "2.4.4-2.4.7"
    # [2]/[10] tells 2.4.8+ from the older two, a space in a plain value 2.4.4-2.4.7 from patch-37278.
    params = ["--param", "q=a b"]
    for i in (2, 10):
        params += ["--param", f"searchCriteria[filter_groups][0][filters][{i}][field]=sku",
                   "--param", f"searchCriteria[filter_groups][0][filters][{i}][value]=SB-00001"]
    result = run(app, "call", link_id, "GET", "products", *params)
    assert result.exit_code == 0, result.output
    assert link_of(app, link_id).signature_profile == "2.4.4-2.4.7"
    assert "2.4.4-2.4.7" in run(app, "list").output


def test_a_recorded_profile_the_store_refuses_is_forgotten_until_proven_again(app, linked, sandbox):
    link_id, _ = linked
    with app.app_context():
        db.session.get(StoreLink, link_id).signature_profile = "2.4.8+"
        db.session.commit()
    sandbox.state.profile = "2.4.4-2.4.7"  # e.g. restored from an older backup
    # Refused as 2.4.8+, accepted as 2.4.4-2.4.7, which patch-37278 signs alike here.
    params = []
    for i in (2, 10):
        params += ["--param", f"searchCriteria[filter_groups][0][filters][{i}][field]=sku"]
    assert run(app, "call", link_id, "GET", "products", *params).exit_code == 0
    assert link_of(app, link_id).signature_profile is None


def test_add_a_manually_activated_integration_with_secrets_on_stdin(app, sandbox, user):
    integration = sandbox.state.add_integration("Manual", "", "")
    integration.token = Token("access", random_string(), random_string(), "")
    integration.status = "Active"
    secrets = f"{integration.consumer_secret}\n{integration.token.token}\n{integration.token.secret}\n"
    wrong = f"{'x' * 32}\n{integration.token.token}\n{integration.token.secret}\n"
    refused = run(app, "add", "--base-url", sandbox.url, "--consumer-key", integration.consumer_key, input=wrong)
    assert refused.exit_code == 1 and "signature is invalid" in refused.output
    with app.app_context():
        assert db.session.query(StoreLink).count() == 0
    added = run(app, "add", "--base-url", sandbox.url, "--consumer-key", integration.consumer_key,
                "--owner", "owner@example.com", input=secrets)
    assert added.exit_code == 0, added.output
    assert integration.consumer_secret not in added.output and integration.token.secret not in added.output
    with app.app_context():
        link = StoreLink.by_consumer_key(integration.consumer_key)
        assert link.status == "linked" and link.owner.email == "owner@example.com"


def test_unlink_forgets_tokens_and_keeps_history(app, linked):
    link_id, _ = linked
    assert run(app, "unlink", link_id, input="n\n").exit_code == 1
    assert link_of(app, link_id).has_token
    assert run(app, "unlink", link_id, "--yes").exit_code == 0
    link = link_of(app, link_id)
    with app.app_context():
        link = db.session.get(StoreLink, link_id)
        assert not link.has_token and link.status == "unlinked" and len(link.activations) == 1
        assert link.last_error is None


def test_export_all_products_jsonl_and_csv(app, linked, sandbox, tmp_path):
    link_id, _ = linked
    out = tmp_path / "products.jsonl"
    result = run(app, "export", link_id, "products", "--output", out, "--page-size", "7", "--concurrency", "3")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records == sorted(sandbox.state.products.values(), key=lambda p: p["id"])
    csv_out = tmp_path / "products.csv"
    assert run(app, "export", link_id, "products", "--format", "csv", "--output", csv_out).exit_code == 0
    lines = csv_out.read_text().splitlines()
    assert lines[0].startswith("id,sku,name") and len(lines) == 61
    stdout = run(app, "export", link_id, "orders")
    assert len(stdout.output.splitlines()) == len(sandbox.state.orders)


def test_export_since_only_takes_recent_records(app, linked, sandbox, tmp_path):
    link_id, _ = linked
    cutoff = sorted(p["updated_at"] for p in sandbox.state.products.values())[-10]
    out = tmp_path / "recent.jsonl"
    assert run(app, "export", link_id, "products", "--since", cutoff.replace(" ", "T"), "--output", out).exit_code == 0
    assert len(out.read_text().splitlines()) == 10
    bad = run(app, "export", link_id, "products", "--since", "yesterday")
    assert bad.exit_code == 1 and "ISO date" in bad.output


def test_interrupted_export_resumes_without_duplicates(app, linked, sandbox, tmp_path):
    link_id, _ = linked
    out = tmp_path / "products.jsonl"
    # Fail the third page request: two pages are written, then the run stops.
    calls = {"n": 0}
    original = sandbox.state.take_failure

    def third_page_fails(path):
        if path == "/products":
            calls["n"] += 1
            if calls["n"] == 3:
                return 500
        return original(path)

    sandbox.state.take_failure = third_page_fails
    failed = run(app, "export", link_id, "products", "--output", out, "--page-size", "10", "--concurrency", "1")
    assert failed.exit_code == 1 and "HTTP 500" in failed.output
    assert len(out.read_text().splitlines()) == 20
    with out.open("a") as f:
        f.write('{"id": 21, "sku": "SB-000')  # torn line from a killed process
    resumed = run(app, "export", link_id, "products", "--output", out, "--page-size", "10")
    assert resumed.exit_code == 0, resumed.output
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert ids == list(range(1, 61))


def test_export_in_a_real_process(app, app_config, linked, sandbox, tmp_path):
    link_id, _ = linked
    out = tmp_path / "customers.csv"
    env = {**os.environ, "INTEGRATION_DATABASE_URL": app_config["SQLALCHEMY_DATABASE_URI"],
           "INTEGRATION_SECRET_KEY": "t" * 64, "INTEGRATION_ENCRYPTION_KEYS": KEYS[0],
           "INTEGRATION_ALLOWED_STORE_HOSTS": "127.0.0.1", "INTEGRATION_ENV": "production"}
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "stores", "export", str(link_id),
                           "customers", "--format", "csv", "--output", str(out)],
                          cwd=root, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"wrote {len(sandbox.state.customers)} customers" in done.stderr
    assert len(out.read_text().splitlines()) == len(sandbox.state.customers) + 1
