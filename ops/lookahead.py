"""``prepared_ahead``: an iterator whose next item is produced in a background thread while the caller works
on the current one, so that host-side work (reading and tokenising the next chunk, padding and page-locking
the next batch) overlaps the model's compute. torch and the Rust tokenizer release the GIL while they work,
so one thread suffices."""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, TypeVar

T = TypeVar("T")


@contextlib.contextmanager
def prepared_ahead(items: Iterator[T], name: str = "rightsize-prepare") -> Iterator[Iterator[T]]:
    """``items`` in order, each produced one step ahead in a thread named ``name``; an error raised while
    producing an item reaches the caller when it asks for that item. On leaving the context (also early, on an
    error) ``items`` is closed, so whatever the item prepared ahead holds is released."""
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix=name) as pool:
            def ahead():
                pending = pool.submit(next, items, None)
                while (item := pending.result()) is not None:
                    pending = pool.submit(next, items, None)
                    yield item

            yield ahead()
    finally:
        items.close()
