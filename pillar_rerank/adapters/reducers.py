"""How per-tuple loss values become one scalar (pytorch-metric-learning's reducer axis).

A reducer takes the per-tuple losses and an optional boolean mask of the tuples that count. With
no valid tuple it returns a zero that is still connected to the autograd graph, so an empty batch
never crashes and never detaches.
"""

from __future__ import annotations

import torch
from torch import Tensor


class BaseReducer(torch.nn.Module):
    """``forward(losses, mask=None) -> scalar``."""

    def forward(self, losses: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is not None:
            if not bool(mask.any()):
                return losses.sum() * 0.0
            losses = losses[mask]
        if losses.numel() == 0:
            return losses.sum() * 0.0
        return self.reduce(losses)

    def reduce(self, losses: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class MeanReducer(BaseReducer):
    """Mean over the valid tuples."""

    def reduce(self, losses: Tensor) -> Tensor:
        return losses.mean()


class SumReducer(BaseReducer):
    """Sum over the valid tuples."""

    def reduce(self, losses: Tensor) -> Tensor:
        return losses.sum()


REDUCERS = {"mean": MeanReducer, "sum": SumReducer}


def get_reducer(reduction: str | BaseReducer) -> BaseReducer:
    """A reducer object from ``"mean"``/``"sum"`` or an existing reducer."""
    from pillar_rerank.exceptions import InvalidParameterError

    if isinstance(reduction, BaseReducer):
        return reduction
    if reduction not in REDUCERS:
        raise InvalidParameterError(
            f"The 'reduction' parameter must be one of {sorted(REDUCERS)!r}; got {reduction!r} instead."
        )
    return REDUCERS[reduction]()
