import math

import pytest
import torch
from tango.common.exceptions import ConfigurationError

from fmit_plugin.modules.entity_grounding import EntityGrounding, ground_spans, spans_tensor


def _head() -> EntityGrounding:
    torch.manual_seed(0)
    return EntityGrounding(input_dim=6, projection_dim=4)


def test_scores_every_candidate_and_none_and_never_a_masked_object():
    head = _head()
    words = torch.randn(2, 5, 6)
    objects = torch.randn(2, 3, 6)
    candidates = torch.tensor([[True, True, False], [False, False, False]])
    spans, span_mask = spans_tensor([[(0, 2), (3, 4)], [(1, 2)]])
    logits = head(words, objects, candidates, spans, span_mask)
    assert logits.shape == (2, 2, 4)
    best, confidence = head.decode(logits)
    assert 2 not in best[0].tolist() and torch.softmax(logits, -1)[0, :, 2].max().item() == 0.0  # masked
    assert best[1, 0].item() == 3 and confidence[1, 0].item() == pytest.approx(1.0)  # no candidate: "none"
    # The entity's score depends on its own words only.
    changed = words.clone()
    changed[0, 3:] += 1.0
    assert torch.equal(head(changed, objects, candidates, spans, span_mask)[0, 0], logits[0, 0])


def test_loss_is_minus_log_of_the_mass_on_the_right_options_by_hand():
    logits = torch.tensor([[[0.0, math.log(2.0), 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]])
    probabilities = torch.tensor([1, 2, 1, 1]) / 5
    targets = torch.tensor([[[True, True, False, False], [False, False, False, False]]])
    span_mask = torch.tensor([[True, True]])
    # The second entity has no right option (its box overlaps no candidate): left out.
    expected = -math.log(probabilities[0] + probabilities[1])
    assert EntityGrounding.loss(logits, targets, span_mask).item() == pytest.approx(expected)
    assert EntityGrounding.loss(logits, torch.zeros_like(targets), span_mask).item() == 0.0


def test_ground_spans_gives_the_chosen_box_or_none():
    head = _head()
    with torch.no_grad():
        head.none_score.bias.fill_(-100.0)  # never "none" while a candidate exists
    words, objects = torch.randn(2, 3, 6), torch.randn(2, 2, 6)
    candidates = torch.tensor([[True, False], [False, False]])
    boxes = [[(1.0, 2.0, 3.0, 4.0), (5.0, 6.0, 7.0, 8.0)], []]
    (first,), (second,) = ground_spans(head, words, objects, candidates, boxes, [[(0, 1)], [(1, 3)]])
    assert first[0] == (1.0, 2.0, 3.0, 4.0) and 0.0 < first[1] <= 1.0
    assert second == (None, pytest.approx(1.0))
    assert ground_spans(head, words, objects, candidates, boxes, [[], []]) == [[], []]


def test_bad_settings_are_configuration_errors():
    with pytest.raises(ConfigurationError, match="loss_weight"):
        EntityGrounding(input_dim=4, loss_weight=-1)
    with pytest.raises(ConfigurationError, match="projection_dim"):
        EntityGrounding(input_dim=4, projection_dim=0)


def test_takes_non_contiguous_word_outputs():
    # A lattice slice through dropout may not be contiguous; allennlp-light's span extractor views it.
    head = _head()
    words = torch.randn(1, 4, 12)[:, :, ::2]
    assert not words.is_contiguous()
    objects, candidates = torch.randn(1, 2, 6), torch.tensor([[True, True]])
    spans, span_mask = spans_tensor([[(0, 2)]])
    logits = head(words, objects, candidates, spans, span_mask)
    assert torch.equal(logits, head(words.contiguous(), objects, candidates, spans, span_mask))


def test_a_batch_without_entities_gives_no_logits_and_no_loss():
    # Tweets without names: a whole batch of them happens in training (it crashed allennlp-light's span check).
    head = _head()
    words, objects = torch.randn(3, 5, 6, requires_grad=True), torch.randn(3, 2, 6)
    spans, span_mask = spans_tensor([[], [], []])
    assert spans.shape == (3, 0, 2)
    logits = head(words, objects, torch.ones(3, 2, dtype=torch.bool), spans, span_mask)
    assert logits.shape == (3, 0, 3)
    loss = EntityGrounding.loss(logits, torch.zeros(3, 0, 3, dtype=torch.bool), span_mask)
    assert loss.item() == 0.0
    assert head.decode(logits)[0].shape == (3, 0)
