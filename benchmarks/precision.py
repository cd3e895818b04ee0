"""fp32 against bf16 for a trained LeaPRR model on the COCO and Flickr30K caption proxies.

``precision="auto"`` picks bf16 where the hardware computes it natively (CUDA GPUs with bf16,
CPUs with AVX512-BF16 / AMX / Arm BF16; :func:`pillar_rerank.utils.device.resolve_precision`).
This benchmark measures what that costs in accuracy and gains in time, on one protocol of
:mod:`benchmarks.leaprr_accuracy`:

* **re-ranking**: one model trained in fp32 re-ranks the test side in fp32 and in bf16
  (same weights): RSUM of each, the largest score difference, and the re-rank times;
* **training**: a second model trained in bf16 (same seed and data) re-ranks in bf16: its RSUM
  and fit time against the fp32 model's.

``protocol="f30k"`` runs the same on the protocol of :mod:`benchmarks.leaprr_f30k` (the first
``train_items`` items of the cached ``f30k_train``, dev ``f30k_dev``, tests: its held-out last 1,000
items and COCO 5K), with the dev-chosen score fusion, each re-rank reported as all the rows of
that benchmark (overwrite, dev-chosen rules, ``rerank_both``). With ``require_cuda`` the point is
skipped on a machine without a CUDA GPU (the paper-size points: hours on a CPU).

On a CPU without native bf16 the bf16 runs are *emulated* (slower than fp32): the accuracy figures
still hold, the times do not; the result records which case it ran in. Run:
``python -m benchmarks run --suite accuracy --only leaprr_precision`` (``leaprr_precision_gpu``
for the paper-size points).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch


def _rsum(scores: np.ndarray, test) -> float:
    from pillar_rerank.metrics.recall import recall_metrics

    return round(float(recall_metrics(scores, test.relevance)["RSUM"]), 2)


def _hardware(device: torch.device) -> dict[str, Any]:
    """Where the run happened and what "auto" and "bf16" mean there."""
    from pillar_rerank.utils.device import cpu_has_native_bf16, resolve_precision

    return {"device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "cpu_native_bf16": cpu_has_native_bf16(),
            "auto_resolves_to": resolve_precision(device, "auto"),
            "bf16_emulated": device.type == "cpu" and not cpu_has_native_bf16(),
            "torch_threads": torch.get_num_threads()}


def _run_f30k(cfg, device: torch.device, train, dev, tests: dict[str, Any], *,
              train_bf16: bool) -> dict[str, Any]:
    """The F30K protocol: every re-rank as the rows of :mod:`benchmarks.leaprr_f30k`, per test set.

    ``tests[name][trained][rerank]`` holds the rows of the model trained in ``trained`` re-ranking
    in ``rerank`` precision; ``max_abs_score_diff`` compares the fp32 model's two one-matrix
    outputs on the first test set.
    """
    from benchmarks.leaprr_f30k import _leaprr_rows
    from pillar_rerank.reranker import PillarReranker

    bases = {name: _rsum(t.similarity(), t) for name, t in tests.items()}
    out: dict[str, Any] = {"protocol": "f30k", "config": cfg.to_dict(), **_hardware(device),
                           "train": [train.n_images, train.n_texts], "dev": [dev.n_images, dev.n_texts],
                           "tests": {name: {"base_rsum": b} for name, b in bases.items()}, "fit": {}}
    runs = [("fp32", ("fp32", "bf16"))] + ([("bf16", ("bf16",))] if train_bf16 else [])
    fit_s: dict[str, float] = {}
    for trained, precisions in runs:
        t0 = time.perf_counter()
        model = PillarReranker(cfg.replace(precision=trained)).fit(train, dev, verbose=False)
        fit_s[trained] = time.perf_counter() - t0
        out["fit"][trained] = {"s": round(fit_s[trained], 1),
                               "best_dev_rsum": model.history_.get("best_rsum"),
                               "fusion": model.fusion_}
        for precision in precisions:
            model.config_ = model.config_.replace(precision=precision)
            for name, test in tests.items():
                rows = _leaprr_rows(model, test, bases[name])
                out["tests"][name].setdefault(trained, {})[precision] = rows
        if trained == "fp32":
            first = next(iter(tests.values()))
            matrices = {}
            for precision in ("fp32", "bf16"):
                model.config_ = model.config_.replace(precision=precision)
                matrices[precision] = model.rerank(first)
            out["max_abs_score_diff"] = float(np.max(np.abs(matrices["bf16"] - matrices["fp32"])))
            del matrices
    if train_bf16:
        out["fit_bf16_over_fp32"] = round(fit_s["bf16"] / fit_s["fp32"], 3)
    return out


def run(*, protocol: str = "a", seed: int = 0, config: dict[str, Any] | None = None, root: str | None = None,
        train_bf16: bool = True, train_items: int = 4000, require_cuda: bool = False,
        cache: str | None = None, f30k_root: str | None = None) -> dict[str, Any]:
    """Train in fp32 (and bf16), re-rank in both precisions; RSUM, score differences and times.

    ``config`` overrides the reduced configuration of :mod:`benchmarks.leaprr_accuracy`;
    ``train_items``, ``cache`` and ``f30k_root`` are read by ``protocol="f30k"`` only.
    """
    from benchmarks import BenchmarkSkipped
    from benchmarks.leaprr_accuracy import REDUCED, protocol_sets
    from pillar_rerank.config import LeaPRRConfig
    from pillar_rerank.reranker import PillarReranker
    from pillar_rerank.utils.device import resolve_device

    if require_cuda and not torch.cuda.is_available():
        raise BenchmarkSkipped("needs a CUDA GPU (a paper-size point: hours of training on a CPU).")
    fields = {**REDUCED, **(config or {}), "seed": seed, "precision": "fp32"}
    if protocol == "f30k":
        from benchmarks.leaprr_f30k import load_sides

        train, dev, tests = load_sides(train_items=train_items, holdout=1000, cache=cache,
                                       f30k_root=f30k_root, coco_root=root)
        cfg = LeaPRRConfig.from_dict({**fields, "score_fusion": "zscore"})
        return _run_f30k(cfg, resolve_device(cfg.device), train, dev, tests, train_bf16=train_bf16)
    cfg = LeaPRRConfig.from_dict(fields)
    device = resolve_device(cfg.device)
    train, dev, test = protocol_sets(protocol, root)
    out: dict[str, Any] = {
        "protocol": protocol,
        "test": [test.n_images, test.n_texts],
        **_hardware(device),
        "base_rsum": _rsum(test.similarity(), test),
    }
    t0 = time.perf_counter()
    model = PillarReranker(cfg).fit(train, dev, verbose=False)
    fit_fp32_s = time.perf_counter() - t0
    out["fit_fp32_s"] = round(fit_fp32_s, 3)
    timed: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    for precision in ("fp32", "bf16"):
        # same trained weights, only the inference precision changes
        model.config_ = model.config_.replace(precision=precision)
        t0 = time.perf_counter()
        timed[precision] = model.rerank(test)
        seconds[precision] = time.perf_counter() - t0
        out[f"rerank_{precision}_s"] = round(seconds[precision], 3)
        out[f"rsum_{precision}"] = _rsum(timed[precision], test)
    # from the unrounded times: a tiny re-rank on a fast CPU takes a few milliseconds
    out["rerank_bf16_over_fp32"] = round(seconds["bf16"] / seconds["fp32"], 3)
    out["rsum_bf16_minus_fp32"] = round(out["rsum_bf16"] - out["rsum_fp32"], 2)
    out["max_abs_score_diff"] = float(np.max(np.abs(timed["bf16"] - timed["fp32"])))
    if train_bf16:
        t0 = time.perf_counter()
        half = PillarReranker(cfg.replace(precision="bf16")).fit(train, dev, verbose=False)
        fit_bf16_s = time.perf_counter() - t0
        out["fit_bf16_s"] = round(fit_bf16_s, 3)
        out["fit_bf16_over_fp32"] = round(fit_bf16_s / fit_fp32_s, 3)
        out["rsum_trained_bf16"] = _rsum(half.rerank(test), test)
        out["rsum_trained_bf16_minus_fp32"] = round(out["rsum_trained_bf16"] - out["rsum_fp32"], 2)
    return out


#: Rows of the F30K summary: (label, key of benchmarks.leaprr_f30k's rows).
F30K_ROWS = (("overwrite", "mean/overwrite"), ("rerank_both", "per_direction/chosen"))


def summarize_f30k(runs: list[dict[str, Any]], bench: Any) -> dict[str, Any]:
    """One row per (recipe, training precision, re-rank precision): RSUM on each test set under the
    paper's overwrite and with ``rerank_both``, fit and re-rank times."""
    from benchmarks.leaprr_f30k import TEST_NAMES
    from pillar_rerank.report.tables import Table

    records = []
    for r in runs:
        f = r["figures"]
        if f.get("protocol") != "f30k":
            continue
        cfg = f["config"]
        recipe = (f"{cfg['embed_dim']}/{cfg['num_heads']} heads, batch {cfg['batch_size']}, "
                  f"lr {cfg['lr']}, {cfg['epochs']} epochs")
        for trained, fit in f["fit"].items():
            for precision in next(iter(f["tests"].values()))[trained]:
                lists = f"{cfg['list_len_i2t']}/{cfg['list_len_t2i']}"
                rec: dict[str, Any] = {"model": recipe, "lists": lists, "seed": cfg["seed"],
                                       "trained": trained, "re-ranked": precision}
                for test, per in f["tests"].items():
                    label = TEST_NAMES.get(test, test).split(" (")[0]
                    rows = per[trained][precision]
                    rec[f"{label}: base"] = per["base_rsum"]
                    for name, key in F30K_ROWS:
                        rec[f"{label}: {name}"] = rows[key]["RSUM"]
                    rec[f"{label}: re-rank s"] = rows["rerank_s"]
                rec["fit s"] = fit["s"]
                records.append(rec)
    if not records:
        return {"tables": []}
    f = runs[0]["figures"]
    note = (f"F30K protocol of accuracy/leaprr_f30k at {f['train'][0]:,} training items (held-out: "
            f"the last 1,000 of f30k_train; model selection and score fusion on f30k_dev); depth 2, on "
            f"{f.get('gpu') or f['device']}. 'overwrite': the paper's "
            "one-matrix output; 'rerank_both': per direction with the dev-chosen rules and output. "
            "Re-rank s: both directions of the whole test set, including input building.")
    return {"tables": [Table.from_records("LeaPRR at the paper's size: fp32 and bf16 (GPU)", records,
                                          notes=note, headline=True).to_dict()]}
