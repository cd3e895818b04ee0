"""LeaPRR at realistic scale: the Flickr30K caption-proxy protocol (``../shared/data/f30k_xenc``).

Protocol (hyper-parameters, normaliser choice, fusion weights and model selection never look at
an evaluated item):

* training side: the cached ``f30k_train`` minus its last ``holdout`` items; its first
  ``train_items`` items (and their captions) are used (the data-size curve varies this);
* held-out test: the last ``holdout`` items of ``f30k_train`` and their captions; across domains:
  COCO 5K (``../shared/data/caption_xenc`` ``coco5k_test``);
* model selection and fusion weights of LeaPRR: ``f30k_dev`` (1,014 x 4,056);
* every training-free method tuned per direction on the training side (its first ``tune_items``
  items, split into an evaluated half and a bank half), applied with the training side's first
  ``bank_items`` items (8,000 by default: all of them up to that size) as its bank; beyond that a
  dual bank (bank images x bank texts) no longer fits a 24 GB machine (28,000 x 112,000 is
  6.3 GB in float16 before a method's float32 work copies); the best non-transductive one (by
  the tuning RSUM) is "the best normaliser";
* LeaPRR alone, after the best normaliser and after DSL (transductive), each trained once; each
  model is reported with the dev-chosen score fusion and with the reference's overwrite.

Run it with ``python -m benchmarks run --suite accuracy --only leaprr_f30k`` (one point per
training-set size, seeds 0-1-2); ``accuracy/leaprr_fusion_coco_a`` runs the same comparison on COCO
protocol a.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import resource
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks import BenchmarkSkipped
from benchmarks.leaprr_accuracy import KEYS, REDUCED

logger = logging.getLogger(__name__)
TRANSDUCTIVE_COMPOSITION = "dsl"


def _stage(stages: list[dict[str, Any]], name: str, seconds: float) -> None:
    """Record and log a finished stage with the memory it left: a multi-hour run shows where it is."""
    from benchmarks.memory import current_rss_mb, peak_rss_mb

    entry = {"stage": name, "s": round(seconds, 1), "rss_mib": round(current_rss_mb() or 0.0),
             "peak_rss_mib": round(peak_rss_mb())}
    stages.append(entry)
    logger.info("stage %s done in %.1f s; RSS %d MiB, peak %d MiB", name, seconds, entry["rss_mib"],
                entry["peak_rss_mib"])


def _round(m: dict[str, float]) -> dict[str, float]:
    return {k: round(float(m[k]), 2) for k in KEYS}


def load_sides(*, train_items: int, holdout: int, cache: str | None, f30k_root: str | None,
               coco_root: str | None):
    """(train, dev, {name: test set}) of the protocol; skipped when the training cache is absent."""
    from pillar_rerank.datasets import load_coco_proxy, load_f30k_proxy
    from pillar_rerank.exceptions import InputFileError

    try:
        full = load_f30k_proxy("f30k_train", cache=cache, min_images=holdout + 2)
    except InputFileError as exc:
        raise BenchmarkSkipped(str(exc)) from exc
    n = full.n_images
    n_train = min(int(train_items), n - holdout)
    train = full.subset_images(np.arange(n_train), name=f"f30k_train[:{n_train}]")
    held = full.subset_images(np.arange(n - holdout, n), name=f"f30k_train[{n - holdout}:]")
    tests = {"f30k_holdout": held}
    dev = load_f30k_proxy("f30k_dev", f30k_root)
    tests["coco5k_test"] = load_coco_proxy("coco5k_test", coco_root)
    return train, dev, tests


def coco_sides(root: str | None):
    """Protocol a of :mod:`benchmarks.leaprr_accuracy` (coco1k_dev 0-799 train, 800-999 dev -> COCO 5K)."""
    from benchmarks.leaprr_accuracy import protocol_sets

    train, dev, test = protocol_sets("a", root)
    return train, dev, {"coco5k_test": test}


def tune_methods(train, methods: list[str], *, tune_items: int, seed: int) -> dict[str, Any]:
    """Each method tuned per direction on the first ``tune_items`` training items."""
    from pillar_rerank.baselines import describe
    from pillar_rerank.baselines.tuning import tune

    side = train.subset_images(np.arange(min(tune_items, train.n_images)), name="tuning side")
    out = {}
    for name in methods:
        t0 = time.perf_counter()
        res = tune(name, side, seed=seed)
        out[name] = {
            "params_i2t": dict(res.best_params_i2t), "params_t2i": dict(res.best_params_t2i),
            # what the per-direction choice scores on the tuning side: the best of each direction
            "tuning_rsum": round(max(t["i2t_sum"] for t in res.trials)
                                 + max(t["t2i_sum"] for t in res.trials), 2),
            "transductive": bool(describe(name)["transductive"]),
            "protocol": res.protocol, "time_s": round(time.perf_counter() - t0, 1),
        }
        logger.info("tuned %s: %s", name, out[name])
    return out


#: How the network's scores enter the result: (output, rule) -> row label suffix.
LEAPRR_MODES = {
    ("mean", "overwrite"): "one matrix, overwrite: the paper's",
    ("mean", "fused"): "one matrix, dev-chosen rules",
    ("per_direction", "overwrite"): "per direction, overwrite",
    ("per_direction", "fused"): "per direction, dev-chosen rules",
    ("per_direction", "chosen"): "per direction, dev-chosen rules and output (rerank_both)",
}


def _leaprr_rows(model, test, base_rsum: float) -> dict[str, Any]:
    """One network pass on ``test``; both outputs (one matrix / per direction) under the overwrite,
    the dev-chosen rules and the input itself (w = 1)."""
    from pillar_rerank.fusion import OUTPUTS, list_lengths, output_of, rules_of
    from pillar_rerank.inference import base_matrices
    from pillar_rerank.metrics.recall import recall_metrics

    raw = copy.copy(model)
    raw.fusion_ = None
    t0 = time.perf_counter()
    shard = raw.rerank_shard(test, 0, 1)
    rerank_s = time.perf_counter() - t0
    bases = base_matrices(model._normalized(test, model.config_))
    lens = list_lengths(model.config_)
    own_rules = {o: rules_of(model.fusion_, o) for o in OUTPUTS}
    records = {"overwrite": None,
               # the rules alone: each direction from its own matrix (before the output choice)
               "fused": own_rules,
               # what rerank_both returns: per direction, also the one-matrix output as a candidate
               "chosen": model.fusion_,
               "input": {o: {"i2t": 1.0, "t2i": 1.0} for o in OUTPUTS}}
    out: dict[str, Any] = {}
    for output in OUTPUTS:
        for rule, record in records.items():
            if rule == "chosen" and output == "mean":
                continue  # the one-matrix output has no choice of source: same as "fused"
            result = output_of([shard], *bases, record, output, lens)
            m = (recall_metrics(result, test.relevance) if output == "mean"
                 else recall_metrics(result[0], test.relevance, t2i_scores=result[1]))
            out[f"{output}/{rule}"] = {**_round(m), "delta_RSUM": round(m["RSUM"] - base_rsum, 2)}
    out["rerank_s"] = round(rerank_s, 1)
    return out


def run(*, seed: int = 0, train_items: int = 29_000, holdout: int = 1000, config: dict | None = None,
        methods: list[str] | None = None, tune_items: int = 2000, bank_items: int = 8000,
        variants: list[str] | None = None,
        cache: str | None = None, f30k_root: str | None = None, root: str | None = None,
        sides: str = "f30k", progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """The whole protocol for one training-set size and one seed; returns the figures.

    ``config`` overrides fields of the reduced CPU configuration of
    :mod:`benchmarks.leaprr_accuracy` (embed_dim 64, depth 2, 4 heads, batch 128, lr 0.6,
    8 epochs). ``variants``: any of ``"alone"``, ``"best"`` (after the best normaliser),
    ``"dsl"``; default all three. ``root`` is the caption_xenc folder (COCO 5K). ``sides="coco_a"``
    runs the same comparison on the COCO protocol a of :mod:`benchmarks.leaprr_accuracy` instead
    (``train_items`` then ignored): a check of the fusion where no F30K training cache exists.
    ``progress`` is called with the figures so far after each stage (e.g. to save them).
    ``bank_items``: the training-free methods' bank is the training side's first ``bank_items``
    items (with their captions).
    """
    from benchmarks.baselines_accuracy import _measure
    from pillar_rerank.baselines import BASELINES, bank_from_embeddings
    from pillar_rerank.config import LeaPRRConfig
    from pillar_rerank.metrics.recall import recall_metrics
    from pillar_rerank.reranker import PillarReranker

    started = time.perf_counter()
    if sides == "coco_a":
        train, dev, tests = coco_sides(root)
    else:
        train, dev, tests = load_sides(train_items=train_items, holdout=holdout, cache=cache,
                                       f30k_root=f30k_root, coco_root=root)
    methods = list(methods or BASELINES)
    variants = list(variants or ("alone", "dsl", "best"))
    wall: dict[str, float] = {"load_s": round(time.perf_counter() - started, 1)}
    stages: list[dict[str, Any]] = []
    _stage(stages, "load", wall["load_s"])
    t0 = time.perf_counter()
    tuning = tune_methods(train, methods, tune_items=tune_items, seed=0)
    wall["tuning_s"] = round(time.perf_counter() - t0, 1)
    _stage(stages, "tuning", wall["tuning_s"])
    inductive = [m for m in methods if not tuning[m]["transductive"]]
    best = max(inductive, key=lambda m: tuning[m]["tuning_rsum"]) if inductive else None
    result: dict[str, Any] = {
        "protocol": __doc__.split("Run it")[0].strip() if sides == "f30k" else coco_sides.__doc__,
        "sides": sides,
        "seed": seed, "train_items": train.n_images,
        "sizes": {"train": [train.n_images, train.n_texts], "dev": [dev.n_images, dev.n_texts],
                  **{k: [t.n_images, t.n_texts] for k, t in tests.items()}},
        "tuning": tuning, "best_normaliser": best, "evaluation": {}, "leaprr": {}, "stages": stages,
    }
    bank_side = (train if bank_items >= train.n_images
                 else train.subset_images(np.arange(bank_items), name=f"bank: {train.name}[:{bank_items}]"))
    result["bank"] = [bank_side.n_images, bank_side.n_texts]
    evals = {}
    for tname, test in tests.items():
        t0 = time.perf_counter()
        data = test.with_scores(test.similarity())
        base = recall_metrics(data.scores, data.relevance)
        bank = bank_from_embeddings(bank_side, data, dtype=np.float16)
        rows = {}
        _stage(stages, f"{tname}: bank", time.perf_counter() - t0)
        for m in methods:
            t1 = time.perf_counter()
            row = _measure(m, tuning[m]["params_i2t"], data, bank, tuning[m]["params_t2i"])
            rows[m] = {**row, "delta_RSUM": round(row["RSUM"] - base["RSUM"], 2),
                       "transductive": tuning[m]["transductive"]}
            _stage(stages, f"{tname}: {m}", time.perf_counter() - t1)
        del bank
        evals[tname] = base["RSUM"]
        result["evaluation"][tname] = {"base": _round(base), "methods": rows,
                                       "wall_s": round(time.perf_counter() - t0, 1)}
        if progress is not None:
            progress(result)
    normalisers = {"alone": None, "best": best, "dsl": TRANSDUCTIVE_COMPOSITION}
    for variant in variants:
        name = normalisers[variant]
        if variant != "alone" and (name is None or name not in tuning):
            result["leaprr"][variant] = {"skipped": f"normaliser {name!r} not among the tuned methods"}
            continue
        params = {} if name is None else {d: tuning[name][f"params_{d}"] for d in ("i2t", "t2i")}
        # fitted with the fusion so that both the fused and the overwrite result come from one model
        cfg = LeaPRRConfig.from_dict({**REDUCED, **(config or {}), "seed": seed, "normalize": name,
                                      "normalize_params": params, "score_fusion": "zscore"})
        t0 = time.perf_counter()
        model = PillarReranker(cfg).fit(train, dev, verbose=False)
        fit_s = time.perf_counter() - t0
        _stage(stages, f"{variant}: fit", fit_s)
        entry = {"normalize": name, "normalize_params": params, "config": cfg.to_dict(),
                 "fit_s": round(fit_s, 1),
                 "train_items_per_s": round(train.n_texts * cfg.epochs / fit_s, 1),
                 "best_dev_rsum": model.history_.get("best_rsum"),
                 "dev_curve": [(v["step"], round(v["RSUM"], 2)) for v in model.history_["validations"]],
                 "fusion": model.fusion_, "tests": {}}
        for tname, test in tests.items():
            t0 = time.perf_counter()
            entry["tests"][tname] = _leaprr_rows(model, test, evals[tname])
            _stage(stages, f"{variant}: rerank {tname}", time.perf_counter() - t0)
        result["leaprr"][variant] = entry
        if progress is not None:
            progress(result)
        logger.info("LeaPRR %s: %s", variant, json.dumps(entry["tests"]))
    wall["total_s"] = round(time.perf_counter() - started, 1)
    result["wall_s"] = wall
    result["torch_threads"] = _torch_threads()
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["process_peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


TEST_NAMES = {"f30k_holdout": "F30K held-out 1,000", "coco5k_test": "COCO 5K (other domain)"}


Row = tuple[str, str, list[dict[str, float]], list[float]]


def _rows(figs: list[dict[str, Any]], test: str) -> list[Row]:
    """(method, kind, recall dicts, base RSUMs) of one test set, in table order: one entry per seed
    that has the row (a variant may have been trained for fewer seeds than the others)."""
    ev = [f["evaluation"][test] for f in figs]
    base = [e["base"]["RSUM"] for e in ev]
    rows = [("base", "input", [e["base"] for e in ev], base)]
    for m in ev[0]["methods"]:
        kind = "transductive" if ev[0]["methods"][m]["transductive"] else "training-free"
        rows.append((f"{m} (tuned per direction)", kind, [e["methods"][m] for e in ev], base))
    for variant, label in (("alone", "LeaPRR"), ("best", "{n} -> LeaPRR"), ("dsl", "{n} -> LeaPRR")):
        seeds = [(f["leaprr"].get(variant), b) for f, b in zip(figs, base)]
        seeds = [(e, b) for e, b in seeds if e and "tests" in e]
        if not seeds:
            continue
        name = label.format(n=seeds[0][0]["normalize"])
        for (output, rule), suffix in LEAPRR_MODES.items():
            if any(f"{output}/{rule}" not in e["tests"][test] for e, _ in seeds):
                continue  # figures written before this row existed
            rows.append((f"{name} ({suffix})", "learned",
                         [e["tests"][test][f"{output}/{rule}"] for e, _ in seeds], [b for _, b in seeds]))
    return rows


def _note(size: int, figs: list[dict[str, Any]]) -> str:
    """The protocol and training configuration behind one size's tables."""

    trained: dict[str, dict[str, Any]] = {}  # each variant as its first seed trained it
    for f in figs:
        for v, e in f["leaprr"].items():
            if "config" in e:
                trained.setdefault(v, e)
    cfg = next(iter(trained.values()))["config"] if trained else {}
    keys = ("embed_dim", "depth", "num_heads", "epochs", "batch_size", "lr", "list_len_i2t", "list_len_t2i")
    fit = ", ".join(f"{v}: {_seconds([f['leaprr'][v]['fit_s'] for f in figs if v in f['leaprr']])}"
                    for v in trained)
    sides = (f"Training side: first {size} items of f30k_train (held-out: its last 1,000); model "
             "selection and fusion weights on f30k_dev" if figs[0].get("sides", "f30k") == "f30k" else
             "COCO protocol a: training side coco1k_dev items 0-799, model selection and fusion "
             "weights on items 800-999 (200 x 800)")
    rules = "; ".join(f"{v}: " + ", ".join(_rules_text(e["fusion"], o) for o in ("mean", "per_direction"))
                      for v, e in trained.items())
    bank = figs[0].get("bank")
    banks = (f"banks from its first {bank[0]:,} items" if bank and bank[0] < figs[0]["train_items"]
             else "banks from it")
    return (sides + f"; training-free methods tuned on the training side, {banks}. Rules of the "
            f"dev-chosen rows (each variant's first seed): {rules}. LeaPRR: "
            + ", ".join(f"{k}={cfg.get(k)}" for k in keys)
            + f"; seeds {sorted(f['seed'] for f in figs)}; fit seconds per variant: {fit}.")


def _seconds(values: list[float]) -> str:
    """``"231 s"`` for one seed, ``"231 ± 12 s"`` for several."""
    return (f"{values[0]:.0f} s" if len(values) == 1
            else f"{np.mean(values):.0f} ± {np.std(values, ddof=1):.0f} s")


def _rules_text(record: dict[str, Any], output: str) -> str:
    from pillar_rerank.fusion import sources_of

    taken = [d for d, src in sources_of(record).items() if src == "mean"] if output == "per_direction" else []
    return (f"{output} i2t {record[output]['i2t']} t2i {record[output]['t2i']}"
            + "".join(f" ({d} from one matrix)" for d in taken))


def runs_by_size(runs: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """Figures per training-set size, one per seed: runs of one size and seed that trained
    different variants (one point per variant) are merged into one."""
    merged: dict[tuple[int, int], dict[str, Any]] = {}
    for r in runs:
        f = r["figures"]
        key = (f["train_items"], f["seed"])
        if key not in merged:
            merged[key] = copy.deepcopy(f)
        else:
            merged[key]["leaprr"].update(copy.deepcopy(f["leaprr"]))
    by_size: dict[int, list[dict[str, Any]]] = {}
    for (size, _), f in sorted(merged.items()):
        by_size.setdefault(size, []).append(f)
    return by_size


def summarize(runs: list[dict[str, Any]], bench: Any) -> dict[str, Any]:
    """A headline per training-set size (RSUM on both test sets) and one full table per size and
    test set (mean ± std over seeds)."""
    from benchmarks.summaries import mean_spread
    from pillar_rerank.report.tables import Table

    by_size = runs_by_size(runs)
    headlines, tables = [], []
    for size, figs in sorted(by_size.items()):
        note = _note(size, figs)
        summary: dict[str, dict[str, Any]] = {}
        for test in figs[0]["evaluation"]:
            label = TEST_NAMES.get(test, test)
            records = []
            for method, kind, vals, base in _rows(figs, test):
                delta = mean_spread([v["RSUM"] - b for v, b in zip(vals, base)])
                records.append({"method": method, "kind": kind, "seeds": len(vals),
                                **{k.replace("_", " "): mean_spread([v[k] for v in vals]) for k in KEYS},
                                "ΔRSUM": delta})
                row = summary.setdefault(method, {"method": method, "kind": kind})
                row[f"{label} RSUM"] = records[-1]["RSUM"]
                row[f"{label} ΔRSUM"] = delta
            tables.append(Table.from_records(f"{label}, trained on {size:,} items", records, notes=note))
        seeds = len(figs)
        where = ("Flickr30K-proxy items: RSUM on the F30K held-out 1,000 and COCO 5K"
                 if figs[0].get("sides", "f30k") == "f30k" else "COCO items (protocol a): RSUM on COCO 5K")
        headlines.append(Table.from_records(
            f"LeaPRR trained on {size:,} {where} "
            f"({'mean ± std over ' + str(seeds) + ' seeds' if seeds > 1 else 'one seed'})",
            list(summary.values()), notes=note, headline=True))
    return {"tables": [t.to_dict() for t in headlines + tables]}


#: The columns of the curves table: (row label, variant, output/rule) of LeaPRR.
CURVE_ROWS = (("LeaPRR, one matrix, overwrite", "alone", "mean/overwrite"),
              ("LeaPRR, per direction, dev-chosen", "alone", "per_direction/chosen"),
              ("DSL -> LeaPRR, per direction, dev-chosen", "dsl", "per_direction/chosen"))


def summarize_curves(runs: list[dict[str, Any]], bench: Any) -> dict[str, Any]:
    """One row per point of the curves (training items, width, list lengths): the RSUM of base,
    the best non-transductive normaliser, DSL and LeaPRR on each test set, with the fit time."""
    from pillar_rerank.report.tables import Table

    records = []
    for r in runs:
        f = r["figures"]
        trained = {v: e for v, e in f["leaprr"].items() if "config" in e}
        if not trained:
            continue
        cfg = next(iter(trained.values()))["config"]
        rec: dict[str, Any] = {"train items": f["train_items"], "embed_dim": cfg["embed_dim"],
                               "heads": cfg["num_heads"], "list_len i2t/t2i":
                               f"{cfg['list_len_i2t']}/{cfg['list_len_t2i']}", "seed": f["seed"]}
        for test, ev in f["evaluation"].items():
            label = TEST_NAMES.get(test, test).split(" (")[0]
            rec[f"{label}: base"] = ev["base"]["RSUM"]
            best = f.get("best_normaliser")
            if best in ev["methods"]:
                rec[f"{label}: {best}"] = ev["methods"][best]["RSUM"]
            if "dsl" in ev["methods"]:
                rec[f"{label}: DSL"] = ev["methods"]["dsl"]["RSUM"]
            for row, variant, key in CURVE_ROWS:
                if variant in trained:
                    figures = trained[variant]["tests"][test]
                    # figures written before the output choice: the per-direction rules alone
                    rec[f"{label}: {row}"] = (figures.get(key) or figures["per_direction/fused"])["RSUM"]
        rec["fit s"] = ", ".join(f"{v} {e['fit_s']:.0f}" for v, e in trained.items())
        records.append(rec)
    note = ("F30K protocol of accuracy/leaprr_f30k (training side: first N items of f30k_train, "
            "held-out its last 1,000, model selection and fusion rules on f30k_dev); reduced CPU "
            "configuration (depth 2, batch 128, lr 0.6, 8 epochs) with the width and list lengths "
            "of each row; one seed per row. RSUM; the best normaliser is chosen by its tuning RSUM; "
            "LeaPRR's per-direction rows are what rerank_both returns (dev-chosen rules and output).")
    return {"tables": [Table.from_records("LeaPRR: what limits it (training items, width, list length)",
                                          records, notes=note, headline=True).to_dict()]}
