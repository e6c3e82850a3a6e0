import itertools
import math

import torch

from fmit_plugin.modules.conditional_random_field import (
    AllennlpLightCrf,
    log_partition,
    span_log_probabilities,
    viterbi_paths,
)
from tests.crf_enumeration import logsumexp, path_scores

LABELS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}


def _constrained_scores(seed, constrain=True):
    torch.manual_seed(seed)
    crf = AllennlpLightCrf(LABELS, constrain_decoding=constrain)
    with torch.no_grad():
        for parameter in (crf.transitions, crf.start_transitions, crf.end_transitions):
            parameter.normal_()
    return crf.constrained_scores()


def test_forward_algorithm_and_viterbi_equal_enumeration_with_padding():
    for seed, constrain in itertools.product(range(3), (True, False)):
        scores = _constrained_scores(seed, constrain)
        emissions = torch.randn(4, 4, len(LABELS)) * 2
        lengths = torch.tensor([4, 3, 1, 2])
        mask = torch.arange(4).unsqueeze(0) < lengths.unsqueeze(1)
        partitions = log_partition(emissions, mask, *scores)
        paths = viterbi_paths(emissions, lengths, *scores)
        for row, length in enumerate(lengths.tolist()):
            enumerated = path_scores(emissions[row], length, *scores)
            assert math.isclose(partitions[row].item(), logsumexp(list(enumerated.values())), rel_tol=1e-5)
            assert tuple(paths[row, :length].tolist()) == max(enumerated, key=enumerated.get)


def test_span_log_probabilities_equal_enumeration():
    scores = _constrained_scores(seed=4)
    torch.manual_seed(5)
    lengths = torch.tensor([4, 4, 3, 2])
    mask = torch.arange(4).unsqueeze(0) < lengths.unsqueeze(1)
    emissions = torch.randn(4, 4, len(LABELS)) * 2
    labels = torch.tensor([[1, 2, 0, 0], [0, 3, 4, 4], [0, 0, 1, 0], [3, 0, 0, 0]])
    spans = [(0, 2), (1, 4), (2, 3), (0, 1)]
    in_span = torch.tensor([[start <= t < end for t in range(4)] for start, end in spans])
    actual = span_log_probabilities(emissions, mask, labels, in_span, *scores)
    for row, ((start, end), length) in enumerate(zip(spans, lengths.tolist())):
        enumerated = path_scores(emissions[row], length, *scores)
        wanted = tuple(labels[row, start:end].tolist())
        matching = [s for path, s in enumerated.items() if path[start:end] == wanted]
        expected = logsumexp(matching) - logsumexp(list(enumerated.values()))
        assert math.isclose(actual[row].item(), expected, rel_tol=1e-4, abs_tol=1e-4)
