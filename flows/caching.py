"""How rightsize's Prefect tasks cache: on a key the flow computes from content (ops/fingerprint.py), with
results persisted as JSON under a path the flow sets, never Prefect's default location (Prefect 3.8 ignores a
custom PREFECT_HOME for it) and never pickled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.states import State

from ops.predictions import NothingLabelledError

# Options of every cached task: the caller passes ``cache_key`` as a parameter and names the result folder
# with ``.with_options(result_storage=...)``.
CACHED_TASK = dict(cache_key_fn=lambda context, parameters: parameters["cache_key"], persist_result=True,
                   result_serializer="json")


# Failures that would happen the same way again: bad settings or data, a missing file, a model that changed,
# an error in the code, a run that labelled nothing. Anything else (storage, network, the runner, a worker
# machine lost, credentials that expired: s3fs raises PermissionError then) may pass on a retry.
PERMANENT = (ValueError, LookupError, TypeError, AttributeError, AssertionError, ImportError, NotImplementedError,
             FileNotFoundError, IsADirectoryError, NotADirectoryError, NothingLabelledError)


def transient_only(task, task_run, state: State) -> bool:
    """Retry condition: only failures that may pass on a retry are retried (not those in PERMANENT)."""
    try:
        state.result()
    except PERMANENT:
        return False
    except Exception:
        return True
    return True


def storage(cache_dir: str | Path) -> Path:
    """The result storage of a cached task: a local folder Prefect writes one file per cache key into."""
    path = Path(cache_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def was_cached(state: State) -> bool:
    return state.name == "Cached"


def result_or_refresh(task, state: State, exists, *args: Any, **kwargs: Any) -> tuple[Any, bool]:
    """The task's result and whether it came from the cache. A cache entry whose output was deleted since
    (``exists(result)`` is false) is ignored: the task runs again with ``refresh_cache``."""
    result = state.result()
    if was_cached(state) and not exists(result):
        state = task.with_options(refresh_cache=True)(*args, **kwargs, return_state=True)
        result = state.result()
    return result, was_cached(state)
