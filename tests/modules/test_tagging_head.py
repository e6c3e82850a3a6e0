import itertools
import math

import pytest
import torch

from fmit_plugin.data.span_utils import bio_tags_to_spans
from fmit_plugin.metrics.span_f1 import SpanF1Measure
from fmit_plugin.modules.conditional_random_field import log_partition
from fmit_plugin.modules.tagging_head import TaggingHead
from tests.host_reads import HostReads

LABELS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}


def _head(use_crf=True, seed=0):
    torch.manual_seed(seed)
    head = TaggingHead(6, LABELS, use_crf=use_crf)
    if use_crf:
        with torch.no_grad():
            head.crf.transitions.normal_()
            head.crf.start_transitions.normal_()
            head.crf.end_transitions.normal_()
    return head


def _sequence_scores(head, logits, length):
    """Every tag sequence of `length` with its constrained CRF score (brute force)."""
    transitions, start, end = head.crf.constrained_scores()
    scores = {}
    for path in itertools.product(range(len(LABELS)), repeat=length):
        score = start[path[0]] + logits[0, path[0]] + end[path[-1]]
        for t in range(1, length):
            score = score + transitions[path[t - 1], path[t]] + logits[t, path[t]]
        scores[path] = float(score)
    return scores


def test_log_partition_matches_allennlp_crf_without_constraints():
    torch.manual_seed(1)
    head = TaggingHead(6, LABELS, use_crf=True, constrain_crf_decoding=False)
    logits = torch.randn(3, 5, len(LABELS))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    crf = head.crf
    expected = crf._input_likelihood(logits, crf.transitions, mask)
    actual = log_partition(logits, mask, crf.transitions, crf.start_transitions, crf.end_transitions)
    assert torch.allclose(actual, expected, atol=1e-5)


def test_log_partition_equals_brute_force_sum():
    head = _head()
    logits = torch.randn(1, 4, len(LABELS))
    scores = _sequence_scores(head, logits[0], 4)
    transitions, start, end = head.crf.constrained_scores()
    expected = math.log(sum(math.exp(s) for s in scores.values()))
    actual = log_partition(logits, torch.ones(1, 4, dtype=torch.bool), transitions, start, end)
    assert actual.item() == pytest.approx(expected, rel=1e-5)


def test_entity_confidence_is_the_exact_probability_of_the_span_labels():
    head = _head(seed=3)
    torch.manual_seed(4)
    length = 4
    logits = torch.randn(1, length, len(LABELS)) * 2
    mask = torch.ones(1, length, dtype=torch.bool)
    predicted = head.decode(logits, mask)
    scores = _sequence_scores(head, logits[0], length)
    best = max(scores, key=scores.get)
    assert tuple(predicted[0]) == best  # Viterbi agrees with brute force
    # Force at least one entity: take the best path that contains one.
    paths = sorted(scores, key=scores.get, reverse=True)
    path = next(p for p in paths if bio_tags_to_spans([LABELS[i] for i in p]))
    entities = head.entities(logits, mask, [list(path)])[0]
    total = sum(math.exp(s) for s in scores.values())
    assert entities
    for label, start, end, confidence in entities:
        matching = sum(
            math.exp(s) for p, s in scores.items() if p[start:end] == path[start:end]
        )
        assert confidence == pytest.approx(matching / total, rel=1e-4)
        assert label == LABELS[path[start]][2:]


def test_entities_handle_padding_and_sentences_without_entities():
    head = _head(seed=5)
    logits = torch.randn(2, 5, len(LABELS))
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    paths = [[1, 2, 0], [0, 0, 0, 0, 0]]
    entities = head.entities(logits, mask, paths)
    assert [e[:3] for e in entities[0]] == [("PER", 0, 2)]
    assert entities[1] == []
    # Padding scores must not change the probability of a real span.
    changed = logits.clone()
    changed[0, 3:] = 100.0
    assert head.entities(changed, mask, paths)[0][0][3] == pytest.approx(entities[0][0][3], rel=1e-5)


@pytest.mark.parametrize("constrained", [True, False])
@pytest.mark.parametrize("start_end", [True, False])
def test_batched_viterbi_gives_allennlp_light_paths(constrained, start_end):
    for seed in range(20):
        torch.manual_seed(seed)
        head = TaggingHead(6, LABELS, constrain_crf_decoding=constrained, include_start_end_transitions=start_end)
        with torch.no_grad():
            for name in ("transitions", "start_transitions", "end_transitions")[: 3 if start_end else 1]:
                getattr(head.crf, name).normal_()
        logits = torch.randn(6, 7, len(LABELS)) * 3
        lengths = torch.randint(0, 8, (6,))
        mask = torch.arange(7).unsqueeze(0) < lengths.unsqueeze(1)
        expected = [list(path) for path, _ in head.crf.viterbi_tags(logits, mask)]
        assert head.decode(logits, mask) == expected


def test_softmax_head_confidence_is_product_of_word_probabilities():
    head = _head(use_crf=False)
    logits = torch.randn(1, 3, len(LABELS))
    mask = torch.ones(1, 3, dtype=torch.bool)
    path = [3, 4, 0]
    (label, start, end, confidence), = head.entities(logits, mask, [path])[0]
    probabilities = torch.softmax(logits[0], dim=-1)
    assert (label, start, end) == ("LOC", 0, 2)
    assert confidence == pytest.approx(float(probabilities[0, 3] * probabilities[1, 4]), rel=1e-5)
    assert head.decode(logits, mask) == [logits[0].argmax(-1).tolist()]


def test_constrained_decoding_never_yields_invalid_bio():
    head = _head(seed=7)
    logits = torch.randn(20, 6, len(LABELS)) * 5
    logits[:, :, 2] += 10  # I-PER everywhere is tempting but invalid after O or at the start
    for path in head.decode(logits, torch.ones(20, 6, dtype=torch.bool)):
        tags = [LABELS[i] for i in path]
        assert bio_tags_to_spans(tags) == bio_tags_to_spans(tags, strict=True)


def test_loss_is_a_per_tweet_mean_and_needs_gold_tags():
    head = _head()
    features = torch.randn(4, 5, 6)
    mask = torch.ones(4, 5, dtype=torch.bool)
    tags = torch.zeros(4, 5, dtype=torch.long)
    assert "loss" not in head(features, mask)
    loss = head(features, mask, tags)["loss"]
    doubled = head(features.repeat(2, 1, 1), mask.repeat(2, 1), tags.repeat(2, 1))["loss"]
    assert torch.allclose(loss, doubled, atol=1e-5)


@pytest.mark.parametrize("use_crf", [True, False])
def test_tagging_with_gold_tags_reads_nothing_back_until_the_metric_is_read(use_crf):
    head = _head(use_crf=use_crf, seed=5)
    torch.manual_seed(6)
    features = torch.randn(3, 5, 6)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    gold = torch.randint(0, len(LABELS), (3, 5))
    metric = SpanF1Measure()
    words = [["w"] * n for n in mask.sum(1).tolist()]
    with HostReads() as reads:
        output = head.tag(features, mask, words, gold)
        metric.add_ids(output["tags"], gold, mask, head.labels)  # as the models do
    assert reads.seen == []
    assert output["tags"].shape == (3, 5) and output["loss"].requires_grad
    with HostReads() as reads:
        metrics = metric.get_metric()
    assert reads.seen == ["tolist"]  # the whole batch's counts in one read
    # The same figures as scoring the decoded label strings.
    lengths = mask.sum(1).tolist()
    expected = SpanF1Measure()
    expected([[LABELS[i] for i in path] for path in head.decode(output["logits"], mask)],
             [[LABELS[i] for i in row[:n]] for row, n in zip(gold.tolist(), lengths)])
    assert metrics == expected.get_metric()
    readable = head.make_output_human_readable(output)
    assert [len(tags) for tags in readable["tags"]] == lengths


def test_a_crf_backend_without_use_crf_is_a_configuration_error():
    from tango.common import Lazy
    from tango.common.exceptions import ConfigurationError

    from fmit_plugin.modules.conditional_random_field import PytorchCrf

    with pytest.raises(ConfigurationError, match="crf is given but use_crf is false"):
        TaggingHead(6, LABELS, use_crf=False, crf=Lazy(PytorchCrf))
