"""Local paths and fsspec URLs (gs://, s3://, memory://...): which file system a location is on, and the one
spelling of it that two ways of writing the same place share."""

from __future__ import annotations

import fnmatch
import logging
import posixpath

import fsspec

log = logging.getLogger(__name__)
_WARNED: set[tuple[str, int]] = set()  # (pattern, hidden files skipped) already reported


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
    """The file URLs a glob (or a single path/URL) matches, sorted; fails when it matches nothing (see
    ``list_files``)."""
    return list(list_files(pattern))


def list_files(pattern: str) -> dict[str, dict]:
    """{file URL: its fsspec info (size, mtime...)} for the files a glob (or a single path/URL) matches, sorted
    by URL, from one listing (no request per file on an object store); fails when it matches nothing. As in a shell,
    a wildcard does not match hidden names (a folder or file starting with ".": .DS_Store, .git/), but a part of
    the pattern that starts with "." does, at its depth (".cache", ".*.jsonl"; in a pattern with "**", whose
    depths do not line up with the matches', at any depth); hidden matches are skipped with a warning. A pattern
    that matches nothing but names an existing file is that file, glob characters in its name or not
    ("report[2024].jsonl")."""
    fs, path = fsspec.core.url_to_fs(pattern)
    listing = fs.glob(pattern, detail=True)
    # A local symbolic link is listed as "other": it counts when it leads to a file, and when it leads nowhere,
    # so that reading it fails as for any file that cannot be opened (a dead letter), instead of it vanishing
    # from the input; a link to a folder, a socket or a pipe does not (a request for "other" entries only).
    matched = sorted(p for p, info in listing.items()
                     if info["type"] == "file" or (info["type"] == "other" and (fs.isfile(p) or not fs.exists(p))))
    pattern_parts = path.split("/")
    anywhere = [part for part in pattern_parts if part.startswith(".")] if "**" in pattern_parts else []

    def asked_for(part: str, depth: int) -> bool:  # a hidden part that a dotted pattern part matches
        here = pattern_parts[depth] if depth < len(pattern_parts) else ""
        return any(fnmatch.fnmatchcase(part, d) for d in ([here] if here.startswith(".") else []) + anywhere)

    hidden = lambda m: any(p.startswith(".") and not asked_for(p, i) for i, p in enumerate(m.split("/")))  # noqa: E731
    paths = [p for p in matched if not hidden(p)]
    skipped = len(matched) - len(paths)
    if skipped and (pattern, skipped) not in _WARNED:  # again when the count changes (a long-lived worker)
        _WARNED.add((pattern, skipped))
        log.warning("input %r: skipped %d hidden file(s), such as %s (a pattern part that starts with '.' matches "
                    "them)", pattern, skipped, ", ".join([p for p in matched if hidden(p)][:3]))
    if not paths and fs.isfile(path):
        paths, listing = [path], {path: fs.info(path)}
    if not paths:
        folder = f": it is a folder; give a glob of its files, such as '{pattern.rstrip('/')}/*.jsonl'" \
            if fs.isdir(path) else ""
        raise FileNotFoundError(f"input {pattern!r} matches no file{folder}")
    name = protocol(pattern)
    return {p if name == "file" else f"{name}://{p.lstrip('/')}": listing[p] for p in paths}
