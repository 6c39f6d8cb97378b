"""``prepared_ahead``: an iterator whose next item is produced in a background thread while the caller works
on the current one, so that host-side work (reading and tokenising the next chunk, padding and page-locking
the next batch) overlaps the model's compute. torch and the Rust tokenizer release the GIL while they work,
so one thread suffices."""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, TypeVar

T = TypeVar("T")
_END = object()


@contextlib.contextmanager
def prepared_ahead(items: Iterator[T], name: str = "rightsize-prepare") -> Iterator[Iterator[T]]:
    """``items`` in order, each produced one step ahead in a thread named ``name``; an error raised while
    producing an item reaches the caller when it asks for that item.

    On leaving the context (also early, on an error) the item being produced is waited for, then ``items`` is
    closed if it has a ``close`` (a generator), so that what it holds is released. A producer that can take long
    should stop at a signal of the caller's (flows/predict.py sets an Event): a second Ctrl-C during that wait
    leaves the thread to finish on its own, and ``items`` unclosed (closing a generator that is running raises)."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    def ahead():
        pending = pool.submit(next, items, _END)
        while (item := pending.result()) is not _END:
            pending = pool.submit(next, items, _END)
            yield item

    try:
        yield ahead()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # interrupted here: the exception leaves, close is skipped
        if (close := getattr(items, "close", None)) is not None:
            close()
