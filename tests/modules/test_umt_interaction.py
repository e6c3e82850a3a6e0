import functools

import pytest
import torch
from allennlp_light.modules.seq2seq_encoders import Seq2SeqEncoder
from tango.common import Params
from tango.common.exceptions import ConfigurationError

from fmit_plugin.modules import umt_interaction
from fmit_plugin.modules.flat_lattice import build_flat_lattice
from fmit_plugin.modules.umt_interaction import UmtInteraction
from tests.host_reads import HostReads

DIM = 8


def _module(**kwargs) -> UmtInteraction:
    torch.manual_seed(0)
    config = {"input_dim": DIM, "hidden_dim": 12, "num_attention_heads": 2, "feedforward_hidden_dim": 16,
              "dropout_prob": 0.0}
    config.update(kwargs)
    return UmtInteraction(**config).double().eval()


def _lattice(extra_padding_objects: int = 0, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    words = torch.randn(2, 4, DIM, generator=generator, dtype=torch.double)
    word_mask = torch.tensor([[True] * 4, [True, True, False, False]])
    objects = torch.randn(2, 3, DIM, generator=generator, dtype=torch.double)
    objects = torch.cat([objects, torch.randn(2, extra_padding_objects, DIM, dtype=torch.double)], dim=1)
    object_mask = torch.tensor([[True, True, True], [True, False, False]])
    object_mask = torch.cat([object_mask, torch.zeros(2, extra_padding_objects, dtype=torch.bool)], dim=1)
    spans = torch.zeros(2, 3 + extra_padding_objects, 2, dtype=torch.long)
    cls, sep = torch.ones(DIM, dtype=torch.double), -torch.ones(DIM, dtype=torch.double)
    return build_flat_lattice(words, word_mask, objects, object_mask, spans, cls, sep)


def _encode(module, lattice):
    return module(lattice.embeddings, lattice.mask, visual_mask=lattice.object_cell_mask())


def test_shapes_dimensions_and_cells():
    module, lattice = _module(), _lattice()
    encoded = _encode(module, lattice)
    assert encoded.shape == lattice.embeddings.shape == (2, 9, DIM)
    assert module.get_input_dim() == module.get_output_dim() == DIM
    assert torch.isfinite(encoded).all()
    assert (encoded[~lattice.mask] == 0).all()
    # Object cells come back as given; text cells are transformed.
    objects = lattice.object_cell_mask()
    assert torch.equal(encoded[objects], lattice.embeddings[objects])
    text = lattice.mask & ~objects
    assert not torch.allclose(encoded[text], lattice.embeddings[text])


def test_padding_objects_and_cells_do_not_change_word_outputs():
    module = _module()
    lattice = _lattice()
    words = lattice.word_outputs(_encode(module, lattice))
    padded = _lattice(extra_padding_objects=2)
    assert torch.allclose(padded.word_outputs(_encode(module, padded)), words, atol=1e-10)
    # Extra padding cells at the end of the lattice, with garbage in them.
    embeddings = torch.cat([lattice.embeddings, torch.randn(2, 3, DIM, dtype=torch.double)], dim=1)
    mask = torch.cat([lattice.mask, torch.zeros(2, 3, dtype=torch.bool)], dim=1)
    visual = torch.cat([lattice.object_cell_mask(), torch.ones(2, 3, dtype=torch.bool)], dim=1)
    assert torch.allclose(module(embeddings, mask, visual_mask=visual)[:, :9], _encode(module, lattice), atol=1e-10)
    # An example is encoded as it would be alone.
    alone = module(lattice.embeddings[1:, :7], lattice.mask[1:, :7], visual_mask=lattice.object_cell_mask()[1:, :7])
    assert torch.allclose(alone, _encode(module, lattice)[1:, :7], atol=1e-10)


def test_word_outputs_depend_on_the_objects():
    module, lattice = _module(), _lattice()
    encoded = _encode(module, lattice)
    objects = lattice.object_cell_mask()
    changed = lattice.embeddings + objects.unsqueeze(-1) * torch.randn_like(lattice.embeddings)
    other = module(changed, lattice.mask, visual_mask=objects)
    assert not torch.allclose(lattice.word_outputs(other), lattice.word_outputs(encoded))


def test_without_visual_cells_the_text_is_still_encoded():
    module, lattice = _module(), _lattice()
    for visual_mask in (None, torch.zeros_like(lattice.mask)):
        encoded = module(lattice.embeddings, lattice.mask, visual_mask=visual_mask)
        assert torch.isfinite(encoded).all()
        assert (encoded[~lattice.mask] == 0).all()


def test_gradients_reach_the_gate_and_every_attention():
    module = _module(dropout_prob=0.1).train()
    lattice = _lattice()
    embeddings = lattice.embeddings.clone().requires_grad_()
    encoded = module(embeddings, lattice.mask, visual_mask=lattice.object_cell_mask())
    lattice.word_outputs(encoded).pow(2).sum().backward()
    named = {
        "gate": module.gate.weight,
        "text self-attention": module.text_self_attention.self_attn.in_proj_weight,
        "text-to-image": module.text_to_image.attention.in_proj_weight,
        "image-to-text": module.image_to_text.attention.in_proj_weight,
        "text-to-text": module.text_to_text.attention.in_proj_weight,
        "visual keys": module.visual_key_projection.weight,
        "visual queries": module.visual_query_projection.weight,
        "output": module.output.weight,
    }
    for name, parameter in named.items():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    # Words are reached by the objects' inputs too.
    assert embeddings.grad[lattice.object_cell_mask()].abs().sum() > 0


def test_builds_from_params_with_umt_defaults():
    module = Seq2SeqEncoder.from_params(Params({"type": "umt_interaction", "input_dim": 512}))
    assert isinstance(module, UmtInteraction)
    assert module.get_input_dim() == 512 and module.hidden_dim == 768
    assert module.text_self_attention.self_attn.num_heads == 12
    same_width = _module(input_dim=12)
    assert isinstance(same_width.text_projection, torch.nn.Identity)
    with pytest.raises(ConfigurationError, match="divisible"):
        UmtInteraction(hidden_dim=10, num_attention_heads=3)


def test_packing_every_cell_as_on_an_accelerator_gives_the_same_outputs(monkeypatch):
    # Off the CPU the modalities are packed to the lattice length, not read back to the host.
    module, lattice = _module(), _lattice()
    exact = _encode(module, lattice)
    monkeypatch.setattr(umt_interaction, "_pack", functools.partial(umt_interaction._pack, read_size=False))
    with HostReads() as reads:
        bounded = _encode(module, lattice)
    assert reads.seen == []
    assert torch.allclose(bounded, exact, atol=1e-10)
