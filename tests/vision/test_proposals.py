import json

import pytest
from PIL import Image
from tango.common import Params
from tango.common.exceptions import ConfigurationError

from fmit_plugin.vision.grounders import PhraseGrounder
from fmit_plugin.vision.proposals import (
    DetectorProposalsGrounder,
    ProposalsGrounder,
    non_maximum_suppression,
)
from tests.vision.test_grounders import tiny_owlvit  # noqa: F401 (a fixture)


def _file(tmp_path, *records) -> str:
    path = tmp_path / "proposals.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return str(path)


def test_boxes_become_whole_sentence_regions_best_first_clipped(tmp_path):
    path = _file(tmp_path, {"image_id": "1", "boxes": [[0, 0, 10, 10], [5, 5, 80, 20], [70, 70, 90, 90],
                                                         [1, 1, 2, 2]],
                            "scores": [0.5, 0.9, 0.7, 0.1]}, {"image_id": 2, "boxes": []})
    grounder = PhraseGrounder.from_params(Params({"type": "proposals", "path": path, "max_proposals": 3}))
    assert isinstance(grounder, ProposalsGrounder)
    regions = grounder.ground(Image.new("RGB", (50, 40)), "1", ["a", "b"], [])
    # Best three by score; the third lies outside the 50 x 40 image and is dropped, the first clipped.
    assert [(r.label, r.box, r.span, r.score) for r in regions] == [
        ("proposal", (5.0, 5.0, 50.0, 20.0), None, 0.9), ("proposal", (0.0, 0.0, 10.0, 10.0), None, 0.5),
    ]
    assert grounder.dropped_outside_image == 1
    assert grounder.ground(Image.new("RGB", (50, 40)), "2", ["a"], []) == []
    assert grounder.ground(Image.new("RGB", (50, 40)), "absent", ["a"], []) == []


@pytest.mark.parametrize(("line", "message"), [
    ('{"image_id": "1"}', "no 'boxes'"),
    ('{"image_id": "1", "boxes": [[0, 0, 1]]}', "4 numbers"),
    ('{"image_id": "1", "boxes": [[5, 0, 1, 1]]}', "x1 <= x0"),
    ('{"image_id": "1", "boxes": [[0, 0, 1, 1]], "scores": []}', "'scores' must be a list of 1 numbers"),
    ("not json", "line 1"),
])
def test_bad_lines_name_file_and_line(tmp_path, line, message):
    path = _file(tmp_path, line)
    with pytest.raises(ConfigurationError, match="proposals.jsonl, line 1") as error:
        ProposalsGrounder(path)
    assert message in str(error.value)


def test_repeated_image_and_cache_key(tmp_path):
    path = _file(tmp_path, {"image_id": "1", "boxes": []}, {"image_id": "1", "boxes": []})
    with pytest.raises(ConfigurationError, match="line 2: image_id '1' already appeared on line 1"):
        ProposalsGrounder(path)
    path = _file(tmp_path, {"image_id": "1", "boxes": [[0, 0, 1, 1]]})
    assert ProposalsGrounder(path).cache_key() != ProposalsGrounder(path, max_proposals=2).cache_key()


def test_non_maximum_suppression_by_hand():
    boxes = [(0, 0, 10, 10), (1, 0, 11, 10), (20, 20, 30, 30)]
    # The second overlaps the better first with IoU 90 / 110 > 0.5.
    assert non_maximum_suppression(boxes, [0.9, 0.8, 0.1], 0.5) == [0, 2]
    assert non_maximum_suppression(boxes, [0.1, 0.8, 0.9], 0.5) == [2, 1]


def test_detector_proposals_from_generic_queries(tiny_owlvit):  # noqa: F811
    grounder = DetectorProposalsGrounder(model_name=str(tiny_owlvit), threshold=0.0, max_proposals=4,
                                         load_weights=False)
    regions = grounder.ground(Image.new("RGB", (50, 30), (120, 40, 30)), "1", ["a", "b"], [])
    assert 1 <= len(regions) <= 4
    assert all(r.label == "proposal" and r.span is None for r in regions)
    assert [r.score for r in regions] == sorted((r.score for r in regions), reverse=True)
    assert all(0 <= r.box[0] < r.box[2] <= 50 and 0 <= r.box[1] < r.box[3] <= 30 for r in regions)
    grounder.threshold = 1.01
    assert grounder.ground(Image.new("RGB", (50, 30)), "1", ["a"], []) == []
    with pytest.raises(ConfigurationError, match="queries"):
        DetectorProposalsGrounder(model_name=str(tiny_owlvit), queries=[], load_weights=False)
