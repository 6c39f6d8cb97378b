"""The results file: every run of the suite merges what it measured into it."""

from __future__ import annotations

import fcntl
import json
from pathlib import Path

# What must match for two runs' numbers to share a file: the hardware, the torch threads and the torch build.
SAME_MACHINE_KEYS = ("cpu", "cores", "threads", "torch", "torch_cpu_capability", "native_bf16", "device", "gpu")


def check_machine(path: Path, machine: dict) -> None:
    """Raises ValueError when ``path`` holds numbers whose recorded machine differs from ``machine`` (on any of
    SAME_MACHINE_KEYS): run.py calls it before measuring anything, and save() again before each write."""
    if path.is_file():
        _check_same_machine(path, json.loads(path.read_text()).get("machine"), machine)


def _check_same_machine(path: Path, recorded: dict | None, machine: dict) -> None:
    differ = {k: (recorded.get(k), machine.get(k)) for k in SAME_MACHINE_KEYS
              if recorded is not None and recorded.get(k) != machine.get(k)}
    if differ:
        raise ValueError(f"{path} was measured on another machine (recorded vs now: {differ}); "
                         "its numbers and this run's could not be compared: write to another results file")


def save(path: Path, measured: dict) -> dict:
    """Merge this run's measurements into the results file and return the whole file. The file is read again
    under a lock at each save, so that no run writes back a stale copy over parts that another run measured
    meanwhile (one that loaded the file at its start once did). Runs side by side still spoil each other's
    timings: the lock protects the file, not the numbers. A file from another machine is refused
    (``check_machine``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = json.loads(path.read_text()) if path.is_file() else {}
        if "machine" in measured:
            _check_same_machine(path, results.get("machine"), measured["machine"])
        for key, value in measured.items():
            if key == "accuracy":  # one entry per system: replace those measured, keep the others
                results.setdefault(key, {}).update(value)
            elif key == "commands":
                results[key] = results.get(key, []) + [c for c in value if c not in results.get(key, [])]
            else:
                results[key] = value
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1, allow_nan=False) + "\n")
        tmp.replace(path)  # a killed run leaves the previous file whole
    return results
