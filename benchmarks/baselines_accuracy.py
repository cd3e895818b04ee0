"""Accuracy, time and memory of every training-free method on the COCO caption proxy.

Protocol (nothing is tuned or fitted on an evaluated query):

* data: ``../shared/data/caption_xenc`` through :func:`pillar_rerank.datasets.load_coco_proxy`;
  evaluation on ``coco5k_test`` (5000 x 20,000) and on its COCO 1K fold 0 (the first 1000
  gallery items and their captions);
* banks: ``coco1k_dev`` (1000 items, 4000 captions) against the evaluated gallery, from the
  embeddings (:func:`~pillar_rerank.baselines.bank_from_embeddings`);
* tuning: :func:`~pillar_rerank.baselines.tuning.tune` on ``coco1k_dev`` alone, split by items
  into an evaluated half and a bank half; the chosen parameters are then used on both protocols;
* every method at its documented defaults and tuned; transductive methods in their own group;
* time: wall-clock of ``apply_both`` (both directions, bank statistics included, bank
  construction excluded); memory: peak RSS above the level before the call, sampled every 5 ms,
  plus the process's overall peak.

Run: ``python -m benchmarks run --suite accuracy --only baselines`` (figures go to
``benchmarks/results/accuracy/baselines.json``); :func:`sinkhorn_scale` is ``--suite scale --only
sinkhorn_bank``.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.memory import PeakRSS, peak_rss_mb
from pillar_rerank.baselines import BASELINES, apply_both, bank_from_embeddings, describe, get_baseline
from pillar_rerank.baselines.tuning import tune
from pillar_rerank.datasets import load_coco_proxy
from pillar_rerank.metrics import recall_metrics

logger = logging.getLogger(__name__)
KEYS = ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "RSUM")


def _measure(name: str, params: dict[str, Any], data, bank, t2i_params: dict | None = None) -> dict[str, Any]:
    method = get_baseline(name, **params)
    t2i_method = None if t2i_params is None else get_baseline(name, **t2i_params)
    with PeakRSS(interval=0.005) as mem:
        start = time.perf_counter()
        out = apply_both(method, data, bank, t2i_method=t2i_method)
        elapsed = time.perf_counter() - start
    m = recall_metrics(out.scores, out.relevance, t2i_scores=out.t2i_scores)
    return {
        **{k: round(m[k], 2) for k in KEYS},
        "time_s": round(elapsed, 2),
        "peak_rss_delta_mib": round(mem.delta_mb, 1),
    }


def _shown(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """All parameters of the method built with ``params``, minus the resource knobs."""
    shown = get_baseline(name, **params).get_params()
    for knob in ("device", "block_bytes", "intra_source"):
        shown.pop(knob, None)
    return shown


def run(*, methods: list[str] | None = None, root: str | None = None, seed: int = 0) -> dict[str, Any]:
    """Measure ``methods`` (default: all registered) on both protocols; returns the result dict."""
    methods = list(methods or BASELINES)
    dev = load_coco_proxy("coco1k_dev", root)
    test = load_coco_proxy("coco5k_test", root)
    protocols = {
        "coco1k_fold0": test.subset_images(np.arange(1000), name="coco1k_fold0"),
        "coco5k_test": test,
    }
    result: dict[str, Any] = {
        "benchmark": "baselines_accuracy",
        "protocol": __doc__.split("Run:")[0].strip(),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
        "base": {},
        "tuning": {},
        "fair": [],
        "transductive": [],
    }
    for name in methods:
        started = time.perf_counter()
        choice = tune(name, dev, seed=seed)
        result["tuning"][name] = {
            "best_params": choice.best_params,
            "best_params_i2t": choice.best_params_i2t,
            "best_params_t2i": choice.best_params_t2i,
            "dev_rsum": round(choice.best_rsum, 2),
            "protocol": choice.protocol,
            "time_s": round(time.perf_counter() - started, 1),
            "trials": choice.trials,
        }
        logger.info("tuned %s: %s", name, choice.best_params)
    for proto, data in protocols.items():
        data = data.with_scores(data.similarity())
        base = recall_metrics(data.scores, data.relevance)
        result["base"][proto] = {k: round(base[k], 2) for k in KEYS}
        bank = bank_from_embeddings(dev, data)
        for name in methods:
            info = describe(name)
            group = "transductive" if info["transductive"] else "fair"
            tuned = result["tuning"][name]
            settings = [("defaults", {}, None), ("tuned", tuned["best_params"], None)]
            if tuned["best_params_i2t"] != tuned["best_params_t2i"]:
                settings.append(("tuned per direction", tuned["best_params_i2t"], tuned["best_params_t2i"]))
            for setting, params, t2i_params in settings:
                row = _measure(name, params, data, bank, t2i_params)
                row = {
                    "method": name,
                    "setting": setting,
                    "protocol": proto,
                    "params": _shown(name, params),
                    **({"t2i_params": _shown(name, t2i_params)} if t2i_params is not None else {}),
                    "delta_RSUM": round(row["RSUM"] - base["RSUM"], 2),
                    **row,
                }
                result[group].append(row)
                logger.info(
                    "%s %s %s: RSUM %.2f (%+.2f) %.1fs",
                    proto,
                    name,
                    setting,
                    row["RSUM"],
                    row["delta_RSUM"],
                    row["time_s"],
                )
    result["process_peak_rss_mib"] = round(peak_rss_mb(), 1)
    return result


def sinkhorn_scale(
    *,
    n_bank: int = 100_000,
    n_gallery: int = 25_000,
    n_queries: int = 5_000,
    n_iter: int = 1,
    dual_rows: int = 0,
    workdir: str = "/tmp",
    seed: int = 0,
) -> dict[str, Any]:
    """Time and peak RSS of (dual-bank) Sinkhorn with a large bank stored as a float16 memory map.

    The bank (``n_bank x n_gallery``, from random unit embeddings of dimension 64 so the values
    look like cosine scores) is written to ``workdir`` block by block, then memory-mapped;
    ``n_iter`` streamed iterations run and each costs one pass over the bank, so the time of the
    default ``n_iter=10`` is ten times the per-iteration time reported.
    """
    from pillar_rerank.baselines import DualBankSinkhorn, SinkhornNorm

    rng = np.random.default_rng(seed)

    def unit(n):
        x = rng.standard_normal((n, 64)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    gallery = unit(n_gallery)
    path = Path(workdir) / f"sinkhorn_bank_{n_bank}x{n_gallery}.f16.npy"
    extra_path = Path(workdir) / f"sinkhorn_dual_{n_bank}x{dual_rows}.f16.npy"
    started = time.perf_counter()
    for target, cols in ((path, gallery), (extra_path, unit(dual_rows) if dual_rows else None)):
        if cols is None:
            continue
        mm = np.lib.format.open_memmap(target, mode="w+", dtype=np.float16, shape=(n_bank, cols.shape[0]))
        for start in range(0, n_bank, 8192):
            stop = min(start + 8192, n_bank)
            mm[start:stop] = unit(stop - start) @ cols.T
        mm.flush()
        del mm
    build_s = time.perf_counter() - started
    bank = np.load(path, mmap_mode="r", allow_pickle=False)
    extra = np.load(extra_path, mmap_mode="r", allow_pickle=False) if dual_rows else None
    scores = (unit(n_queries) @ gallery.T).astype(np.float32)
    method = (DualBankSinkhorn if dual_rows else SinkhornNorm)(n_iter=n_iter)
    with PeakRSS(interval=0.005) as mem:
        start = time.perf_counter()
        fitted = method.fit(bank, bank_gallery=extra) if dual_rows else method.fit(bank)
        fit_s = time.perf_counter() - start
        out = fitted.rerank(scores)
    out_ok = bool(np.isfinite(out).all())
    for p in (path, extra_path):
        if p.exists():
            p.unlink()
    return {
        "n_bank": n_bank,
        "n_gallery": n_gallery,
        "n_queries": n_queries,
        "dual_rows": dual_rows,
        "n_iter": n_iter,
        "bank_storage": "float16 memory map",
        "bank_gib": round(n_bank * n_gallery * 2 / 2**30, 2),
        "build_s": round(build_s, 1),
        "fit_s": round(fit_s, 1),
        "fit_s_per_iteration": round(fit_s / n_iter, 1),
        "peak_rss_delta_mib": round(mem.delta_mb, 1),
        "peak_anon_rss_delta_mib": round(mem.anon_delta_mb, 1),
        "finite": out_ok,
        "process_peak_rss_mib": round(peak_rss_mb(), 1),
    }


def _fmt_params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def format_table(result: dict[str, Any]) -> str:
    """Markdown tables, fair methods first, transductive ones apart."""
    lines = []
    for proto, base in result["base"].items():
        lines.append(f"\n### {proto} (base RSUM {base['RSUM']:.2f})\n")
        lines.append(
            "| group | method | setting | params | " + " | ".join(KEYS) + " | dRSUM | time s | peak MiB |"
        )
        lines.append("|" + "---|" * (len(KEYS) + 7))
        for group in ("fair", "transductive"):
            for r in (r for r in result[group] if r["protocol"] == proto):
                shown = _fmt_params(r["params"])
                if "t2i_params" in r:
                    shown = f"i2t: {shown}; t2i: {_fmt_params(r['t2i_params'])}"
                lines.append(
                    f"| {group} | {r['method']} | {r['setting']} | {shown} | "
                    + " | ".join(f"{r[k]:.2f}" for k in KEYS)
                    + f" | {r['delta_RSUM']:+.2f} | {r['time_s']:.2f}"
                    + f" | {r['peak_rss_delta_mib']:.0f} |"
                )
    return "\n".join(lines)
