"""Failure isolation for batched work: when a batch fails, run its halves, down to single items, so one
poisoned document costs one dead letter instead of a whole chunk, and a transient failure that depends on
the batch's size (a CUDA out-of-memory, say) is retried at smaller sizes before anything is given up."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Failure:
    """What stands in the results for an item that failed even alone."""

    error: Exception

    @property
    def reason(self) -> str:
        return f"{type(self.error).__name__}: {self.error}"


def run_isolating_failures(run: Callable[[Sequence[T]], list[R]], items: Sequence[T],
                           before_retry: Callable[[], None] | None = None, _depth: int = 0) -> list[R | Failure]:
    """``run(items)`` -> one result per item, in order. If it raises, each half is run on its own (recursively),
    and an item that fails alone gets a ``Failure`` in its place. ``before_retry`` runs before each retry
    (e.g. to free cached GPU memory). One poisoned item costs about 2-3x the batch's work; when every item
    fails, about log2(n) x: callers treat "everything failed" as a broken setting, not as bad documents."""
    try:
        results = run(items)
    except Exception as error:
        if len(items) == 1:
            # str(error), not the error: a log record that keeps it (a handler's buffer) keeps its traceback's frames
            log.debug("failed on a single item: %s: %s", type(error).__name__, str(error))
            return [Failure(error)]
        if _depth == 0:  # one line per failed batch, not one per retry
            log.warning("failed on a batch of %d (%s: %s): isolating the failing items by halving", len(items),
                        type(error).__name__, str(error))
        if before_retry is not None:
            before_retry()
        middle = len(items) // 2
        return (run_isolating_failures(run, items[:middle], before_retry, _depth + 1)
                + run_isolating_failures(run, items[middle:], before_retry, _depth + 1))
    if len(results) != len(items):
        raise RuntimeError(f"run returned {len(results)} results for {len(items)} items")
    return results
