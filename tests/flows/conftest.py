"""One Prefect test server for the whole session (PREFECT_HOME is a temporary folder: tests/conftest.py)."""

import pytest


@pytest.fixture(scope="session")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield
