"""Save/load round trip, and loading rejects inconsistent directories with the file and field named."""

import copy
import json
import threading

import pandas
import pytest
from safetensors.torch import load_file, save_file

from models import ConfigError, EarlyExitClassifier
from models.classifier import cut_at_space, spare_tokenizers, truncated_rows
from models.classifier import artifact_id
from models.config import CONFIG_FILE, MODEL_FILES, WEIGHTS_FILE, default_exit_layers
from tests.conftest import TEXTS, tiny_classifier


@pytest.fixture
def saved(tokenizer, tmp_path):
    model = tiny_classifier(tokenizer, "roberta", "sdpa", temperatures=(0.05, 0.1, 0.2, 0.5), threshold=0.7)
    model.save_pretrained(tmp_path / "m")
    return model, tmp_path / "m"


def test_round_trip(saved):
    model, path = saved
    assert sorted(p.name for p in path.iterdir()) == sorted(MODEL_FILES)
    loaded = EarlyExitClassifier.from_pretrained(path, device="cpu")
    assert loaded.config == model.config
    assert loaded.model_id == model.model_id and loaded.model_id.startswith("sha256:")
    assert loaded.predict(TEXTS) == model.predict(TEXTS)
    settings = json.loads((path / CONFIG_FILE).read_text())
    assert settings["temperatures"] == [0.05, 0.1, 0.2, 0.5] and settings["threshold"] == 0.7
    assert settings["exit_layers"] == [1, 2, 3, 4] and settings["labels"] == ["a", "b", "c"]


def _edit(path, **changes):
    settings = json.loads((path / CONFIG_FILE).read_text())
    settings.update(changes)
    (path / CONFIG_FILE).write_text(json.dumps(settings))


@pytest.mark.parametrize("changes,field", [
    ({"exit_layers": [1, 2, 7]}, "exit_layers"),
    ({"exit_layers": [2, 1, 4]}, "exit_layers"),
    ({"temperatures": [1.0, 1.0]}, "temperatures"),
    ({"temperatures": [1.0, 1.0, 0.0, 1.0]}, "temperatures"),
    ({"labels": ["only"]}, "labels"),
    ({"model_type": "bert"}, "model_type"),
    ({"num_layers": 6, "exit_layers": [2, 4, 5, 6]}, "num_layers"),
    ({"max_length": 4096}, "max_length"),
    ({"pooling": "max"}, "pooling"),
    ({"threshold": float("inf")}, "threshold"),
])
def test_inconsistent_settings_name_file_and_field(saved, changes, field):
    _, path = saved
    _edit(path, **changes)
    with pytest.raises(ConfigError, match=f"{CONFIG_FILE}.*'{field}'"):
        EarlyExitClassifier.from_pretrained(path, device="cpu")


def test_missing_field_and_missing_file(saved):
    _, path = saved
    settings = json.loads((path / CONFIG_FILE).read_text())
    del settings["labels"]
    (path / CONFIG_FILE).write_text(json.dumps(settings))
    with pytest.raises(ConfigError, match="field 'labels' is missing"):
        EarlyExitClassifier.from_pretrained(path)
    (path / WEIGHTS_FILE).unlink()
    with pytest.raises(ConfigError, match=f"{WEIGHTS_FILE} is missing"):
        EarlyExitClassifier.from_pretrained(path)


@pytest.mark.parametrize("name", MODEL_FILES)
def test_every_file_that_decides_predictions_is_required(saved, name):
    """Without tokenizer.json, transformers would build a 5-token tokenizer from tokenizer_config.json and every
    word would be [UNK]: a model that labels everything alike, and exits 0."""
    _, path = saved
    (path / name).unlink()
    with pytest.raises(ConfigError, match=f"{name} is missing"):
        EarlyExitClassifier.from_pretrained(path)


@pytest.mark.parametrize("name,message", [
    (WEIGHTS_FILE, f"{WEIGHTS_FILE}: not a readable safetensors file"),
    ("tokenizer.json", r"the tokenizer files \(tokenizer.json, tokenizer_config.json\) cannot be loaded"),
    ("tokenizer_config.json", r"the tokenizer files \(tokenizer.json, tokenizer_config.json\) cannot be loaded"),
])
def test_a_file_cut_short_is_named(saved, name, message):
    _, path = saved
    with open(path / name, "r+b") as f:
        f.truncate(100)
    with pytest.raises(ConfigError, match=message):
        EarlyExitClassifier.from_pretrained(path, device="cpu")


def test_the_content_id_changes_with_every_file_the_tokenizer_reads(saved):
    """Each of these changes the token ids of the same text, so the id must change with it."""
    model, path = saved
    ids, tokens = {artifact_id(path)}, {tuple(model.tokenize(["A Good Film"], padding=False)["input_ids"][0])}

    def changed(name: str, text: str):
        (path / name).write_text(text)
        loaded = EarlyExitClassifier.from_pretrained(path, device="cpu")
        ids.add(loaded.model_id)
        tokens.add(tuple(loaded.tokenize(["A Good Film"], padding=False)["input_ids"][0]))

    tokenizer = json.loads((path / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    vocab["good"], vocab["film"] = vocab["film"], vocab["good"]
    changed("tokenizer.json", json.dumps(tokenizer))
    changed("special_tokens_map.json", json.dumps({"cls_token": "[SEP]", "sep_token": "[CLS]"}))
    assert len(ids) == 3 and len(tokens) == 3


def test_a_tokenizer_with_more_tokens_than_the_embedding_table_is_rejected(saved):
    _, path = saved
    config = json.loads((path / "config.json").read_text())
    config["vocab_size"] = 10  # the tiny test tokenizer has ~30k tokens
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="embedding table has 10: the tokenizer is not this model's"):
        EarlyExitClassifier.from_pretrained(path)


def test_weights_that_do_not_match_are_rejected(saved):
    _, path = saved
    weights = load_file(path / WEIGHTS_FILE)
    del weights["exits.3.net.4.weight"]
    save_file(weights, path / WEIGHTS_FILE)
    with pytest.raises(ConfigError, match=f"(?s){WEIGHTS_FILE}.*exits.3.net.4.weight"):
        EarlyExitClassifier.from_pretrained(path)


def test_default_exit_spread():
    assert default_exit_layers(6) == (1, 2, 3, 4, 5, 6)
    assert default_exit_layers(12) == (3, 6, 9, 12)
    assert default_exit_layers(24) == (6, 12, 18, 24)
    assert default_exit_layers(2) == (1, 2)


def test_truncated_only_when_text_was_cut(tokenizer):
    """max_length 64: a document of exactly 64 tokens is whole, one word more is cut; pairs too."""
    model = tiny_classifier(tokenizer)
    exact = " ".join(["word"] * 62)  # 62 words + [CLS] + [SEP] = 64 tokens
    assert len(model.tokenize([exact], padding=False)["input_ids"][0]) == 64
    texts = [exact, exact + " more", "short", exact + "   "]
    assert [p.truncated for p in model.predict(texts)] == [False, True, False, False]
    pairs = model.predict(["short", "short"], pairs=["tiny", exact])
    assert [p.truncated for p in pairs] == [False, True]


def test_cut_at_space_never_cuts_a_word():
    assert cut_at_space("short text", 100) == "short text"
    assert cut_at_space("aaaa bbbb cccc dddd", 12) == "aaaa bbbb"  # the last space within the first 12 characters
    assert cut_at_space("aaaa\tbbbb\ncccc", 11) == "aaaa\tbbbb"
    assert cut_at_space("aaaa bbbb    cccc", 12) == "aaaa bbbb"  # no trailing whitespace
    assert cut_at_space("a " + "x" * 30, 20) == "a " + "x" * 30  # no space in the second half: whole
    assert cut_at_space("aaaa\u3000bbbbbbbbbbbbbbbbb", 10) == "aaaa\u3000bbbbbbbbbbbbbbbbb"  # only ASCII whitespace


def test_very_long_documents_are_cut_before_tokenising_to_exactly_the_same_tokens(tokenizer):
    """max_length 64, so texts over 2,048 characters are cut; ids and truncation flags are the whole text's."""
    model = tiny_classifier(tokenizer)
    article = " ".join(TEXTS)
    texts = [
        (article + " ") * 200,  # about 90,000 characters of words: cut
        " " * 5000 + "words after a long run of spaces",  # the cut keeps only spaces: tokenised whole
        "x" * 20_000,  # no space to cut at: whole (one [UNK])
        "Résumé naïve café, " * 300 + "\n\ttabs and newlines " * 300,  # accents stripped, whitespace of all kinds
        TEXTS[0],
        # the cut falls just after the 62nd word, so the cut text fills max_length exactly: truncated all the same
        " ".join(["x" * 101] * 18 + ["the"] * 44) + " " + "y" * 120 + " and the rest of the document" * 50,
        "a" + " " * 3000 + "b " * 100,  # the window's last space is in a run of spaces
    ]
    encoding = model.encode(texts)
    whole = model.tokenize(texts, padding=False, offsets=True)
    assert encoding.tokens["input_ids"] == whole["input_ids"]
    assert encoding.tokens["attention_mask"] == whole["attention_mask"]
    assert encoding.truncated.tolist() == truncated_rows(whole, texts, None, 64).tolist() == [
        True, False, False, True, False, True, True]
    assert [p.label for p in model.predict(texts)] == [p.label for p in model.predict(texts, encoding=encoding)]


def test_an_encoding_made_ahead_by_a_copied_tokenizer_labels_like_predict_alone(tokenizer):
    """What ``predict`` of a file does: the next chunk is encoded in another thread with a copy of the tokenizer,
    and labelling it gives exactly what encoding it on the spot gives (truncation flags included)."""
    model = tiny_classifier(tokenizer, temperatures=(0.03,) * 4, threshold=0.8)
    texts = TEXTS + [" ".join(["word"] * 80)]  # the last is cut at 64 tokens
    made = {}
    thread = threading.Thread(target=lambda: made.update(
        encoding=model.encode(texts, tokenizer=copy.deepcopy(model.tokenizer))))
    thread.start()
    thread.join()
    ahead, alone = model.predict(texts, encoding=made["encoding"], batch_size=3), model.predict(texts, batch_size=3)
    assert ahead == alone and [p.truncated for p in ahead] == [False] * len(TEXTS) + [True]
    assert len({p.exit_layer for p in alone}) > 1  # a real early-exit decision, not every document at one exit
    with pytest.raises(ValueError,
                       match=r"an encoding of 9 documents \(9 truncation flags, no pairs\) for 2 texts \(no pairs\)"):
        model.predict(texts[:2], encoding=made["encoding"])
    with pytest.raises(ValueError, match=r"no pairs\) for 9 texts \(with pairs\)"):
        model.predict(texts, pairs=texts, encoding=made["encoding"])


def _own_model(tokenizer, **kwargs):
    """A tiny model with a tokenizer of its own, so that its pool of tokenizer copies starts empty."""
    return tiny_classifier(copy.deepcopy(tokenizer), **kwargs)


def _spy_on_encode(model, monkeypatch, before=lambda texts, tokenizer: None) -> list:
    """Records (thread name, documents, tokenizer given) of each ``model.encode`` call; ``before`` runs first."""
    calls = []
    real = model.encode

    def spy(texts, pairs=None, tokenizer=None):
        calls.append((threading.current_thread().name, len(texts), tokenizer))
        before(texts, tokenizer)
        return real(texts, pairs, tokenizer)

    monkeypatch.setattr(model, "encode", spy)
    return calls


def test_tokenizing_ahead_in_parts_labels_like_tokenizing_first(tokenizer, monkeypatch):
    """``predict(tokenize_ahead=True)``: the documents are tokenised in parts in a background thread, with a copy
    of the tokenizer lent from the pool, and the predictions are those of tokenising everything first (the
    batches differ, so confidences agree to float rounding)."""
    model = _own_model(tokenizer, temperatures=(0.03,) * 4, threshold=0.8)
    texts = TEXTS + [" ".join(["word"] * 80), "x " * 300] + [t.upper() for t in TEXTS]  # two are cut at 64 tokens
    pairs = list(reversed(texts))
    calls = _spy_on_encode(model, monkeypatch)
    for second in (None, pairs):
        calls.clear()
        ahead = model.predict(texts, second, batch_size=2, tokenize_ahead=True)
        assert [size for _, size, _ in calls] == [6, 6, 6]  # 18 documents: at most 4 parts, of whole batches
        assert all(name.startswith("rightsize-tokenize") for name, _, _ in calls)
        assert {id(t) for _, _, t in calls} == {id(spare_tokenizers(model.tokenizer)[0])} != {id(model.tokenizer)}
        calls.clear()
        first = model.predict(texts, second, batch_size=2, tokenize_ahead=False)
        assert [(name, size, t) for name, size, t in calls] == [(threading.current_thread().name, 18, None)]
        key = lambda p: (p.label, p.exit_layer, p.num_tokens, p.truncated, p.flops)  # noqa: E731
        assert [key(p) for p in ahead] == [key(p) for p in first]
        assert [p.confidence for p in ahead] == pytest.approx([p.confidence for p in first], abs=1e-5)
        assert len({p.exit_layer for p in first}) > 1  # a real early-exit decision
        assert sum(p.truncated for p in first) >= 2  # the truncation flags are compared too
    assert len(spare_tokenizers(model.tokenizer)) == 1  # the copy was returned and used again, not made per call
    for n, batch_size, sizes in ((18, 5, [10, 8]), (10, 5, [10]), (5, 5, [5])):  # parts of at least 2 batches
        calls.clear()
        model.predict(texts[:n], batch_size=batch_size, tokenize_ahead=True)
        assert [size for _, size, _ in calls] == sizes
        assert (calls[0][2] is None) == (len(sizes) == 1)  # one part: tokenised first, in the caller's thread
    series = pandas.Series(texts, index=range(100, 118)).sort_values()  # indexed by labels, not positions
    assert model.predict(series, tokenize_ahead=True, batch_size=2) == model.predict(list(series), batch_size=2)


def test_the_next_part_is_tokenised_while_batches_run(tokenizer, monkeypatch):
    """Overlap, not tokenising every part up front: tokenising the second part waits until a batch has started
    running, which would time out if all parts were tokenised before any batch ran."""
    import models.classifier as classifier

    model = _own_model(tokenizer)
    batch_started = threading.Event()
    real_run = classifier.run_early_exit

    def run(*args):
        batch_started.set()
        return real_run(*args)

    def second_part_waits(texts, tokenizer):
        if len(calls) > 1:  # the second part, or a later one
            assert batch_started.wait(timeout=10), "no batch ran while the second part was tokenised"

    monkeypatch.setattr(classifier, "run_early_exit", run)
    calls = _spy_on_encode(model, monkeypatch, second_part_waits)
    model.predict(TEXTS * 2, batch_size=2, tokenize_ahead=True)
    assert [size for _, size, _ in calls] == [4, 4, 4, 4]


def test_concurrent_callers_each_borrow_their_own_tokenizer_copy(tokenizer, monkeypatch):
    """What Beam's multi_threading mode does: threads share one model. Three calls tokenising at the same moment
    hold three different copies, all three go back to the pool, and the labels are those of one caller alone."""
    from concurrent.futures import ThreadPoolExecutor

    model = _own_model(tokenizer, temperatures=(0.03,) * 4, threshold=0.8)
    texts = TEXTS * 4
    alone = [(p.label, p.exit_layer, p.num_tokens) for p in model.predict(texts, batch_size=4, tokenize_ahead=True)]
    assert len(spare_tokenizers(model.tokenizer)) == 1  # the pool is not empty: a copy in it could be lent twice
    all_tokenizing = threading.Barrier(3, timeout=60)
    lent = {}  # background thread -> the tokenizer copy it was lent

    def first_part_waits_for_the_others(texts, tokenizer):
        if threading.current_thread() not in lent:
            lent[threading.current_thread()] = tokenizer
            all_tokenizing.wait()  # the three copies are in use at the same time here

    _spy_on_encode(model, monkeypatch, first_part_waits_for_the_others)

    def call(_):
        return [(p.label, p.exit_layer, p.num_tokens) for p in model.predict(texts, batch_size=4, tokenize_ahead=True)]

    with ThreadPoolExecutor(3) as pool:
        assert list(pool.map(call, range(3))) == [alone] * 3
    assert len(lent) == 3 and len({id(t) for t in lent.values()}) == 3  # no copy lent twice at once
    assert len(spare_tokenizers(model.tokenizer)) == 3  # all three came back: the one reused and two new
    assert all(copy_ is not model.tokenizer for copy_ in spare_tokenizers(model.tokenizer))


def test_a_tokenizer_that_cannot_be_a_weak_key_is_copied_per_call():
    class Slotted:  # no __weakref__ slot: cannot key the pool
        __slots__ = ()

    tokenizer = Slotted()
    spare_tokenizers(tokenizer).append("a copy")
    assert spare_tokenizers(tokenizer) == []  # kept nowhere, so each call makes its own copy


def test_a_part_that_fails_to_tokenise_fails_the_call(tokenizer, monkeypatch):
    """The error raised in the background thread reaches the caller (where failure isolation splits the chunk),
    and the tokenizer copy goes back to the pool; an interrupt keeps it out (its thread may still be running)."""
    model = _own_model(tokenizer)

    def poisoned(texts, tokenizer):
        if "POISON" in texts:
            raise ValueError("cannot tokenise")
        if "STOP" in texts:
            raise KeyboardInterrupt

    _spy_on_encode(model, monkeypatch, poisoned)
    with pytest.raises(ValueError, match="cannot tokenise"):
        model.predict(TEXTS + ["POISON"], batch_size=2, tokenize_ahead=True)
    assert len(spare_tokenizers(model.tokenizer)) == 1
    with pytest.raises(KeyboardInterrupt):
        model.predict(TEXTS + ["STOP"], batch_size=2, tokenize_ahead=True)
    assert len(spare_tokenizers(model.tokenizer)) == 0
    with pytest.raises(ValueError, match="9 texts but 8 pairs"):
        model.predict(TEXTS + ["POISON"], TEXTS, batch_size=2, tokenize_ahead=True)


def test_remote_model_copy_is_removed_after_loading(saved, tmp_path, monkeypatch):
    import tempfile

    import fsspec

    _, directory = saved
    fs = fsspec.filesystem("memory")
    for f in directory.iterdir():
        fs.pipe(f"/remote-model/{f.name}", f.read_bytes())
    copies = tmp_path / "tmp"
    copies.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(copies))  # where the copy goes
    model = EarlyExitClassifier.from_pretrained("memory://remote-model", device="cpu")
    assert model.predict(TEXTS) == EarlyExitClassifier.from_pretrained(directory, device="cpu").predict(TEXTS)
    assert list(copies.iterdir()) == []
