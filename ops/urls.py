"""Local paths and fsspec URLs (gs://, s3://, memory://...): which file system a location is on, and the one
spelling of it that two ways of writing the same place share."""

from __future__ import annotations

import logging
import posixpath

import fsspec

log = logging.getLogger(__name__)


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
    """The file URLs a glob (or a single path/URL) matches, sorted; fails when it matches nothing. A path that
    names an existing file is that file, glob characters in its name or not ("report[2024].jsonl"). As in a
    shell, a wildcard does not match hidden names (a folder or file starting with ".": .DS_Store, .git/): those
    matches are skipped with a warning, unless the pattern spells the hidden name out."""
    fs, path = fsspec.core.url_to_fs(pattern)
    if fs.isfile(path):
        paths = [path]
    else:
        matched = sorted(p for p in fs.glob(pattern) if fs.isfile(p))
        spelled = {part for part in path.split("/") if part.startswith(".")}
        hidden = lambda p: any(part.startswith(".") and part not in spelled for part in p.split("/"))  # noqa: E731
        paths = [p for p in matched if not hidden(p)]
        if len(paths) < len(matched):
            log.warning("input %r: skipped %d hidden file(s), such as %s (spell the hidden name out in the pattern "
                        "to read them)", pattern, len(matched) - len(paths),
                        ", ".join([p for p in matched if hidden(p)][:3]))
    if not paths:
        raise FileNotFoundError(f"input {pattern!r} matches no file")
    name = protocol(pattern)
    return [p if name == "file" else f"{name}://{p.lstrip('/')}" for p in paths]
