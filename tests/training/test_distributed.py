"""Training under torchrun (two gloo workers on CPU), sharded validation, kill-and-recover (mid-epoch
and inside a checkpoint write), gradient accumulation."""
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from tango.common import Params

from fmit_plugin.commands.evaluate import evaluate_archive
from fmit_plugin.data.data_loader import TaggingDataLoader, collate
from fmit_plugin.data.twitter_mner import TwitterMnerReader
from fmit_plugin.data.vocabulary import Vocabulary
from fmit_plugin.metrics.span_f1 import SpanF1Measure
from fmit_plugin.models.archival import load_archive
from fmit_plugin.models.model import Model
from fmit_plugin.training.evaluation import evaluate
from tests.conftest import TWITTER_FIXTURES, tiny_config

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "FMIT_FILE_FRIENDLY_LOGGING": "1", "OMP_NUM_THREADS": "1"}


def _config_file(tiny_bert, directory, **trainer):
    config = tiny_config(tiny_bert)
    config["trainer"].update(trainer)
    path = directory / "config.json"
    path.write_text(json.dumps(config))
    return path


def _train_command(config, run):
    return [sys.executable, "-m", "fmit_plugin", "train", str(config), "-s", str(run)]


def _assert_same_weights(expected, actual):
    for (name, a), b in zip(expected.state_dict().items(), actual.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name


# --------------------------------------------------------------------------------------- torchrun


def test_two_gloo_workers_train_and_agree_with_a_single_process_evaluation(tiny_bert, tmp_path):
    config = tiny_config(tiny_bert)
    # Validation on the training tweets (12), which the model learns enough of for a non-zero F1, in
    # batches of 5: 3 batches for 2 workers, so one worker evaluates 2 and the other 1.
    config["validation_data_path"] = str(TWITTER_FIXTURES / "train.txt")
    config["validation_data_loader"] = {"batch_size": 5, "shuffle": False}
    # Batches of 2 accumulated in pairs: each worker has 3 batches, so DDP's no_sync path is taken.
    config["data_loader"] = {"batch_size": 2}
    config["trainer"].update(num_epochs=3, num_gradient_accumulation_steps=2, grad_norm=1.0)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    run = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "fmit_plugin", "train", str(path), "-s", str(run), "--file-friendly-logging"]
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    files = sorted(p.name for p in run.iterdir())
    # No temp files or pending best weights left, one out.log, one TensorBoard folder.
    assert files == ["best.th", "checkpoint.th", "config.json", "log", "metrics.json", "metrics_epoch_0.json",
                     "metrics_epoch_1.json", "metrics_epoch_2.json", "model.tar.gz", "out.log", "training_record.json",
                     "vocabulary"]
    assert sorted(p.name for p in (run / "log").iterdir()) == ["batches", "train", "validation"]
    for run_dir in (run / "log").iterdir():  # only rank 0 wrote TensorBoard events
        assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1, run_dir
    log = (run / "out.log").read_text()
    assert log.count("Epoch 2/2:") == 1 and "Finished: archive" in log
    # Rank 1's INFO lines stay off the console: every epoch summary is printed once.
    assert result.stderr.count("Epoch 2/2:") == 1
    # File-friendly progress lines of rank 0's bars, with the loss and running F1 of both phases.
    for phase in ("train", "validation (rank 0 of 2, its own shard)"):
        assert any(line.startswith(f"epoch 2/2 {phase}: 100%") and "loss:" in line and "f1:" in line
                   for line in result.stderr.splitlines()), phase
    metrics = json.loads((run / "metrics.json").read_text())
    best = json.loads((run / f"metrics_epoch_{metrics['best_epoch']}.json").read_text())
    assert best["validation_f1-measure-overall"] > 0
    single = evaluate_archive(run / "model.tar.gz", TWITTER_FIXTURES / "train.txt")
    for key in ("f1-measure-overall", "precision-overall", "recall-overall", "f1-measure-strict-overall"):
        assert best[f"validation_{key}"] == single[key], key
    assert best["validation_loss"] == pytest.approx(single["loss"], rel=1e-4)
    # Each worker ran ceil(3 / 2) = 2 optimizer steps per epoch.
    assert torch.load(run / "checkpoint.th", weights_only=False)["global_step"] == 6


# --------------------------------------------------------------- sharded evaluation, no instance twice


class _HalfRightTagger(Model):
    """Predicts the gold tags of tweets with an even number of words and all O for the others;
    records which tweets it saw; its 'loss' for a batch is the batch size."""

    def __init__(self, vocab: Vocabulary) -> None:
        super().__init__(vocab)
        self.anchor = torch.nn.Parameter(torch.zeros(()))
        self.metric = SpanF1Measure()
        self.seen: list[str] = []

    def forward(self, words, tags, metadata, **kwargs):  # type: ignore[override]
        labels = self.vocab.get_index_to_token_vocabulary("labels")
        gold = [[labels[int(t)] for t in row[: len(w)]] for row, w in zip(tags, words, strict=True)]
        predicted = [g if len(w) % 2 == 0 else ["O"] * len(w) for g, w in zip(gold, words, strict=True)]
        self.metric(predicted, gold)
        self.seen.extend(f"{m['image_id']}:{' '.join(w)}" for m, w in zip(metadata, words, strict=True))
        return {"loss": self.anchor + len(words)}

    def get_metrics(self, reset: bool = False) -> dict[str, float]:
        return self.metric.get_metric(reset)


BATCH_SIZES = (1, 5, 7, 16)  # 12 tweets: 12, 3, 2 and 1 batches for 2 workers


def _sharded_evaluation(batch_size: int) -> tuple[dict[str, float], list[str]]:
    instances = TwitterMnerReader().read(str(TWITTER_FIXTURES / "train.txt"))
    vocab = Vocabulary.from_instances(instances)
    model = _HalfRightTagger(vocab)
    loader = TaggingDataLoader(instances, batch_size=batch_size, shuffle=False)
    loader.index_with(vocab)
    return evaluate(model, loader, torch.device("cpu"), "validation", len(loader)), model.seen


def _evaluation_worker(rank: int, world_size: int, port: int, directory: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    # A worker left waiting in a collective the other never joins fails instead of hanging.
    dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=timedelta(seconds=60))
    try:
        results = {size: _sharded_evaluation(size) for size in BATCH_SIZES}
        with open(f"{directory}/rank{rank}.json", "w") as results_file:
            json.dump(results, results_file)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_sharded_validation_counts_every_instance_once_and_equals_a_single_process(tmp_path):
    mp.spawn(_evaluation_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    for size in BATCH_SIZES:
        single_metrics, single_seen = _sharded_evaluation(size)
        assert 0 < single_metrics["f1-measure-overall"] < 1  # the half-right tagger is scored non-trivially
        (metrics0, seen0), (metrics1, seen1) = ranks[0][str(size)], ranks[1][str(size)]
        assert metrics0 == metrics1 == single_metrics, size
        assert sorted(seen0 + seen1) == sorted(single_seen), size  # none dropped, none twice
        assert len(single_seen) == 12
        if size == 16:
            assert seen1 == []  # fewer batches than workers: one worker evaluates nothing and still agrees


# ----------------------------------------------------------------------------------- kill and recover


@pytest.fixture(scope="module")
def uninterrupted(tiny_bert, tmp_path_factory):
    """A 3-epoch run in a subprocess: the reference every interrupted run must end like."""
    directory = tmp_path_factory.mktemp("uninterrupted")
    config = _config_file(tiny_bert, directory, num_epochs=3)
    run = directory / "run"
    result = subprocess.run(_train_command(config, run), env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return config, run


def _assert_ends_like(uninterrupted_run, run):
    _assert_same_weights(load_archive(uninterrupted_run / "model.tar.gz").model,
                         load_archive(run / "model.tar.gz").model)
    expected = json.loads((uninterrupted_run / "metrics.json").read_text())
    actual = json.loads((run / "metrics.json").read_text())
    for key in ("best_epoch", "test_f1-measure-overall", "best_validation_f1-measure-overall",
                "validation_loss", "training_loss"):
        assert actual[key] == pytest.approx(expected[key], abs=1e-6), key
    leftovers = [p.name for p in run.iterdir() if p.name.startswith(".") or ".epoch_" in p.name]
    assert leftovers == []


def test_killed_run_recovers_to_the_uninterrupted_result(uninterrupted, tmp_path):
    config, whole = uninterrupted
    run = tmp_path / "killed"
    command = _train_command(config, run)
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    # Killed once epoch 0 is checkpointed: in the middle of epoch 1.
    while not (run / "checkpoint.th").exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (run / "model.tar.gz").exists(), "the run finished before it could be killed"
    resumed = subprocess.run([*command, "--recover"], env=ENV, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_ends_like(whole, run)


KILL_INSIDE_SAVE = textwrap.dedent("""
    import io, os, signal, sys
    import torch

    real_save = torch.save
    checkpoints = []

    def save(obj, f, *args, **kwargs):
        # The second checkpoint (after epoch 1): write half of it, then die as if killed.
        if isinstance(f, str) and os.path.basename(f).startswith(".checkpoint.th."):
            checkpoints.append(f)
            if len(checkpoints) == 2:
                buffer = io.BytesIO()
                real_save(obj, buffer)
                with open(f, "wb") as out:
                    out.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
                    out.flush()
                    os.fsync(out.fileno())
                os.kill(os.getpid(), signal.SIGKILL)
        return real_save(obj, f, *args, **kwargs)

    torch.save = save
    from fmit_plugin.__main__ import run
    sys.argv = ["allennlp", "train", sys.argv[1], "-s", sys.argv[2]]
    run()
""")


def test_a_kill_inside_the_checkpoint_write_recovers_from_the_last_complete_one(uninterrupted, tmp_path):
    config, whole = uninterrupted
    run = tmp_path / "killed"
    killed = subprocess.run([sys.executable, "-c", KILL_INSIDE_SAVE, str(config), str(run)],
                            env=ENV, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    partial = list(run.glob(".checkpoint.th.*.tmp"))
    assert len(partial) == 1
    with pytest.raises(Exception):  # noqa: B017 - whatever torch raises on a truncated file
        torch.load(partial[0], weights_only=False)
    assert torch.load(run / "checkpoint.th", weights_only=False)["epoch"] == 0  # the last complete one
    assert (run / "metrics_epoch_1.json").exists()  # epoch 1 had finished; its checkpoint had not
    resumed = subprocess.run([*_train_command(config, run), "--recover"], env=ENV, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Recovered from" in resumed.stderr and "resuming at epoch 1" in resumed.stderr
    _assert_ends_like(whole, run)


# ------------------------------------------------------------------------------------ accumulation


def test_two_accumulated_batches_of_eight_give_the_gradient_of_one_batch_of_sixteen(tiny_bert):
    torch.manual_seed(0)
    vocab = Vocabulary({"labels": ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]})
    params = Params(tiny_config(tiny_bert)["model"])
    model = Model.from_params(params, vocab=vocab)
    model.eval()  # no dropout: the same forward twice
    instances = (TwitterMnerReader().read(str(TWITTER_FIXTURES / "train.txt")) * 2)[:16]
    model(**collate(instances, vocab))["loss"].backward()
    whole = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    for half in (instances[:8], instances[8:]):
        (model(**collate(half, vocab))["loss"] / 2).backward()
    for name, parameter in model.named_parameters():
        if name in whole:
            assert torch.allclose(parameter.grad, whole[name], atol=1e-5), name
