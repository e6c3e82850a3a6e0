"""Training under torchrun (two gloo workers on CPU), kill-and-recover, gradient accumulation."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from tango.common import Params

from fmit_plugin.commands.evaluate import evaluate_archive
from fmit_plugin.common.archival import load_archive
from fmit_plugin.data.data_loader import collate
from fmit_plugin.data.twitter_mner import TwitterMnerReader
from fmit_plugin.data.vocabulary import Vocabulary
from fmit_plugin.models.model import Model
from tests.conftest import TWITTER_FIXTURES, tiny_config

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "FMIT_FILE_FRIENDLY_LOGGING": "1", "OMP_NUM_THREADS": "1"}


def _config_file(tiny_bert, tmp_path, **trainer):
    config = tiny_config(tiny_bert)
    config["trainer"].update(trainer)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def test_two_gloo_workers_train_and_agree_with_a_single_process_evaluation(tiny_bert, tmp_path):
    config = _config_file(tiny_bert, tmp_path, num_epochs=2)
    run = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "fmit_plugin", "train", str(config), "-s", str(run)]
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    files = sorted(p.name for p in run.iterdir())
    assert files == ["best.th", "checkpoint.th", "config.json", "metrics.json", "metrics_epoch_0.json",
                     "metrics_epoch_1.json", "model.tar.gz", "vocabulary"]  # no temp files left by rank 1
    metrics = json.loads((run / "metrics.json").read_text())
    best = json.loads((run / f"metrics_epoch_{metrics['best_epoch']}.json").read_text())
    single = evaluate_archive(run / "model.tar.gz", TWITTER_FIXTURES / "valid.txt")
    for key in ("f1-measure-overall", "precision-overall", "recall-overall"):
        assert best[f"validation_{key}"] == pytest.approx(single[key], abs=1e-9)
    assert best["validation_loss"] == pytest.approx(single["loss"], rel=1e-4)


def test_killed_run_recovers_to_the_uninterrupted_result(tiny_bert, tmp_path):
    config = _config_file(tiny_bert, tmp_path, num_epochs=4)
    # Both runs in subprocesses with the same environment (thread count), so the numbers can match.
    whole = [sys.executable, "-m", "fmit_plugin", "train", str(config), "-s", str(tmp_path / "whole")]
    assert subprocess.run(whole, env=ENV, capture_output=True, timeout=300).returncode == 0
    uninterrupted = load_archive(tmp_path / "whole" / "model.tar.gz").model
    run = tmp_path / "killed"
    command = [sys.executable, "-m", "fmit_plugin", "train", str(config), "-s", str(run)]
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (run / "metrics_epoch_0.json").exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (run / "model.tar.gz").exists(), "the run finished before it could be killed"
    resumed = subprocess.run([*command, "--recover"], env=ENV, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    recovered = load_archive(run / "model.tar.gz").model
    for (name, a), b in zip(uninterrupted.state_dict().items(), recovered.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name
    assert json.loads((tmp_path / "whole" / "metrics.json").read_text())["test_f1-measure-overall"] == pytest.approx(
        json.loads((run / "metrics.json").read_text())["test_f1-measure-overall"]
    )


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
