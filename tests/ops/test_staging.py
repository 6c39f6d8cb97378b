"""Atomic replacement of outputs: a swap in one rename for files, two with recovery for directories."""

import os

import pytest

from ops.staging import INCOMPLETE, STAGING_DIR, discard, publish, recover, staging_path


def _tree(root) -> dict:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def test_directory_swap_replaces_the_old_run(tmp_path):
    final = tmp_path / "out" / "run1"
    final.mkdir(parents=True)
    (final / "old.txt").write_text("old")
    staging = staging_path(str(final))
    assert staging.startswith(f"{tmp_path}/out/{STAGING_DIR}/run1.")
    os.makedirs(staging)
    (tmp_path / staging / "new.txt").write_text("new")
    publish(staging, str(final))
    assert _tree(tmp_path / "out") == {"run1/new.txt": "new"}  # old files gone, staging folder removed


def test_recover_after_a_kill_between_the_two_renames(tmp_path):
    """Killed after the old run was moved aside and before the new one moved in: the old run comes back,
    and the killed run's half-written staging is removed."""
    final = tmp_path / "run1"
    aside = tmp_path / STAGING_DIR / "run1.0123456789ab.replaced"
    killed = tmp_path / STAGING_DIR / "run1.ba9876543210"
    other = tmp_path / STAGING_DIR / "run10.0123456789ab"  # another run id's staging: not touched
    for folder, name in ((aside, "complete.txt"), (killed, "partial.txt"), (other, "x.txt")):
        folder.mkdir(parents=True)
        (folder / name).write_text(name)
    recover(str(final))
    assert _tree(tmp_path) == {"run1/complete.txt": "complete.txt", f"{STAGING_DIR}/run10.0123456789ab/x.txt": "x.txt"}


def test_recover_keeps_a_complete_run_and_drops_a_stale_copy(tmp_path):
    (tmp_path / "run1").mkdir()
    (tmp_path / "run1" / "new.txt").write_text("new")
    stale = tmp_path / STAGING_DIR / "run1.0123456789ab.replaced"
    stale.mkdir(parents=True)
    (stale / "old.txt").write_text("old")
    recover(str(tmp_path / "run1"))
    assert _tree(tmp_path) == {"run1/new.txt": "new"}


def test_file_swap_and_discard(tmp_path):
    final = tmp_path / "preds.parquet"
    final.write_text("old")
    staging = staging_path(str(final))
    os.makedirs(os.path.dirname(staging))
    with open(staging, "w") as f:
        f.write("new")
    publish(staging, str(final))
    assert _tree(tmp_path) == {"preds.parquet": "new"}
    staging = staging_path(str(final))
    os.makedirs(os.path.dirname(staging))
    with open(staging, "w") as f:
        f.write("half")
    discard(staging)
    assert _tree(tmp_path) == {"preds.parquet": "new"} and not (tmp_path / STAGING_DIR).exists()


def test_object_store_path(tmp_path):
    """memory:// stands in for gs:// and s3://: delete then move, no rename."""
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe({"/store/run1/old.txt": b"old", "/store/.staging/run1.0123456789ab/new.txt": b"new"})
    publish("memory://store/.staging/run1.0123456789ab", "memory://store/run1")
    assert fs.cat("/store/run1/new.txt") == b"new" and not fs.exists("/store/run1/old.txt")
    assert not fs.exists("/store/.staging/run1.0123456789ab")


def test_object_store_swap_copies_the_manifest_last_and_a_cut_short_swap_leaves_none(monkeypatch):
    """The manifest marks a run complete (flows/label.py labels a run id again when it is missing): on an object
    store it goes first out of the old run and last into the new, so a swap that breaks off midway leaves the
    run id without one. (What it does leave: part of the new run's files, and none of the old run's.)"""
    import fsspec

    fs = fsspec.filesystem("memory")
    names = ("manifest.json", "predictions-00000.parquet", "predictions-00001.parquet", "sub/deadletter.jsonl")
    old = {"/swap/run1/manifest.json": b"old", "/swap/run1/predictions-00000.parquet": b"old"}
    fs.pipe({**old, **{f"/swap/.staging/run1.0123456789ab/{name}": name.encode() for name in names}})
    publish("memory://swap/.staging/run1.0123456789ab", "memory://swap/run1", mark="manifest.json")
    # every file of the new run, and no INCOMPLETE mark left
    assert {p: fs.cat(p) for p in fs.find("/swap/run1")} == {f"/swap/run1/{name}": name.encode() for name in names}
    assert not fs.exists("/swap/.staging/run1.0123456789ab")

    fs.pipe({f"/swap/.staging/run1.ba9876543210/{name}": b"new" for name in names})
    copy = fs.cp_file

    def copy_until_the_second_shard(path1, path2, **kwargs):
        if path1.endswith("predictions-00001.parquet"):
            raise ConnectionError("connection lost")
        return copy(path1, path2, **kwargs)

    removed, rm = [], fs.rm
    monkeypatch.setattr(fs, "rm", lambda path, *args, **kwargs: (removed.append(path), rm(path, *args, **kwargs)))
    monkeypatch.setattr(fs, "cp_file", copy_until_the_second_shard)
    with pytest.raises(ConnectionError):
        publish("memory://swap/.staging/run1.ba9876543210", "memory://swap/run1", mark="manifest.json")
    assert removed[0] == "/swap/run1/manifest.json"  # the old run stopped counting as complete before any of it went
    left = {p: fs.cat(p) for p in fs.find("/swap/run1")}
    assert "/swap/run1/manifest.json" not in left  # neither the old run's nor the new one's
    assert left.pop(f"/swap/run1/{INCOMPLETE}").startswith(b"a swap of this output was cut short")  # for the report
    assert left and set(left.values()) == {b"new"}  # part of the new run, nothing of the old


def test_an_object_store_swap_cut_short_while_deleting_the_old_run_leaves_the_incomplete_mark(monkeypatch):
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe({"/del/run1/manifest.json": b"old", "/del/run1/predictions-00000.parquet": b"old",
             "/del/run1/predictions-00001.parquet": b"old",
             "/del/.staging/run1.0123456789ab/manifest.json": b"new",
             "/del/.staging/run1.0123456789ab/predictions-00000.parquet": b"new"})
    remove = fs.rm_file

    def lose_the_connection_at_the_second_shard(path, **kwargs):
        if path.endswith("predictions-00001.parquet"):
            raise ConnectionError("connection lost")
        return remove(path, **kwargs)

    monkeypatch.setattr(fs, "rm_file", lose_the_connection_at_the_second_shard)
    with pytest.raises(ConnectionError):
        publish("memory://del/.staging/run1.0123456789ab", "memory://del/run1", mark="manifest.json")
    left = set(fs.find("/del/run1"))
    assert f"/del/run1/{INCOMPLETE}" in left and "/del/run1/manifest.json" not in left  # the report leaves it out
    assert "/del/run1/predictions-00001.parquet" in left  # what the cut left of the old run
