"""A newcomer's first hour: ``./scripts/run``, then the CLI exactly as the README prints it.

These run real processes from the checkout with the environment a user's shell would have (no
``INTEGRATION_*`` variables), except for a temporary instance folder and free ports.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from .servers import ROOT, activate, free_port

FLASK = str(ROOT / ".venv" / "bin" / "flask")
FLASK_AS_PRINTED = ".venv/bin/flask"


def user_env(instance, **extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INTEGRATION_", "FLASK_"))}
    return {**env, "INTEGRATION_INSTANCE_PATH": str(instance), **extra}


def flask(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run([FLASK, "--app", "app", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def test_a_configuration_error_is_one_clear_line(tmp_path):
    done = flask(user_env(tmp_path / "instance"), "stores", "list")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith("Configuration error: INTEGRATION_SECRET_KEY must be set")
    bad = flask(user_env(tmp_path / "instance", INTEGRATION_ENV="development", INTEGRATION_STORE_TIMEOUT="soon"),
                "stores", "list")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert bad.stderr.strip() == "Configuration error: INTEGRATION_STORE_TIMEOUT must be a number, not 'soon'"


def test_settings_env_in_the_instance_folder_is_read_and_the_environment_wins(tmp_path):
    instance = tmp_path / "instance"
    instance.mkdir()
    (instance / "settings.env").write_text("INTEGRATION_ENV=development\n")
    env = user_env(instance)
    assert flask(env, "db", "upgrade").returncode == 0
    listed = flask(env, "stores", "list")
    assert listed.returncode == 0, listed.stderr
    overridden = flask({**env, "INTEGRATION_ENV": "production"}, "stores", "list")
    assert overridden.returncode != 0 and "INTEGRATION_SECRET_KEY" in overridden.stderr


# --- ./scripts/run ------------------------------------------------------------------------

def readme_cli_commands() -> list[str]:
    """The commands of the README's "right after ./scripts/run" block, as printed."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- after-run -->\s*```sh\n(.*?)```", text, re.S)
    assert block, "the README lost its block of CLI commands to try after ./scripts/run"
    return [line.split("  #")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class Run:
    """``./scripts/run`` as a user starts it."""

    def __init__(self, env: dict[str, str], app_port: int, sandbox_port: int):
        self.app_url, self.sandbox_url = f"http://127.0.0.1:{app_port}", f"http://127.0.0.1:{sandbox_port}"
        self.ports = (app_port, sandbox_port)
        self.log = open(env["INTEGRATION_INSTANCE_PATH"] + ".run.log", "w+")
        self.proc = subprocess.Popen([str(ROOT / "scripts" / "run")], cwd=ROOT, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"./scripts/run exited early ({self.proc.returncode}):\n{self.output()}")
            try:
                if requests.get(self.app_url + "/magento/callback", timeout=2).status_code == 200 and \
                        requests.get(self.sandbox_url + "/admin/integrations", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        output = self.output()
        self.kill()
        pytest.fail(f"./scripts/run did not bring up both servers:\n{output}")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self, sig: int) -> int:
        os.kill(self.proc.pid, sig)  # the script itself, not its process group
        return self.proc.wait(timeout=30)

    def child(self, marker: str) -> int:
        """The pid of the script's child whose command line contains ``marker``."""
        for entry in os.listdir("/proc"):
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                cmdline = Path(f"/proc/{entry}/cmdline").read_text().replace("\0", " ")
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == self.proc.pid and marker in cmdline:
                return int(entry)
        raise AssertionError(f"no child process running {marker!r}")

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # a session of its own, see Popen
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture
def runs(tmp_path):
    started: list[Run] = []
    instance = tmp_path / "instance"
    env = user_env(instance, PORT=str(free_port()), SANDBOX_PORT=str(free_port()))

    def start() -> Run:
        run = Run(env, int(env["PORT"]), int(env["SANDBOX_PORT"]))
        started.append(run)
        return run

    start.env, start.instance = env, instance
    yield start
    for run in started:
        run.kill()  # the whole process group: whatever the script left behind


def run_as_printed(command: str, env: dict[str, str]) -> str:
    done = subprocess.run(command, shell=True, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr
    return done.stdout


def test_run_owns_both_servers_and_the_readme_cli_works_meanwhile(runs):
    first = runs()
    password = (runs.instance / "demo_password").read_text().strip()
    statuses = activate(first.sandbox_url, 1, "demo@example.com", password)
    assert statuses[-1] == 302, first.output()
    outputs = {command: run_as_printed(command, runs.env) for command in readme_cli_commands()}
    listed = next(out for c, out in outputs.items() if shlex.split(c)[:5] == [FLASK_AS_PRINTED, "--app", "app",
                                                                             "stores", "list"])
    assert listed.startswith(f"1\tlinked\t-\t{first.sandbox_url}/\t") and "\tdemo@example.com\t" in listed

    assert first.stop(signal.SIGTERM) != 0
    assert all(port_is_free(p) for p in first.ports), "a server outlived ./scripts/run after SIGTERM"

    # The next run starts whole, and the sandbox still knows the integration our database kept.
    second = runs()
    check = next(c for c in outputs if "stores check 1" in c)
    assert "magento_version: Magento/2.4 (Community)" in run_as_printed(check, runs.env)
    assert second.stop(signal.SIGINT) != 0
    assert all(port_is_free(p) for p in second.ports), "a server outlived ./scripts/run after SIGINT"

    # When the app goes (killed, crashed), the sandbox goes with it, and so does the script.
    third = runs()
    os.kill(third.child("--app app run"), signal.SIGTERM)
    assert third.proc.wait(timeout=30) != 0
    assert all(port_is_free(p) for p in third.ports), "the sandbox outlived the app"


def test_run_refuses_to_half_start_when_a_port_is_taken(runs):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", int(runs.env["SANDBOX_PORT"])))
        taken.listen()
        done = subprocess.run([str(ROOT / "scripts" / "run")], cwd=ROOT, env=runs.env, capture_output=True,
                              text=True, timeout=120)
    assert done.returncode == 1 and f"Port {runs.env['SANDBOX_PORT']} is in use" in done.stderr
    assert port_is_free(int(runs.env["PORT"]))
