"""ops/lookahead.prepared_ahead: the next batch is prepared in a background thread while the caller works;
items keep their order, errors reach the caller, and a caller that stops early leaves nothing running."""

import threading

import pytest

from ops.lookahead import prepared_ahead


def _source(n, fail_at=None, log=None):
    try:
        for i in range(n):
            if i == fail_at:
                raise ValueError(f"batch {i} is broken")
            (log if log is not None else []).append((i, threading.current_thread().name))
            yield i
    finally:
        if log is not None:
            log.append("closed")


def test_items_come_in_order_prepared_off_the_callers_thread():
    log = []
    with prepared_ahead(_source(5, log=log)) as batches:
        assert list(batches) == [0, 1, 2, 3, 4]
    assert all(name.startswith("rightsize-prepare") for _, name in log[:-1]) and log[-1] == "closed"


def test_an_error_while_preparing_reaches_the_caller_after_the_items_before_it():
    seen = []
    with pytest.raises(ValueError, match="batch 2 is broken"):
        with prepared_ahead(_source(5, fail_at=2)) as batches:
            for item in batches:
                seen.append(item)
    assert seen == [0, 1]


def test_a_caller_that_stops_early_closes_the_source():
    log = []
    with pytest.raises(RuntimeError):
        with prepared_ahead(_source(100, log=log)) as batches:
            for item in batches:
                if item == 1:
                    raise RuntimeError("the model failed")
    assert log[-1] == "closed" and len(log) <= 4  # items 0, 1 and at most one prepared ahead, then closed


def test_none_is_an_item_and_plain_iterators_work():
    with prepared_ahead(iter([1, None, 3])) as items:
        assert list(items) == [1, None, 3]
