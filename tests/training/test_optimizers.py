import pytest
import torch
from tango.common import Lazy, Params
from tango.common.exceptions import ConfigurationError
from tango.integrations.torch import LRScheduler

from fmit_plugin.training.optimizers import build_optimizer, make_parameter_groups


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.text_field_embedder = torch.nn.Linear(2, 2)
        self.head = torch.nn.Linear(2, 2)
        self.frozen = torch.nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def test_parameter_groups_give_pretrained_weights_their_own_learning_rate():
    model = _Tiny()
    optimizer = build_optimizer(
        Params({"type": "adam", "lr": 2e-4, "parameter_groups": [[["^text_field_embedder\\."], {"lr": 5e-5}]]}),
        model,
    )
    assert isinstance(optimizer, torch.optim.Adam)
    groups = optimizer.param_groups
    assert [g["lr"] for g in groups] == [5e-5, 2e-4]
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in model.text_field_embedder.parameters()}
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model.head.parameters()}


def test_unmatched_or_malformed_groups_are_errors():
    named = list(_Tiny().named_parameters())
    with pytest.raises(ConfigurationError, match="match no trainable parameter"):
        make_parameter_groups(named, [[["^text_embedder"], {"lr": 1.0}]])
    with pytest.raises(ConfigurationError, match="must be"):
        make_parameter_groups(named, [["^head", {"lr": 1.0}, 3]])


def test_linear_warmup_rises_then_decays_to_zero():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    scheduler = Lazy(LRScheduler, Params({"type": "linear_with_warmup", "warmup_steps": 4})).construct(
        optimizer=optimizer, num_epochs=2, num_steps_per_epoch=6
    )
    rates = []
    for _ in range(12):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[:5] == sorted(rates[:5]) and rates[4] == pytest.approx(1.0)
    assert rates[4:] == sorted(rates[4:], reverse=True) and rates[-1] < 0.2
