"""COCO 5K with extended ground truth, plus the diagnostics the report plots.

On ``coco5k_test`` of the caption proxy, for the base scores and every registered training-free
method at its defaults and tuned, this measures R@1/5/10 both ways and RSUM, ECCV Caption
mAP@R and R-Precision (Chun et al., 2022) and CxC-graded NDCG@10 (Parekh et al., 2021), and
records the recall@K curves, the rank change of the true match against the base and the
hubness of the top-10 lists.

Protocol: banks are ``coco1k_dev`` against the test gallery (from embeddings); tuning is
:func:`pillar_rerank.baselines.tuning.tune` on ``coco1k_dev`` alone (split by items), with the same
seed as ``benchmarks.baselines_accuracy`` so both pick the same parameters. Nothing is fitted on
the evaluated queries; transductive methods are grouped apart. Saved LeaPRR models (directories
written by :meth:`PillarReranker.save`) can be added with ``leaprr_models``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from pillar_rerank.report.diagnostics import diagnose, diagnostics_payload
from pillar_rerank.report.tables import Table

logger = logging.getLogger(__name__)
PROTOCOL = (
    "Banks: coco1k_dev against the test gallery, from embeddings. Tuning: on coco1k_dev alone (split "
    "by items, same seed as the baselines benchmark, so both pick the same parameters). Nothing is "
    "fitted on the evaluated queries; transductive methods are grouped apart."
)
METRICS = (
    "i2t_R@1",
    "i2t_R@5",
    "i2t_R@10",
    "t2i_R@1",
    "t2i_R@5",
    "t2i_R@10",
    "RSUM",
    "i2t_mAP@R",
    "t2i_mAP@R",
    "i2t_R-P",
    "t2i_R-P",
    "i2t_NDCG@10",
    "t2i_NDCG@10",
)


def extended_ground_truth(data_root: str | None = None) -> tuple[dict, dict]:
    """ECCV Caption positives and CxC graded gains for the rows and columns of ``coco5k_test``."""
    from pillar_rerank.datasets import coco_proxy_ids, load_cxc_graded, load_eccv_positives

    image_ids, caption_ids = coco_proxy_ids("coco5k_test", data_root)
    eccv = load_eccv_positives(image_ids, caption_ids, kind="eccv", root=data_root)
    return eccv, load_cxc_graded(image_ids, caption_ids, root=data_root)


def run(
    *,
    data_root: str | None = None,
    methods: list[str] | None = None,
    tuned: bool = True,
    leaprr_models: list[str] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure every method on COCO 5K with the extended metrics; see the module docstring."""
    from pillar_rerank.baselines import BASELINES, apply_both, bank_from_embeddings, describe, get_baseline
    from pillar_rerank.baselines.tuning import tune
    from pillar_rerank.datasets import load_coco_proxy
    from pillar_rerank.metrics.evaluate import evaluate

    dev = load_coco_proxy("coco1k_dev", data_root)
    test = load_coco_proxy("coco5k_test", data_root)
    test = test.with_scores(test.similarity())
    eccv, cxc = extended_ground_truth(data_root)
    bank = bank_from_embeddings(dev, test)

    rows: list[dict[str, Any]] = []
    diags = []

    def measure(
        name: str, setting: str, group: str, out, params: dict | None, seconds: float, *, plot: bool = True
    ) -> None:
        metrics = evaluate(out, metrics=list(METRICS), positives=eccv, graded=cxc)
        rows.append(
            {
                "method": name,
                "setting": setting,
                "group": group,
                "params": params,
                "seconds": seconds,
                **metrics,
            }
        )
        if plot:  # one curve per method (its tuned setting when there is one) keeps plots legible
            diags.append(
                diagnose(
                    out.scores,
                    out.relevance,
                    name=f"{name} ({setting})" if setting else name,
                    group=group,
                    t2i_scores=out.t2i_scores,
                )
            )
        logger.info("%s %s: RSUM %.2f", name, setting, metrics["RSUM"])

    measure("base", "", "base", test, None, 0.0)
    for name in methods or list(BASELINES):
        group = "transductive" if describe(name)["transductive"] else "training-free"
        settings = [("defaults", {})]
        if tuned and describe(name)["tuning_grid"]:
            settings.append(("tuned", tune(name, dev, seed=seed).best_params))
        for setting, params in settings:
            t0 = time.perf_counter()
            out = apply_both(get_baseline(name, **params), test, bank)
            measure(
                name, setting, group, out, params, time.perf_counter() - t0, plot=setting == settings[-1][0]
            )
    for path in leaprr_models or []:
        from pillar_rerank.reranker import PillarReranker

        model = PillarReranker.load(path)
        t0 = time.perf_counter()
        scores = model.rerank(test)
        out = test.with_scores(np.asarray(scores, dtype=np.float32))
        measure(f"LeaPRR [{path}]", "", "learned", out, model.get_params(), time.perf_counter() - t0)
    return {
        "dataset": "COCO 5K caption proxy (5000 x 20,000)",
        "rows": rows,
        "diagnostics": diagnostics_payload(diags, dataset="COCO 5K proxy"),
        "protocol": PROTOCOL,
    }


def headline_table(rows: list[dict[str, Any]]) -> Table:
    """Base, the best training-free and transductive methods (by RSUM) and every LeaPRR model."""
    picked = [r for r in rows if r["group"] in ("base", "learned")]
    for group in ("training-free", "transductive"):
        cands = [r for r in rows if r["group"] == group]
        if cands:
            picked.append(max(cands, key=lambda r: r["RSUM"]))
    order = {"base": 0, "training-free": 1, "learned": 2, "transductive": 3}
    base = next((r["RSUM"] for r in rows if r["group"] == "base"), None)
    records = [
        {
            "method": r["method"] + (f" ({r['setting']})" if r["setting"] else ""),
            "group": r["group"],
            "RSUM": r["RSUM"],
            "ΔRSUM": None if base is None else r["RSUM"] - base,
            **{k.replace("_", " "): r[k] for k in ("i2t_mAP@R", "t2i_mAP@R", "i2t_NDCG@10", "t2i_NDCG@10")},
        }
        for r in sorted(picked, key=lambda r: order.get(r["group"], 9))
    ]
    return Table.from_records(
        "COCO 5K proxy, extended ground truth: base and best methods",
        records,
        headline=True,
        notes="Best = highest RSUM in its group (defaults or tuned on coco1k_dev). mAP@R: ECCV Caption "
        "positives; NDCG@10: CxC ratings.",
    )


def summarize(runs: list[dict[str, Any]], bench: Any) -> dict[str, Any]:
    """Extended-metric table (groups in order: base, training-free, learned, transductive)."""
    figures = runs[0]["figures"]
    order = {"base": 0, "training-free": 1, "learned": 2, "transductive": 3}
    records = []
    for r in sorted(figures["rows"], key=lambda r: order.get(r["group"], 9)):
        rec = {"group": r["group"], "method": r["method"], "setting": r["setting"] or "–"}
        rec.update({k.replace("_", " "): r[k] for k in METRICS})
        records.append(rec)
    table = Table.from_records(
        "COCO 5K proxy: recall, ECCV Caption mAP@R / R-Precision, CxC NDCG@10",
        records,
        notes="mAP@R and R-P use the ECCV Caption positives, NDCG@10 the CxC human ratings (graded); "
        "tuned = parameters chosen on coco1k_dev only; transductive methods read all test queries "
        "at once and are not comparable with the others.",
    )
    return {
        "tables": [headline_table(figures["rows"]).to_dict(), table.to_dict()],
        "notes": [figures["protocol"]],
    }
