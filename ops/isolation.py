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
                           before_retry: Callable[[], None] | None = None) -> list[R | Failure]:
    """``run(items)`` -> one result per item, in order. If it raises, each half is run on its own (recursively),
    and an item that fails alone gets a ``Failure`` in its place. ``before_retry`` runs before each retry
    (e.g. to free cached GPU memory). Costs at most about 2x the batch's work per poisoned item."""
    try:
        results = run(items)
    except Exception as error:
        if len(items) == 1:
            log.warning("inference failed on a single document: %s: %s", type(error).__name__, error)
            return [Failure(error)]
        log.warning("inference failed on a batch of %d, retrying its halves: %s: %s", len(items),
                    type(error).__name__, error)
        if before_retry is not None:
            before_retry()
        middle = len(items) // 2
        return (run_isolating_failures(run, items[:middle], before_retry)
                + run_isolating_failures(run, items[middle:], before_retry))
    if len(results) != len(items):
        raise RuntimeError(f"run returned {len(results)} results for {len(items)} items")
    return results
