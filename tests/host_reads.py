"""Counting the places where code reads a tensor's value back into Python: on an accelerator each
such read makes the host wait for every queued kernel."""
from typing import Any

from torch.overrides import TorchFunctionMode

READS = frozenset({"item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__"})


class HostReads(TorchFunctionMode):
    """Records the name of every tensor read (`item`, `tolist`, `bool(t)`, `float(t)`, ...) made
    inside the `with` block, in order, in `seen`."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = getattr(func, "__name__", "")
        if name in READS:
            self.seen.append(name)
        return func(*args, **(kwargs or {}))
