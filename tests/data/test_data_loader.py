import random

import pytest
import torch
from tango.common import Params
from tango.common.exceptions import ConfigurationError

from fmit_plugin.data.data_loader import (
    BasicBatchSampler,
    BatchSampler,
    BucketBatchSampler,
    DataLoader,
    TaggingDataLoader,
    collate,
    grounding_targets,
)
from fmit_plugin.data.instance import TaggingInstance
from fmit_plugin.data.vocabulary import Vocabulary
from fmit_plugin.vision.visual_objects import VisualObjects

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
VOCAB = Vocabulary({"labels": LABELS})


def _instances(lengths, tagged=True):
    rng = random.Random(len(lengths))
    return [
        TaggingInstance(
            words=[f"w{n}_{i}" for i in range(length)],
            tags=[rng.choice(LABELS) for _ in range(length)] if tagged else None,
            image_id=str(n),
            metadata={"source": f"f.txt:{n}"},
        )
        for n, length in enumerate(lengths)
    ]


def _varied(count=200, seed=3):
    rng = random.Random(seed)
    return _instances([rng.randint(1, 60) for _ in range(count)])


def _padding(instances, batches):
    return sum(
        max(len(instances[i]) for i in batch) * len(batch) - sum(len(instances[i]) for i in batch)
        for batch in batches
    )


def _sources(loader):
    return [metadata["source"] for batch in loader for metadata in batch["metadata"]]


def _flat(batches):
    return [i for batch in batches for i in batch]


# ------------------------------------------------------------------ samplers


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("count", [1, 7, 16, 101])
def test_bucket_sampler_yields_every_index_once(shuffle, count):
    instances = _varied(count)
    sampler = BucketBatchSampler(batch_size=8, shuffle=shuffle)
    for epoch in range(3):
        batches = sampler.batches(instances, epoch)
        assert sorted(_flat(batches)) == list(range(count))
        assert all(1 <= len(b) <= 8 for b in batches)
        assert len(batches) == -(-count // 8)


def test_bucket_sampler_deterministic_per_epoch_and_varies_across_epochs():
    instances = _varied(120)
    sampler = BucketBatchSampler(batch_size=8)
    assert sampler.batches(instances, 0) == sampler.batches(instances, 0)
    assert sampler.batches(instances, 5) == BucketBatchSampler(batch_size=8).batches(instances, 5)
    assert sampler.batches(instances, 0) != sampler.batches(instances, 1)
    # batch order is shuffled, not just length-sorted
    firsts = [sampler.batches(instances, epoch)[0] for epoch in range(5)]
    assert len({tuple(b) for b in firsts}) > 1


def test_bucket_sampler_padding_much_lower_than_random_batches():
    instances = _varied(400)
    bucket = BucketBatchSampler(batch_size=16).batches(instances, 0)
    basic = BasicBatchSampler(batch_size=16, shuffle=True).batches(instances, 0)
    assert sorted(_flat(basic)) == list(range(400))
    bucket_padding, random_padding = _padding(instances, bucket), _padding(instances, basic)
    assert random_padding > 0
    assert bucket_padding < random_padding / 4


def test_bucket_sampler_without_shuffle_is_sorted_and_stable():
    lengths = [5, 3, 9, 3, 1, 5, 7, 3, 2]
    instances = _instances(lengths)
    sampler = BucketBatchSampler(batch_size=4, shuffle=False)
    batches = sampler.batches(instances, 0)
    # sorted by length; equal lengths keep file order
    assert batches == [[4, 8, 1, 3], [7, 0, 5, 6], [2]]
    flat_lengths = [lengths[i] for i in _flat(batches)]
    assert flat_lengths == sorted(flat_lengths)
    assert sampler.batches(instances, 1) == batches == sampler.batches(instances, 7)


def test_bucket_sampler_sorts_by_the_lengths_it_is_given_and_near_equal_ones_by_words():
    # Word counts 5, 1, 3, 2, 9; lengths (word pieces, say) 100, 101, 50, 51, 10: 100 and 101 are
    # within 10% of each other, so are 50 and 51, and those pairs go by words.
    instances = _instances([5, 1, 3, 2, 9])
    sampler = BucketBatchSampler(batch_size=1, shuffle=False)
    assert _flat(sampler.batches(instances, 0)) == [1, 3, 2, 0, 4]
    assert _flat(sampler.batches(instances, 0, lengths=[100, 101, 50, 51, 10])) == [4, 3, 2, 1, 0]
    assert _flat(sampler.batches(instances, 0, lengths=[100, 130, 50, 70, 0])) == [4, 2, 3, 0, 1]
    with pytest.raises(ValueError, match="4 lengths for 5 instances"):
        sampler.batches(instances, 0, lengths=[1, 2, 3, 4])


def test_loader_batches_by_its_sorting_lengths():
    instances = _instances([3] * 6)
    loader = TaggingDataLoader(instances, batch_size=2, shuffle=False)
    loader.index_with(VOCAB)
    assert _sources(loader) == [f"f.txt:{n}" for n in range(6)]
    loader.set_sorting_lengths([60, 50, 40, 30, 20, 10])
    assert _sources(loader) == [f"f.txt:{n}" for n in range(5, -1, -1)]
    assert len(loader) == 3
    with pytest.raises(ValueError, match="7 sorting lengths for 6 instances"):
        loader.set_sorting_lengths([1] * 7)


def test_drop_last():
    instances = _instances([3] * 10)
    assert [len(b) for b in BucketBatchSampler(batch_size=4, drop_last=True).batches(instances)] == [4, 4]
    assert len(BucketBatchSampler(batch_size=4, drop_last=False).batches(instances)) == 3
    assert len(BucketBatchSampler(batch_size=5, drop_last=True).batches(instances)) == 2  # exact: none dropped
    assert BasicBatchSampler(batch_size=4, shuffle=False, drop_last=True).batches(instances) == [
        [0, 1, 2, 3], [4, 5, 6, 7]
    ]
    assert BucketBatchSampler(batch_size=20, drop_last=True).batches(instances) == []


def test_basic_sampler_in_order_without_shuffle():
    instances = _instances([1, 2, 3, 4, 5])
    assert BasicBatchSampler(batch_size=2, shuffle=False).batches(instances) == [[0, 1], [2, 3], [4]]


def test_sampler_rejects_bad_batch_size():
    with pytest.raises(ConfigurationError, match="batch_size"):
        BucketBatchSampler(batch_size=0)


def test_sampler_registry():
    assert BatchSampler.by_name("bucket") is BucketBatchSampler
    assert BatchSampler.by_name("basic") is BasicBatchSampler
    sampler = BatchSampler.from_params(Params({"batch_size": 3, "padding_noise": 0.0}))
    assert isinstance(sampler, BucketBatchSampler) and sampler.batch_size == 3


# ------------------------------------------------------------------ collate


def test_collate_words_tags_and_metadata():
    instances = [
        TaggingInstance(["Obama", "in", "Paris"], ["B-PER", "O", "B-LOC"], image_id="1", metadata={"source": "a:1"}),
        TaggingInstance(["John", "Smith"], ["B-PER", "I-PER"], image_id="2", image_path="/x/2.jpg"),
        TaggingInstance(["Lyon", "rocks", "so", "hard"], ["B-LOC", "O", "O", "O"]),
    ]
    batch = collate(instances, VOCAB)
    assert batch["words"] == [["Obama", "in", "Paris"], ["John", "Smith"], ["Lyon", "rocks", "so", "hard"]]
    assert batch["words"][0] is not instances[0].words  # a copy
    assert batch["tags"].dtype == torch.long
    assert batch["tags"].tolist() == [[1, 0, 3, 0], [1, 2, 0, 0], [3, 0, 0, 0]]
    assert batch["metadata"][0]["source"] == "a:1"
    assert batch["metadata"][1]["image_path"] == "/x/2.jpg"
    assert batch["metadata"][1]["image_id"] == "2"
    assert batch["metadata"][2]["words"] == ["Lyon", "rocks", "so", "hard"]
    assert "object_features" not in batch


def test_collate_uses_label_namespace():
    vocab = Vocabulary({"other": ["B-PER", "O"]})
    batch = collate([TaggingInstance(["a", "b"], ["O", "B-PER"])], vocab, label_namespace="other")
    assert batch["tags"].tolist() == [[1, 0]]


def test_collate_without_tags_has_no_tags_key():
    tagged = TaggingInstance(["a", "b"], ["O", "O"])
    untagged = TaggingInstance(["c"])
    assert "tags" not in collate([tagged, untagged], VOCAB)
    # no gold tags anywhere: no vocabulary needed
    batch = collate([untagged], None)
    assert "tags" not in batch and batch["words"] == [["c"]]


def test_collate_unknown_tag_raises():
    with pytest.raises(KeyError, match="B-ORG"):
        collate([TaggingInstance(["a"], ["B-ORG"])], VOCAB)


def test_collate_visual_objects_padded_with_mask():
    a = VisualObjects(torch.randn(2, 4), torch.tensor([[0, 0], [1, 2]]), ["person", "whole image"])
    b = VisualObjects(torch.randn(3, 4), torch.tensor([[0, 1], [1, 1], [0, 0]]))
    instances = [
        TaggingInstance(["x", "y", "z"], visual=a),
        TaggingInstance(["q"]),
        TaggingInstance(["p", "r"], visual=b),
    ]
    batch = collate(instances)
    features, spans, mask = batch["object_features"], batch["object_spans"], batch["object_mask"]
    assert features.shape == (3, 3, 4) and spans.shape == (3, 3, 2) and mask.shape == (3, 3)
    assert mask.dtype == torch.bool and spans.dtype == torch.long
    assert mask.tolist() == [[True, True, False], [False, False, False], [True, True, True]]
    assert torch.equal(features[0, :2], a.features) and torch.equal(features[2], b.features)
    assert torch.equal(spans[0, :2], a.spans) and torch.equal(spans[2], b.spans)
    assert not features[0, 2].any() and not features[1].any() and not spans[1].any()


def test_collate_mixed_visual_dims_raises():
    instances = [
        TaggingInstance(["x"], visual=VisualObjects(torch.zeros(1, 4), torch.zeros(1, 2, dtype=torch.long))),
        TaggingInstance(["y"], visual=VisualObjects(torch.zeros(1, 8), torch.zeros(1, 2, dtype=torch.long))),
    ]
    with pytest.raises(ValueError, match=r"different sizes.*\[4, 8\]"):
        collate(instances)


def test_visual_objects_and_instance_validate_shapes():
    with pytest.raises(ValueError, match="spans"):
        VisualObjects(torch.zeros(2, 4), torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"2 words but 1 tags at f:3"):
        TaggingInstance(["a", "b"], ["O"], metadata={"source": "f:3"})


# ------------------------------------------------------------------ the data loader


def _loader(params, instances):
    loader = DataLoader.from_params(Params(params), instances=instances)
    loader.index_with(VOCAB)
    return loader


def test_data_loader_from_params_default_sampler():
    instances = _varied(50)
    loader = _loader({"batch_size": 8}, instances)
    assert isinstance(loader, TaggingDataLoader)
    assert isinstance(loader.batch_sampler, BucketBatchSampler)
    assert loader.batch_sampler.batch_size == 8 and loader.batch_sampler.shuffle
    batches = list(loader)
    assert len(loader) == len(batches) == 7
    seen = sorted(m["source"] for b in batches for m in b["metadata"])
    assert seen == sorted(i.metadata["source"] for i in instances)
    for batch in batches:
        assert batch["tags"].shape == (len(batch["words"]), max(len(w) for w in batch["words"]))


def test_data_loader_from_params_with_batch_sampler():
    instances = _instances([2, 5, 1, 4, 3, 6, 2])
    loader = _loader(
        {"type": "default", "batch_sampler": {"type": "basic", "batch_size": 3, "shuffle": False}}, instances
    )
    assert isinstance(loader.batch_sampler, BasicBatchSampler)
    batches = list(loader)
    assert len(loader) == len(batches) == 3
    assert [[m["image_id"] for m in b["metadata"]] for b in batches] == [["0", "1", "2"], ["3", "4", "5"], ["6"]]
    loader = _loader({"batch_sampler": {"batch_size": 2, "drop_last": True}}, instances)
    assert isinstance(loader.batch_sampler, BucketBatchSampler)
    assert len(loader) == len(list(loader)) == 3


def test_data_loader_shuffle_false_and_set_epoch():
    instances = _varied(40)
    fixed = _loader({"batch_size": 8, "shuffle": False}, instances)
    order = [[m["source"] for m in b["metadata"]] for b in fixed]
    fixed.set_epoch(3)
    assert [[m["source"] for m in b["metadata"]] for b in fixed] == order
    shuffled = _loader({"batch_size": 8}, instances)
    epoch0 = [[m["source"] for m in b["metadata"]] for b in shuffled]
    shuffled.set_epoch(1)
    assert [[m["source"] for m in b["metadata"]] for b in shuffled] != epoch0
    shuffled.set_epoch(0)
    assert [[m["source"] for m in b["metadata"]] for b in shuffled] == epoch0


def test_iterating_before_index_with_raises():
    loader = DataLoader.from_params(Params({"batch_size": 4}), instances=_instances([2, 3]))
    with pytest.raises(RuntimeError, match=r"index_with"):
        next(iter(loader))


def test_untagged_instances_iterate_without_vocab():
    loader = TaggingDataLoader(_instances([2, 3, 1], tagged=False), batch_size=2, shuffle=False)
    batches = list(loader)
    assert [b["words"] for b in batches] == [[["w2_0"], ["w0_0", "w0_1"]], [["w1_0", "w1_1", "w1_2"]]]
    assert all("tags" not in b for b in batches)


def test_grounding_targets_mark_candidates_overlapping_a_gold_box_and_none():
    boxes = [(0.0, 0.0, 100.0, 100.0), (0.0, 0.0, 10.0, 10.0), (1.0, 1.0, 11.0, 11.0), (50.0, 50.0, 60.0, 60.0)]
    visual = VisualObjects(torch.zeros(4, 2), torch.tensor([[0, 3]] * 4), ["whole image"] + ["proposal"] * 3, boxes)
    entity_boxes = {(0, 1): [(0.0, 0.0, 10.0, 10.0)],  # candidates 1 and 2 (IoU 81 / 119 >= 0.5), not the image
                    (2, 3): [],  # not groundable: "none"
                    (3, 4): [(80.0, 0.0, 90.0, 10.0)]}  # no candidate overlaps: no right option
    first = TaggingInstance(["a", "b", "c", "d"], ["B-PER", "O", "B-LOC", "B-ORG"], visual=visual,
                            entity_boxes=entity_boxes)
    second = TaggingInstance(["e"], ["B-PER"], entity_boxes={(0, 1): [(0.0, 0.0, 1.0, 1.0)]})  # no image
    third = TaggingInstance(["f"], ["O"])  # no grounding annotation
    batch = grounding_targets([first, second, third])
    assert batch["entity_spans"].tolist() == [[[0, 1], [2, 3], [3, 4]], [[0, 1], [0, 0], [0, 0]],
                                              [[0, 0], [0, 0], [0, 0]]]
    assert batch["entity_span_mask"].tolist() == [[True, True, True], [True, False, False], [False] * 3]
    assert batch["grounding_targets"][0].tolist() == [
        [False, True, True, False, False], [False, False, False, False, True], [False] * 5,
    ]
    assert not batch["grounding_targets"][1:].any()
