import copy
import functools
import json

import pytest
import torch
from tango.common import Params
from tango.common.exceptions import ConfigurationError

from fmit_plugin.commands.train import train_model
from fmit_plugin.data.data_loader import collate
from fmit_plugin.data.instance import TaggingInstance
from fmit_plugin.data.span_utils import bio_tags_to_spans
from fmit_plugin.data.twitter_mner import TwitterMnerReader
from fmit_plugin.data.vocabulary import Vocabulary
from fmit_plugin.models import fmit as fmit_module
from fmit_plugin.models.archival import load_archive
from fmit_plugin.models.fmit import BOUNDARY_LABELS, Fmit
from fmit_plugin.models.model import Model
from fmit_plugin.modules.flat_lattice_transformer import interaction_parameter_count
from fmit_plugin.predictors.predictor import SentenceTaggerPredictor
from fmit_plugin.vision.visual_objects import VisualObjects
from tests.conftest import TWITTER_FIXTURES, tiny_config

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]
TINY_ENCODER = {"type": "flat_lattice_transformer", "input_dim": 16, "num_layers": 1,
                "num_attention_heads": 2, "feedforward_hidden_dim": 32, "dropout_prob": 0.0, "max_distance": 64}


def _fmit_config(tiny_bert, **overrides):
    config = tiny_config(tiny_bert)
    config["model"] = {
        "type": "fmit",
        "text_field_embedder": config["model"]["text_field_embedder"],
        "encoder": copy.deepcopy(TINY_ENCODER),  # Params pops keys in place
        "visual_dim": 8,
        "dropout": 0.0,
        **overrides,
    }
    return config


def _model(tiny_bert, **overrides) -> Fmit:
    torch.manual_seed(0)
    params = Params(_fmit_config(tiny_bert, **overrides)["model"])
    model = Model.from_params(params, vocab=Vocabulary({"labels": LABELS}))
    assert isinstance(model, Fmit)
    return model


def _visual_instances():
    """Eight tweets in which each (name, template) appears once as PER and once as LOC: the text
    cannot tell the type, only the object grounded on the name can (its features encode the type)."""
    generator = torch.Generator().manual_seed(0)
    type_features = {"PER": torch.eye(8)[0] * 3, "LOC": torch.eye(8)[1] * 3}
    instances = []
    for name in ("zorp", "blix"):
        for template in (["{}", "was", "great"], ["we", "saw", "{}", "today"]):
            for kind in ("PER", "LOC"):
                words = [w.format(name) for w in template]
                position = words.index(name)
                tags = ["O"] * len(words)
                tags[position] = f"B-{kind}"
                noise = 0.1 * torch.randn(2, 8, generator=generator)
                features = torch.stack([type_features[kind], torch.zeros(8)]) + noise
                spans = torch.tensor([[position, position], [0, len(words) - 1]])
                instances.append(TaggingInstance(words, tags, visual=VisualObjects(features, spans, [name, "image"])))
    return instances


def test_train_save_load_predict_round_trip(tiny_bert, tmp_path):
    model = train_model(Params(_fmit_config(tiny_bert)), tmp_path / "run")
    archive = load_archive(tmp_path / "run" / "model.tar.gz")
    assert isinstance(archive.model, Fmit)
    assert "test_f1-measure-overall" in json.loads((tmp_path / "run" / "metrics.json").read_text())
    inputs = [{"tokens": i.words} for i in TwitterMnerReader().read(str(TWITTER_FIXTURES / "test.txt"))]
    model.eval()
    original = SentenceTaggerPredictor(model, archive.dataset_reader).predict_batch_json(inputs)
    assert SentenceTaggerPredictor(archive.model, archive.dataset_reader).predict_batch_json(inputs) == original


def test_overfits_eight_lattice_examples_where_only_the_image_tells_the_type(tiny_bert):
    model = _model(tiny_bert, boundary_weight=0.25)
    batch = collate(_visual_instances(), model.vocab)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(150):
        optimizer.zero_grad()
        output = model(**batch)
        output["loss"].backward()
        optimizer.step()
        losses.append(output["loss"].item())
    assert losses[-1] < 0.1 * losses[0]
    model.eval()
    model.get_metrics(reset=True)
    model(**batch)
    assert model.get_metrics()["f1-measure-overall"] == 1.0


def test_gradients_reach_attention_biases_fusion_and_both_crfs(tiny_bert):
    model = _model(tiny_bert)
    model.train()
    without_image = TaggingInstance(["hello", "Paris"], ["O", "B-LOC"])
    output = model(**collate([*_visual_instances()[:3], without_image], model.vocab))
    assert "boundary_loss" in output
    output["loss"].backward()
    layer = model.encoder.layers[0].attention
    named = {
        "u": layer.u, "v": layer.v, "W_k,R": layer.key_relative.weight,
        "W_r": model.encoder.relative_position.fusion.weight,
        "crf": model.tagging_head.crf.transitions, "boundary crf": model.boundary_head.crf.transitions,
        "W0 (shared)": model.projection.output.weight, "empty image": model.empty_image_feature,
    }
    for name, parameter in named.items():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_boundary_weight_zero_removes_the_branch(tiny_bert):
    with_ebd, without = _model(tiny_bert), _model(tiny_bert, boundary_weight=0.0)
    assert without.boundary_encoder is None and without.boundary_head is None
    assert sum(p.numel() for p in with_ebd.parameters()) > sum(p.numel() for p in without.parameters())
    without.train()
    output = without(**collate(_visual_instances()[:2], without.vocab))
    assert "boundary_loss" not in output
    with pytest.raises(ConfigurationError, match="boundary_weight"):
        _model(tiny_bert, boundary_weight=-1.0)


def test_boundary_branch_runs_only_in_training(tiny_bert):
    model = _model(tiny_bert)
    batch = collate(_visual_instances()[:2], model.vocab)
    model.eval()
    calls = []
    model.boundary_encoder.register_forward_hook(lambda *args: calls.append(1))
    model(**batch)
    assert calls == []
    model.train()
    model(**batch)
    assert calls == [1]


def test_boundary_tags_are_untyped_bioul_read_like_conlleval(tiny_bert):
    model = _model(tiny_bert)
    vocab = model.vocab
    sentences = [["B-PER", "I-PER", "I-PER", "O", "B-LOC"], ["I-ORG", "O", "B-MISC", "I-MISC", "O"]]
    tags = torch.tensor([[vocab.get_token_index(t) for t in s] for s in sentences])
    mask = torch.ones_like(tags, dtype=torch.bool)
    boundary = [[BOUNDARY_LABELS[i] for i in row] for row in model._boundary_tags(tags, mask).tolist()]
    assert boundary == [["B-ENT", "I-ENT", "L-ENT", "O", "U-ENT"], ["U-ENT", "O", "B-ENT", "L-ENT", "O"]]


def test_boundary_tags_agree_with_the_span_reader_on_random_tags(tiny_bert):
    model = _model(tiny_bert)
    generator = torch.Generator().manual_seed(0)
    tags = torch.randint(0, len(LABELS), (40, 9), generator=generator)
    lengths = torch.randint(0, 10, (40,), generator=generator)
    mask = torch.arange(9).unsqueeze(0) < lengths.unsqueeze(1)
    expected = torch.zeros_like(tags)
    for row, length in enumerate(lengths.tolist()):
        for _, start, end in bio_tags_to_spans([LABELS[i] for i in tags[row, :length].tolist()]):
            names = ["U-ENT"] if end - start == 1 else ["B-ENT", *["I-ENT"] * (end - start - 2), "L-ENT"]
            expected[row, start:end] = torch.tensor([BOUNDARY_LABELS.index(name) for name in names])
    assert torch.equal(model._boundary_tags(tags, mask), expected)


def test_tweets_without_objects_get_the_empty_image_spanning_the_sentence(tiny_bert):
    model = _model(tiny_bert)
    words = [["a", "b", "c"], ["d"]]
    features = torch.randn(2, 1, 8)
    spans = torch.tensor([[[1, 2]], [[0, 0]]])
    mask = torch.tensor([[True], [False]])
    all_features, all_spans, all_mask = model._objects(words, features, spans, mask, torch.device("cpu"))
    assert all_mask.tolist() == [[True, False], [False, True]]
    assert all_spans[1, 1].tolist() == [0, 0] and all_spans[0, 1].tolist() == [0, 2]
    assert torch.equal(all_features[1, 1], model.empty_image_feature.detach())
    none_features, _, none_mask = model._objects(words, None, None, None, torch.device("cpu"))
    assert none_mask.tolist() == [[True], [True]]
    with pytest.raises(ConfigurationError, match="visual_dim"):
        model._objects(words, torch.randn(2, 1, 5), spans, mask, torch.device("cpu"))


def test_objects_reach_the_word_cells_only_through_the_lattice(tiny_bert):
    model = _model(tiny_bert)
    model.eval()
    instances = _visual_instances()[:2]
    batch = collate(instances, model.vocab)
    with torch.no_grad():
        logits = model(**batch)["logits"]
        changed = dict(batch, object_features=batch["object_features"] + torch.randn_like(batch["object_features"]))
        assert not torch.allclose(model(**changed)["logits"], logits)
        # Extra padding objects change nothing.
        padded = dict(batch)
        padded["object_features"] = torch.cat([batch["object_features"], torch.randn(2, 3, 8)], dim=1)
        padded["object_spans"] = torch.cat([batch["object_spans"], torch.zeros(2, 3, 2, dtype=torch.long)], dim=1)
        padded["object_mask"] = torch.cat([batch["object_mask"], torch.zeros(2, 3, dtype=torch.bool)], dim=1)
        assert torch.allclose(model(**padded)["logits"], logits, atol=1e-5)


def test_any_seq2seq_encoder_can_replace_the_flat_lattice_transformer(tiny_bert):
    model = _model(tiny_bert, encoder={"type": "pytorch_transformer", "input_dim": 16, "num_layers": 1,
                                       "num_attention_heads": 2, "feedforward_hidden_dim": 32})
    assert model._encoder_inputs == ()
    model.train()
    output = model(**collate(_visual_instances()[:2], model.vocab))
    assert torch.isfinite(output["loss"]) and "boundary_loss" in output
    with pytest.raises(ConfigurationError, match="encoder input dim must match encoder output dim"):
        _model(tiny_bert, encoder={"type": "lstm", "input_size": 16, "hidden_size": 4})


def test_umt_interaction_is_told_which_cells_are_objects_and_trains_a_step(tiny_bert):
    umt = {"type": "umt_interaction", "input_dim": 16, "hidden_dim": 24, "num_attention_heads": 2,
           "feedforward_hidden_dim": 32}
    model = _model(tiny_bert, encoder=umt, boundary_encoder=copy.deepcopy(TINY_ENCODER))
    assert model._encoder_inputs == ("visual_mask",)
    seen = []
    model.encoder.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs), with_kwargs=True)
    batch = collate(_visual_instances()[:3], model.vocab)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    gate = model.encoder.gate.weight.detach().clone()
    output = model(**batch)
    assert torch.isfinite(output["loss"]) and "boundary_loss" in output
    output["loss"].backward()
    optimizer.step()
    assert not torch.equal(model.encoder.gate.weight, gate)
    # Two objects per tweet, after [CLS], the words and [SEP].
    visual_mask = seen[0]["visual_mask"]
    assert visual_mask.sum(dim=1).tolist() == [2, 2, 2]
    assert visual_mask[0].tolist() == [False] * 5 + [True, True] + [False] * (visual_mask.size(1) - 7)


def test_interaction_parameter_count_is_what_the_model_holds(tiny_bert, capsys):
    model = _model(tiny_bert, boundary_weight=0.0)
    counted = interaction_parameter_count(hidden_dim=16, num_layers=1, num_attention_heads=2,
                                          feedforward_hidden_dim=32, max_distance=64, text_dim=16, visual_dim=8)
    held = sum(p.numel() for p in [*model.encoder.parameters(), *model.projection.parameters()])
    assert counted == held
    with capsys.disabled():
        for layers, paper in ((1, 12), (3, 35), (6, 69)):
            ours = interaction_parameter_count(num_layers=layers, text_dim=768, visual_dim=2048) / 1e6
            print(f"\nFMIT interaction phase, d=512, l={layers}: {ours:.1f}M parameters (paper Table 3: {paper}M)")


def test_fmit_end_to_end_with_visual_objects_from_the_reader(tiny_bert, tmp_path):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    lines = []
    for i, (words, tags) in enumerate([(["Zorp", "visits", "Blix"], ["B-PER", "O", "B-LOC"]),
                                       (["Ana", "Lee", "loves", "Quib"], ["B-PER", "I-PER", "O", "B-ORG"])] * 2):
        Image.new("RGB", (48, 48), (60 * i, 100, 200 - 40 * i)).save(images / f"{i}.jpg")
        lines.append(f"IMGID:{i}\n" + "".join(f"{w}\t{t}\n" for w, t in zip(words, tags)))
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    sidecar = {"image_id": "0", "regions": [{"phrase": "Zorp", "span": [0, 0], "box": [0, 0, 20, 20]}]}
    (tmp_path / "sidecar.jsonl").write_text(json.dumps(sidecar) + "\n")
    config = _fmit_config(tiny_bert, visual_dim=1280)
    config["dataset_reader"] = {
        "type": "twitter_mner", "image_dir": str(images),
        "visual_objects": {"backbone": {"type": "efficientnet_lite"},
                           "grounder": {"type": "precomputed", "path": str(tmp_path / "sidecar.jsonl")},
                           "store_path": str(tmp_path / "store.sqlite")},
    }
    for key in ("train_data_path", "validation_data_path", "test_data_path"):
        config[key] = str(tmp_path / "train.txt")
    train_model(Params(config), tmp_path / "run")
    archive = load_archive(tmp_path / "run" / "model.tar.gz")
    predictor = SentenceTaggerPredictor(archive.model, archive.dataset_reader)
    with_image, without_image = predictor.predict_batch_json([
        {"tokens": ["Zorp", "visits", "Blix"], "image": "0"}, {"tokens": ["Zorp", "visits", "Blix"]}
    ])
    assert with_image["image"].endswith("0.jpg") and len(with_image["tags"]) == 3
    assert with_image["objects"][0] == {"label": "whole image", "box": [0.0, 0.0, 48.0, 48.0], "start": 0, "end": 3}
    assert {"label": "Zorp", "box": [0.0, 0.0, 20.0, 20.0], "start": 0, "end": 1} in with_image["objects"]
    assert len(without_image["tags"]) == 3


def test_the_lattice_length_bound_of_accelerators_gives_the_same_outputs(tiny_bert, monkeypatch):
    # On an accelerator the lattice is not cut to its longest example (no read from the device):
    # the extra padding cells must change nothing, in the loss (EBD included) or the tags.
    model = _model(tiny_bert, boundary_weight=0.25)
    batch = collate(_visual_instances()[:5], model.vocab)
    torch.manual_seed(1)
    exact = model(**batch)
    bounded_builder = functools.partial(fmit_module.build_flat_lattice, read_sizes=False)
    monkeypatch.setattr(fmit_module, "build_flat_lattice", bounded_builder)
    torch.manual_seed(1)
    bounded = model(**batch)
    assert torch.allclose(bounded["loss"], exact["loss"], atol=1e-5)
    assert torch.equal(bounded["tags"], exact["tags"])


@pytest.mark.parametrize("crf_type", ["allennlp_light", "pytorch_crf"])
def test_each_crf_backend_trains_archives_and_predicts(tiny_bert, tmp_path, crf_type):
    from fmit_plugin.modules.conditional_random_field import AllennlpLightCrf, PytorchCrf

    backend = {"allennlp_light": AllennlpLightCrf, "pytorch_crf": PytorchCrf}[crf_type]
    model = train_model(Params(_fmit_config(tiny_bert, crf={"type": crf_type})), tmp_path / "run")
    assert type(model.tagging_head.crf) is backend and type(model.boundary_head.crf) is backend
    archive = load_archive(tmp_path / "run" / "model.tar.gz")
    assert type(archive.model.tagging_head.crf) is backend
    inputs = [{"tokens": i.words} for i in TwitterMnerReader().read(str(TWITTER_FIXTURES / "test.txt"))]
    model.eval()
    original = SentenceTaggerPredictor(model, archive.dataset_reader).predict_batch_json(inputs)
    assert SentenceTaggerPredictor(archive.model, archive.dataset_reader).predict_batch_json(inputs) == original
    for a, b in zip(model.state_dict().values(), archive.model.state_dict().values()):
        assert torch.equal(a, b)
