"""One seed for every random number generator a run uses."""
import random

import numpy
import torch


def set_seed(seed: int) -> None:
    """Seeds Python's, NumPy's and torch's generators (all devices)."""
    random.seed(seed)
    numpy.random.seed(seed)
    torch.manual_seed(seed)
