"""fp32 against bf16 for a trained (reduced) LeaPRR model on the COCO caption proxy.

``precision="auto"`` picks bf16 where the hardware computes it natively (CUDA GPUs with bf16,
CPUs with AVX512-BF16 / AMX / Arm BF16; :func:`pillar_rerank.utils.device.resolve_precision`).
This benchmark measures what that costs in accuracy and gains in time, on one protocol of
:mod:`benchmarks.leaprr_accuracy`:

* **re-ranking**: one model trained in fp32 re-ranks the test side in fp32 and in bf16
  (same weights): RSUM of each, the largest score difference, and the re-rank times;
* **training**: a second model trained in bf16 (same seed and data) re-ranks in bf16: its RSUM
  and fit time against the fp32 model's.

On a CPU without native bf16 the bf16 runs are *emulated* (slower than fp32): the accuracy figures
still hold, the times do not; the result records which case it ran in. Run:
``python -m benchmarks run --suite accuracy --only leaprr_precision``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch


def _rsum(scores: np.ndarray, test) -> float:
    from pillar_rerank.metrics.recall import recall_metrics

    return round(float(recall_metrics(scores, test.relevance)["RSUM"]), 2)


def run(*, protocol: str = "a", seed: int = 0, config: dict[str, Any] | None = None, root: str | None = None,
        train_bf16: bool = True) -> dict[str, Any]:
    """Train in fp32 (and bf16), re-rank in both precisions; RSUM, score differences and times."""
    from benchmarks.leaprr_accuracy import REDUCED, protocol_sets
    from pillar_rerank.config import LeaPRRConfig
    from pillar_rerank.reranker import PillarReranker
    from pillar_rerank.utils.device import cpu_has_native_bf16, resolve_device, resolve_precision

    fields = {**REDUCED, **(config or {}), "seed": seed, "precision": "fp32"}
    cfg = LeaPRRConfig.from_dict(fields)
    device = resolve_device(cfg.device)
    train, dev, test = protocol_sets(protocol, root)
    out: dict[str, Any] = {
        "protocol": protocol,
        "test": [test.n_images, test.n_texts],
        "device": str(device),
        "cpu_native_bf16": cpu_has_native_bf16(),
        "auto_resolves_to": resolve_precision(device, "auto"),
        "bf16_emulated": device.type == "cpu" and not cpu_has_native_bf16(),
        "torch_threads": torch.get_num_threads(),
        "base_rsum": _rsum(test.similarity(), test),
    }
    t0 = time.perf_counter()
    model = PillarReranker(cfg).fit(train, dev, verbose=False)
    out["fit_fp32_s"] = round(time.perf_counter() - t0, 2)
    timed: dict[str, np.ndarray] = {}
    for precision in ("fp32", "bf16"):
        # same trained weights, only the inference precision changes
        model.config_ = model.config_.replace(precision=precision)
        t0 = time.perf_counter()
        timed[precision] = model.rerank(test)
        out[f"rerank_{precision}_s"] = round(time.perf_counter() - t0, 2)
        out[f"rsum_{precision}"] = _rsum(timed[precision], test)
    out["rerank_bf16_over_fp32"] = round(out["rerank_bf16_s"] / out["rerank_fp32_s"], 3)
    out["rsum_bf16_minus_fp32"] = round(out["rsum_bf16"] - out["rsum_fp32"], 2)
    out["max_abs_score_diff"] = float(np.max(np.abs(timed["bf16"] - timed["fp32"])))
    if train_bf16:
        t0 = time.perf_counter()
        half = PillarReranker(cfg.replace(precision="bf16")).fit(train, dev, verbose=False)
        out["fit_bf16_s"] = round(time.perf_counter() - t0, 2)
        out["fit_bf16_over_fp32"] = round(out["fit_bf16_s"] / out["fit_fp32_s"], 3)
        out["rsum_trained_bf16"] = _rsum(half.rerank(test), test)
        out["rsum_trained_bf16_minus_fp32"] = round(out["rsum_trained_bf16"] - out["rsum_fp32"], 2)
    return out
