import math

import pytest
import torch
from tango.common.exceptions import ConfigurationError

from fmit_plugin.modules.entity_grounding import EntityGrounding, GroundingInputs, ground_spans, spans_tensor


def _head() -> EntityGrounding:
    torch.manual_seed(0)
    return EntityGrounding(input_dim=6, projection_dim=4)


def test_scores_every_candidate_and_none_and_never_a_masked_object():
    head = _head()
    words = torch.randn(2, 5, 6)
    objects = torch.randn(2, 3, 6)
    candidates = torch.tensor([[True, True, False], [False, False, False]])
    spans, span_mask = spans_tensor([[(0, 2), (3, 4)], [(1, 2)]])
    logits = head(GroundingInputs(words, objects, candidates), spans, span_mask)
    assert logits.shape == (2, 2, 4)
    best, confidence = head.decode(logits)
    assert 2 not in best[0].tolist() and torch.softmax(logits, -1)[0, :, 2].max().item() == 0.0  # masked
    assert best[1, 0].item() == 3 and confidence[1, 0].item() == pytest.approx(1.0)  # no candidate: "none"
    # The entity's score depends on its own words only.
    changed = words.clone()
    changed[0, 3:] += 1.0
    assert torch.equal(head(GroundingInputs(changed, objects, candidates), spans, span_mask)[0, 0], logits[0, 0])


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
    (first,), (second,) = ground_spans(head, GroundingInputs(words, objects, candidates), boxes, [[(0, 1)], [(1, 3)]])
    assert first[0] == (1.0, 2.0, 3.0, 4.0) and 0.0 < first[1] <= 1.0
    assert second == (None, pytest.approx(1.0))
    assert ground_spans(head, GroundingInputs(words, objects, candidates), boxes, [[], []]) == [[], []]


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
    logits = head(GroundingInputs(words, objects, candidates), spans, span_mask)
    assert torch.equal(logits, head(GroundingInputs(words.contiguous(), objects, candidates), spans, span_mask))


def test_a_batch_without_entities_gives_no_logits_and_no_loss():
    # Tweets without names: a whole batch of them happens in training (it crashed allennlp-light's span check).
    head = _head()
    words, objects = torch.randn(3, 5, 6, requires_grad=True), torch.randn(3, 2, 6)
    spans, span_mask = spans_tensor([[], [], []])
    assert spans.shape == (3, 0, 2)
    logits = head(GroundingInputs(words, objects, torch.ones(3, 2, dtype=torch.bool)), spans, span_mask)
    assert logits.shape == (3, 0, 3)
    loss = EntityGrounding.loss(logits, torch.zeros(3, 0, 3, dtype=torch.bool), span_mask)
    assert loss.item() == 0.0
    assert head.decode(logits)[0].shape == (3, 0)


def _named_head(dropout: float = 0.0) -> EntityGrounding:
    torch.manual_seed(0)
    return EntityGrounding(input_dim=6, projection_dim=4, name_projection_dim=3, name_dim=5, appearance_dim=7,
                           dropout=dropout)


def _named_inputs() -> GroundingInputs:
    torch.manual_seed(1)
    candidates = torch.tensor([[True, True, False], [True, True, True]])
    return GroundingInputs(torch.randn(2, 4, 6), torch.randn(2, 3, 6), candidates, torch.randn(2, 4, 5),
                           torch.randn(2, 3, 7))


def test_name_term_adds_the_names_projection_times_the_candidates_features():
    head = _named_head().eval()  # evaluation: the BatchNorm's running statistics (mean 0, variance 1 at first)
    assert head.uses_names and not _head().uses_names
    inputs = _named_inputs()
    spans, span_mask = spans_tensor([[(0, 2), (3, 4)], [(1, 3)]])
    logits = head(inputs, spans, span_mask)
    other_names = inputs.names + torch.randn_like(inputs.names)
    changed = head(inputs._replace(names=other_names), spans, span_mask)
    assert head.appearance_key is not None and head.name_query is not None
    keys = head.appearance_key(inputs.appearances / math.sqrt(1 + head.appearance_norm.eps))  # (2, 3, 3)
    for row, column, (start, end) in [(0, 0, (0, 2)), (0, 1, (3, 4)), (1, 0, (1, 3))]:
        # Only the name moves: the difference is (name query - other name query) . key / sqrt(3).
        shift = (head.name_query.weight @ (inputs.names[row, start:end].mean(0) - other_names[row, start:end].mean(0)))
        expected = keys[row] @ shift / math.sqrt(3)
        real = inputs.candidates[row]
        assert torch.allclose((logits - changed)[row, column, :3][real], expected[real], atol=1e-5)
        assert logits[row, column, 3] == changed[row, column, 3]  # "none" does not read the name
    # An entity's score reads its own words' names only.
    outside = inputs.names.clone()
    outside[0, 2] += 5.0
    assert torch.equal(head(inputs._replace(names=outside), spans, span_mask)[0], logits[0])


def test_name_term_standardises_over_real_candidates_only():
    head = _named_head().train()
    inputs = _named_inputs()
    spans, span_mask = spans_tensor([[(0, 2)], [(1, 3)]])
    logits = head(inputs, spans, span_mask)
    appearances = inputs.appearances.clone()
    appearances[0, 2] += 100.0  # not a candidate: neither scored nor in the batch statistics
    assert torch.allclose(head(inputs._replace(appearances=appearances), spans, span_mask), logits, atol=1e-6)


def test_name_loss_contrasts_each_name_with_the_right_candidates_of_the_batch_by_hand():
    head = _named_head().eval()
    inputs = _named_inputs()
    names = inputs.names.clone()
    names[1, 1:3] = names[0, 0:2]  # tweet 2's entity has tweet 1's first name
    inputs = inputs._replace(names=names)
    spans, span_mask = spans_tensor([[(0, 2), (3, 4), (2, 3)], [(1, 3)]])
    targets = torch.zeros(2, 3, 4, dtype=torch.bool)
    targets[0, 0, 1] = targets[0, 1, 0] = targets[1, 0, 2] = True
    targets[0, 2, 3] = True  # not groundable: left out
    assert head.name_query is not None and head.appearance_key is not None
    queries = head.name_query(torch.stack([names[0, 0:2].mean(0), names[0, 3], names[1, 1:3].mean(0)]))
    keys = head.appearance_key(torch.stack([inputs.appearances[0, 1], inputs.appearances[0, 0],
                                            inputs.appearances[1, 2]]) / math.sqrt(1 + head.appearance_norm.eps))
    probabilities = torch.softmax(queries @ keys.T / math.sqrt(3), dim=-1)
    # Entities 1 and 3 share a name: each counts the other's candidate as right too.
    expected = -(torch.log(probabilities[0, 0] + probabilities[0, 2]) + torch.log(probabilities[1, 1])
                 + torch.log(probabilities[2, 0] + probabilities[2, 2])) / 3
    assert head.name_loss(inputs, spans, span_mask, targets).item() == pytest.approx(expected.item(), rel=1e-5)
    assert head.name_loss(inputs, spans, span_mask, torch.zeros_like(targets)).item() == 0.0
    assert _head().name_loss(inputs, spans, span_mask, targets).item() == 0.0  # no name term


def test_name_term_settings_are_configuration_errors():
    with pytest.raises(ConfigurationError, match="name_dim and appearance_dim"):
        EntityGrounding(input_dim=4, name_projection_dim=8)
    with pytest.raises(ConfigurationError, match="name_projection_dim"):
        EntityGrounding(input_dim=4, name_projection_dim=-1)
    head = _named_head()
    spans, span_mask = spans_tensor([[(0, 1)]])
    with pytest.raises(ConfigurationError, match="out of context"):
        head(GroundingInputs(torch.randn(1, 2, 6), torch.randn(1, 1, 6), torch.ones(1, 1, dtype=torch.bool)),
             spans, span_mask)


def test_name_term_trains_on_a_batch_of_one_candidate():
    # BatchNorm cannot standardise one value in training: the running statistics do.
    head = _named_head().train()
    inputs = _named_inputs()
    inputs = inputs._replace(candidates=torch.tensor([[True, False, False], [False, False, False]]))
    spans, span_mask = spans_tensor([[(0, 2)], [(1, 3)]])
    logits = head(inputs, spans, span_mask)
    head.eval()
    assert torch.allclose(logits, head(inputs, spans, span_mask))
