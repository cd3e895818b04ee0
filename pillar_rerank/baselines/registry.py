"""The baseline registry: names, construction with checked parameters, and the listing."""

from __future__ import annotations

from typing import Any

from pillar_rerank.baselines._common import TrainingFreeReranker
from pillar_rerank.baselines.dbnorm import DBNorm
from pillar_rerank.baselines.dsl import DualSoftmax
from pillar_rerank.baselines.gallery_bias import (
    CSLS,
    DN,
    NNN,
    DualBankSinkhorn,
    InvertedSoftmax,
    QBNorm,
    SinkhornNorm,
)
from pillar_rerank.baselines.k_reciprocal import KReciprocal
from pillar_rerank.baselines.mtfn_rr import MTFNRR
from pillar_rerank.exceptions import InvalidParameterError

BASELINES: dict[str, type[TrainingFreeReranker]] = {
    "inverted_softmax": InvertedSoftmax,
    "qb_norm": QBNorm,
    "nnn": NNN,
    "csls": CSLS,
    "dn": DN,
    "sinkhorn": SinkhornNorm,
    "dbsn": DualBankSinkhorn,
    "dbnorm": DBNorm,
    "dsl": DualSoftmax,
    "mtfn_rr": MTFNRR,
    "k_reciprocal": KReciprocal,
}


def _lookup(name: str) -> type[TrainingFreeReranker]:
    try:
        return BASELINES[name]
    except (KeyError, TypeError):
        raise InvalidParameterError(
            f"baseline: unknown method {name!r}; available: {', '.join(sorted(BASELINES))}."
        ) from None


def get_baseline(name: str, **params: Any) -> TrainingFreeReranker:
    """Build the method ``name`` with ``params``, checked against its parameter table.

    Unknown names and unknown or out-of-range parameters raise
    :class:`~pillar_rerank.exceptions.InvalidParameterError`.
    """
    cls = _lookup(name)
    valid = cls._param_names()
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise InvalidParameterError(
            f"{cls.__name__} has no parameter {unknown[0]!r}; valid: {', '.join(valid)}."
        )
    method = cls(**params)
    method._validate_params()
    return method


def baseline_name(method: TrainingFreeReranker) -> str:
    """Registry name of a method instance (inverse of :func:`get_baseline`)."""
    for name, cls in BASELINES.items():
        if type(method) is cls:
            return name
    raise InvalidParameterError(f"{type(method).__name__} is not a registered baseline.")


def baseline_config(method: TrainingFreeReranker) -> dict[str, Any]:
    """JSON-able ``{"name": ..., "params": {...}}`` to save with a model (see :func:`from_config`)."""
    return {"name": baseline_name(method), "params": method.get_params()}


def from_config(config: dict[str, Any]) -> TrainingFreeReranker:
    """Rebuild a method saved with :func:`baseline_config`."""
    if not isinstance(config, dict) or "name" not in config:
        raise InvalidParameterError(
            f"baseline config: expected {{'name': ..., 'params': ...}}; got {config!r}."
        )
    return get_baseline(config["name"], **dict(config.get("params") or {}))


def describe(name: str) -> dict[str, Any]:
    """What ``rerank baseline --list`` prints for one method."""
    cls = _lookup(name)
    return {
        "name": name,
        "class": cls.__name__,
        "needs_bank": cls.needs_bank,
        "fit_inputs": list(cls.fit_inputs),
        "needs_intra_modal": cls.needs_intra_modal,
        "transductive": cls.transductive,
        "summary": cls.summary,
        "tuning_grid": dict(cls.tuning_grid),
    }
