"""
End to end on a small generated set where only the image tells an entity's type: the real reader, the
real visual pipeline (sidecar grounding, EfficientNet-Lite0 features, feature store), tiny random text
models, the train command, evaluate and predict with pictures. FMIT must clearly beat the text-only tagger.
"""
import json

import pytest
from PIL import Image
from tango.common import Params

from fmit_plugin.commands.evaluate import evaluate_archive
from fmit_plugin.commands.predict import predict_file
from fmit_plugin.commands.train import train_model
from fmit_plugin.synthetic.generator import generate_dataset
from tests.conftest import write_tiny_bert

pytest.importorskip("efficientnet_lite_pytorch")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic") / "data"
    generate_dataset(folder, num_tweets={"train": 200, "valid": 40, "test": 60}, seed=7, image_size=(48, 48),
                     missing_image_rate=0.05, blank_image_rate=0.0)
    texts = [line.split("\t")[0] for name in ("train.txt", "valid.txt", "test.txt")
             for line in (folder / name).read_text(encoding="utf-8").splitlines() if "\t" in line]
    bert = write_tiny_bert(folder.parent / "bert", texts, hidden_size=32)
    return folder, bert


def _config(folder, bert, model, visual):
    reader = {"type": "twitter_mner"}
    if visual:
        reader.update({
            "image_dir": str(folder / "images"),
            "visual_objects": {
                # A 64-pixel input keeps the real ImageNet backbone fast; colours and shapes survive.
                "backbone": {"type": "efficientnet_lite", "image_size": 64},
                "grounder": {"type": "precomputed", "path": str(folder / "groundings.jsonl")},
                "store_path": str(folder.parent / "features.sqlite"),
            },
        })
    return {
        "dataset_reader": reader,
        "train_data_path": str(folder / "train.txt"),
        "validation_data_path": str(folder / "valid.txt"),
        "model": {"text_field_embedder": {"type": "pretrained_transformer_mismatched", "model_name": str(bert)},
                  **model},
        "data_loader": {"batch_size": 8},
        "trainer": {
            "optimizer": {"type": "adam", "lr": 3e-3,
                          "parameter_groups": [[["^text_field_embedder\\."], {"lr": 1e-3}]]},
            "num_epochs": 12,
            "seed": 3,
        },
    }


TEXT_ONLY = {"type": "crf_tagger"}
FMIT = {
    "type": "fmit",
    "encoder": {"type": "flat_lattice_transformer", "input_dim": 32, "num_layers": 1, "num_attention_heads": 4,
                "feedforward_hidden_dim": 64, "dropout_prob": 0.0, "max_distance": 64},
    "visual_dim": 1280,
    "dropout": 0.0,
}


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    folder, bert = dataset
    runs = tmp_path_factory.mktemp("runs")
    scores = {}
    for name, model, visual in (("text", TEXT_ONLY, False), ("fmit", FMIT, True)):
        train_model(Params(_config(folder, bert, model, visual)), runs / name)
        scores[name] = evaluate_archive(runs / name / "model.tar.gz", folder / "test.txt")
    return folder, runs, scores


def test_fmit_reads_the_types_off_the_images(trained):
    _, _, scores = trained
    text, fmit = scores["text"]["f1-measure-overall"], scores["fmit"]["f1-measure-overall"]
    # The text finds the names but can only guess their types; the grounded objects tell them.
    assert fmit >= 0.75, scores["fmit"]
    assert fmit >= text + 0.25, (text, fmit)


def test_predict_draws_a_picture_for_every_input_with_an_image(trained, tmp_path):
    folder, runs, _ = trained
    blocks = (folder / "test.txt").read_text(encoding="utf-8").strip().split("\n\n")[:6]
    lines = []
    for block in blocks:
        image_id = block.splitlines()[0][len("IMGID:"):]
        tokens = [line.split("\t")[0] for line in block.splitlines()[1:]]
        lines.append({"id": image_id, "tokens": tokens, "image": image_id})
    lines.append({"id": "no-image", "tokens": ["just", "text"]})
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    pictures = tmp_path / "pictures"
    assert predict_file(runs / "fmit" / "model.tar.gz", str(inputs), str(tmp_path / "out.jsonl"), silent=True,
                        render_dir=str(pictures)) == 0
    outputs = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    with_image = [i for i, output in enumerate(outputs, start=1) if output.get("image")]
    assert len(with_image) == 6  # an image id with no file still names its image (the empty one is used)
    expected = sorted(f"{line:06d}-{outputs[line - 1]['id']}.png" for line in with_image)
    assert sorted(p.name for p in pictures.iterdir()) == expected
    for path in pictures.iterdir():
        with Image.open(path) as picture:
            assert picture.format == "PNG" and picture.width > 320
    # The grounded objects come back with the predictions, spanning the entity words of the sidecar.
    grounded = [o for output in outputs for o in output.get("objects", []) if o["label"] != "whole image"]
    assert grounded and all(0 <= o["start"] < o["end"] for o in grounded)
