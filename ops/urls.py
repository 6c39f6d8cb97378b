"""Local paths and fsspec URLs (gs://, s3://, memory://...): which file system a location is on, and the one
spelling of it that two ways of writing the same place share."""

from __future__ import annotations

import posixpath

import fsspec


def protocol(url: str) -> str:
    """The main protocol name of ``url``'s file system: "file" for a local path, else "gs", "memory"..."""
    fs, _ = fsspec.core.url_to_fs(url)
    return fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]  # fsspec gives a name or a tuple


def local_path(url: str) -> str | None:
    """The local path ``url`` names (a plain path or file://), or None for a remote URL."""
    return fsspec.core.url_to_fs(url)[1] if protocol(url) == "file" else None


def resolved(url: str) -> tuple[str, str]:
    """(protocol, absolute path with "." and ".." steps resolved) of a file or folder URL, so that two spellings
    of one place compare equal: a relative local path is made absolute, as the matches of a glob are."""
    _, path = fsspec.core.url_to_fs(url)
    return protocol(url), posixpath.normpath(path if path.startswith("/") else "/" + path)


def expand_glob(pattern: str) -> list[str]:
    """The file URLs a glob (or a single path/URL) matches, sorted; fails when it matches nothing."""
    fs, _ = fsspec.core.url_to_fs(pattern)
    paths = sorted(p for p in fs.glob(pattern) if fs.isfile(p))
    if not paths:
        raise FileNotFoundError(f"input {pattern!r} matches no file")
    name = protocol(pattern)
    return [p if name == "file" else f"{name}://{p.lstrip('/')}" for p in paths]
