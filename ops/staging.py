"""Atomic replacement of a job's output (a run directory, or one file): the job writes under a staging name
beside the final one, and the result is swapped in only once it is complete.

On a local (POSIX) file system a reader of the final path sees the previous complete output, the new
complete output, or - only when a process is killed between the two renames of a directory swap - nothing;
``recover`` then puts the previous output back at the next start. Never a mix. Object stores (gs://, s3://)
have no rename: there the swap is delete-then-copy, and the run's ``manifest.json``, deleted first and copied
last, is what marks it complete; while a swap replaces a run, an ``.incomplete`` file in it says so to readers
that do not need a manifest (the cost report), and a swap cut short leaves it there.

Staging names live in a ``.staging`` folder beside the final path, so a glob one level deep
(``<output>/*/predictions-*.parquet``) never sees half-written output.
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import uuid
from pathlib import PurePosixPath

import fsspec

from ops.urls import local_path

STAGING_DIR = ".staging"
_REPLACED = ".replaced"
INCOMPLETE = ".incomplete"  # in a directory on an object store while a swap replaces it (hidden to globs)


def _split(url: str) -> tuple[str, str]:
    url = url.rstrip("/")
    parent, _, name = url.rpartition("/")
    return (parent or "."), name


def staging_path(final: str) -> str:
    """A fresh staging URL on the same file system as ``final``: <parent>/.staging/<name>.<random>."""
    parent, name = _split(final)
    return f"{parent}/{STAGING_DIR}/{name}.{uuid.uuid4().hex[:12]}"


def publish(staging: str, final: str, mark: str | None = None) -> None:
    """Replaces ``final`` (a file or a directory, which may not exist yet) with ``staging``. ``mark``: the name
    of the file that marks a directory complete (a run's manifest), for object stores (``_copy_swap``)."""
    local, target = local_path(staging), local_path(final)
    if local is None or target is None:
        _copy_swap(staging, final, mark)
        return
    if not os.path.isdir(local):
        os.replace(local, target)  # one atomic rename
    else:
        old = local + _REPLACED
        if os.path.exists(target):
            os.rename(target, old)  # killed right after this: recover() moves it back
        os.rename(local, target)
        shutil.rmtree(old, ignore_errors=True)
    _remove_if_empty(os.path.dirname(local))


def _copy_swap(staging: str, final: str, mark: str | None) -> None:
    """An object store's swap, which has no rename: delete the old output, then move the new one in, file by
    file. The ``mark`` file goes first out of the old output and last into the new, so a swap cut short (a
    killed process, a lost connection) never leaves a mark over an incomplete output; an INCOMPLETE file goes in
    before the old output's other files go and out after the new one's mark, so such a swap, wherever it was cut
    short, leaves one there."""
    fs, path = fsspec.core.url_to_fs(final)
    source = fsspec.core.url_to_fs(staging)[1].rstrip("/")
    if not (mark and fs.isfile(f"{source}/{mark}")):
        if fs.exists(path):
            fs.rm(path, recursive=True)
        fs.mv(source, path, recursive=True)
        return
    if fs.isfile(f"{path}/{mark}"):
        fs.rm(f"{path}/{mark}")
    incomplete = f"{path}/{INCOMPLETE}"
    fs.pipe(incomplete, b"a swap of this output was cut short: run the job again\n")  # before any old file goes
    old = [f for f in fs.find(path) if f != incomplete]
    if old:
        fs.rm(old)
    files = [f for f in fs.find(source) if f != f"{source}/{mark}"]
    if files:
        fs.copy(files, [f"{path}/{posixpath.relpath(f, source)}" for f in files])
    fs.copy(f"{source}/{mark}", f"{path}/{mark}")
    fs.rm(incomplete)
    fs.rm(source, recursive=True)


def discard(staging: str) -> None:
    """Removes a staging file or directory after a failed run."""
    fs, path = fsspec.core.url_to_fs(staging)
    if fs.exists(path):
        fs.rm(path, recursive=True)
    if local_path(staging) is not None and os.path.basename(os.path.dirname(path)) == STAGING_DIR:
        _remove_if_empty(os.path.dirname(path))


def recover(final: str) -> None:
    """Before a job writes ``final`` again: restores a previous output that a kill mid-swap left aside, and
    removes what killed runs of the same output left in staging. Assumes one job per output at a time."""
    parent, name = _split(final)
    fs, staging_dir = fsspec.core.url_to_fs(f"{parent}/{STAGING_DIR}")
    if not fs.isdir(staging_dir):
        return
    _, target = fsspec.core.url_to_fs(final)
    mine = re.compile(re.escape(name) + r"\.[0-9a-f]{12}(" + re.escape(_REPLACED) + ")?")
    leftovers = [p for p in fs.ls(staging_dir, detail=False) if mine.fullmatch(PurePosixPath(p).name)]
    for path in leftovers:
        if path.endswith(_REPLACED) and not fs.exists(target):
            fs.mv(path, target, recursive=True)
        else:
            fs.rm(path, recursive=True)
    if local_path(final) is not None:
        _remove_if_empty(staging_dir)


def _remove_if_empty(directory: str) -> None:
    try:
        os.rmdir(directory)
    except OSError:
        pass  # not empty (another output's staging), or already gone
