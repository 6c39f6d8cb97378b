import os

from ops.urls import local_path, protocol, resolved


def test_local_path_and_protocol(tmp_path):
    assert local_path(str(tmp_path)) == local_path(f"file://{tmp_path}") == str(tmp_path)
    assert local_path("memory://bucket/x") is None
    assert (protocol("relative/x"), protocol(f"file://{tmp_path}"), protocol("memory://b/x")) == ("file", "file", "memory")


def test_two_spellings_of_one_place_resolve_equal(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    absolute = resolved(f"{tmp_path}/out/a.parquet")
    assert resolved("out/a.parquet") == resolved("./out/../out/a.parquet") == resolved(f"file://{tmp_path}/out/a.parquet") == absolute
    assert absolute == ("file", os.path.join(str(tmp_path), "out", "a.parquet"))
    assert resolved("memory://out/a.parquet") != absolute
