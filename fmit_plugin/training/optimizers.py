"""
Optimizers and schedulers. tango registers every torch optimizer ("torch::Adam") and scheduler;
here we add AllenNLP's short names, `parameter_groups`, and a linear warm-up schedule.
"""
import logging
import re
from typing import Any, Optional

import torch
from tango.common import Params
from tango.common.exceptions import ConfigurationError
from tango.integrations.torch import LRScheduler, Optimizer

logger = logging.getLogger(__name__)

# AllenNLP's names for the optimizers its configs use.
for _name, _cls in {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
                    "huggingface_adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}.items():
    if _name not in Optimizer.list_available():
        Optimizer.register(_name)(_cls)


def make_parameter_groups(
    model_parameters: list[tuple[str, torch.nn.Parameter]],
    groups: Optional[list[Any]] = None,
) -> list[dict[str, Any]]:
    """
    AllenNLP's `parameter_groups`: `[[["regex", ...], {"lr": 5e-5}], ...]`. A parameter joins the
    first group one of whose regexes matches its name (`re.search`); the rest form a last group
    with the optimizer's defaults. Frozen parameters are left out. A regex that matches nothing
    is an error, so a typo cannot silently give pretrained weights the wrong learning rate.
    """
    trainable = [(name, p) for name, p in model_parameters if p.requires_grad]
    if not groups:
        return [{"params": [p for _, p in trainable]}]
    parsed: list[tuple[list[str], dict[str, Any]]] = []
    for group in groups:
        if not (isinstance(group, (list, tuple)) and len(group) == 2 and isinstance(group[1], dict)):
            raise ConfigurationError(
                f"Each parameter group must be [[regex, ...], {{options}}], got {group!r}"
            )
        parsed.append((list(group[0]), dict(group[1])))
    buckets: list[list[torch.nn.Parameter]] = [[] for _ in range(len(parsed) + 1)]
    used: set[str] = set()
    for name, parameter in trainable:
        for index, (regexes, _) in enumerate(parsed):
            hit = next((regex for regex in regexes if re.search(regex, name)), None)
            if hit is not None:
                buckets[index].append(parameter)
                used.add(hit)
                break
        else:
            buckets[-1].append(parameter)
    unused = [regex for regexes, _ in parsed for regex in regexes if regex not in used]
    if unused:
        raise ConfigurationError(f"parameter_groups regexes match no trainable parameter: {unused}")
    result = [{"params": params, **options} for params, (_, options) in zip(buckets, parsed)]
    result.append({"params": buckets[-1]})
    for index, group in enumerate(result):
        logger.info("Parameter group %d: %d tensors, options %s", index, len(group["params"]),
                    {k: v for k, v in group.items() if k != "params"})
    return [group for group in result if group["params"]]


def build_optimizer(config: dict[str, Any], model: torch.nn.Module) -> torch.optim.Optimizer:
    """An `Optimizer` from its config dict, `parameter_groups` included."""
    options = _plain(config)
    groups = options.pop("parameter_groups", None)
    return Optimizer.from_params(Params(options), params=make_parameter_groups(list(model.named_parameters()), groups))


def _plain(value: Any) -> Any:
    """A deep copy with tango `Params` made plain (Params re-wraps dicts nested in lists)."""
    if isinstance(value, Params):
        return _plain(value.as_dict(quiet=True))
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


@LRScheduler.register("linear_with_warmup")
class LinearWithWarmup(torch.optim.lr_scheduler.LambdaLR):
    """
    Learning rate rises linearly from 0 over `warmup_steps` optimizer steps, then falls linearly
    to 0 at the end of training (transformers' usual schedule). Steps once per optimizer step.

    Registered as a `LRScheduler` with name "linear_with_warmup".
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        num_epochs: int,
        num_steps_per_epoch: int,
        warmup_steps: int = 100,
        last_epoch: int = -1,
    ) -> None:
        total = max(1, num_epochs * num_steps_per_epoch)

        def factor(step: int) -> float:
            if step < warmup_steps:
                return (step + 1) / (warmup_steps + 1)
            return max(0.0, (total - step) / max(1, total - warmup_steps))

        super().__init__(optimizer, factor, last_epoch=last_epoch)
