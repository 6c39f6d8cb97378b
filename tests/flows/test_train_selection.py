"""The train flow with a mode and a data selection: a nightly job trains SWEET on the ambiguous half without
custom code, and a second run reuses everything."""

import json
from pathlib import Path

import pytest

from flows.config import DataConfig, load_config
from flows.train import train_flow
from models.config import CONFIG_FILE
from models.training import TrainConfig
from ops.dynamics import SelectionConfig, data_map, read_dynamics, select_region
from ops.examples import load_examples
from tests.conftest import topic_examples


def _jsonl(path: Path, examples) -> str:
    path.write_text("".join(json.dumps({"body": t, "topic": l}) + "\n" for t, l in zip(examples.texts, examples.labels)))
    return str(path)


def test_sweet_on_the_ambiguous_half(prefect_server, backbone_dir, tmp_path):
    data = DataConfig(train=_jsonl(tmp_path / "train.jsonl", topic_examples(64, 0)),
                      dev=_jsonl(tmp_path / "dev.jsonl", topic_examples(24, 1)), text_field="body", label_field="topic")
    config = TrainConfig(model=backbone_dir, exits=(2, 4), epochs=2, batch_size=16, lr=1e-3, max_length=32,
                         mode="sweet", dynamics=False)
    selection = SelectionConfig("ambiguous", 0.5)
    first = train_flow(data, config, str(tmp_path / "models"), str(tmp_path / "cache"), selection)

    chosen = first["selection"]
    assert chosen["region"] == "ambiguous" and chosen["fraction"] == 0.5
    # the data map comes from a run on all 64 examples, with dynamics on whatever the final config says
    dynamics, examples, _ = read_dynamics(chosen["from_model"])
    assert examples.num_rows == 64 and dynamics.gold_probability.shape == (2, 2, 64)
    subset = load_examples(chosen["data"], text_field="body", label_field="topic")  # the original field names
    most_variable = select_region(data_map(dynamics), "ambiguous", 0.5)
    assert subset.texts == [examples["text"][int(i)].as_py() for i in most_variable]
    final = json.loads((Path(first["model_dir"]) / CONFIG_FILE).read_text())
    assert final["training_mode"] == "sweet" and first["model_dir"] != chosen["from_model"]
    assert not (Path(first["model_dir"]) / "dynamics").exists()  # the final config said dynamics=False

    second = train_flow(data, config, str(tmp_path / "models"), str(tmp_path / "cache"), selection)
    assert second["cached"] and second["model_dir"] == first["model_dir"] and second["selection"] == chosen


def test_select_section_of_the_run_config(tmp_path):
    path = tmp_path / "c.toml"
    base = 'output = "o"\n[data]\ntrain = "t"\ndev = "d"\n[train]\nmodel = "m"\nmode = "multi"\n[label]\ninput = "x"\n'
    path.write_text(base)
    assert load_config(path).select is None and load_config(path).train.mode == "multi"
    path.write_text(base + '[select]\nregion = "ambiguous"\nfraction = 0.33\n')
    assert load_config(path).select == SelectionConfig("ambiguous", 0.33)
    path.write_text(base + '[select]\nregion = "confusing"\nfraction = 0.33\n')
    with pytest.raises(ValueError, match=r"\[select\]: SelectionConfig.region must be one of"):
        load_config(path)
    path.write_text(base.replace('mode = "multi"', 'epochs = 1') + '[select]\nregion = "easy"\nfraction = 0.5\n')
    with pytest.raises(ValueError, match=r"\[select\] needs a data map, which needs \[train\] epochs >= 2"):
        load_config(path)
    path.write_text(base.replace('mode = "multi"', 'exits = [2, 4]') + '[select]\nregion = "easy"\nfraction = 0.5\n'
                    'exit_layer = 3\n')
    with pytest.raises(ValueError, match=r"exit_layer 3 is not among \[train\] exits \[2, 4\]"):
        load_config(path)
