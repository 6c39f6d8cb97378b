"""``rightsize serve``: the deployment carries the cron given; without a server it refuses and says how to get
one; against a real local Prefect server it registers the deployment with that schedule."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from flows.serve import build_deployment

ROOT = Path(__file__).parents[2]
CONFIG = ROOT / "examples" / "bbc_demo.toml"
CRON = "0 2 * * *"


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    return env | {"PREFECT_SERVER_ANALYTICS_ENABLED": "false"} | extra


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_deployment_carries_the_cron():
    deployment = build_deployment(str(CONFIG), CRON, name="nightly", timezone="Europe/Berlin", workdir=str(ROOT))
    assert [(s.schedule.cron, s.schedule.timezone) for s in deployment.schedules] == [(CRON, "Europe/Berlin")]
    assert deployment.concurrency_limit == 1  # two runs never share a workspace
    assert deployment.parameters == {"config_file": str(CONFIG.resolve()), "workdir": str(ROOT)}
    with pytest.raises(FileNotFoundError, match="no such config file"):
        build_deployment("missing.toml", CRON)


def test_serve_without_a_server_says_how_to_start_one(tmp_path):
    done = subprocess.run([sys.executable, "-m", "flows.cli", "serve", "--config", str(CONFIG), "--cron", CRON],
                          cwd=ROOT, env=_env(PREFECT_HOME=str(tmp_path)), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "prefect server start" in done.stderr and "export PREFECT_API_URL=http://127.0.0.1:4200/api" in done.stderr


@pytest.fixture()
def prefect_api(tmp_path):
    """A real Prefect server on a free loopback port, with its own home; yields its API URL."""
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=_env(PREFECT_HOME=str(tmp_path / "server")),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    api = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{api}/health", timeout=2)
            break
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, "prefect server did not start"
            time.sleep(0.5)
    yield api
    server.terminate()
    server.wait(timeout=30)


def _post(url: str, body: dict):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def test_serve_registers_the_schedule_on_a_real_server(prefect_api, tmp_path):
    serve = subprocess.Popen([sys.executable, "-m", "flows.cli", "serve", "--config", str(CONFIG), "--cron", CRON,
                              "--name", "nightly-test"], cwd=ROOT,
                             env=_env(PREFECT_HOME=str(tmp_path / "client"), PREFECT_API_URL=prefect_api),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (found := _post(f"{prefect_api}/deployments/filter",
                                  {"deployments": {"name": {"any_": ["nightly-test"]}}})):
            assert serve.poll() is None, "rightsize serve exited"
            assert time.monotonic() < deadline, "the deployment never appeared"
            time.sleep(1)
        deployment = found[0]
        assert [s["schedule"]["cron"] for s in deployment["schedules"]] == [CRON]
        assert deployment["parameters"]["config_file"] == str(CONFIG.resolve())
        flow = json.load(urllib.request.urlopen(f"{prefect_api}/flows/{deployment['flow_id']}", timeout=10))
        assert flow["name"] == "rightsize-run"
    finally:
        serve.terminate()
        serve.wait(timeout=30)
