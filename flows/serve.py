"""Serving the end-to-end flow on a cron schedule (``rightsize serve``).

Prefect creates scheduled runs only in a real server's scheduler; the temporary server that flows start on
their own has none. So ``serve`` refuses to start without ``PREFECT_API_URL`` and says how to get one, instead
of waiting for runs that never come.
"""

from __future__ import annotations

from pathlib import Path

from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron
from prefect.settings import get_current_settings

from flows.config import load_config
from flows.run import rightsize_run

DEFAULT_DEPLOYMENT = "nightly"
NO_SERVER = """no Prefect server is configured (PREFECT_API_URL is not set), and only a server's scheduler
creates scheduled runs. Start one (it binds to 127.0.0.1:4200) and point rightsize at it:

    prefect server start
    export PREFECT_API_URL=http://127.0.0.1:4200/api

then run this command again in the shell where PREFECT_API_URL is set."""


class NoServerError(ValueError):  # a setting to fix: the CLI's one-line error
    pass


def api_url() -> str | None:
    """The configured Prefect API (environment or active profile), or None for the temporary server."""
    return get_current_settings().api.url


def check_api() -> None:
    """A configured Prefect API answers; else a one-line error instead of Prefect's traceback on first use."""
    import httpx

    url = api_url()
    if not url:
        return
    try:
        httpx.get(f"{url.rstrip('/')}/health", timeout=10).raise_for_status()
    except httpx.HTTPError as e:
        raise NoServerError(f"the Prefect API at {url} (PREFECT_API_URL) does not answer ({e}): start it with "
                            "'prefect server start', or unset PREFECT_API_URL for a temporary local server") from None


def build_deployment(config_file: str, cron: str, name: str = DEFAULT_DEPLOYMENT, timezone: str = "UTC",
                     workdir: str | None = None) -> RunnerDeployment:
    """The deployment ``serve`` registers: the end-to-end flow with this config file, on ``cron`` in
    ``timezone`` (an IANA name), one run at a time (a run still going when the next is due makes it wait:
    two runs must not share a workspace)."""
    workdir = str(Path(workdir or ".").resolve())
    config_file = str(Path(config_file).resolve())
    load_config(config_file, workdir)  # a bad config fails now, not at 02:00
    return rightsize_run.to_deployment(
        name=name, schedule=Cron(cron, timezone=timezone), concurrency_limit=1,
        parameters={"config_file": config_file, "workdir": workdir},
        description=f"rightsize end-to-end run of {config_file}", tags=["rightsize"])


def serve_schedule(config_file: str, cron: str, name: str = DEFAULT_DEPLOYMENT, timezone: str = "UTC") -> None:
    """Registers the deployment and runs its scheduled flow runs until interrupted (blocks)."""
    from prefect import serve

    if not api_url():
        raise NoServerError(NO_SERVER)
    check_api()
    serve(build_deployment(config_file, cron, name, timezone))
