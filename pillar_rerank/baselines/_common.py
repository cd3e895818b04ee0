"""Shared plumbing of the training-free methods: the base class, input checks, output assembly."""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np
import torch

from pillar_rerank._validation import Interval, check_float_matrix, check_int
from pillar_rerank.base import BaseReranker
from pillar_rerank.baselines._stream import check_scores_like
from pillar_rerank.exceptions import InvalidInputError
from pillar_rerank.utils.blocks import DEFAULT_BLOCK_BYTES
from pillar_rerank.utils.device import resolve_device

BLOCK_BYTES_RULE = Interval(int, 2**16, None)


class TrainingFreeReranker(BaseReranker):
    """Base of every method in :mod:`pillar_rerank.baselines`.

    Besides the flags of :class:`~pillar_rerank.base.BaseReranker`, a method declares:

    * ``fit_inputs``: the keyword arguments its ``fit`` takes (``bank``, ``bank_gallery``,
      ``gallery_bank``, ``query_intra``, ``gallery_intra``); :func:`apply_both` passes exactly these.
    * ``summary``: one line for ``rerank baseline --list``.
    * ``tuning_grid``: the main hyper-parameter(s) and the values ``rerank tune`` sweeps.
    """

    fit_inputs: ClassVar[tuple[str, ...]] = ()
    summary: ClassVar[str] = ""
    tuning_grid: ClassVar[dict[str, list[Any]]] = {}

    def _device(self) -> torch.device:
        return resolve_device(getattr(self, "device", None))

    def _budget(self) -> int:
        return int(getattr(self, "block_bytes", DEFAULT_BLOCK_BYTES))

    def _check_rerank_scores(self, scores: Any) -> np.ndarray:
        n_gallery = getattr(self, "n_gallery_in_", None)
        return check_float_matrix(scores, name=f"scores given to {type(self).__name__}.rerank",
                                  shape=(None, n_gallery))

    def _rerank_into(self, scores: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``rerank(scores)``, possibly written over ``out``: an array of ``scores``' shape and
        layout that the caller owns and will not read again (it may be ``scores``' own memory).

        For :func:`apply_both`, whose score matrix is its own product: the last direction re-ranks
        it in place, one matrix-sized allocation less. Methods that cannot write in place return
        ``rerank(scores)``.
        """
        return self.rerank(scores)

    def _require(self, value: Any, what: str, *, n_gallery: int | None = None,
                 n_rows: int | None = None) -> Any:
        if value is None:
            raise InvalidInputError(
                f"{type(self).__name__}.fit: needs {what}; got None (see `rerank baseline --list`)."
            )
        return check_scores_like(value, name=f"{what} given to {type(self).__name__}",
                                 n_gallery=n_gallery, n_rows=n_rows)

    def _check_bank_k(self, k: int, n_bank: int, name: str = "k") -> int:
        return check_int(k, name=name, owner=type(self).__name__, low=1, high=n_bank,
                         high_name="n_bank_queries")


def as_readonly_tensor(array: np.ndarray) -> torch.Tensor:
    """Wrap a (possibly read-only) array without a copy; the tensor is only read."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not writable.*", category=UserWarning)
        return torch.from_numpy(array)


def as_float32_copy(scores: np.ndarray) -> np.ndarray:
    """A new float32 array with the values of ``scores`` (never a view of the caller's data)."""
    return np.array(scores, dtype=np.float32, copy=True)
