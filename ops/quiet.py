"""``quiet``: silence a library's warnings about something done on purpose, for one block."""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator


@contextlib.contextmanager
def quiet(logger: str, level: int = logging.ERROR) -> Iterator[None]:
    """Raises ``logger``'s level (and so its children's, unless they set their own) for the block."""
    target = logging.getLogger(logger)
    previous = target.level
    target.setLevel(level)
    try:
        yield
    finally:
        target.setLevel(previous)
