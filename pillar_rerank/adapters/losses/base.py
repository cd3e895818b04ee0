"""Base class of the adapter losses (``pillar_rerank.adapters.losses``): shared checks, then the formula.

Not to be confused with LeaPRR's own training loss, ``pillar_rerank.losses`` (a separate module).

Every loss works on a square training-batch score matrix ``sims[i, j]`` = score of image ``i``
against text ``j`` (rows images, columns texts, positives on the diagonal) and an optional
``pos_mask`` marking further positives (another caption of the same image). A direction is
*one* function over a queries x gallery matrix: i2t is that function on ``(sims, pos_mask)``, t2i
the same function on ``(sims.T, pos_mask.T)``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from pillar_rerank._validation import validate_params
from pillar_rerank.exceptions import InvalidInputError


def check_sims(sims: Any, *, name: str = "sims", square: bool = True) -> Tensor:
    """Validate a score matrix tensor: 2-D, floating point, finite, square when required."""
    if not isinstance(sims, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor; got {type(sims).__name__}.")
    if sims.ndim != 2:
        raise InvalidInputError(
            f"{name}: expected a 2-D tensor of shape (n_images, n_texts); got shape {tuple(sims.shape)}."
        )
    if not sims.is_floating_point():
        raise InvalidInputError(f"{name}: expected a floating-point tensor; got dtype {sims.dtype}.")
    if square and sims.shape[0] != sims.shape[1]:
        raise InvalidInputError(
            f"{name}: expected a square batch matrix (positives on the diagonal); "
            f"got shape {tuple(sims.shape)}."
        )
    if sims.numel() == 0:
        raise InvalidInputError(f"{name}: expected a non-empty matrix; got shape {tuple(sims.shape)}.")
    return sims


def check_pos_mask(pos_mask: Tensor | None, sims: Tensor, *, name: str = "pos_mask") -> Tensor | None:
    """``None`` or a boolean tensor of ``sims``'s shape, moved to ``sims``'s device."""
    if pos_mask is None:
        return None
    if not isinstance(pos_mask, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor or None; got {type(pos_mask).__name__}.")
    if tuple(pos_mask.shape) != tuple(sims.shape):
        raise InvalidInputError(
            f"{name}: expected shape {tuple(sims.shape)} (that of sims); got {tuple(pos_mask.shape)}."
        )
    return pos_mask.to(device=sims.device, dtype=torch.bool)


def transpose_or_none(mask: Tensor | None) -> Tensor | None:
    return None if mask is None else mask.transpose(0, 1)


class CheckedParams:
    """``_check_params()``: validate the stored constructor parameters against
    ``_parameter_constraints`` (every adapter loss calls it at the end of ``__init__``)."""

    _parameter_constraints: ClassVar[dict[str, Any]] = {}

    def _check_params(self) -> None:
        validate_params(
            {name: getattr(self, name) for name in self._parameter_constraints},
            self._parameter_constraints,
            owner=type(self).__name__,
        )


class BaseScoreLoss(CheckedParams, torch.nn.Module):
    """``forward(sims, *, pos_mask=None, **batch) -> scalar``; subclasses implement ``compute_loss``.

    The base class does the common work once, as pytorch-metric-learning's
    ``BaseMetricLossFunction``: it resets ``last_stats``, checks ``sims`` (2-D, floating point,
    non-empty; square unless the class sets ``square = False``), checks ``pos_mask`` and every
    per-batch matrix named in ``matrix_inputs`` (same shape as ``sims``; moved to its dtype and
    device), and only then calls the formula. Constructors store their parameters and call
    :meth:`_check_params`, which validates them against ``_parameter_constraints``.

    ``last_stats`` holds detached diagnostics of the last call (e.g. the two directions' terms).
    """

    #: extra per-batch inputs the trainer must provide (e.g. ``"relevance"``)
    requires: ClassVar[tuple[str, ...]] = ()
    #: per-batch inputs that are matrices of ``sims``'s shape (checked and converted)
    matrix_inputs: ClassVar[tuple[str, ...]] = ()
    #: whether ``sims`` must be a square training-batch matrix (positives on the diagonal)
    square: ClassVar[bool] = True

    def __init__(self) -> None:
        super().__init__()
        self.last_stats: dict[str, float] = {}

    def forward(self, sims: Tensor, *, pos_mask: Tensor | None = None, **batch: Any) -> Tensor:
        self.last_stats = {}
        sims = check_sims(sims, square=self.square)
        pos_mask = check_pos_mask(pos_mask, sims)
        for name in self.requires:
            if batch.get(name) is None:
                raise InvalidInputError(f"{type(self).__name__} needs {name}= (see its docstring).")
        for name in self.matrix_inputs:
            value = check_sims(batch[name], name=name, square=self.square)
            if tuple(value.shape) != tuple(sims.shape):
                raise InvalidInputError(
                    f"{name}: expected shape {tuple(sims.shape)} (that of sims); got {tuple(value.shape)}."
                )
            batch[name] = value.to(dtype=sims.dtype, device=sims.device)
        return self.compute_loss(sims, pos_mask=pos_mask, **batch)

    def compute_loss(
        self, sims: Tensor, *, pos_mask: Tensor | None, **batch: Any
    ) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={getattr(self, k)!r}" for k in self._parameter_constraints)
