"""Both CRF backends, given the same transitions, agree with each other and with enumeration."""
import math

import pytest
import torch
from allennlp_light.modules.conditional_random_field.conditional_random_field import (
    ConditionalRandomField as AllennlpLightConditionalRandomField,
)
from allennlp_light.modules.conditional_random_field.conditional_random_field import allowed_transitions
from tango.common import Lazy, Params
from tango.common.exceptions import ConfigurationError

from fmit_plugin.data.span_utils import bio_tags_to_spans
from fmit_plugin.modules.conditional_random_field import AllennlpLightCrf, ConditionalRandomField, PytorchCrf
from fmit_plugin.modules.tagging_head import TaggingHead
from tests.crf_enumeration import logsumexp, path_scores

LABELS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
BACKENDS = {"allennlp_light": AllennlpLightCrf, "pytorch_crf": PytorchCrf}


def _heads(seed, constrain=True):
    """A `TaggingHead` per backend, all with the same projection and the same random transitions."""
    heads = {}
    for name, backend in BACKENDS.items():
        torch.manual_seed(seed)
        heads[name] = TaggingHead(6, LABELS, constrain_crf_decoding=constrain, crf=Lazy(backend))
    torch.manual_seed(seed + 100)
    shared = {"transitions": torch.randn(5, 5), "start_transitions": torch.randn(5), "end_transitions": torch.randn(5)}
    for head in heads.values():
        with torch.no_grad():
            for name, value in shared.items():
                getattr(head.crf, name).copy_(value)
    return heads


def _batch(seed):
    torch.manual_seed(seed)
    lengths = torch.tensor([4, 3, 1, 2, 4])
    mask = torch.arange(4).unsqueeze(0) < lengths.unsqueeze(1)
    emissions = torch.randn(5, 4, len(LABELS)) * 2
    tags = torch.randint(0, len(LABELS), (5, 4)) * mask  # padding tags 0, as collate pads
    return emissions, tags, mask, lengths


def test_the_registry_holds_both_backends_and_defaults_to_allennlp_light():
    assert {"allennlp_light", "pytorch_crf"} <= set(ConditionalRandomField.list_available())
    assert ConditionalRandomField.default_implementation == "allennlp_light"
    built = Lazy(ConditionalRandomField, Params({"type": "pytorch_crf"})).construct(labels=LABELS)
    assert isinstance(built, PytorchCrf) and isinstance(TaggingHead(6, LABELS).crf, AllennlpLightCrf)


@pytest.mark.parametrize("seed", range(3))
def test_both_backends_give_the_enumerated_log_likelihood(seed):
    heads = _heads(seed)
    emissions, tags, mask, lengths = _batch(seed)
    transitions, start, end = (s.detach() for s in heads["allennlp_light"].crf.transition_scores())
    expected = 0.0
    for row, length in enumerate(lengths.tolist()):
        # Training is unconstrained in both libraries: the normaliser sums over every sequence.
        scores = path_scores(emissions[row], length, transitions, start, end)
        expected += scores[tuple(tags[row, :length].tolist())] - logsumexp(list(scores.values()))
    for name, head in heads.items():
        actual = head.crf.log_likelihood(emissions, tags, mask)
        assert actual.dim() == 0
        assert math.isclose(actual.item(), expected, rel_tol=1e-5), name
    assert torch.allclose(heads["allennlp_light"](torch.zeros(5, 4, 6), mask, tags)["loss"],
                          heads["pytorch_crf"](torch.zeros(5, 4, 6), mask, tags)["loss"], atol=1e-5)


@pytest.mark.parametrize("constrain", [True, False])
@pytest.mark.parametrize("seed", range(3))
def test_both_backends_decode_the_enumerated_best_paths_with_the_enumerated_confidences(seed, constrain):
    heads = _heads(seed, constrain)
    emissions, _, mask, lengths = _batch(seed + 10)
    scores = tuple(s.detach() for s in heads["allennlp_light"].crf.constrained_scores())
    for other in heads.values():
        assert all(torch.equal(a, b) for a, b in zip(scores, other.crf.constrained_scores()))
    decoded = {name: head.decode(emissions, mask) for name, head in heads.items()}
    entities = {name: head.entities(emissions, mask, decoded[name]) for name, head in heads.items()}
    assert decoded["pytorch_crf"] == decoded["allennlp_light"]
    assert entities["pytorch_crf"] == entities["allennlp_light"]
    assert any(entities["pytorch_crf"])
    for row, length in enumerate(lengths.tolist()):
        enumerated = path_scores(emissions[row], length, *scores)
        assert tuple(decoded["pytorch_crf"][row]) == max(enumerated, key=enumerated.get)
        total = logsumexp(list(enumerated.values()))
        path = decoded["pytorch_crf"][row]
        for label, start, end, confidence in entities["pytorch_crf"][row]:
            assert label == LABELS[path[start]][2:]
            matching = [s for p, s in enumerated.items() if list(p[start:end]) == path[start:end]]
            assert confidence == pytest.approx(math.exp(logsumexp(matching) - total), rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_constrained_decoding_yields_valid_bio_with_either_backend(backend):
    torch.manual_seed(7)
    head = TaggingHead(6, LABELS, crf=Lazy(BACKENDS[backend]))
    emissions = torch.randn(20, 6, len(LABELS)) * 5
    emissions[:, :, 2] += 10  # I-PER everywhere is tempting but invalid after O or at the start
    for path in head.decode(emissions, torch.ones(20, 6, dtype=torch.bool)):
        tags = [LABELS[i] for i in path]
        assert bio_tags_to_spans(tags) == bio_tags_to_spans(tags, strict=True)


BIOUL = {0: "O", 1: "B-X", 2: "I-X", 3: "L-X", 4: "U-X"}


@pytest.mark.parametrize("encoding, labels", [("BIO", LABELS), ("BIOUL", BIOUL)])
def test_the_allowed_transitions_are_allennlp_lights_constraints(encoding, labels):
    """Computed by us from the labels, not read from allennlp-light; but the same mask."""
    reference = AllennlpLightConditionalRandomField(len(labels), allowed_transitions(encoding, labels))
    for backend in BACKENDS.values():
        crf = backend(labels, label_encoding=encoding)
        assert torch.equal(crf._allowed, reference._constraint_mask.bool())
        assert "_allowed" not in crf.state_dict()


def test_an_archive_written_before_registrable_crfs_loads_into_the_default_backend():
    """Old heads held allennlp-light's CRF itself at `crf`: the same state-dict keys, loaded strictly."""
    old = torch.nn.Module()
    old.projection = torch.nn.Linear(6, 5)
    old.crf = AllennlpLightConditionalRandomField(5, allowed_transitions("BIO", LABELS))
    head = TaggingHead(6, LABELS)
    assert sorted(head.state_dict()) == sorted(old.state_dict())
    head.load_state_dict(old.state_dict(), strict=True)
    emissions = torch.randn(3, 5, 5)
    mask = torch.ones(3, 5, dtype=torch.bool)
    assert head.decode(emissions, mask) == [path for path, _ in old.crf.viterbi_tags(emissions, mask)]


def test_pytorch_crf_keeps_the_parameter_names_and_always_has_start_and_end_transitions():
    crf = PytorchCrf(LABELS)
    assert sorted(crf.state_dict()) == ["end_transitions", "start_transitions", "transitions"]
    with pytest.raises(ConfigurationError, match="include_start_end_transitions.*'pytorch_crf'.*allennlp_light"):
        TaggingHead(6, LABELS, include_start_end_transitions=False, crf=Lazy(PytorchCrf))
