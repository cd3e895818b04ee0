"""Thin call adapters: JSON-friendly signatures for benchmark functions that take objects.

The runner passes parameters to a worker process as JSON, so a function that wants, e.g., a
:class:`~pillar_rerank.config.LeaPRRConfig` is called through an adapter that builds it from a dict.
"""

from __future__ import annotations

from typing import Any


def leaprr_rerank_speed(*, config: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    """``benchmarks.bench_rerank.run`` with ``config`` given as LeaPRRConfig fields."""
    from benchmarks.bench_rerank import run
    from pillar_rerank.config import LeaPRRConfig

    return run(config=LeaPRRConfig.from_dict(config or {}), **kwargs)


def leaprr_accuracy(
    *,
    protocol: str,
    seed: int = 0,
    config: dict[str, Any] | None = None,
    normalize: str | None = None,
    normalize_params: dict[str, Any] | str | None = None,
    root: str | None = None,
) -> dict[str, Any]:
    """``benchmarks.leaprr_accuracy.run`` for one protocol and one seed.

    ``config`` overrides fields of the module's reduced CPU configuration. With ``normalize``, the
    scores pass through that training-free method first (composition); ``normalize_params="tuned"``
    picks its parameters per direction with :func:`pillar_rerank.baselines.tuning.tune` on
    ``coco1k_dev`` (never an evaluated item), and the choice is returned with the figures.
    """
    from benchmarks.leaprr_accuracy import REDUCED, run
    from pillar_rerank.config import LeaPRRConfig

    chosen: dict[str, Any] = {}
    if normalize is not None:
        if normalize_params == "tuned":
            from pillar_rerank.baselines.tuning import tune
            from pillar_rerank.datasets import load_coco_proxy

            tuned = tune(normalize, load_coco_proxy("coco1k_dev", root), seed=0)
            chosen = {"i2t": dict(tuned.best_params_i2t), "t2i": dict(tuned.best_params_t2i)}
        else:
            chosen = dict(normalize_params or {})
    fields = {**REDUCED, **(config or {}), "seed": seed, "normalize": normalize, "normalize_params": chosen}
    out = run(protocols=(protocol,), config=LeaPRRConfig.from_dict(fields), root=root)
    out.update({"protocol": protocol, "seed": seed, "normalize": normalize, "normalize_params": chosen})
    return out
