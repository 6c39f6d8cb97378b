"""Content fingerprints: what a cache key is made of, so a cache hit means "same bytes", not "same path".

A path is hashed by what it holds: a file by its bytes, a directory by the relative names and bytes of every
file under it. Anything that is not a local path (a hub name, a URL) is hashed as the string it is, which is
all that can be known offline; such inputs are reported so callers can say so.
"""

from __future__ import annotations

import functools
import hashlib
import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20  # bytes read at a time


PACKAGES = ("flows", "models", "ops", "pipelines")  # rightsize's code, beside this package wherever installed


@functools.cache
def project_version() -> str:
    """The installed version and a hash of the code's Python files: a cached model must not outlive the code
    that made it, and the version number stays the same between releases (and in a checkout)."""
    try:
        number = version("rightsize")
    except PackageNotFoundError:  # running from a source tree that was never installed
        number = "source"
    return f"{number}+code.{code_digest(Path(__file__).resolve().parents[1])[:12]}"


def code_digest(root: Path) -> str:
    """sha256 hex of the names and bytes of the Python files of PACKAGES under ``root``."""
    digest = hashlib.sha256()
    # regular files only: an editor's lock file (a dangling link named .#x.py) is not code
    for file in sorted(f for package in PACKAGES for f in (root / package).rglob("*.py") if f.is_file()):
        digest.update(file.relative_to(root).as_posix().encode() + b"\0")
        _update_file(digest, file)
    return digest.hexdigest()


def fingerprint_path(path: str | Path) -> str:
    """sha256 hex of a local file's bytes, or of a directory's file names and bytes (sorted, recursive).
    A string that is not an existing local path is hashed as text."""
    digest = hashlib.sha256()
    p = Path(path)
    if p.is_file():
        _update_file(digest, p)
    elif p.is_dir():
        for file in sorted(f for f in p.rglob("*") if f.is_file()):
            digest.update(file.relative_to(p).as_posix().encode() + b"\0")
            _update_file(digest, file)
    else:
        digest.update(b"name:" + str(path).encode())
    return digest.hexdigest()


def fingerprint(**parts: Any) -> str:
    """sha256 hex of named JSON-able values (config dicts, fingerprints, versions); key order does not matter."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _update_file(digest, path: Path) -> None:
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
