import json

import pytest
import torch
from tango.common import Params
from tango.common.exceptions import ConfigurationError

from fmit_plugin.commands.train import train_model
from fmit_plugin.data.data_loader import collate
from fmit_plugin.data.twitter_mner import TwitterMnerReader
from fmit_plugin.data.vocabulary import Vocabulary
from fmit_plugin.models.archival import load_archive
from fmit_plugin.models.model import Model
from fmit_plugin.predictors.predictor import SentenceTaggerPredictor
from tests.conftest import TWITTER_FIXTURES, tiny_config

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]


def _model(tiny_bert, **overrides):
    torch.manual_seed(0)
    params = Params(tiny_config(tiny_bert, **overrides)["model"])
    return Model.from_params(params, vocab=Vocabulary({"labels": LABELS}))


@pytest.mark.parametrize("use_crf", [True, False])
def test_train_save_load_predict_round_trip(tiny_bert, tmp_path, use_crf):
    config = tiny_config(tiny_bert, use_crf=use_crf)
    model = train_model(Params(config), tmp_path / "run")
    assert (tmp_path / "run" / "model.tar.gz").is_file()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "test_f1-measure-overall" in metrics and "best_validation_f1-measure-overall" in metrics
    archive = load_archive(tmp_path / "run" / "model.tar.gz")
    instances = TwitterMnerReader().read(str(TWITTER_FIXTURES / "test.txt"))
    inputs = [{"tokens": instance.words} for instance in instances]
    model.eval()
    original = SentenceTaggerPredictor(model, archive.dataset_reader).predict_batch_json(inputs)
    loaded = SentenceTaggerPredictor(archive.model, archive.dataset_reader).predict_batch_json(inputs)
    assert loaded == original
    for a, b in zip(model.state_dict().values(), archive.model.state_dict().values()):
        assert torch.equal(a, b)


def test_loss_decreases_when_overfitting_eight_tweets(tiny_bert):
    model = _model(tiny_bert)
    instances = TwitterMnerReader().read(str(TWITTER_FIXTURES / "train.txt"))[:8]
    batch = collate(instances, model.vocab)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    losses = []
    for _ in range(40):
        optimizer.zero_grad()
        loss = model(**batch)["loss"]
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert losses[-1] < 0.2 * losses[0]
    model.eval()
    model.get_metrics(reset=True)
    model(**batch)
    assert model.get_metrics()["f1-measure-overall"] > 0.9


def test_forward_returns_the_crf_tagger_output_dict(tiny_bert):
    model = _model(tiny_bert)
    instances = TwitterMnerReader().read(str(TWITTER_FIXTURES / "train.txt"))[:3]
    output = model(**collate(instances, model.vocab))
    assert output["loss"].dim() == 0 and output["loss"].requires_grad
    assert output["logits"].shape[:2] == output["mask"].shape
    # Predicted ids stay a tensor beside the mask until they are made readable.
    assert isinstance(output["tags"], torch.Tensor) and output["tags"].shape == output["mask"].shape
    readable = model.make_output_human_readable(output)
    assert [len(tags) for tags in readable["tags"]] == [len(i.words) for i in instances]
    assert all(tag in LABELS for tags in readable["tags"] for tag in tags)
    metrics = model.get_metrics(reset=True)
    assert {"precision-overall", "recall-overall", "f1-measure-overall"} <= set(metrics)
    assert model.get_metrics()["f1-measure-overall"] == 0.0  # reset


def test_swapping_the_encoder_in_the_config(tiny_bert):
    lstm = _model(tiny_bert, encoder={"type": "lstm", "input_size": 16, "hidden_size": 8, "bidirectional": True})
    transformer = _model(
        tiny_bert, encoder={"type": "pytorch_transformer", "input_dim": 16, "num_layers": 1, "num_attention_heads": 2}
    )
    instances = TwitterMnerReader().read(str(TWITTER_FIXTURES / "train.txt"))[:2]
    for model in (lstm, transformer):
        output = model(**collate(instances, model.vocab))
        assert torch.isfinite(output["loss"])
    assert lstm.tagging_head.projection.in_features == 16


def test_inconsistent_dimensions_are_configuration_errors(tiny_bert):
    with pytest.raises(ConfigurationError, match="text field embedding dim must match encoder input dim"):
        _model(tiny_bert, encoder={"type": "lstm", "input_size": 32, "hidden_size": 8})
    with pytest.raises(ConfigurationError, match="encoder output dim must match feedforward input dim"):
        _model(tiny_bert, feedforward={"input_dim": 7, "num_layers": 1, "hidden_dims": 4, "activations": "relu"})
    with pytest.raises(ConfigurationError, match="label_encoding"):
        _model(tiny_bert, label_encoding="BIOUL")


@pytest.mark.parametrize("crf_type", ["allennlp_light", "pytorch_crf"])
def test_each_crf_backend_trains_archives_and_predicts(tiny_bert, tmp_path, crf_type):
    from fmit_plugin.modules.conditional_random_field import AllennlpLightCrf, PytorchCrf

    model = train_model(Params(tiny_config(tiny_bert, crf={"type": crf_type})), tmp_path / "run")
    backend = {"allennlp_light": AllennlpLightCrf, "pytorch_crf": PytorchCrf}[crf_type]
    archive = load_archive(tmp_path / "run" / "model.tar.gz")
    assert type(model.tagging_head.crf) is backend and type(archive.model.tagging_head.crf) is backend
    assert "tagging_head.crf.transitions" in archive.model.state_dict()
    inputs = [{"tokens": i.words} for i in TwitterMnerReader().read(str(TWITTER_FIXTURES / "test.txt"))]
    model.eval()
    original = SentenceTaggerPredictor(model, archive.dataset_reader).predict_batch_json(inputs)
    assert SentenceTaggerPredictor(archive.model, archive.dataset_reader).predict_batch_json(inputs) == original
    assert all(0.0 <= e["confidence"] <= 1.0 for output in original for e in output["entities"])


def test_crf_backend_config_errors(tiny_bert):
    with pytest.raises(ConfigurationError, match="include_start_end_transitions"):
        _model(tiny_bert, crf={"type": "pytorch_crf"}, include_start_end_transitions=False)
    with pytest.raises(ConfigurationError, match="use_crf"):
        _model(tiny_bert, crf={"type": "pytorch_crf"}, use_crf=False)
    with pytest.raises(ConfigurationError, match="pytorch_crf"):
        _model(tiny_bert, crf={"type": "torch_crf"})
