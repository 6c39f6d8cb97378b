"""The same job on the other local runners: the DirectRunner in multi-processing mode, and the PortableRunner
(the path Flink, Spark and Dataflow use) against a local job service with an external worker pool whose SDK
workers run from a separate virtual environment holding the project only as its built wheel, as a worker
container would (docker/worker.Dockerfile)."""

import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.label import run
from pipelines.label_config import LabelJobConfig
from tests.pipelines.conftest import BAD, GOOD, write_corpus

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("models", "ops", "pipelines", "flows")  # what the wheel must hold (pyproject's packages.find)


def _check_complete(model_dir, tmp_path, beam_args):
    good = write_corpus(tmp_path / "corpus")
    config = LabelJobConfig(model=model_dir, input=f"{tmp_path / 'corpus'}/*", output=str(tmp_path / "out"),
                            run_id="r", batch_size=4, chunk_size=8)
    manifest = run(config, beam_args)
    ids = [i for f in (tmp_path / "out" / "r").glob("predictions-*.parquet") for i in pq.read_table(f)["id"].to_pylist()]
    assert sorted(ids) == sorted(good)
    assert manifest["counts"]["labelled"] == GOOD and manifest["counts"]["dead_letters"] == BAD
    return manifest


@pytest.mark.parametrize("mode", ["multi_processing", "multi_threading"])
def test_direct_runner_several_workers(model_dir, tmp_path, mode):
    """multi_threading: the workers are threads of one process that share one model (and its tokenizer), and
    the files are spread over them; documents are reshuffled only between processes (in one process the
    DirectRunner would buffer the whole corpus for it)."""
    manifest = _check_complete(model_dir, tmp_path, [f"--direct_running_mode={mode}", "--direct_num_workers=2"])
    assert manifest["runner"] == "DirectRunner" and manifest["reshuffle"] is (mode == "multi_processing")


# --- the worker environment: a venv with the built wheel and, through a .pth file, the main venv's libraries ---

# Written into the worker venv: each interpreter started there appends its executable and command line to a
# log, so the test can tell that Beam's SDK harness processes ran with the worker venv's python.
_PROBE = '''import os, sys


def record(log):
    try:
        with open("/proc/self/cmdline", "rb") as f:
            command = f.read().replace(b"\\0", b" ").decode(errors="replace")
    except OSError:
        command = " ".join(sys.argv)
    with open(log, "a") as f:
        f.write(sys.executable + "\\t" + " ".join(command.split())[:500] + "\\n")
'''

# What the worker venv's python reports about where it would import things from (find_spec: without running
# them, which would cost seconds of torch/prefect imports), and whether the editable install's finder got in.
_INSPECT = """import json, sys
from importlib.util import find_spec
print(json.dumps({"files": {m: find_spec(m).origin for m in ("models", "ops", "pipelines", "flows")},
                  "deps": {m: find_spec(m).origin for m in ("torch", "transformers", "apache_beam")},
                  "path": sys.path, "prefix": sys.prefix,
                  "editable": sorted(m for m in sys.modules if "editable" in m)
                              + [repr(f) for f in sys.meta_path if "editable" in repr(f).lower()]}))
"""


def _source_only(directory: str, names: list[str]) -> set[str]:
    """copytree filter: the repository minus the venv, VCS data, build outputs and run/bench data."""
    top = Path(directory) == REPO
    return {n for n in names if n == "__pycache__" or n.endswith(".egg-info")
            or (top and (n.startswith(".") or n in {"build", "dist", "runs", "bench"}))}


def _run(command, **kwargs) -> str:
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{command} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result.stdout


@dataclass(frozen=True)
class WorkerVenv:
    root: Path
    python: Path
    site_packages: Path
    env: dict  # no PYTHONPATH, the venv's bin first on PATH
    cwd: Path  # a scratch folder, not the repository
    probe_log: Path
    wheel_members: tuple


@pytest.fixture(scope="module")
def worker_venv(tmp_path_factory) -> WorkerVenv:
    """Builds the project wheel from a copy of the sources (``make wheel`` does the same in dist/), creates a
    venv without pip, installs only the wheel into it, and makes the main venv's third-party packages
    (torch, transformers, apache_beam...) importable through a .pth file instead of installing them again."""
    base = tmp_path_factory.mktemp("worker-venv")
    source, dist, venv, cwd = base / "source", base / "dist", base / "venv", base / "cwd"
    shutil.copytree(REPO, source, ignore=_source_only)  # the build writes build/ and *.egg-info: not in the repo
    cwd.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    _run(pip + ["wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", dist, source])
    (wheel,) = dist.glob("rightsize-*.whl")
    with zipfile.ZipFile(wheel) as z:
        members = tuple(z.namelist())

    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    # The wheel goes in before the .pth below exists, so this pip sees an empty venv: it can neither skip the
    # wheel as "already satisfied" by the main venv's editable install nor uninstall that one.
    _run(pip + ["--python", python, "install", "--no-deps", "--no-index", wheel])
    site_packages = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).strip())
    main_site = dict.fromkeys(sysconfig.get_path(k) for k in ("purelib", "platlib"))
    # Path lines only: Python does not process the .pth files (the editable install's finder among them) of a
    # folder a .pth line adds, so the main venv's rightsize does not leak in (checked by the test).
    (site_packages / "zz_main_venv_site_packages.pth").write_text("".join(f"{p}\n" for p in main_site))
    probe_log = base / "interpreters.log"
    (site_packages / "_rightsize_worker_probe.py").write_text(_PROBE)
    (site_packages / "zz_rightsize_worker_probe.pth").write_text(
        f"import _rightsize_worker_probe; _rightsize_worker_probe.record({str(probe_log)!r})\n")

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}", VIRTUAL_ENV=str(venv))
    return WorkerVenv(venv, python, site_packages, env, cwd, probe_log, members)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(port: int, process: subprocess.Popen, log: Path | None = None, timeout: float = 90) -> None:
    """Waits until something listens on ``port``; fails with the tail of ``log`` if ``process`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"service on port {port} exited with {process.returncode}\n{tail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"nothing listening on port {port} after {timeout} s")


@pytest.fixture(scope="module")
def portable_services(tmp_path_factory, worker_venv):
    """A Beam job service (main venv) and an external worker pool (worker venv, run from a scratch folder) on
    free loopback ports; stopped afterwards. The pool starts each SDK harness as ``python`` from PATH."""
    logs = tmp_path_factory.mktemp("beam-services")
    job_port, pool_port = _free_port(), _free_port()
    services = [  # (command, env, cwd, log)
        ([sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main", "--port", str(job_port),
          "--staging_dir", str(logs / "staging")], None, logs, logs / "job-service.log"),
        ([str(worker_venv.python), "-m", "apache_beam.runners.worker.worker_pool_main",
          f"--service_port={pool_port}"], worker_venv.env, worker_venv.cwd, logs / "worker-pool.log"),
    ]
    processes = []
    try:
        for command, env, cwd, log in services:
            with open(log, "wb") as out:
                processes.append(subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT))
        for port, process, (*_, log) in zip((job_port, pool_port), processes, services):
            _wait_for(port, process, log)
        yield job_port, pool_port
    finally:
        for p in processes:
            p.terminate()
        for p in processes:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_portable_runner_with_wheel_only_workers(model_dir, tmp_path, worker_venv, portable_services):
    tops = {m.split("/")[0] for m in worker_venv.wheel_members}
    assert set(PACKAGES) <= tops and "tests" not in tops, sorted(tops)

    # The worker interpreter takes our packages from its own site-packages (the wheel), never from the source
    # tree or the main venv's editable install; third-party packages come from the main venv.
    seen = json.loads(_run([worker_venv.python, "-c", _INSPECT], env=worker_venv.env, cwd=worker_venv.cwd))
    assert Path(seen["prefix"]) == worker_venv.root
    for name, file in seen["files"].items():
        assert Path(file).is_relative_to(worker_venv.site_packages / name), (name, file)
    main_site = Path(sysconfig.get_path("purelib"))
    assert all(Path(f).is_relative_to(main_site) for f in seen["deps"].values()), seen["deps"]
    assert not [p for p in seen["path"] if p and Path(p).resolve().is_relative_to(REPO.resolve())
                and not Path(p).resolve().is_relative_to(main_site.resolve())], seen["path"]
    assert not seen["editable"], seen["editable"]

    job_port, pool_port = portable_services
    manifest = _check_complete(model_dir, tmp_path, [
        "--runner=PortableRunner", f"--job_endpoint=localhost:{job_port}",
        "--environment_type=EXTERNAL", f"--environment_config=localhost:{pool_port}"])
    assert manifest["runner"] == "PortableRunner"

    # The work ran in SDK harnesses started by the pool with the worker venv's python.
    harnesses = [line.split("\t") for line in worker_venv.probe_log.read_text().splitlines() if "SdkHarness" in line]
    assert harnesses, worker_venv.probe_log.read_text()
    assert all(Path(executable) == worker_venv.python for executable, _ in harnesses), harnesses
