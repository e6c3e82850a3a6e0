"""gmner_f1 against hand-computed cases, and summed over workers under torch.distributed."""
import json

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from fmit_plugin.metrics.gmner_f1 import GmnerF1Measure, box_matches
from fmit_plugin.vision.regions import box_iou


def test_box_iou_by_hand():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    # 5 x 10 overlap of two 10 x 10 boxes: 50 / 150.
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)
    assert box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0  # touching edges


def test_box_matches_by_hand():
    assert box_matches((0, 0, 10, 10), [(50, 50, 60, 60), (0, 0, 10, 12)])  # IoU 100 / 120 with the second
    assert not box_matches((0, 0, 10, 10), [(5, 0, 15, 10)])  # IoU 1/3 < 0.5
    assert box_matches(None, [])  # not groundable, predicted none
    assert not box_matches(None, [(0, 0, 1, 1)])
    assert not box_matches((0, 0, 1, 1), [])


def _corpus():
    gold = [
        [("PER", 0, 2, [(0, 0, 10, 10)]), ("LOC", 3, 4, [])],
        [("ORG", 1, 2, [(0, 0, 10, 10), (20, 20, 40, 40)]), ("PER", 4, 5, [(0, 0, 4, 4)])],
    ]
    predicted = [
        [("PER", 0, 2, (1, 1, 10, 10)),  # right span and type, IoU 81 / 100: counts
         ("LOC", 3, 4, (0, 0, 5, 5))],  # right entity, but it is not groundable: a box is wrong
        [("ORG", 1, 2, (20, 20, 40, 41)),  # matches its second box
         ("LOC", 4, 5, None),  # wrong type
         ("MISC", 6, 7, None)],  # no such entity
    ]
    return predicted, gold


def test_hand_computed_scores():
    metric = GmnerF1Measure()
    predicted, gold = _corpus()
    metric(predicted, gold)
    scores = metric.get_metric()
    # 5 predicted, 4 gold; 3 with the right span and type, 2 of them grounded right.
    assert scores["entity-precision"] == pytest.approx(3 / 5)
    assert scores["entity-recall"] == pytest.approx(3 / 4)
    assert scores["entity-f1"] == pytest.approx(2 * 3 / (5 + 4))
    assert scores["gmner-precision"] == pytest.approx(2 / 5)
    assert scores["gmner-recall"] == pytest.approx(2 / 4)
    assert scores["gmner-f1"] == pytest.approx(2 * 2 / (5 + 4))
    assert scores["grounding-accuracy"] == pytest.approx(2 / 3)


def test_every_entity_predicted_none_scores_only_the_not_groundable_ones():
    metric = GmnerF1Measure()
    predicted, gold = _corpus()
    metric([[(kind, start, end, None) for kind, start, end, _ in sentence] for sentence in gold], gold)
    scores = metric.get_metric(reset=True)
    assert scores["entity-f1"] == 1.0
    assert scores["gmner-recall"] == pytest.approx(1 / 4) and scores["grounding-accuracy"] == pytest.approx(1 / 4)
    assert metric.get_metric()["gmner-f1"] == 0.0  # reset


def test_accumulates_over_calls_and_checks_lengths():
    predicted, gold = _corpus()
    whole, parts = GmnerF1Measure(), GmnerF1Measure()
    whole(predicted, gold)
    parts(predicted[:1], gold[:1])
    parts(predicted[1:], gold[1:])
    assert whole.get_metric() == parts.get_metric()
    with pytest.raises(ValueError, match="2 predicted sentences but 1 gold"):
        whole(predicted, gold[:1])


def _worker(rank: int, world_size: int, directory: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{directory}/store", rank=rank, world_size=world_size)
    try:
        predicted, gold = _corpus()
        metric = GmnerF1Measure()
        metric(predicted[rank : rank + 1], gold[rank : rank + 1])
        with open(f"{directory}/rank{rank}.json", "w") as results:
            json.dump(metric.get_metric(), results)
    finally:
        dist.destroy_process_group()


def test_distributed_sum_matches_single_process(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    single = GmnerF1Measure()
    single(*_corpus())
    expected = single.get_metric()
    for rank in range(2):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == pytest.approx(expected)
