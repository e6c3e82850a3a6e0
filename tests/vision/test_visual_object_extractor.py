import json

import pytest
import torch
from PIL import Image
from tango.common import Params
from tango.common.exceptions import ConfigurationError

from fmit_plugin.commands.extract_visual_objects import extract_visual_objects
from fmit_plugin.data.dataset_reader import DatasetReader
from fmit_plugin.data.instance import TaggingInstance
from fmit_plugin.vision.backbones import ImageBackbone
from fmit_plugin.vision.visual_object_extractor import WHOLE_IMAGE, VisualObjectExtractor

TWEETS = [
    ("1", ["Zorp", "visits", "Blix", "today"], ["B-PER", "O", "B-LOC", "O"]),
    ("2", ["Meet", "Ana", "Lee", "at", "Quib"], ["O", "B-PER", "I-PER", "O", "B-ORG"]),
    ("3", ["no", "image", "here"], ["O", "O", "O"]),
    ("4", ["broken", "image", "Vex"], ["O", "O", "B-MISC"]),
]
SIDECAR = [
    {"image_id": "1", "regions": [{"phrase": "Zorp", "span": [0, 0], "box": [0, 0, 30, 30]},
                                  {"phrase": "Blix", "span": [2, 2], "box": [30, 30, 64, 64]},
                                  {"phrase": "Blix", "span": [2, 2], "box": [30, 30, 64, 64]},
                                  {"phrase": "person", "span": None, "box": [5, 5, 20, 40]}]},
    {"image_id": "2", "regions": [{"phrase": "Ana Lee", "span": [1, 2], "box": [10, 0, 50, 40]}]},
]


@pytest.fixture
def dataset(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(images / "1.jpg")
    Image.new("RGB", (80, 48), (30, 30, 200)).save(images / "2.png")
    (images / "4.jpg").write_bytes(b"not really a jpeg")
    with open(tmp_path / "train.txt", "w") as handle:
        for image_id, words, tags in TWEETS:
            handle.write(f"IMGID:{image_id}\n" + "".join(f"{w}\t{t}\n" for w, t in zip(words, tags)) + "\n")
    (tmp_path / "sidecar.jsonl").write_text("".join(json.dumps(line) + "\n" for line in SIDECAR))
    return tmp_path


@pytest.fixture(scope="module")
def backbone():
    return ImageBackbone.from_params(Params({"type": "efficientnet_lite"}))


def _extractor(dataset, backbone, **kwargs):
    from fmit_plugin.vision.grounders import PrecomputedGrounder

    kwargs.setdefault("grounder", PrecomputedGrounder(str(dataset / "sidecar.jsonl")))
    return VisualObjectExtractor(backbone=backbone, store_path=str(dataset / "store.sqlite"), **kwargs)


def _instances(dataset):
    reader = DatasetReader.from_params(Params({"type": "twitter_mner", "image_dir": str(dataset / "images")}))
    return reader.read(str(dataset / "train.txt"))


def test_objects_carry_whole_image_phrases_general_words_and_spans(dataset, backbone):
    objects, summary = _extractor(dataset, backbone).extract(_instances(dataset))
    first = objects[0]
    assert first.labels[0] == WHOLE_IMAGE and first.spans[0].tolist() == [0, 3]
    # the duplicated Blix box is merged; the general word spans the sentence
    assert sorted(first.labels) == sorted([WHOLE_IMAGE, "Zorp", "Blix", "person"])
    spans = dict(zip(first.labels, first.spans.tolist()))
    assert spans["Zorp"] == [0, 0] and spans["Blix"] == [2, 2] and spans["person"] == [0, 3]
    assert first.features.shape == (4, 1280)
    assert objects[1].spans.tolist()[1] == [1, 2]
    # missing and corrupt images: the uniform empty image, whole image only, identical features
    for visual in objects[2:]:
        assert visual.labels == [WHOLE_IMAGE] and visual.spans.tolist() == [[0, 2]]
    assert torch.equal(objects[2].features, objects[3].features)
    assert not torch.allclose(objects[0].features[0], objects[1].features[0])
    assert summary.tweets == 4 and summary.cache_hits == 0 and summary.regions == 4 + 2 + 1 + 1
    line = summary.line()
    assert "2 read" in line and "missing 1" in line and "corrupt 1" in line


def test_store_hit_returns_identical_tensors_without_the_backbone(dataset, backbone, monkeypatch):
    first, _ = _extractor(dataset, backbone).extract(_instances(dataset))
    extractor = _extractor(dataset, backbone)
    monkeypatch.setattr(type(backbone), "forward", lambda *args, **kwargs: pytest.fail("backbone ran on a hit"))
    second, summary = extractor.extract(_instances(dataset))
    assert summary.cache_hits == 4
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a.features, b.features) and a.labels == b.labels


def test_changed_settings_or_images_miss(dataset, backbone):
    _extractor(dataset, backbone).extract(_instances(dataset))
    assert _extractor(dataset, backbone, max_objects=2).extract(_instances(dataset))[1].cache_hits == 0
    (dataset / "sidecar.jsonl").write_text(json.dumps(SIDECAR[1]) + "\n")
    assert _extractor(dataset, backbone).extract(_instances(dataset))[1].cache_hits == 0  # the grounder changed
    assert _extractor(dataset, backbone).extract(_instances(dataset))[1].cache_hits == 4
    Image.new("RGB", (64, 64), (0, 200, 0)).save(dataset / "images" / "1.jpg")
    hits = _extractor(dataset, backbone).extract(_instances(dataset))[1].cache_hits
    assert hits == 3  # the changed image misses


def test_max_objects_keeps_the_whole_image_and_the_best_regions(dataset, backbone):
    objects, _ = _extractor(dataset, backbone, max_objects=2).extract(_instances(dataset))
    assert objects[0].labels[0] == WHOLE_IMAGE and len(objects[0].labels) == 2
    with pytest.raises(ConfigurationError, match="max_objects"):
        _extractor(dataset, backbone, max_objects=0)


def test_grid_grounder_pools_the_feature_map(dataset, backbone):
    from fmit_plugin.vision.grounders import GridGrounder

    (visual,), _ = _extractor(dataset, backbone, grounder=GridGrounder(k=2)).extract(_instances(dataset)[:1])
    assert visual.labels == [WHOLE_IMAGE, "grid 0,0", "grid 0,1", "grid 1,0", "grid 1,1"]
    assert visual.spans.tolist() == [[0, 3]] * 5
    image = Image.open(dataset / "images" / "1.jpg").convert("RGB")
    assert torch.allclose(visual.features[1:], backbone.grid_features([image], 2)[0], atol=1e-5)


def test_each_region_s_grid_cell_decides_pooling_or_cropping(dataset, backbone):
    # Not a grounder-wide flag: a grounder may mix grid cells and boxes, and each is handled by its own kind.
    from fmit_plugin.vision.grounders import PhraseGrounder
    from fmit_plugin.vision.regions import Region

    class Mixed(PhraseGrounder):
        def cache_key(self):
            return "mixed"

        def ground(self, image, image_id, words, phrases):
            return [Region("grid 1,0", (0.0, 32.0, 32.0, 64.0), None, 1.0, (1, 0, 2)),
                    Region("Zorp", (0.0, 32.0, 32.0, 64.0), (0, 0), 0.9)]

    (visual,), _ = _extractor(dataset, backbone, grounder=Mixed()).extract(_instances(dataset)[:1])
    assert visual.labels == [WHOLE_IMAGE, "grid 1,0", "Zorp"]
    image = Image.open(dataset / "images" / "1.jpg").convert("RGB")
    pooled = backbone.grid_features([image], 2)[0][2]  # cell row 1, column 0
    assert torch.allclose(visual.features[1], pooled, atol=1e-5)
    # the same box as a plain region is cropped and encoded on its own, which gives another vector
    assert not torch.allclose(visual.features[2], pooled, atol=1e-3)


def test_reader_config_and_predictor_path_and_command(dataset, capsys):
    reader_config = {
        "type": "twitter_mner",
        "image_dir": str(dataset / "images"),
        "visual_objects": {
            "backbone": {"type": "efficientnet_lite"},
            "grounder": {"type": "precomputed", "path": str(dataset / "sidecar.jsonl")},
            "store_path": str(dataset / "store.sqlite"),
        },
    }
    config = {"dataset_reader": reader_config, "train_data_path": str(dataset / "train.txt")}
    (dataset / "config.json").write_text(json.dumps(config))
    extract_visual_objects(str(dataset / "config.json"), splits=("train",))
    assert "4 tweets (0 from the store)" in capsys.readouterr().out
    reader = DatasetReader.from_params(Params(json.loads(json.dumps(reader_config))))
    instances = reader.read(str(dataset / "train.txt"))
    assert reader.last_visual_summary.cache_hits == 4
    assert all(isinstance(i, TaggingInstance) and i.visual is not None for i in instances)
    single = reader.text_to_instance(["Zorp", "visits", "Blix", "today"], image="1")
    assert torch.equal(single.visual.features, instances[0].visual.features)
    (dataset / "plain.json").write_text(json.dumps({"dataset_reader": {"type": "twitter_mner"},
                                                    "train_data_path": str(dataset / "train.txt")}))
    with pytest.raises(ConfigurationError, match="no visual_objects"):
        extract_visual_objects(str(dataset / "plain.json"), splits=("train",))
