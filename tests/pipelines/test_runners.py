"""The same job on the other local runners: the DirectRunner in multi-processing mode, and the PortableRunner
(the path Flink, Spark and Dataflow use) against a local job service with an external worker pool."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.label import run
from pipelines.label_config import LabelJobConfig
from tests.pipelines.conftest import BAD, GOOD, write_corpus


def _check_complete(model_dir, tmp_path, beam_args):
    good = write_corpus(tmp_path / "corpus")
    config = LabelJobConfig(model=model_dir, input=f"{tmp_path / 'corpus'}/*", output=str(tmp_path / "out"),
                            run_id="r", batch_size=4, chunk_size=8)
    manifest = run(config, beam_args)
    ids = [i for f in (tmp_path / "out" / "r").glob("predictions-*.parquet") for i in pq.read_table(f)["id"].to_pylist()]
    assert sorted(ids) == sorted(good)
    assert manifest["counts"]["labelled"] == GOOD and manifest["counts"]["dead_letters"] == BAD
    return manifest


def test_direct_runner_multi_processing(model_dir, tmp_path):
    manifest = _check_complete(model_dir, tmp_path, ["--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    assert manifest["runner"] == "DirectRunner"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(port: int, process: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"service on port {port} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"nothing listening on port {port} after {timeout} s")


@pytest.fixture(scope="module")
def portable_services(tmp_path_factory):
    """A Beam job service and an external worker pool on free loopback ports; stopped afterwards."""
    logs = tmp_path_factory.mktemp("beam-services")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    job_port, pool_port = _free_port(), _free_port()
    commands = [
        [sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main", "--port", str(job_port)],
        [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={pool_port}"],
    ]
    processes = [subprocess.Popen(c, env=env, stdout=open(logs / f"{i}.log", "wb"), stderr=subprocess.STDOUT)
                 for i, c in enumerate(commands)]
    try:
        _wait_for(job_port, processes[0])
        _wait_for(pool_port, processes[1])
        yield job_port, pool_port
    finally:
        for p in processes:
            p.terminate()
        for p in processes:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_portable_runner_with_external_workers(model_dir, tmp_path, portable_services):
    job_port, pool_port = portable_services
    manifest = _check_complete(model_dir, tmp_path, [
        "--runner=PortableRunner", f"--job_endpoint=localhost:{job_port}",
        "--environment_type=EXTERNAL", f"--environment_config=localhost:{pool_port}"])
    assert manifest["runner"] == "PortableRunner"
