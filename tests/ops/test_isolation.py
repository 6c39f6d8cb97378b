"""A failing batch is split down to the items that fail alone; everything else gets its result."""

from ops.isolation import Failure, run_isolating_failures


def test_one_poisoned_item_costs_one_failure():
    calls = []
    retries = []

    def run(items):
        calls.append(len(items))
        if "poison" in items:
            raise ValueError("cannot digest poison")
        return [x.upper() for x in items]

    items = [f"doc{i}" for i in range(1000)]
    items[637] = "poison"
    out = run_isolating_failures(run, items, before_retry=lambda: retries.append(1))
    assert [o for i, o in enumerate(out) if i != 637] == [x.upper() for i, x in enumerate(items) if i != 637]
    assert isinstance(out[637], Failure) and out[637].reason == "ValueError: cannot digest poison"
    # halving: 10 levels for 1,000 items, one failing and one succeeding call per level, so about 3x the work
    assert len(calls) == 1 + 2 * 10 and sum(calls) <= 3 * 1000
    assert len(retries) == 10


def test_batch_size_dependent_failure_recovers_without_losses():
    """Like a CUDA out-of-memory: batches above a size fail, smaller ones work; nothing is lost."""
    def run(items):
        if len(items) > 100:
            raise MemoryError("out of memory")
        return [x * 2 for x in items]

    assert run_isolating_failures(run, list(range(1000))) == [x * 2 for x in range(1000)]


def test_every_item_failing_gives_one_failure_each():
    def run(items):
        raise RuntimeError(f"bad batch of {len(items)}")

    out = run_isolating_failures(run, [1, 2, 3])
    assert [o.reason for o in out] == ["RuntimeError: bad batch of 1"] * 3
