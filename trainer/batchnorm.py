"""BatchNorm's two kinds of statistics, kept apart where domains differ: a training-mode
BatchNorm normalises with its batch's statistics and updates running ones, which evaluation
then uses."""

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def batchnorms(model: nn.Module) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm)]


@contextmanager
def running_statistics_kept(model: nn.Module) -> Iterator[None]:
    """BatchNorm normalises with the batch's own statistics and leaves its running ones as
    they are (without tracking, a training-mode BatchNorm neither reads nor updates them)."""
    norms = batchnorms(model)
    for norm in norms:
        norm.track_running_stats = False
    try:
        yield
    finally:
        for norm in norms:
            norm.track_running_stats = True


def even_batches(x: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, ...]:
    """`x` in batches of at most `batch_size`, as even as can be: none of a single example,
    which a training-mode BatchNorm cannot normalise (unless `x` is one)."""
    return torch.tensor_split(x, math.ceil(len(x) / batch_size))
