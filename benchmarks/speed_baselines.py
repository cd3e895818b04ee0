"""Speed suite, training-free methods: throughput, time per stage and peak RSS, against a dense
numpy reference computed in the same process.

One call measures one method at one shape on synthetic scores built from embeddings
(:mod:`benchmarks.synthetic`): the bank is a separate training-side set (``bank_images`` images,
``bank_texts`` captions), never the test queries. Stages are the public calls of
:func:`pillar_rerank.baselines.apply_both` timed one by one (fit and re-rank, per direction).
The method runs first, so the RSS high-water mark read right after it is the method's own; then
the reference (the method's formula written as plain dense numpy/scipy over whole matrices) runs
on the same inputs, and its agreement with the method is recorded as the largest absolute
difference. References compute in float32, like the inputs, so the largest shapes fit in memory.

Over ~400 lines: the benchmark, its summaries and the benchmark-only original formulas it is
compared with.
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import Any

import numpy as np
from scipy.special import logsumexp

from benchmarks import BenchmarkSkipped, synthetic
from benchmarks.worker import peak_rss_mb
from pillar_rerank.report.tables import Table

logger = logging.getLogger(__name__)
MB = 2**20


# ------------------------------------------------------------------------------------------
# dense references: queries x gallery scores S, bank B (n_bank x gallery), extras per method


def _ref_inverted_softmax(S, B, *, beta=20.0, **_):
    return S - logsumexp(beta * B, axis=0) / beta


def _ref_qb_norm(S, B, *, beta=20.0, k=1, **_):
    active = np.zeros(S.shape[1], dtype=bool)
    active[np.argpartition(-B, k - 1, axis=1)[:, :k].ravel()] = True
    out = S.copy()
    rows = active[np.argmax(S, axis=1)]
    out[rows] -= logsumexp(beta * B, axis=0) / beta
    return out


def _topk_mean(B, k):
    return np.partition(B, B.shape[0] - k, axis=0)[B.shape[0] - k :].astype(np.float64).mean(axis=0)


def _ref_nnn(S, B, *, k=128, alpha=0.75, **_):
    return S - alpha * _topk_mean(B, k)


def _ref_csls(S, B, *, k=10, **_):
    return S - 0.5 * _topk_mean(B, k)


def _ref_dn(S, B, *, lam=0.5, **_):
    return S - lam * B.mean(axis=0, dtype=np.float64)


def _sinkhorn_h(M, n_gallery, tau, n_iter):
    K = M.T / M.dtype.type(tau)  # (gallery [+ extra], bank), in M's precision
    log_a, log_b = -np.log(K.shape[0]), -np.log(K.shape[1])
    log_u = np.full(K.shape[0], log_a)
    for _ in range(n_iter):
        log_v = log_b - logsumexp(K + log_u[:, None], axis=0)
        log_u = log_a - logsumexp(K + log_v[None, :], axis=1)
    return -tau * log_u[:n_gallery]


def _ref_sinkhorn(S, B, *, tau=0.01, n_iter=10, **_):
    return S - _sinkhorn_h(B, S.shape[1], tau, n_iter)


def _ref_dbsn(S, B, *, bank_gallery=None, tau=0.01, n_iter=10, **_):
    return S - _sinkhorn_h(np.concatenate([B, bank_gallery], axis=1), S.shape[1], tau, n_iter)


def _ref_dbnorm(S, B, *, gallery_bank=None, beta1=1 / 1.99, beta2=3.0, dynamic=False, **_):
    if dynamic:
        return None
    h = logsumexp(beta1 * B, axis=0) + logsumexp(beta2 * gallery_bank, axis=0)
    return S - h / (beta1 + beta2)


def _ref_dsl(S, B, *, temperature=1.0, **_):
    z = S / np.float32(temperature)
    return S * S.shape[0] * np.exp(z - logsumexp(z, axis=0, keepdims=True))


REFERENCES = {
    "inverted_softmax": _ref_inverted_softmax,
    "qb_norm": _ref_qb_norm,
    "nnn": _ref_nnn,
    "csls": _ref_csls,
    "dn": _ref_dn,
    "sinkhorn": _ref_sinkhorn,
    "dbsn": _ref_dbsn,
    "dbnorm": _ref_dbnorm,
    "dsl": _ref_dsl,
}


# ------------------------------------------------------------------------------------------


def run(
    *,
    method: str,
    n_images: int,
    n_texts: int,
    bank_images: int,
    bank_texts: int,
    dim: int = 256,
    params: dict[str, Any] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Time ``method`` (both directions) and its dense reference at one shape."""
    from pillar_rerank.baselines import BASELINES, Bank, get_baseline

    if method not in BASELINES:
        raise BenchmarkSkipped(f"method {method!r} is not registered in this build.")
    params = dict(params or {})
    est = get_baseline(method, **params)
    img, txt, t2i_map = synthetic.embeddings(n_images, n_texts, dim, seed=seed)
    b_img, b_txt, _ = synthetic.embeddings(bank_images, bank_texts, dim, seed=seed + 1)
    S = img @ txt.T
    fields = {"i2t": b_img @ txt.T, "t2i": b_txt @ img.T}
    if "bank_gallery" in est.fit_inputs:
        fields["i2t_dual"] = b_img @ b_txt.T
        fields["t2i_dual"] = np.ascontiguousarray(fields["i2t_dual"].T)
    if "gallery_bank" in est.fit_inputs:
        fields["i2t_intra"] = b_txt @ txt.T
        fields["t2i_intra"] = b_img @ img.T
    bank = Bank(**fields)
    rss_inputs = peak_rss_mb()

    stages: dict[str, float] = {}
    outputs = {}
    t_all = time.perf_counter()
    intra_kw: dict[str, dict[str, Any]] = {"i2t": {}, "t2i": {}}
    wanted = [k for k in est.fit_inputs if k in ("query_intra", "gallery_intra")]
    if wanted:  # test-side intra-modal similarities, as apply_both builds them
        from pillar_rerank.inputs import Relevance, RetrievalSet
        from pillar_rerank.neighbors import IntraModalScores

        data = RetrievalSet(
            relevance=Relevance(t2i_map, n_images), scores=S, image_embeddings=img, text_embeddings=txt
        )
        intra = IntraModalScores.from_data(data, getattr(est, "intra_source", "auto"))
        sides = {
            "i2t": {"query_intra": intra.image, "gallery_intra": intra.text},
            "t2i": {"query_intra": intra.text, "gallery_intra": intra.image},
        }
        intra_kw = {d: {k: v for k, v in side.items() if k in wanted} for d, side in sides.items()}
        stages["intra-modal prepare"] = time.perf_counter() - t_all
    for direction, matrix in (("i2t", S), ("t2i", S.T)):
        t0 = time.perf_counter()
        fitted = est.clone().fit(**bank.fit_kwargs(est, direction), **intra_kw[direction])
        t1 = time.perf_counter()
        outputs[direction] = fitted.rerank(matrix)
        stages[f"fit {direction}"] = t1 - t0
        stages[f"rerank {direction}"] = time.perf_counter() - t1
    method_s = time.perf_counter() - t_all
    rss_method = peak_rss_mb()

    ref = REFERENCES.get(method)
    ref_s, max_diff = None, None
    if ref is not None:
        full = {**est.get_params(), **params}
        t0 = time.perf_counter()
        ref_out = {}
        for direction, matrix in (("i2t", S), ("t2i", S.T)):
            extra = {
                "bank_gallery": fields.get(f"{direction}_dual"),
                "gallery_bank": fields.get(f"{direction}_intra"),
            }
            ref_out[direction] = ref(
                matrix,
                fields[direction],
                **extra,
                **{k: v for k, v in full.items() if k not in ("device", "block_bytes")},
            )
        ref_s = time.perf_counter() - t0
        if all(v is not None for v in ref_out.values()):
            max_diff = float(max(np.max(np.abs(ref_out[d] - outputs[d])) for d in ref_out))
        else:
            ref_s = None
    n_queries = n_images + n_texts
    return {
        "method": method,
        "params": est.get_params(),
        "transductive": bool(getattr(est, "transductive", False)),
        "n_images": n_images,
        "n_texts": n_texts,
        "bank_images": bank_images,
        "bank_texts": bank_texts,
        "dim": dim,
        "stages_s": stages,
        "method_s": method_s,
        "queries_per_s": n_queries / method_s,
        "reference_s": ref_s,
        "reference_queries_per_s": n_queries / ref_s if ref_s else None,
        "speedup_vs_reference": ref_s / method_s if ref_s else None,
        "max_abs_diff_vs_reference": max_diff,
        "inputs_mb": (S.nbytes + sum(v.nbytes for v in fields.values())) / MB,
        "rss_after_inputs_mb": rss_inputs,
        "rss_after_method_mb": rss_method,
        "method_extra_rss_mb": rss_method - rss_inputs,
        "rss_after_reference_mb": peak_rss_mb(),
    }


def summarize(runs: list[dict[str, Any]], bench: Any) -> dict[str, Any]:
    """One table per shape: throughput, stages, ratio to the reference, memory."""
    shapes: dict[str, list[dict[str, Any]]] = {}
    sizes: dict[str, int] = {}
    for r in runs:
        f = r["figures"]
        shape = f"{f['n_images']:,} x {f['n_texts']:,} (bank {f['bank_images']:,} x {f['bank_texts']:,})"
        st = f["stages_s"]
        sizes[shape] = f["n_images"] * f["n_texts"]
        shapes.setdefault(shape, []).append(
            {
                "method": f["method"] + (" (transductive)" if f["transductive"] else ""),
                "queries/s": f["queries_per_s"],
                "fit s": st["fit i2t"] + st["fit t2i"] + st.get("intra-modal prepare", 0.0),
                "rerank s": st["rerank i2t"] + st["rerank t2i"],
                "total s": f["method_s"],
                "reference s": f["reference_s"],
                "speed vs reference ×": f["speedup_vs_reference"],
                "max |diff|": f["max_abs_diff_vs_reference"],
                "extra RSS MB": f["method_extra_rss_mb"],
                "inputs MB": f["inputs_mb"],
            }
        )
    tables = [
        Table.from_records(
            f"Training-free methods, {shape}",
            recs,
            digits=2,
            headline=False,
            notes="Both directions (fit on the bank, or on test-side intra-modal scores for the methods "
            "that use them, then re-rank the test scores). Reference: the same formula as "
            "plain dense numpy/scipy (float32, like the inputs) in the same process; speed vs "
            "reference > 1 means faster than it; max |diff| is the largest "
            "absolute difference between the two outputs. Extra RSS: high-water mark after the method "
            "minus before it (inputs already in memory). Synthetic scores from embeddings.",
        )
        for shape, recs in shapes.items()
    ]
    largest = max(shapes, key=lambda k: sizes[k])
    compact = Table.from_records(
        f"Training-free methods: throughput at {largest}",
        [
            {k: rec[k] for k in ("method", "queries/s", "total s", "speed vs reference ×", "extra RSS MB")}
            for rec in shapes[largest]
        ],
        digits=1,
        headline=bench is not None and getattr(bench, "suite", "") == "speed",
        notes="Both directions on one CPU process; speed vs reference > 1: faster than the same formula "
        "as dense numpy. Full tables: benchmarks/results/README.md.",
    )
    return {"tables": [t.to_dict() for t in (compact, *tables)]}


# ------------------------------------------------------------------------------------------
# Ours vs the originals on the originals' own case (issue 17, part 3)
#
# The "originals" below are benchmark-only code written from the formulas in
# ../shared/spec/baselines.md (§5 inverted softmax, §6 DSL, §8 Sinkhorn / DBSN via POT's
# sinkhorn_knopp, §9 NNN): a few lines of dense numpy over whole matrices, as the reference
# repositories compute them, not their code. They start, like ours, from the embeddings.

_ORIGINAL_PARAMS: dict[str, dict[str, Any]] = {
    "inverted_softmax": {"beta": 20.0},
    "dsl": {"temperature": 1.0},
    "sinkhorn": {"tau": 0.01, "n_iter": 10},
    "dbsn": {"tau": 0.01, "n_iter": 10},
    "nnn": {"k": 128, "alpha": 0.75},
}


def _orig_is(S, B, *, beta, **_):
    """Inverted softmax as the originals write it: exp(beta s) / sum_bank exp(beta B)."""
    return np.exp(beta * S) / np.exp(beta * B).sum(axis=0)


def _orig_dsl(S, B, *, temperature, **_):
    """CAMoE: sim * softmax(sim / temp, dim=0) * len(sim) (softmax with its max shift)."""
    z = S / temperature
    e = np.exp(z - z.max(axis=0))
    return S * (e / e.sum(axis=0)) * S.shape[0]


def _orig_sinkhorn_h(M, n_gallery, tau, n_iter):
    """POT's ot.sinkhorn(a, b, 1 - M.T, reg=tau, numItermax=n_iter): sinkhorn_knopp, float64."""
    K = np.exp(-(1.0 - M.T.astype(np.float64)) / tau)          # (gallery [+ extra], bank)
    a = np.full(K.shape[0], 1.0 / K.shape[0])
    b = np.full(K.shape[1], 1.0 / K.shape[1])
    u = np.full(K.shape[0], 1.0 / K.shape[0])
    for _ in range(n_iter):
        v = b / (K.T @ u)
        u = a / (K @ v)
    return -tau * np.log(u[:n_gallery])


def _orig_sinkhorn(S, B, *, tau, n_iter, **_):
    return S - _orig_sinkhorn_h(B, S.shape[1], tau, n_iter)


def _orig_dbsn(S, B, *, dual, tau, n_iter, **_):
    return S - _orig_sinkhorn_h(np.concatenate([B, dual], axis=1), S.shape[1], tau, n_iter)


def _orig_nnn(S, B, *, k, alpha, **_):
    """NNN's retriever: s - alpha * mean of the k largest bank scores (torch.topk on float32
    tensors there; float32 here too, so its output is float32 like ours)."""
    n = B.shape[0]
    top = np.partition(B, n - k, axis=0)[n - k:]
    return S - np.float32(alpha) * top.mean(axis=0)


ORIGINALS = {"inverted_softmax": _orig_is, "dsl": _orig_dsl, "sinkhorn": _orig_sinkhorn,
             "dbsn": _orig_dbsn, "nnn": _orig_nnn}


def _to_score_units(method: str, out: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """The original's output in ours' units (inverted softmax: log of the ratio / beta)."""
    return np.log(out) / params["beta"] if method == "inverted_softmax" else out


def _exact(method: str, S: np.ndarray, B: np.ndarray | None, dual: np.ndarray | None,
           params: dict[str, Any]) -> np.ndarray:
    """The method's formula in float64 on the same float32 products both sides start from: what
    both should return up to their own float32 arithmetic (Sinkhorn: log-domain iterations,
    which the original's scaling iterations equal in exact arithmetic)."""
    S = S.astype(np.float64)
    B = None if B is None else B.astype(np.float64)
    if method == "dbsn":
        return _ref_dbsn(S, B, bank_gallery=dual.astype(np.float64), **params)
    return REFERENCES[method](S, B, **params)


def _max_err(a: np.ndarray, b: np.ndarray) -> float | None:
    """Largest absolute difference; None where either side is not finite (JSON has no inf)."""
    with np.errstate(invalid="ignore"):
        m = float(np.max(np.abs(a - b)))
    return m if np.isfinite(m) else None


def _measure(fn):
    """(result, (wall s, CPU s of all threads), extra peak RSS MB); the high-water mark is reset
    first (Linux clear_refs)."""
    import gc

    from benchmarks.memory import current_rss_mb, peak_rss_mb, reset_peak_rss

    gc.collect()
    reset_peak_rss()
    before = current_rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    result = fn()
    seconds = (time.perf_counter() - t0, time.process_time() - c0)
    return result, seconds, peak_rss_mb() - before


def _load_proxy(data_dir: str, split: str):
    from pillar_rerank.inputs import Relevance, RetrievalSet

    d = data_dir.rstrip("/") + "/"
    img = np.load(d + f"proxy_{split}_img.npy", allow_pickle=False).astype(np.float32)
    rows = np.load(d + f"proxy_{split}_txt_index.npy", allow_pickle=False)
    txt = np.load(d + f"{split}_minilm.npy", allow_pickle=False).astype(np.float32)[rows]
    c2i = np.load(d + f"proxy_{split}_cap2img.npy", allow_pickle=False).astype(np.int64)
    return RetrievalSet(relevance=Relevance(c2i, img.shape[0]), image_embeddings=img,
                        text_embeddings=txt, name=split)


def versus_originals(*, data_dir: str, methods: tuple[str, ...] = tuple(ORIGINALS),
                     repeats: int = 2, threads: int = 2) -> dict[str, Any]:
    """Ours vs the original formula, COCO 5K proxy (5,000 x 20,000), banks from coco1k_dev.

    Both start from the four embedding matrices and end with both directions' outputs: ours is
    ``bank_from_embeddings`` + ``apply_both``; the original computes the products it needs and
    its dense formula. They alternate (original, ours) ``repeats`` times in this one process;
    the table keeps each side's fastest run and its extra peak RSS (the high-water mark reset
    before each run). Agreement: RSUM of both, the largest absolute difference in score units,
    and each side's largest error against the formula in float64 on the same float32 products
    (both sides round in float32; this says which one the difference comes from).
    """
    import torch

    from pillar_rerank.baselines import apply_both, bank_from_embeddings, get_baseline
    from pillar_rerank.metrics import recall_metrics

    torch.set_num_threads(threads)
    test, dev = _load_proxy(data_dir, "coco5k_test"), _load_proxy(data_dir, "coco1k_dev")
    img, txt = test.image_embeddings, test.text_embeddings
    b_img, b_txt = dev.image_embeddings, dev.text_embeddings
    rows = []
    for method in methods:
        params = _ORIGINAL_PARAMS[method]
        original = ORIGINALS[method]

        def run_original(original=original, params=params, method=method):
            S = img @ txt.T                       # each original computes only what it reads
            bank = method != "dsl"
            out = {}
            for d, m, q, g in (("i2t", S, b_img, txt), ("t2i", S.T, b_txt, img)):
                dual = (q @ (b_txt if d == "i2t" else b_img).T) if method == "dbsn" else None
                out[d] = original(m, q @ g.T if bank else None, dual=dual, **params)
            return out

        def run_ours(params=params, method=method):
            est = get_baseline(method, **params)
            res = apply_both(est, test, bank_from_embeddings(dev, test))
            return {"i2t": res.scores, "t2i": res.t2i_scores.T}

        best: dict[str, tuple[tuple[float, float], float]] = {}
        walls: dict[str, list[float]] = {"original": [], "ours": []}
        outs: dict[str, Any] = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the paper's 10 Sinkhorn iterations do not converge
            for _ in range(repeats):
                for side, fn in (("original", run_original), ("ours", run_ours)):
                    outs[side] = None
                    outs[side], s, mb = _measure(fn)
                    walls[side].append(s[0])
                    if side not in best or s[0] < best[side][0][0]:
                        best[side] = (s, mb)
        diff, rsum = 0.0, {}
        for side in ("original", "ours"):
            o = outs[side]
            if side == "original":
                with np.errstate(divide="ignore", over="ignore"):
                    o = {d: _to_score_units(method, v, params) for d, v in o.items()}
            rsum[side] = recall_metrics(np.ascontiguousarray(o["i2t"]), test.relevance,
                                        t2i_scores=np.ascontiguousarray(o["t2i"].T))["RSUM"]
            outs[side] = o
        diff = float(max(np.max(np.abs(outs["ours"][d] - outs["original"][d])) for d in ("i2t", "t2i")))
        # each side against the formula in float64 on the same float32 products (not timed)
        S = img @ txt.T
        err: dict[str, list[float | None]] = {"original": [], "ours": []}
        for d, m, q, g in (("i2t", S, b_img, txt), ("t2i", S.T, b_txt, img)):
            dual = (q @ (b_txt if d == "i2t" else b_img).T) if method == "dbsn" else None
            exact = _exact(method, m, q @ g.T if method != "dsl" else None, dual, params)
            for side in err:
                err[side].append(_max_err(outs[side][d], exact))
            del exact
        del S
        rows.append({
            "method": method, "params": params,
            "original_s": best["original"][0][0], "ours_s": best["ours"][0][0],
            "speed_ratio_original_over_ours": best["original"][0][0] / best["ours"][0][0],
            "original_cpu_s": best["original"][0][1], "ours_cpu_s": best["ours"][0][1],
            "cpu_ratio_original_over_ours": best["original"][0][1] / best["ours"][0][1],
            "original_peak_extra_mb": best["original"][1], "ours_peak_extra_mb": best["ours"][1],
            "memory_ratio_ours_over_original": best["ours"][1] / max(best["original"][1], 1e-9),
            "rsum_original": rsum["original"], "rsum_ours": rsum["ours"], "max_abs_diff": diff,
            "original_runs_s": walls["original"], "ours_runs_s": walls["ours"],
            "median_ratio_original_over_ours": float(np.median(walls["original"]) / np.median(walls["ours"])),
            "original_max_err_vs_float64": None if None in err["original"] else max(err["original"]),
            "ours_max_err_vs_float64": None if None in err["ours"] else max(err["ours"]),
        })
        logger.info("%s: %s", method, rows[-1])
        outs.clear()
    return {
        "case": "COCO 5K proxy (caption_xenc coco5k_test, 5,000 x 20,000), banks from coco1k_dev "
                "(1,000 images, 4,000 captions), both directions, from embeddings",
        "threads": threads, "repeats": repeats,
        "columns": "seconds: wall time of the fastest of the repeats (runs_s: every run's wall time, "
                   "in order; cpu_s: CPU time of all its "
                   "threads, less sensitive to a loaded machine); peak_extra_mb: VmHWM minus RSS "
                   "before the run (inputs loaded); speed ratio > 1: ours faster; memory ratio < 1: "
                   "ours smaller",
        "rows": rows,
    }


#: Gallery items whose fitted bias each large-bank run records, so that runs with different
#: kernel memory can be compared entry by entry (evenly spaced over the gallery).
_BIAS_PROBES = 64


def sinkhorn_large_bank(*, n_bank: int = 100_000, n_gallery: int = 5000, n_extra: int = 20_000,
                        dim: int = 256, tau: float = 0.01, n_iter: int = 10,
                        kernel_bytes: int = 2 * 2**30, threads: int = 2) -> dict[str, Any]:
    """Sinkhorn and dual-bank Sinkhorn with a ``n_bank``-query bank (synthetic embeddings).

    Text -> image at COCO 5K shape with DBSN's large COCO bank: ``n_bank`` bank captions x
    ``n_gallery`` test images (stored, float32), plus ``n_extra`` bank images as DBSN's extra
    gallery rows (computed from embeddings when the kernel is streamed). ``kernel_bytes`` is the
    methods' parameter: a kernel within it is kept between iterations, a larger one is streamed
    (one ``exp`` per entry per iteration). Fit times only: the re-rank is one subtraction. Each
    method also records its bias at :data:`_BIAS_PROBES` gallery items, for the summary's
    agreement between runs.
    """
    import torch

    from pillar_rerank.baselines import DualBankSinkhorn, EmbeddingScores, SinkhornNorm

    torch.set_num_threads(threads)
    g_img, _, _ = synthetic.embeddings(n_gallery, n_gallery, dim, seed=0)
    b_img, b_txt, _ = synthetic.embeddings(n_extra, n_bank, dim, seed=1)
    bank = EmbeddingScores(b_txt, g_img, name="bank t2i", cache=True)
    bank.dense()
    extra = EmbeddingScores(b_txt, b_img, name="bank t2i dual")
    out: dict[str, Any] = {"n_bank": n_bank, "n_gallery": n_gallery, "n_extra": n_extra, "dim": dim,
                           "tau": tau, "n_iter": n_iter, "kernel_bytes": kernel_bytes, "threads": threads}
    probes = np.linspace(0, n_gallery - 1, _BIAS_PROBES).round().astype(int)
    kw = {"tau": tau, "n_iter": n_iter, "kernel_bytes": kernel_bytes}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, fit, width in (
                ("sinkhorn", lambda: SinkhornNorm(**kw).fit(bank), n_gallery),
                ("dbsn", lambda: DualBankSinkhorn(**kw).fit(bank, bank_gallery=extra), n_gallery + n_extra)):
            m, s, mb = _measure(fit)
            out[name] = {"fit_s": s[0], "fit_cpu_s": s[1], "peak_extra_mb": mb, "iterations": m.n_iter_,
                         "converged": m.converged_, "last_change": m.last_change_,
                         "kernel_mb": 4 * n_bank * width / 2**20,
                         "kernel": "stored" if m.kernel_stored_ else "streamed",
                         "bias_probes": [float(b) for b in m.bias_[probes]]}
            logger.info("%s: %s", name, {k: v for k, v in out[name].items() if k != "bias_probes"})
    return out


def summarize_large_bank(runs: list[dict[str, Any]], bench: Any) -> dict[str, Any]:
    """Fit time per method and kernel memory, against the first run of the same method, with the
    largest bias difference between them at the probed gallery items."""
    records, first = [], {}
    for r in runs:
        f = r["figures"]
        for method in ("sinkhorn", "dbsn"):
            m = f[method]
            ref = first.setdefault(method, m)
            records.append({
                "method": method,
                "kernel_bytes (GiB)": f["kernel_bytes"] / 2**30,
                "kernel (GiB)": m["kernel_mb"] / 1024,
                "kernel kept": m["kernel"],
                "fit s": m["fit_s"],
                "fit s / first run's": m["fit_s"] / ref["fit_s"],
                "extra peak RSS (MB)": m["peak_extra_mb"],
                "iterations": m["iterations"],
                "max |bias diff| vs first run": float(np.max(np.abs(
                    np.subtract(m["bias_probes"], ref["bias_probes"])))),
            })
    f = runs[0]["figures"]
    table = Table.from_records(
        f"Sinkhorn family with a {f['n_bank']:,}-query bank: streamed vs stored kernel",
        records, digits=2, headline=bench is not None and getattr(bench, "suite", "") == "speed",
        notes=f"Text -> image, {f['n_bank']:,} bank captions x {f['n_gallery']:,} images (stored bank), "
        f"dual-bank Sinkhorn with {f['n_extra']:,} bank images as extra gallery rows (from embeddings, "
        f"d {f['dim']}); tau {f['tau']}, {f['n_iter']} iterations, {f['threads']} threads, synthetic "
        "embeddings; one run per kernel memory setting (separate processes of one benchmark run). "
        f"The bias difference is taken at {_BIAS_PROBES} evenly spaced gallery items.")
    return {"tables": [table.to_dict()]}


def summarize_originals(runs: list[dict[str, Any]], bench: Any) -> dict[str, Any]:
    """Ours beside the originals' formulas: time, CPU time, peak memory and agreement."""
    f = runs[0]["figures"]
    records = [
        {
            "method": row["method"],
            "original s": row["original_s"],
            "ours s": row["ours_s"],
            "original / ours (wall)": row["speed_ratio_original_over_ours"],
            "original / ours (median wall)": row.get("median_ratio_original_over_ours"),
            "original / ours (CPU)": row["cpu_ratio_original_over_ours"],
            "ours / original (peak MB)": row["memory_ratio_ours_over_original"],
            "RSUM original": row["rsum_original"],
            "RSUM ours": row["rsum_ours"],
            "max |diff|": row["max_abs_diff"],
            "original err vs float64": row.get("original_max_err_vs_float64"),
            "ours err vs float64": row.get("ours_max_err_vs_float64"),
        }
        for row in f["rows"]
    ]
    table = Table.from_records(
        "Training-free methods vs their originals (COCO 5K proxy, both directions)",
        records,
        digits=2,
        headline=bench is not None and getattr(bench, "suite", "") == "speed",
        notes=f"{f['case']}; {f['threads']} threads, fastest of {f['repeats']} alternating runs in one "
        "process (median wall: the ratio of the two sides' median runs, less sensitive to one lucky "
        "run). Originals: each method's formula as dense numpy, written from the spec; > 1 in the "
        "ratio columns means ours is faster, < 1 in the memory column that ours needs less. Err vs "
        "float64: largest absolute difference from the same formula in float64 on the same float32 "
        "score matrices (empty: the original overflowed or underflowed).",
    )
    return {"tables": [table.to_dict()]}
