"""The evaluation loop's progress bar ends on the figures it returns, not on stale running ones."""
import re

import torch

from fmit_plugin.data.data_loader import TaggingDataLoader
from fmit_plugin.models.model import Model
from fmit_plugin.training.evaluation import evaluate
from tests.bad_input_helpers import write_run


def test_the_last_bar_line_shows_the_returned_metrics(tmp_path, capsys, monkeypatch):
    import json

    from tango.common import Params

    from fmit_plugin.data.twitter_mner import TwitterMnerReader
    from fmit_plugin.data.vocabulary import Vocabulary

    run = write_run(tmp_path / "run", {"type": "test_hashing"})
    config = json.loads((run / "config.json").read_text())
    model = Model.from_params(Params(config["model"]), vocab=Vocabulary.from_files(run / "vocabulary"))
    model.load_state_dict(torch.load(run / "best.th"))
    # 23 one-tweet batches: the running figures were last shown at batch 20 (every LOG_EVERY = 10).
    blocks = [f"IMGID:{i}\n" + "".join(f"w{i}x{k}\t{'B-PER' if (i + k) % 3 == 0 else 'O'}\n" for k in range(4))
              for i in range(23)]
    data = tmp_path / "test.txt"
    data.write_text("\n".join(blocks), encoding="utf-8")
    instances = TwitterMnerReader().read(str(data))
    loader = TaggingDataLoader(instances, batch_size=1, shuffle=False)
    loader.index_with(model.vocab)
    capsys.readouterr()
    metrics = evaluate(model, loader, torch.device("cpu"), "test")  # no total, as train's test pass had
    bar = capsys.readouterr().err
    last = re.split(r"[\r\n]+", bar.strip())[-1]
    assert "23it" in last
    assert f"f1: {metrics['f1-measure-overall']:.4f}" in last and f"loss: {metrics['loss']:.4f}" in last
