import json
import logging
import math
import shutil

import pytest
import torch
from tango.common import Params
from tango.common.exceptions import ConfigurationError

from fmit_plugin.commands.train import train_model
from fmit_plugin.common.progress import progress
from fmit_plugin.common.seeds import set_seed
from fmit_plugin.data.data_loader import DataLoader, TaggingDataLoader
from fmit_plugin.data.twitter_mner import TwitterMnerReader
from fmit_plugin.data.vocabulary import Vocabulary
from fmit_plugin.models.crf_tagger import CrfTagger
from fmit_plugin.models.model import Model
from fmit_plugin.training import trainer as trainer_module
from fmit_plugin.training.trainer import GradientDescentTrainer, Trainer
from tests.conftest import TWITTER_FIXTURES, tiny_config
from tests.host_reads import HostReads


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


# ------------------------------------------------------------------ reproducibility and TensorBoard


def _scalars(directory, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(directory))
    accumulator.Reload()
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


def _epoch_files(run):
    epochs = []
    for path in sorted(run.glob("metrics_epoch_*.json")):
        metrics = json.loads(path.read_text())
        metrics.pop("epoch_duration_seconds")
        metrics.pop("training_duration_seconds")
        epochs.append(metrics)
    return epochs


def test_the_same_seed_gives_identical_runs_and_tensorboard_scalars(tiny_bert, tmp_path):
    config = _config(tiny_bert, num_epochs=2,
                     learning_rate_scheduler={"type": "linear_with_warmup", "warmup_steps": 2})
    for name in ("a", "b"):
        train_model(Params(json.loads(json.dumps(config))), tmp_path / name)
    epochs = _epoch_files(tmp_path / "a")
    assert len(epochs) == 2 and epochs == _epoch_files(tmp_path / "b")
    first, second = (torch.load(tmp_path / name / "best.th") for name in ("a", "b"))
    assert all(torch.equal(first[key], second[key]) for key in first)

    log = tmp_path / "a" / "log"
    for key in ("loss", "f1-measure-overall", "precision-overall", "recall-overall"):
        logged = _scalars(log / "validation", key)
        assert [step for step, _ in logged] == [0, 1]
        assert [value for _, value in logged] == pytest.approx([e[f"validation_{key}"] for e in epochs], abs=1e-6)
    assert [value for _, value in _scalars(log / "train", "loss")] == pytest.approx(
        [e["training_loss"] for e in epochs], rel=1e-6)
    # 12 tweets in batches of 4: 3 optimizer steps an epoch, 6 in all. Linear warm-up over 2 steps,
    # then linear decay to 0 at step 6: the factor after step k is (k + 1) / 3 for k < 2, else (6 - k) / 4.
    factors = [2 / 3, 1, 3 / 4, 2 / 4, 1 / 4, 0]
    for group, base in ((0, 1e-3), (1, 1e-2)):  # the text embedder's group, then the rest
        logged = _scalars(log / "batches", f"learning_rate/group_{group}")
        assert [step for step, _ in logged] == [1, 2, 3, 4, 5, 6]
        assert [value for _, value in logged] == pytest.approx([base * f for f in factors], rel=1e-5)
    assert _scalars(log / "batches", "loss") and _scalars(log / "batches", "f1-measure-overall")


def test_tensorboard_can_be_turned_off_and_is_optional(tiny_bert, tmp_path, monkeypatch):
    train_model(Params(_config(tiny_bert, num_epochs=1, tensorboard=False)), tmp_path / "off")
    assert (tmp_path / "off" / "model.tar.gz").exists() and not (tmp_path / "off" / "log").exists()
    monkeypatch.setattr("fmit_plugin.training.tensorboard_writer.tensorboard_available", lambda: False)
    with pytest.raises(ConfigurationError, match="pip install"):
        train_model(Params(_config(tiny_bert, tensorboard=True)), tmp_path / "required")
    # Without the package, the default trains, just without scalars.
    train_model(Params(_config(tiny_bert, num_epochs=1)), tmp_path / "default")
    assert (tmp_path / "default" / "model.tar.gz").exists() and not (tmp_path / "default" / "log").exists()


# ------------------------------------------------------------------ recovery


def test_recover_after_a_crash_in_validation_ends_like_an_uninterrupted_run(tiny_bert, tmp_path, monkeypatch,
                                                                            caplog):
    config = _config(tiny_bert, num_epochs=3, learning_rate_scheduler={"type": "linear_with_warmup", "warmup_steps": 2})
    uninterrupted = train_model(Params(json.loads(json.dumps(config))), tmp_path / "a")

    original = trainer_module.evaluate
    calls = []

    def crash_in_third_validation(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # epoch 2 has trained (and logged its steps), its checkpoint is not written
            raise KeyboardInterrupt("simulated kill")
        return original(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "evaluate", crash_in_third_validation)
    with pytest.raises(KeyboardInterrupt):
        train_model(Params(json.loads(json.dumps(config))), tmp_path / "b")
    monkeypatch.setattr(trainer_module, "evaluate", original)
    assert torch.load(tmp_path / "b" / "checkpoint.th", weights_only=False)["epoch"] == 1
    before_the_kill = json.loads((tmp_path / "b" / "metrics_epoch_1.json").read_text())["training_duration_seconds"]
    caplog.set_level(logging.INFO, logger="fmit_plugin.training.trainer")
    recovered = train_model(Params(json.loads(json.dumps(config))), tmp_path / "b", recover=True)
    # Logs count epochs as the files do, from 0 (AllenNLP's "Epoch 0/2"): the resumed epoch is metrics_epoch_2.
    messages = [record.getMessage() for record in caplog.records]
    assert any("resuming at epoch 2" in message for message in messages), messages
    assert [m.split(":")[0] for m in messages if m.startswith("Epoch ")] == ["Epoch 2/2"]
    # The time of the epochs before the kill is counted in, not only the resumed part.
    last_epoch = json.loads((tmp_path / "b" / "metrics_epoch_2.json").read_text())
    assert last_epoch["training_duration_seconds"] >= before_the_kill + last_epoch["epoch_duration_seconds"] > 0
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["training_duration_seconds"] >= (
        last_epoch["training_duration_seconds"])
    for (name, a), b in zip(uninterrupted.state_dict().items(), recovered.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name
    for key in ("test_f1-measure-overall", "best_epoch", "best_validation_f1-measure-overall", "training_loss"):
        assert json.loads((tmp_path / "a" / "metrics.json").read_text())[key] == pytest.approx(
            json.loads((tmp_path / "b" / "metrics.json").read_text())[key]), key
    # TensorBoard hides what the killed run logged after its checkpoint: each step once, in order.
    log = tmp_path / "b" / "log"
    assert [step for step, _ in _scalars(log / "batches", "learning_rate/group_0")] == list(range(1, 10))
    assert [step for step, _ in _scalars(log / "validation", "f1-measure-overall")] == [0, 1, 2]
    assert _scalars(log / "batches", "learning_rate/group_0") == _scalars(
        tmp_path / "a" / "log" / "batches", "learning_rate/group_0")


def test_recovering_a_run_that_had_stopped_early_trains_no_further(tiny_bert, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_module, "evaluate", lambda *a, **k: {"f1-measure-overall": 0.5})
    config = _config(tiny_bert, num_epochs=10, patience=2)
    train_model(Params(json.loads(json.dumps(config))), tmp_path / "run")
    stopped = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # Killed while archiving: the checkpoint of the last epoch is there, the archive is not.
    (tmp_path / "run" / "model.tar.gz").unlink()
    (tmp_path / "run" / "metrics.json").unlink()
    train_model(Params(json.loads(json.dumps(config))), tmp_path / "run", recover=True)
    assert len(list((tmp_path / "run").glob("metrics_epoch_*.json"))) == 3
    resumed = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (resumed["epoch"], resumed["best_epoch"]) == (stopped["epoch"], stopped["best_epoch"]) == (2, 0)
    assert (tmp_path / "run" / "model.tar.gz").exists()


def test_pending_best_weights_follow_the_checkpoint(tiny_bert, tmp_path):
    run = tmp_path / "run"
    train_model(Params(_config(tiny_bert, num_epochs=2)), run)
    best_epoch = torch.load(run / "checkpoint.th", weights_only=False)["best_epoch"]
    trainer = _trainer(tiny_bert, run)
    # A kill after the next epoch's best weights were written, before its checkpoint: dropped.
    (run / "best.th.epoch_2").write_bytes(b"weights of an epoch that will be trained again")
    (run / ".checkpoint.th.x1y2.tmp").write_bytes(b"half a checkpoint")
    best = (run / "best.th").read_bytes()
    assert trainer.restore_checkpoint() and trainer.start_epoch == 2
    assert sorted(p.name for p in run.iterdir() if ".epoch_" in p.name or p.name.startswith(".")) == []
    assert (run / "best.th").read_bytes() == best
    # A kill between an epoch's checkpoint and the rename of its best weights: promoted.
    (run / f"best.th.epoch_{best_epoch}").write_bytes(b"the checkpoint's best")
    assert _trainer(tiny_bert, run).restore_checkpoint()
    assert (run / "best.th").read_bytes() == b"the checkpoint's best"


# ------------------------------------------------------------------ mixed precision, accumulation


def _trainer(tiny_bert, run, **trainer):
    """A trainer over the small tweet files, built as the train command builds it."""
    config = _config(tiny_bert, **trainer)
    reader = TwitterMnerReader()
    instances = reader.read(config["train_data_path"])
    vocab = Vocabulary.from_instances(instances)
    set_seed(1)
    model = Model.from_params(Params(config["model"]), vocab=vocab)
    loader = DataLoader.from_params(Params(config["data_loader"]), instances=instances)
    loader.index_with(vocab)
    return Trainer.from_params(Params(config["trainer"]), model=model, serialization_dir=run, data_loader=loader)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_use_amp_runs_the_forward_under_autocast(tiny_bert, tmp_path, monkeypatch, dtype):
    seen = []
    original = CrfTagger.forward

    def recording_forward(self, *args, **kwargs):
        if torch.is_autocast_enabled("cpu"):
            seen.append(("train" if self.training else "validation", torch.get_autocast_dtype("cpu")))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(CrfTagger, "forward", recording_forward)
    run = tmp_path / "run"
    train_model(Params(_config(tiny_bert, num_epochs=1, use_amp=True, amp_dtype=dtype, grad_norm=1.0)), run)
    # 3 training batches, then the validation batches, also under autocast; the test set is not.
    validation_batches = len(seen) - 3
    assert validation_batches > 0
    assert seen == [("train", getattr(torch, dtype))] * 3 + [("validation", getattr(torch, dtype))] * validation_batches
    metrics = json.loads((run / "metrics.json").read_text())
    assert math.isfinite(metrics["training_loss"])
    scaler = torch.load(run / "checkpoint.th", weights_only=False)["scaler"]
    if dtype == "float16":  # fp16 scales the loss; its scaler state is checkpointed
        assert scaler["scale"] > 1
    else:
        assert scaler is None


def test_float16_steps_with_overflowing_gradients_are_skipped(tiny_bert, tmp_path):
    trainer = _trainer(tiny_bert, tmp_path, use_amp=True, amp_dtype="float16", grad_norm=1.0,
                       learning_rate_scheduler={"type": "linear_with_warmup", "warmup_steps": 2})
    assert trainer.scaler is not None
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    scale = trainer.scaler.get_scale()
    batch = next(iter(trainer.data_loader))
    trainer.scaler.scale(trainer.model(**batch)["loss"]).backward()
    next(p for p in trainer.model.parameters() if p.grad is not None).grad[0] = float("inf")
    trainer._step()
    assert trainer.scaler.get_scale() == scale / 2
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    assert trainer.scheduler.last_epoch == 0  # the schedule does not advance past a skipped step
    trainer.scaler.scale(trainer.model(**batch)["loss"]).backward()
    trainer._step()
    assert trainer.scheduler.last_epoch == 1
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())


def test_amp_dtype_is_checked(tiny_bert, tmp_path):
    with pytest.raises(ConfigurationError, match="amp_dtype"):
        _trainer(tiny_bert, tmp_path, use_amp=True, amp_dtype="float8")


def test_accumulating_two_batches_of_eight_trains_like_one_batch_of_sixteen(tiny_bert, tmp_path):
    # No dropout anywhere, so both runs see the same forward passes.
    model_dir = tmp_path / "bert"
    shutil.copytree(tiny_bert, model_dir)
    bert_config = json.loads((model_dir / "config.json").read_text())
    bert_config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (model_dir / "config.json").write_text(json.dumps(bert_config))
    tweets = (TWITTER_FIXTURES / "train.txt").read_text().strip().split("\n\n")
    tweets += (TWITTER_FIXTURES / "valid.txt").read_text().strip().split("\n\n")
    assert len(tweets) >= 16
    (tmp_path / "train16.txt").write_text("\n\n".join(tweets[:16]) + "\n")
    steps = {}
    for name, batch_size, accumulation in (("whole", 16, 1), ("accumulated", 8, 2)):
        config = tiny_config(model_dir)
        config.update(train_data_path=str(tmp_path / "train16.txt"), evaluate_on_test=False)
        del config["validation_data_path"]
        config["data_loader"] = {"batch_sampler": {"type": "basic", "batch_size": batch_size, "shuffle": False}}
        config["trainer"] = {"optimizer": {"type": "sgd", "lr": 0.5}, "num_epochs": 1, "seed": 1,
                             "num_gradient_accumulation_steps": accumulation, "tensorboard": False}
        train_model(Params(config), tmp_path / name)
        steps[name] = torch.load(tmp_path / name / "checkpoint.th", weights_only=False)["global_step"]
    assert steps == {"whole": 1, "accumulated": 1}
    whole, accumulated = (torch.load(tmp_path / name / "best.th") for name in ("whole", "accumulated"))
    for key in whole:
        assert torch.allclose(whole[key], accumulated[key], atol=1e-6), key


# ------------------------------------------------------------------ launching and logging


def test_a_distributed_config_block_points_to_torchrun(tiny_bert, tmp_path):
    config = _config(tiny_bert)
    config["distributed"] = {"cuda_devices": [0, 1]}
    with pytest.raises(ConfigurationError, match="torchrun --nproc_per_node"):
        train_model(Params(config), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_file_friendly_progress_prints_one_line_per_update(monkeypatch, capsys):
    monkeypatch.setenv("FMIT_FILE_FRIENDLY_LOGGING", "1")
    assert list(progress(range(3), "epoch 1/1 train", 3)) == [0, 1, 2]
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert lines and all(line.startswith("epoch 1/1 train") for line in lines)
    assert "3/3" in lines[-1]


class _Quadratic(Model):
    """A one-parameter model whose loss is pure tensor arithmetic (no reads of its own), and that
    becomes NaN from call `nan_from` on."""

    def __init__(self, vocab: Vocabulary, nan_from: int = 0) -> None:
        super().__init__(vocab)
        self.weight = torch.nn.Parameter(torch.ones(()))
        self.nan_from = nan_from
        self.calls = 0

    def forward(self, words, tags=None, **kwargs):  # type: ignore[override]
        self.calls += 1
        loss = (self.weight - 0.5) ** 2
        if self.nan_from and self.calls >= self.nan_from:
            loss = loss * float("nan")
        return {"loss": loss}

    def get_metrics(self, reset: bool = False) -> dict[str, float]:
        return {}


def _quadratic_trainer(tmp_path, nan_from: int = 0) -> GradientDescentTrainer:
    instances = TwitterMnerReader().read(str(TWITTER_FIXTURES / "train.txt"))  # 12 tweets
    vocab = Vocabulary.from_instances(instances)
    loader = TaggingDataLoader(instances, batch_size=1, shuffle=False)
    loader.index_with(vocab)
    return GradientDescentTrainer(
        _Quadratic(vocab, nan_from), tmp_path / "run", loader, optimizer={"type": "sgd", "lr": 0.1}, num_epochs=1,
        validation_metric="-loss", tensorboard=False,
    )


def test_training_steps_read_nothing_back_between_progress_updates(tmp_path):
    trainer = _quadratic_trainer(tmp_path)
    with HostReads() as reads:
        metrics = trainer._train_epoch(0)
    # 12 batches: the running loss (and the non-finite check) is read at batches 10 and 12 only,
    # then once for the epoch's mean.
    assert reads.seen == ["tolist", "tolist", "__float__"]
    assert metrics["loss"] > 0 and trainer.model.weight.item() < 1.0


def test_a_non_finite_loss_stops_training_naming_the_batch(tmp_path):
    trainer = _quadratic_trainer(tmp_path, nan_from=3)
    with pytest.raises(RuntimeError, match=r"non-finite at epoch 0, batch 3 \(noticed at batch 10"):
        trainer._train_epoch(0)
