"""The sandbox keeps its integrations in a file, so a restart does not orphan the links our
database holds; the file is replaced atomically, private, and bounded in size."""

from __future__ import annotations

import json
import os

import pytest

from integration.sandbox import SandboxLimit, SandboxState, StateFileError, create_sandbox
from integration.sandbox import state as sandbox_state
from integration.sandbox.state import Token, random_string

from .servers import Served


@pytest.fixture
def sandbox(tmp_path):
    """Overrides conftest's: a sandbox that keeps its state in a file."""
    state = SandboxState(products=5, path=str(tmp_path / "sandbox.json"))
    served = Served(create_sandbox(state))
    served.state = state
    yield served
    served.stop()


def test_a_restarted_sandbox_still_accepts_the_tokens_our_database_holds(app, linked, sandbox, tmp_path):
    link_id, integration = linked
    port = sandbox.server.server_port
    sandbox.stop()
    restarted = SandboxState(products=5, path=str(tmp_path / "sandbox.json"))
    again = Served(create_sandbox(restarted), port=port)
    try:
        kept = restarted.integrations[integration.id]
        assert kept.status == "Active" and kept.token.token == integration.token.token
        result = app.test_cli_runner().invoke(args=["stores", "check", str(link_id)])
        assert result.exit_code == 0, result.output
        assert "magento_version: Magento/2.4 (Community)" in result.output
    finally:
        again.stop()


def test_the_state_file_is_private_and_replaced_whole(tmp_path, monkeypatch):
    path = tmp_path / "sandbox.json"
    state = SandboxState(path=str(path))
    state.add_integration("First", "https://a.example/cb", "https://a.example/id")
    assert path.stat().st_mode & 0o077 == 0  # it holds consumer secrets and tokens
    before = path.read_text()

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        state.add_integration("Second", "https://b.example/cb", "https://b.example/id")
    assert path.read_text() == before and [p.name for p in tmp_path.iterdir()] == ["sandbox.json"]
    monkeypatch.undo()
    assert [i.name for i in SandboxState(path=str(path)).integrations.values()] == ["First"]


def test_the_state_is_bounded(tmp_path):
    full = SandboxState()
    url = "https://" + "u" * (sandbox_state.MAX_URL_LENGTH - 8)
    for _ in range(sandbox_state.MAX_INTEGRATIONS):
        integration = full.add_integration("n" * sandbox_state.MAX_NAME_LENGTH, url, url)
        integration.token = Token("access", random_string(), random_string(), random_string())
    with pytest.raises(SandboxLimit, match="at most"):
        full.add_integration("one too many")
    with pytest.raises(SandboxLimit, match="at most"):
        SandboxState().add_integration("n" * (sandbox_state.MAX_NAME_LENGTH + 1))
    full.path = str(tmp_path / "full.json")
    full.save()  # the largest state the limits allow still fits the file bound, and loads back
    assert os.path.getsize(full.path) <= sandbox_state.MAX_STATE_BYTES
    assert len(SandboxState(path=full.path).integrations) == sandbox_state.MAX_INTEGRATIONS


def test_the_admin_form_refuses_what_the_state_cannot_keep(sandbox):
    client = create_sandbox(sandbox.state).test_client()
    refused = client.post("/admin/integrations", data={"name": "x" * 300, "callback_url": "", "identity_url": ""})
    assert refused.status_code == 400 and "at most 255" in refused.get_data(as_text=True)


def test_an_oversized_or_foreign_state_file_is_refused_with_one_line(app, tmp_path):
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"integrations": [], "pad": "x" * sandbox_state.MAX_STATE_BYTES}))
    with pytest.raises(StateFileError, match="larger than"):
        SandboxState(path=str(big))
    foreign = tmp_path / "foreign.json"
    foreign.write_text('{"integrations": [{"id": 1}]}')
    result = app.test_cli_runner().invoke(args=["sandbox", "--state", str(foreign)])
    assert result.exit_code == 1 and "is not a sandbox state file" in result.output
    assert len(result.output.strip().splitlines()) == 1
