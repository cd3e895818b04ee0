"""The smoke suite: tiny synthetic benchmarks that exercise the whole pipeline in seconds.

Accuracy figures on synthetic data say nothing about the methods; the suite checks that the
runner, the result schema, the tables and the report work end to end (CI runs it).
"""

from __future__ import annotations

import logging
from typing import Any

from benchmarks import synthetic
from pillar_rerank.metrics import recall_metrics
from pillar_rerank.report.diagnostics import diagnose, diagnostics_payload

logger = logging.getLogger(__name__)


def accuracy(
    *, n_images: int = 150, captions_per_image: int = 4, dim: int = 24, seed: int = 0
) -> dict[str, Any]:
    """Base scores and every registered training-free method at its defaults, on synthetic data.

    The bank (for methods that need one) is a second synthetic set from another seed, never the
    test queries. A method that fails is recorded under ``errors`` and the others still run.
    """
    test = synthetic.retrieval_set(n_images, captions_per_image, dim, seed=seed, name="test")
    results = [diagnose(test.scores, test.relevance, name="base", group="base")]
    metrics = {"base": recall_metrics(test.scores, test.relevance)}
    errors: dict[str, str] = {}
    try:
        from pillar_rerank.baselines import BASELINES, apply_both, bank_from_embeddings, get_baseline
    except ImportError as exc:
        errors["baselines"] = f"not importable: {exc}"
        BASELINES = {}
    if BASELINES:
        train = synthetic.retrieval_set(n_images, captions_per_image, dim, seed=seed + 1, name="bank")
        bank = bank_from_embeddings(train, test)
        for name, cls in BASELINES.items():
            try:
                out = apply_both(get_baseline(name), test, bank)
            except Exception as exc:  # noqa: BLE001 - recorded; the smoke run covers the others
                errors[name] = f"{type(exc).__name__}: {exc}"
                logger.warning("smoke: %s failed: %s", name, exc)
                continue
            group = "transductive" if getattr(cls, "transductive", False) else "training-free"
            results.append(
                diagnose(out.scores, out.relevance, name=name, group=group, t2i_scores=out.t2i_scores)
            )
            metrics[name] = recall_metrics(out.scores, out.relevance, t2i_scores=out.t2i_scores)
    return {
        "dataset": f"synthetic {n_images} x {n_images * captions_per_image}, d={dim}",
        "metrics": metrics,
        "errors": errors,
        "diagnostics": diagnostics_payload(
            results, dataset=f"synthetic {n_images}x{n_images * captions_per_image}"
        ),
    }


def summarize_accuracy(runs: list[dict[str, Any]], bench: Any) -> dict[str, Any]:
    """Notes only: the runner keeps the run's diagnostics, whose recall table is the suite's table."""
    figures = runs[0]["figures"]
    notes = [f"{name} failed: {err}" for name, err in figures["errors"].items()]
    notes.append("Synthetic data: checks the pipeline, not the methods.")
    return {"tables": [], "notes": notes}
