"""Cache keys follow content, not paths; retries are for transient failures only."""

import pytest
from prefect.states import Failed

from flows.caching import transient_only
from ops.predictions import NothingLabelledError
from ops.fingerprint import PACKAGES, code_digest, fingerprint, fingerprint_path, project_version


def test_fingerprints_follow_content_not_paths(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text('{"text": "x"}\n')
    b.write_text('{"text": "x"}\n')
    assert fingerprint_path(a) == fingerprint_path(b)  # same bytes, other path: same key
    before = fingerprint_path(a)
    a.write_text('{"text": "y"}\n')  # one byte changed, same path: new key
    assert fingerprint_path(a) != before

    folder = tmp_path / "backbone"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    key = fingerprint_path(folder)
    (folder / "sub").mkdir()
    (folder / "sub" / "w.bin").write_bytes(b"\0")  # a new file anywhere under the directory changes it
    assert fingerprint_path(folder) != key
    assert fingerprint_path("minilm-hub-name") == fingerprint_path("minilm-hub-name") != fingerprint_path("other")
    assert fingerprint(a=1, b=[1, 2]) == fingerprint(b=[1, 2], a=1) != fingerprint(a=1, b=[2, 1])


@pytest.mark.parametrize("error, retried", [(ValueError("bad config"), False), (FileNotFoundError("x"), False),
                                            (OSError("disk full"), True), (RuntimeError("CUDA out of memory"), True),
                                            (ConnectionResetError("peer"), True), (TimeoutError("slow"), True),
                                            (TypeError("a bug"), False), (KeyError("field"), False),
                                            (PermissionError("The provided token has expired"), True),
                                            (ImportError("no module"), False),
                                            (NothingLabelledError.of("all 3 inputs are dead letters",
                                                                     ["field 'body' is missing"], "kept"), False)])
def test_only_transient_failures_are_retried(error, retried):
    assert transient_only(None, None, Failed(data=error)) is retried



def test_nothing_labelled_survives_pickling():
    """Prefect and Beam carry exceptions between processes as pickles."""
    import pickle

    error = NothingLabelledError.of("all 3 inputs are dead letters", ["inference failed: RuntimeError: x"], "kept")
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is NothingLabelledError and str(again) == str(error)


def test_the_version_in_cache_keys_follows_the_code(tmp_path):
    """A cached model must not outlive the code that trained it: one changed byte of code changes the key."""
    import shutil
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    for package in PACKAGES:
        shutil.copytree(repo / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    assert code_digest(tmp_path) == code_digest(repo) and project_version().endswith(code_digest(repo)[:12])
    (tmp_path / "ops" / ".#report.py").symlink_to("user@host.1234")  # what Emacs leaves while a file is edited
    assert code_digest(tmp_path) == code_digest(repo)
    (tmp_path / "models" / "training.py").write_text((repo / "models" / "training.py").read_text() + "# \n")
    assert code_digest(tmp_path) != code_digest(repo)
