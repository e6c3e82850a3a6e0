import json

import pytest
import torch
from tango.common import Params
from tango.common.exceptions import ConfigurationError

from fmit_plugin.commands.train import train_model
from fmit_plugin.training.trainer import GradientDescentTrainer
from tests.conftest import tiny_config


def _config(tiny_bert, **trainer):
    config = tiny_config(tiny_bert)
    config["trainer"].update(trainer)
    return config


def test_serialization_dir_holds_metrics_per_epoch_and_best(tiny_bert, tmp_path):
    train_model(Params(_config(tiny_bert, num_epochs=3)), tmp_path / "run")
    run = tmp_path / "run"
    epochs = [json.loads((run / f"metrics_epoch_{i}.json").read_text()) for i in range(3)]
    assert [e["epoch"] for e in epochs] == [0, 1, 2]
    final = json.loads((run / "metrics.json").read_text())
    best = final["best_epoch"]
    assert final["best_validation_f1-measure-overall"] == epochs[best]["validation_f1-measure-overall"]
    assert final["best_validation_f1-measure-overall"] == max(e["validation_f1-measure-overall"] for e in epochs)
    assert {"config.json", "vocabulary", "best.th", "checkpoint.th", "model.tar.gz"} <= {p.name for p in run.iterdir()}


def test_patience_stops_training(tiny_bert, tmp_path, monkeypatch):
    # A constant validation metric never improves after the first epoch.
    monkeypatch.setattr("fmit_plugin.training.trainer.evaluate", lambda *a, **k: {"f1-measure-overall": 0.5})
    train_model(Params(_config(tiny_bert, num_epochs=10, patience=2)), tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").glob("metrics_epoch_*.json")) == [
        "metrics_epoch_0.json", "metrics_epoch_1.json", "metrics_epoch_2.json"
    ]


def test_recover_after_a_crash_ends_like_an_uninterrupted_run(tiny_bert, tmp_path, monkeypatch):
    config = _config(tiny_bert, num_epochs=3, learning_rate_scheduler={"type": "linear_with_warmup", "warmup_steps": 2})
    uninterrupted = train_model(Params(json.loads(json.dumps(config))), tmp_path / "a")

    original = GradientDescentTrainer._train_epoch

    def crash_in_third_epoch(self, epoch):
        if epoch == 2:
            raise KeyboardInterrupt("simulated kill")
        return original(self, epoch)

    monkeypatch.setattr(GradientDescentTrainer, "_train_epoch", crash_in_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_model(Params(json.loads(json.dumps(config))), tmp_path / "b")
    monkeypatch.setattr(GradientDescentTrainer, "_train_epoch", original)
    recovered = train_model(Params(json.loads(json.dumps(config))), tmp_path / "b", recover=True)
    for (name, a), b in zip(uninterrupted.state_dict().items(), recovered.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["test_f1-measure-overall"] == pytest.approx(
        json.loads((tmp_path / "b" / "metrics.json").read_text())["test_f1-measure-overall"]
    )


def test_serialization_dir_rules(tiny_bert, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "something").write_text("x")
    with pytest.raises(ConfigurationError, match="already exists and is not empty"):
        train_model(Params(_config(tiny_bert)), run)
    with pytest.raises(ConfigurationError, match="nothing to resume"):
        train_model(Params(_config(tiny_bert)), tmp_path / "empty", recover=True)
    train_model(Params(_config(tiny_bert, num_epochs=1)), run, force=True)
    with pytest.raises(ConfigurationError, match="config differs"):
        train_model(Params(_config(tiny_bert, num_epochs=5)), run, recover=True)


def test_config_mistakes_are_named(tiny_bert, tmp_path):
    with pytest.raises(ConfigurationError, match="validation_metric"):
        train_model(Params(_config(tiny_bert, validation_metric="f1")), tmp_path / "a")
    with pytest.raises(ConfigurationError, match="not among the metrics"):
        train_model(Params(_config(tiny_bert, validation_metric="+accuracy")), tmp_path / "b")
    config = _config(tiny_bert)
    config["train_data_path"] = str(tmp_path / "missing.txt")
    with pytest.raises(ConfigurationError, match="missing.txt"):
        train_model(Params(config), tmp_path / "c")
    config = _config(tiny_bert)
    config["model"]["dropuot"] = 0.1
    with pytest.raises(ConfigurationError, match="dropuot"):
        train_model(Params(config), tmp_path / "d")


def test_dry_run_builds_everything_but_does_not_train(tiny_bert, tmp_path, capsys):
    assert train_model(Params(_config(tiny_bert)), tmp_path / "run", dry_run=True) is None
    assert "Config is valid" in capsys.readouterr().out
    assert not (tmp_path / "run" / "model.tar.gz").exists()
