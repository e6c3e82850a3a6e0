"""Tests for the span F1 metric: hand-made cases, agreement with seqeval, and distributed summing."""

import json
import random
import re
from typing import Dict, List

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hypothesis import given, settings
from hypothesis import strategies as st
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

from fmit_plugin.data.span_utils import bio_tags_to_spans
from fmit_plugin.metrics.span_f1 import SpanCounts, SpanF1Measure

TYPES = ["PER", "LOC", "ORG", "MISC"]
ALL_TAGS = ["O"] + [f"{prefix}-{t}" for t in TYPES for prefix in "BI"]


def metric_over(predicted: List[List[str]], gold: List[List[str]]) -> Dict[str, float]:
    metric = SpanF1Measure()
    metric(predicted, gold)
    return metric.get_metric()


def random_corpus(rng: random.Random, n_sentences: int) -> List[List[str]]:
    # Uniform over all tags, so ill-formed sequences (I- after O, I-Y after B-X) are frequent.
    return [[rng.choice(ALL_TAGS) for _ in range(rng.randint(0, 12))] for _ in range(n_sentences)]


def perturb(rng: random.Random, corpus: List[List[str]]) -> List[List[str]]:
    """A 'prediction' that agrees with gold on most tags, so there are many true positives."""
    return [[tag if rng.random() < 0.7 else rng.choice(ALL_TAGS) for tag in sentence] for sentence in corpus]


# ---------------------------------------------------------------------------------------------------
# bio_tags_to_spans


@pytest.mark.parametrize(
    "tags, default, strict",
    [
        ([], [], []),
        (["O", "O"], [], []),
        (["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 2), ("LOC", 3, 4)], [("PER", 0, 2), ("LOC", 3, 4)]),
        # Ill-formed I- after O opens an entity (conlleval), or is dropped in strict mode.
        (["O", "I-PER", "I-PER", "O"], [("PER", 1, 3)], []),
        (["I-PER"], [("PER", 0, 1)], []),
        # I-Y after B-X: the type change ends X and opens Y.
        (["B-PER", "I-LOC", "I-LOC"], [("PER", 0, 1), ("LOC", 1, 3)], [("PER", 0, 1)]),
        # Adjacent entities of the same type are separate.
        (["B-PER", "B-PER", "I-PER"], [("PER", 0, 1), ("PER", 1, 3)], [("PER", 0, 1), ("PER", 1, 3)]),
        # In strict mode, I-PER after a dropped I-LOC does not continue anything either.
        (["B-PER", "I-LOC", "I-PER"], [("PER", 0, 1), ("LOC", 1, 2), ("PER", 2, 3)], [("PER", 0, 1)]),
        (["B-MISC", "I-MISC", "I-MISC"], [("MISC", 0, 3)], [("MISC", 0, 3)]),
        # Types may themselves contain dashes.
        (["B-X-Y", "I-X-Y"], [("X-Y", 0, 2)], [("X-Y", 0, 2)]),
    ],
)
def test_bio_tags_to_spans(tags, default, strict):
    assert bio_tags_to_spans(tags) == default
    assert bio_tags_to_spans(tags, strict=True) == strict


@pytest.mark.parametrize("bad_tag", ["B", "I", "B-", "E-PER", "S-PER", "PER", "o", ""])
def test_bio_tags_to_spans_rejects_malformed_tags(bad_tag):
    with pytest.raises(ValueError, match="neither 'O'"):
        bio_tags_to_spans(["O", bad_tag])
    with pytest.raises(ValueError, match=re.escape(repr(bad_tag))):
        bio_tags_to_spans([bad_tag], strict=True)


# ---------------------------------------------------------------------------------------------------
# SpanF1Measure, hand-made cases


def test_perfect_prediction():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    metrics = metric_over(gold, gold)
    for key in ["precision-overall", "recall-overall", "f1-measure-overall", "f1-measure-strict-overall"]:
        assert metrics[key] == 1.0
    for span_type in ["PER", "LOC", "ORG"]:
        assert metrics[f"f1-measure-{span_type}"] == 1.0


@pytest.mark.parametrize("corpus", [[], [[]], [[], []], [["O", "O"], []]])
def test_empty_and_all_o(corpus):
    metrics = metric_over(corpus, corpus)
    assert metrics == {
        "precision-overall": 0.0,
        "recall-overall": 0.0,
        "f1-measure-overall": 0.0,
        "precision-strict-overall": 0.0,
        "recall-strict-overall": 0.0,
        "f1-measure-strict-overall": 0.0,
    }


def test_known_numbers_by_hand():
    gold = [
        ["B-PER", "I-PER", "O", "B-LOC", "O"],  # PER(0,2) LOC(3,4)
        ["B-ORG", "I-ORG", "I-ORG", "O"],  # ORG(0,3)
        ["B-PER", "O", "B-PER"],  # PER(0,1) PER(2,3)
    ]
    predicted = [
        ["B-PER", "I-PER", "O", "B-ORG", "O"],  # PER(0,2) correct; ORG(3,4) wrong
        ["B-ORG", "I-ORG", "O", "O"],  # ORG(0,2) wrong boundary
        ["B-PER", "O", "I-PER"],  # PER(0,1) correct; ill-formed I-PER is PER(2,3): correct
    ]
    # PER: tp 3, fp 0, fn 0.  LOC: tp 0, fp 0, fn 1.  ORG: tp 0, fp 2, fn 1.
    # Overall: tp 3, fp 2, fn 2 -> P = 3/5, R = 3/5, F = 3/5.
    metrics = metric_over(predicted, gold)
    assert metrics["precision-overall"] == pytest.approx(0.6)
    assert metrics["recall-overall"] == pytest.approx(0.6)
    assert metrics["f1-measure-overall"] == pytest.approx(0.6)
    assert metrics["f1-measure-PER"] == pytest.approx(1.0)
    assert metrics["precision-LOC"] == 0.0 and metrics["recall-LOC"] == 0.0
    assert metrics["precision-ORG"] == 0.0 and metrics["recall-ORG"] == 0.0
    # Strict: the ill-formed I-PER is no entity, so PER is tp 2, fn 1; overall tp 2, fp 2, fn 3.
    # P = 2/4, R = 2/5, F = 2PR/(P+R) = 0.4/0.9 = 4/9.
    assert metrics["precision-strict-overall"] == pytest.approx(0.5)
    assert metrics["recall-strict-overall"] == pytest.approx(0.4)
    assert metrics["f1-measure-strict-overall"] == pytest.approx(4 / 9)


def test_ill_formed_gold_entity_counts_by_default_but_not_strictly():
    gold = [["O", "I-PER", "O"]]
    predicted = [["O", "B-PER", "O"]]
    metrics = metric_over(predicted, gold)
    assert metrics["f1-measure-overall"] == 1.0  # both are PER(1,2) under conlleval
    # Strictly, gold has no entity and the prediction is a false positive.
    assert metrics["precision-strict-overall"] == 0.0
    assert metrics["f1-measure-strict-overall"] == 0.0


def test_b_per_i_loc_against_b_per():
    gold = [["B-PER", "O"]]
    predicted = [["B-PER", "I-LOC"]]  # PER(0,1) correct, LOC(1,2) false positive
    metrics = metric_over(predicted, gold)
    assert metrics["precision-overall"] == 0.5
    assert metrics["recall-overall"] == 1.0
    assert metrics["precision-LOC"] == 0.0 and metrics["recall-LOC"] == 0.0
    assert metrics["f1-measure-strict-overall"] == 1.0  # strictly the I-LOC is dropped


def test_types_seen_only_in_predictions_are_reported():
    metrics = metric_over([["B-MISC", "B-PER"]], [["O", "B-PER"]])
    assert metrics["precision-MISC"] == 0.0 and metrics["f1-measure-MISC"] == 0.0
    assert metrics["f1-measure-PER"] == 1.0
    assert "f1-measure-LOC" not in metrics


def test_accumulates_counts_across_batches_and_resets():
    metric = SpanF1Measure()
    # Batch 1: 1 tp.  Batch 2: 0 tp, 3 fp, 1 fn.  Micro: P = 1/4, R = 1/2 (not an average of batch F1s).
    metric([["B-PER"]], [["B-PER"]])
    metric([["B-LOC", "B-LOC", "B-LOC"]], [["B-ORG", "O", "O"]])
    metrics = metric.get_metric(reset=True)
    assert metrics["precision-overall"] == pytest.approx(0.25)
    assert metrics["recall-overall"] == pytest.approx(0.5)
    assert metrics["f1-measure-overall"] == pytest.approx(1 / 3)
    assert metric.get_metric()["f1-measure-overall"] == 0.0
    assert "f1-measure-PER" not in metric.get_metric()


def test_get_metric_without_reset_keeps_state():
    metric = SpanF1Measure()
    metric([["B-PER"]], [["B-PER"]])
    assert metric.get_metric()["f1-measure-overall"] == 1.0
    assert metric.get_metric()["f1-measure-overall"] == 1.0


def test_length_mismatch_names_sentence_and_lengths():
    metric = SpanF1Measure()
    with pytest.raises(ValueError, match=r"Sentence 1: .*length 2.*length 3"):
        metric([["O"], ["O", "O"]], [["O"], ["O", "O", "O"]])
    with pytest.raises(ValueError, match="predicted sequences"):
        metric([["O"]], [["O"], ["O"]])


def test_span_counts_zero_denominators():
    assert SpanCounts().precision_recall_f1() == (0.0, 0.0, 0.0)
    assert SpanCounts(0, 1, 0).precision_recall_f1() == (0.0, 0.0, 0.0)
    assert SpanCounts(1, 1, 0).precision_recall_f1() == pytest.approx((0.5, 1.0, 2 / 3))


# ---------------------------------------------------------------------------------------------------
# Agreement with seqeval (default mode, i.e. conlleval)


def assert_matches_seqeval(predicted: List[List[str]], gold: List[List[str]]) -> None:
    metrics = metric_over(predicted, gold)
    assert metrics["precision-overall"] == pytest.approx(precision_score(gold, predicted, zero_division=0))
    assert metrics["recall-overall"] == pytest.approx(recall_score(gold, predicted, zero_division=0))
    assert metrics["f1-measure-overall"] == pytest.approx(f1_score(gold, predicted, zero_division=0))
    report = classification_report(gold, predicted, output_dict=True, zero_division=0)
    seqeval_types = {key for key in report if not key.endswith(" avg")}
    our_types = {key[len("f1-measure-") :] for key in metrics if key.startswith("f1-measure-")}
    assert our_types - {"overall", "strict-overall"} == seqeval_types
    for span_type in seqeval_types:
        assert metrics[f"precision-{span_type}"] == pytest.approx(report[span_type]["precision"])
        assert metrics[f"recall-{span_type}"] == pytest.approx(report[span_type]["recall"])
        assert metrics[f"f1-measure-{span_type}"] == pytest.approx(report[span_type]["f1-score"])


def test_matches_seqeval_on_random_corpora():
    rng = random.Random(13)
    for _ in range(20):
        gold = random_corpus(rng, 20)
        predicted = perturb(rng, gold)
        assert_matches_seqeval(predicted, gold)
        # Independent random predictions too, where most spans are wrong.
        assert_matches_seqeval([[rng.choice(ALL_TAGS) for _ in sentence] for sentence in gold], gold)


def test_matches_seqeval_on_one_large_corpus():
    rng = random.Random(7)
    gold = random_corpus(rng, 400)
    assert_matches_seqeval(perturb(rng, gold), gold)


# Each token is (gold tag, predicted tag or None meaning "same as gold"), so predictions often overlap gold.
token_pairs = st.tuples(st.sampled_from(ALL_TAGS), st.one_of(st.none(), st.sampled_from(ALL_TAGS)))


@settings(max_examples=60, deadline=None)
@given(corpus=st.lists(st.lists(token_pairs, max_size=8), min_size=1, max_size=6))  # seqeval rejects []
def test_overall_f1_matches_seqeval_property(corpus):
    gold = [[g for g, _ in sentence] for sentence in corpus]
    predicted = [[g if p is None else p for g, p in sentence] for sentence in corpus]
    metrics = metric_over(predicted, gold)
    assert metrics["f1-measure-overall"] == pytest.approx(f1_score(gold, predicted, zero_division=0))


# ---------------------------------------------------------------------------------------------------
# Distributed: counts are summed across workers


def _distributed_corpus() -> List[List[List[str]]]:
    """gold and predicted halves per rank; rank 0 sees only PER/LOC, rank 1 only ORG/MISC/PER."""
    rng = random.Random(3)
    halves = []
    for allowed in (["PER", "LOC"], ["ORG", "MISC", "PER"]):
        tags = ["O"] + [f"{prefix}-{t}" for t in allowed for prefix in "BI"]
        gold = [[rng.choice(tags) for _ in range(rng.randint(0, 10))] for _ in range(30)]
        predicted = [[t if rng.random() < 0.7 else rng.choice(tags) for t in sentence] for sentence in gold]
        halves.append([gold, predicted])
    return halves


def _distributed_worker(rank: int, world_size: int, directory: str) -> None:
    store = f"file://{directory}/store"
    dist.init_process_group("gloo", init_method=store, rank=rank, world_size=world_size)
    try:
        gold, predicted = _distributed_corpus()[rank]
        metric = SpanF1Measure()
        # Two calls, to check that accumulation and the reduction compose.
        metric(predicted[:10], gold[:10])
        metric(predicted[10:], gold[10:])
        before_reset = metric.get_metric(reset=True)
        # After a reset this worker's counts are gone, and the collective still works on empty state.
        after_reset = metric.get_metric()
        with open(f"{directory}/rank{rank}.json", "w") as results_file:
            json.dump([before_reset, after_reset], results_file)
    finally:
        dist.destroy_process_group()


def test_distributed_sum_matches_single_process(tmp_path):
    world_size = 2
    mp.spawn(_distributed_worker, args=(world_size, str(tmp_path)), nprocs=world_size, join=True)
    results = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(world_size)]
    halves = _distributed_corpus()
    all_gold = halves[0][0] + halves[1][0]
    all_predicted = halves[0][1] + halves[1][1]
    expected = metric_over(all_predicted, all_gold)
    assert {"f1-measure-LOC", "f1-measure-MISC", "f1-measure-ORG", "f1-measure-PER"} <= set(expected)
    for rank in range(world_size):
        before_reset, after_reset = results[rank]
        assert before_reset.keys() == expected.keys()
        for key, value in expected.items():
            assert before_reset[key] == pytest.approx(value), (rank, key)
        assert after_reset["f1-measure-overall"] == 0.0
        assert "f1-measure-PER" not in after_reset
    # Sanity: the reduction mattered, since one rank alone scores differently.
    assert metric_over(halves[0][1], halves[0][0]) != expected


# ---------------------------------------------------------------------------------------------------
# Label ids on a device, as taggers give them: the same counts, no read until get_metric

ID_LABELS = dict(enumerate(ALL_TAGS))


def as_ids(rng: random.Random, corpus: List[List[str]], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`(batch, width)` ids and mask; past each sentence, ids of any value, e.g. Viterbi's sentinels."""
    index = {tag: i for i, tag in ID_LABELS.items()}
    rows = [[index[tag] for tag in sentence] + [rng.randrange(len(ID_LABELS) + 2) for _ in range(width - len(sentence))]
            for sentence in corpus]
    mask = [[True] * len(sentence) + [False] * (width - len(sentence)) for sentence in corpus]
    return torch.tensor(rows, dtype=torch.long), torch.tensor(mask, dtype=torch.bool)


def test_add_ids_counts_exactly_as_the_string_path():
    rng = random.Random(11)
    for _ in range(40):
        gold = random_corpus(rng, rng.randint(1, 8))
        predicted = perturb(rng, gold) if rng.random() < 0.5 else [[rng.choice(ALL_TAGS) for _ in s] for s in gold]
        width = max(len(sentence) for sentence in gold) + rng.randint(0, 3)
        predicted_ids, mask = as_ids(rng, predicted, width)
        gold_ids, _ = as_ids(rng, gold, width)
        metric = SpanF1Measure()
        metric.add_ids(predicted_ids, gold_ids, mask, ID_LABELS)
        assert metric.get_metric() == metric_over(predicted, gold)
        if any(gold):
            assert metric.get_metric()["f1-measure-overall"] == pytest.approx(
                f1_score(gold, predicted, zero_division=0)
            )


def test_add_ids_accumulates_with_string_calls_other_label_orders_and_resets():
    rng = random.Random(12)
    batches = [(perturb(rng, gold), gold) for gold in (random_corpus(rng, 6) for _ in range(3))]
    reordered = dict(enumerate(reversed(ALL_TAGS)))
    metric = SpanF1Measure()
    metric(*batches[0])
    ids = as_ids(rng, batches[1][0], 13)[0], *as_ids(rng, batches[1][1], 13)
    metric.add_ids(*ids, ID_LABELS)
    assert metric.get_metric() == metric_over(batches[0][0] + batches[1][0], batches[0][1] + batches[1][1])
    index = {tag: i for i, tag in reordered.items()}
    rows = [[[index[tag] for tag in s] + [0] * (13 - len(s)) for s in corpus] for corpus in batches[2]]
    mask = torch.tensor([[i < len(s) for i in range(13)] for s in batches[2][1]])
    metric.add_ids(torch.tensor(rows[0]), torch.tensor(rows[1]), mask, reordered)
    every = [sum((b[k] for b in batches), []) for k in (0, 1)]
    assert metric.get_metric(reset=True) == metric_over(*every)
    metric.add_ids(*ids, ID_LABELS)
    metric.reset()
    assert metric.get_metric()["f1-measure-overall"] == 0.0 and "precision-PER" not in metric.get_metric()


def test_add_ids_with_only_the_o_label_counts_nothing():
    # Training on tweets without any entity gives a vocabulary of "O" alone.
    metric = SpanF1Measure()
    ids = torch.zeros(2, 5, dtype=torch.long)
    metric.add_ids(ids, ids, torch.ones(2, 5, dtype=torch.bool), {0: "O"})
    assert metric.get_metric() == metric_over([["O"] * 5] * 2, [["O"] * 5] * 2)


def test_add_ids_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        SpanF1Measure().add_ids(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long),
                                torch.ones(2, 3, dtype=torch.bool), ID_LABELS)
