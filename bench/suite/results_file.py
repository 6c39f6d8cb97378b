"""The results file: every run of the suite merges what it measured into it."""

from __future__ import annotations

import fcntl
import json
from pathlib import Path


def save(path: Path, measured: dict) -> dict:
    """Merge this run's measurements into the results file and return the whole file. The file is read again
    under a lock at each save, so that no run writes back a stale copy over parts that another run measured
    meanwhile (one that loaded the file at its start once did). Runs side by side still spoil each other's
    timings: the lock protects the file, not the numbers. A file measured on another machine (hardware, thread
    count or torch) is refused: its numbers and these could not be compared."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = json.loads(path.read_text()) if path.is_file() else {}
        if "machine" in measured and results.get("machine", measured["machine"]) != measured["machine"]:
            raise ValueError(f"{path} was measured on {results['machine']}, not on this machine "
                             f"({measured['machine']}): name another results file")
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
