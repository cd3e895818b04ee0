"""Turn the figures of other modules' benchmark functions into result tables.

Each function here takes the runs of one benchmark (see :mod:`benchmarks.runner`) and returns
``{"tables": [...], "plots": [...], "notes": [...]}``; the figures themselves are stored
unchanged in the result JSON, so a table can always be re-derived from them.

Over ~400 lines: one table builder per benchmark kind.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pillar_rerank.report.tables import Table, spread

RECALL_KEYS = ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "RSUM")
PROTOCOL_NAMES = {"coco1k_fold0": "COCO 1K fold 0", "coco5k_test": "COCO 5K"}


def _label(key: str) -> str:
    return key.replace("_", " ")


def _params_text(params: Mapping[str, Any] | None) -> str:
    if not params:
        return "defaults"
    return ", ".join(
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in params.items()
        if k not in ("intra_source", "device", "block_bytes")
    )


def baselines_accuracy(runs: Sequence[dict[str, Any]], bench: Any) -> dict[str, Any]:
    """Tables of ``benchmarks.baselines_accuracy.run``: one per protocol plus a headline."""
    fig = runs[0]["figures"]
    tables, headline = [], []
    for proto, base in fig["base"].items():
        title = PROTOCOL_NAMES.get(proto, proto)
        records = [
            {
                "group": "base",
                "method": "base",
                "setting": "–",
                "params": "–",
                **{_label(k): base[k] for k in RECALL_KEYS},
                "ΔRSUM": 0.0,
                "time s": None,
                "peak MiB": None,
            }
        ]
        for group in ("fair", "transductive"):
            for r in (r for r in fig[group] if r["protocol"] == proto):
                records.append(
                    {
                        "group": "training-free" if group == "fair" else "transductive",
                        "method": r["method"],
                        "setting": r["setting"],
                        "params": _params_text(r["params"]),
                        **{_label(k): r[k] for k in RECALL_KEYS},
                        "ΔRSUM": r["delta_RSUM"],
                        "time s": r["time_s"],
                        "peak MiB": r["peak_rss_delta_mib"],
                    }
                )
        tables.append(
            Table.from_records(
                f"Training-free methods, {title}",
                records,
                digits=1,
                notes="Banks: coco1k_dev against the evaluated gallery; tuned on coco1k_dev only "
                "(split by items). Transductive methods read all test queries at once and are reported "
                "apart. time: both directions, bank statistics included; peak MiB: RSS above the level "
                "before the call.",
            )
        )
        headline.append(
            {"protocol": title, "method": "base", "group": "base", "RSUM": base["RSUM"], "ΔRSUM": 0.0}
        )
        for group, label in (("fair", "best training-free"), ("transductive", "best transductive")):
            # Any setting tuned on coco1k_dev competes (e.g. "tuned", "tuned per direction").
            cands = [r for r in fig[group] if r["protocol"] == proto and r["setting"].startswith("tuned")]
            if cands:
                best = max(cands, key=lambda r: r["RSUM"])
                headline.append(
                    {
                        "protocol": title,
                        "method": f"{label}: {best['method']} ({best['setting']})",
                        "group": "training-free" if group == "fair" else group,
                        "RSUM": best["RSUM"],
                        "ΔRSUM": best["delta_RSUM"],
                    }
                )
    tables.insert(
        0,
        Table.from_records(
            "Training-free re-ranking on the COCO caption proxy (RSUM)",
            headline,
            headline=True,
            notes="RSUM = sum of R@1/5/10 in both directions; tuned on coco1k_dev only.",
        ),
    )
    tuning = []
    for name, t in fig["tuning"].items():
        per_dir = "best_params_i2t" in t
        tuning.append(
            {
                "method": name,
                "chosen (both directions)": _params_text(t["best_params"]),
                "chosen i2t / t2i": (
                    f"{_params_text(t['best_params_i2t'])} / {_params_text(t['best_params_t2i'])}"
                    if per_dir
                    else "–"
                ),
                "dev RSUM": t["dev_rsum"],
                "grid points": len(t["trials"]),
                "time s": t["time_s"],
            }
        )
    if tuning:
        tables.append(Table.from_records("Tuning on coco1k_dev", tuning))
    return {"tables": [t.to_dict() for t in tables]}


def mean_spread(values: Sequence[float]) -> dict[str, float] | float:
    """A spread cell for several seeds, the plain value for one."""
    return spread(values) if len(values) > 1 else float(values[0])


def bench_inputs(runs: Sequence[dict[str, Any]], bench: Any) -> dict[str, Any]:
    """Table of ``benchmarks.bench_inputs.run``: one row per shape and input form."""
    records = []
    for r in runs:
        f = r["figures"]
        sec = f["seconds"]
        n = f["n_images"] + f["n_texts"]
        records.append(
            {
                "images x texts": f"{f['n_images']:,} x {f['n_texts']:,}",
                "input": f["mode"],
                "d": f["dim"],
                "intra-modal": f.get("intra_source"),
                "prepare s": sec.get("intra_prepare"),
                "neighbours s": sec.get("neighbors"),
                "image lists s": sec.get("image_lists"),
                "text lists s": sec.get("text_lists"),
                "of which graphs s": sec.get("graph_only"),
                "total s": sec.get("total"),
                "queries/s": n / sec["total"] if sec.get("total") else None,
                "input MB": f.get("input_mb"),
                "lists MB": f.get("output_mb"),
                "peak RSS MB": r["peak_rss_mb"],
            }
        )
    cfg = runs[0]["figures"]
    return {
        "tables": [
            Table.from_records(
                "LeaPRR input building (all image and text queries)",
                records,
                notes=f"Synthetic data; n_pillars={cfg.get('n_pillars')}, list lengths "
                f"{cfg.get('list_len_i2t')}/{cfg.get('list_len_t2i')}, "
                f"graph_neighbors={cfg.get('graph_neighbors')}. 'of which graphs' re-times "
                "the adjacency part of the two list stages. Peak RSS: the isolated process's high-water mark "
                "(VmHWM), lists kept in memory.",
            ).to_dict()
        ]
    }


def leaprr_rerank_speed(runs: Sequence[dict[str, Any]], bench: Any) -> dict[str, Any]:
    """Tables of ``benchmarks.bench_rerank.run``: time per stage and throughput per shape."""
    records = []
    for r in runs:
        f = r["figures"]
        sec = f["seconds"]
        n_img, n_txt = f["shape"]
        records.append(
            {
                "images x texts": f"{n_img:,} x {n_txt:,}",
                # runs written before the precision was recorded ran the model stage in fp32
                "precision": f.get("precision", "fp32"),
                "queries/s": f["queries_per_second"],
                **{f"{k} s": v for k, v in sec.items()},
                "total s": f["total_seconds"],
                "model / bare matmuls": f.get("ratio_model_to_reference"),
                "total / bare matmuls": f.get("ratio_total_to_reference"),
                "fp32 total s (same lists)": f.get("fp32_total_seconds"),
                "total / fp32 total": f.get("ratio_total_to_fp32_total"),
                "peak RSS MB": r["peak_rss_mb"],
                "output MB": f.get("output_matrix_mb"),
            }
        )
    cfg = runs[0]["figures"]["config"]
    cfg_text = ", ".join(f"{k}={v}" for k, v in cfg.items())
    is_paper = (cfg.get("embed_dim"), cfg.get("depth"), cfg.get("num_heads")) == (768, 2, 24)
    paper = " (the paper's size)" if is_paper else " (reduced, not the paper's size)"
    full = Table.from_records(
        "LeaPRR re-ranking, both directions: time per stage",
        records,
        notes=f"Synthetic embeddings (d={runs[0]['figures'].get('embedding_dim')}), untrained weights (speed "
        f"does not depend on them); {cfg_text}. Precision: what precision='auto' resolved to on this "
        "CPU (bf16 where it has native bf16; the model stage under autocast, as a re-rank runs it). "
        "Bare matmuls: the model's matrix multiplies alone on the same batch shapes, in the same "
        "precision, timed in the same process (benchmarks/model_reference.py); fp32 total: the same "
        "re-rank with the model stage timed in fp32 on the same lists, in the same process. Peak "
        "RSS: the isolated process's high-water mark.",
    )
    compact = Table.from_records(
        "LeaPRR re-ranking throughput",
        [{k: rec[k] for k in ("images x texts", "precision", "queries/s", "total s", "model / bare matmuls",
                              "total / bare matmuls", "total / fp32 total", "peak RSS MB")}
         for rec in records],
        headline=True,
        notes=f"Both directions, one CPU process, model embed_dim={cfg.get('embed_dim')}, "
        f"depth={cfg.get('depth')}, heads={cfg.get('num_heads')}{paper}; stages in "
        "benchmarks/results/README.md.",
    )
    return {"tables": [compact.to_dict(), full.to_dict()]}


def leaprr_training_speed(runs: Sequence[dict[str, Any]], bench: Any) -> dict[str, Any]:
    """Table of ``benchmarks.bench_train.run``: training items per second vs the bare matmuls."""
    records = []
    for r in runs:
        f = r["figures"]
        c = f["config"]
        records.append({
            "config": f"{f['config_name']} (D={c['embed_dim']}, depth {c['depth']}, {c['num_heads']} heads, "
                      f"batch {c['batch_size']})",
            "images x texts": f"{f['shape'][0]:,} x {f['shape'][1]:,}",
            "precision": f.get("precision", "fp32"),
            "steps": f["steps"],
            "items/s": f["items_per_second"],
            "bare matmuls items/s": f["reference_items_per_second"],
            "loop / bare matmuls": f["ratio_loop_to_reference"],
            "fp32 items/s (same lists)": f.get("fp32_items_per_second"),
            "loop / fp32 loop": f.get("ratio_loop_to_fp32_loop"),
            "input building s": f["seconds"]["inputs (not in the loop)"],
            "peak RSS MB": r["peak_rss_mb"],
        })
    table = Table.from_records(
        "LeaPRR training throughput (one CPU process)",
        records,
        headline=True,
        notes="Training items (captions) per second of the training loop of `rerank fit` (list gathering, "
        "structure-alignment lists, both networks forward and backward, losses, SGD), input building "
        "excluded; bare matmuls: forward and backward of the model's matrix multiplies alone on the "
        "recorded batch shapes, in the same precision, in the same process "
        "(benchmarks/model_reference.py); a bf16 row also times the fp32 loop on the same lists in "
        "the same process.",
    )
    return {"tables": [table.to_dict()]}


def multi_process_fit(runs: Sequence[dict[str, Any]], bench: Any) -> dict[str, Any]:
    """Table of ``benchmarks.ddp_fit.run``: one process vs torchrun, time and dev RSUM."""
    records = []
    for r in runs:
        f = r["figures"]
        many = [(k, k.replace("_", " ")) for k in f if k.endswith("_processes")]
        for key, label in [("one_process", "1 process"), *many]:
            procs = 1 if key == "one_process" else int(key.split("_")[0])
            threads = max(1, f["threads_total"] // procs)
            records.append({"run": f"{label} x {threads} thread(s)", "wall s": f[key]["seconds"],
                            "best dev RSUM": f[key]["best_dev_rsum"]})
        records[-1]["speed-up"] = f["speedup"]
        records[-1]["max weight difference"] = f"{f['max_weight_difference']:.1e}"
    cfg = runs[0]["figures"]["config"]
    table = Table.from_records(
        "rerank fit under torchrun (gloo, CPU) vs one process",
        records,
        headline=True,
        notes=f"Protocol {runs[0]['figures']['protocol']} training side "
        f"({runs[0]['figures']['train'][0]} x {runs[0]['figures']['train'][1]}), same global batch and seed; "
        f"embed_dim {cfg['embed_dim']}, depth {cfg['depth']}, {cfg['num_heads']} heads, batch "
        f"{cfg['batch_size']}, {cfg['epochs']} epochs (reduced CPU configuration). Same cores for both runs.",
    )
    return {"tables": [table.to_dict()]}


LEAPRR_PROTOCOLS = {
    "a": "train coco1k_dev → test COCO 5K",
    "b": "train items 1000–4999 → test COCO 1K fold 0",
}


def leaprr_accuracy(runs: Sequence[dict[str, Any]], bench: Any) -> dict[str, Any]:
    """Mean ± spread over seeds of LeaPRR (and LeaPRR after a normaliser), per protocol."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in runs:
        f = r["figures"]
        label = "LeaPRR" if not f.get("normalize") else f"LeaPRR after {f['normalize']}"
        groups.setdefault((f["protocol"], label), []).append(f)
    tables, headline = [], []
    for proto in sorted({p for p, _ in groups}):
        records = []
        base, base_runs = None, []
        for (p, label), figs in groups.items():
            if p != proto:
                continue
            res = [f["protocols"][proto] for f in figs]
            base, base_runs = res[0]["base"], res
            params = figs[0].get("normalize_params") or {}
            records.append(
                {
                    "method": label,
                    "normaliser params": _params_text(params) if figs[0].get("normalize") else "–",
                    "seeds": len(figs),
                    **{_label(k): mean_spread([x["leaprr"][k] for x in res]) for k in RECALL_KEYS},
                    "ΔRSUM": mean_spread([x["rsum_gain"] for x in res]),
                    **_extended_columns([x["extended"]["leaprr"] for x in res if x.get("extended")]),
                    "fit s": mean_spread([x["fit_seconds"] for x in res]),
                    "re-rank s": mean_spread([x["rerank_seconds"] for x in res]),
                }
            )
            headline.append(
                {
                    "protocol": LEAPRR_PROTOCOLS.get(proto, proto),
                    "method": label,
                    "seeds": len(figs),
                    "RSUM": mean_spread([x["leaprr"]["RSUM"] for x in res]),
                    "ΔRSUM": mean_spread([x["rsum_gain"] for x in res]),
                }
            )
        records.insert(
            0,
            {
                "method": "base",
                "normaliser params": "–",
                "seeds": None,
                **{_label(k): base[k] for k in RECALL_KEYS},
                "ΔRSUM": 0.0,
                **_extended_columns([x["extended"]["base"] for x in base_runs if x.get("extended")][:1]),
            },
        )
        tables.append(
            Table.from_records(
                f"LeaPRR, protocol {proto}: {LEAPRR_PROTOCOLS.get(proto, proto)}",
                records,
                notes=_config_note([r for r in runs if r["figures"]["protocol"] == proto]),
            )
        )
    tables.insert(
        0,
        Table.from_records(
            f"{getattr(bench, 'title', None) or 'LeaPRR on the COCO caption proxy'} "
            "(RSUM, mean ± std over seeds)",
            headline,
            headline=True,
            notes=_config_note(runs),
        ),
    )
    return {"tables": [t.to_dict() for t in tables]}


def _extended_columns(values: Sequence[dict[str, float]]) -> dict[str, Any]:
    """ECCV Caption / CxC columns (mean ± spread over seeds) when the runs measured them."""
    if not values:
        return {}
    return {k.replace("_", " "): mean_spread([v[k] for v in values]) for k in values[0]}


def _config_note(runs: Sequence[dict[str, Any]]) -> str:
    keys = ("embed_dim", "depth", "num_heads", "epochs", "batch_size", "lr", "n_pillars")
    by_protocol: dict[str, str] = {}
    for r in runs:
        cfg = r["figures"]["config"]
        by_protocol.setdefault(r["figures"]["protocol"], ", ".join(f"{k}={cfg[k]}" for k in keys if k in cfg))
    if len(set(by_protocol.values())) == 1:
        shown = next(iter(by_protocol.values()))
    else:
        shown = "; ".join(f"protocol {p}: {text}" for p, text in sorted(by_protocol.items()))
    return (
        f"Reduced CPU configuration ({shown}); the paper's is embed_dim 768, 24 heads, batch 512, "
        "30 epochs. Model selection on a dev split of the training side only; mean ± sample std over seeds."
    )


def scale_memory_budget(runs: Sequence[dict[str, Any]], bench: Any) -> dict[str, Any]:
    """Tables and plots of ``benchmarks.bench_scale_inputs.run``: budget vs measured memory, ANN."""
    # every point of the benchmark (each a call of run() with its own sizes) contributes its rows
    doc = {"runs": [r for run in runs for r in run["figures"].get("runs", [])],
           "ann": [a for run in runs for a in run["figures"].get("ann", [])]}
    rows = sorted(doc["runs"], key=lambda r: r["n_images"] * r["n_texts"])
    records = [
        {
            "images x texts": f"{r['n_images']:,} x {r['n_texts']:,}",
            "input": r.get("mode", "embeddings"),
            "index": r["index"],
            "d": r["dim"],
            "build s": r["seconds"].get("total"),
            "budget MB": r["budget_mb"],
            "peak additional MB": r.get("peak_additional_mb"),
            "of which anonymous MB": r.get("peak_additional_anon_mb"),
            "within budget": r.get("within_budget"),
            "peak RSS MB": r["peak_rss_mb"],
            "inputs MB": r.get("inputs_mb"),
            "dense matrix MB": r.get("dense_matrix_mb"),
            **({"bare products s": r["bare_products_seconds"]["total"],
                "neighbours / bare": r["neighbors_over_bare"],
                "build / bare": r["build_over_bare"]} if "bare_products_seconds" in r else {}),
            # runs since the symmetric intra-modal search: against the products it computes
            **({"searched products s": r["bare_products_seconds"]["searched_total"],
                "neighbours / searched": r["neighbors_over_searched"]}
               if "neighbors_over_searched" in r else {}),
        }
        for r in rows
    ]
    tables = [
        Table.from_records(
            "Input building under a memory budget (build_cache, max_memory)",
            records,
            digits=2,
            # the speed suite's inputs_floor (build / bare products) is a headline there too
            headline=getattr(bench, "suite", "") == "scale"
            or any("bare_products_seconds" in r for r in rows),
            notes="Each size in a fresh process; 'peak additional' is the RSS high-water mark minus the "
            "RSS before building (inputs, interpreter and libraries excluded), which the budget bounds; "
            "'anonymous' leaves out the page cache of memory-mapped files. Synthetic embeddings. 'bare "
            "products': image x text, text x text and image x image, whole, timed alone in the same "
            "process; 'searched products': image x text and the halves of the two symmetric "
            "intra-modal products that the search computes.",
        )
    ]
    ann = []
    for a in doc.get("ann", []):
        for name, res in a["indexes"].items():
            ann.append(
                {
                    "gallery": f"{a['n_gallery']:,} (d={a['dim']}, k={a['k']})",
                    "index": name,
                    "params": _params_text(res.get("params")),
                    f"recall@{a['k']} vs exact": res["recall"],
                    "exact s": res["exact_seconds"],
                    "approximate s": res["approx_seconds"],
                    "speed-up": res["speedup"],
                }
            )
    if ann:
        tables.append(Table.from_records("Approximate neighbour search vs exact (t2t lists)", ann, digits=3))
    plots = []
    if len(rows) > 1:
        x = [r["n_texts"] for r in rows]
        plots.append(
            {
                "title": "Memory under a budget against size",
                "x_label": "n_texts",
                "y_label": "MB",
                "x": x,
                "log_x": True,
                "log_y": True,
                "series": {
                    "peak additional RSS": [r.get("peak_additional_mb") for r in rows],
                    "budget (max_memory)": [r["budget_mb"] for r in rows],
                    "dense images x texts matrix (not built)": [r.get("dense_matrix_mb") for r in rows],
                },
                "caption": "Peak additional RSS of input building against size, with the memory budget and "
                "the size of the dense score matrix that is never built.",
            }
        )
        plots.append(
            {
                "title": "Input building time against size",
                "x_label": "n_texts",
                "y_label": "seconds",
                "x": x,
                "log_x": True,
                "log_y": True,
                "series": {
                    stage: [r["seconds"].get(stage) for r in rows]
                    for stage in ("neighbors", "lists", "total")
                },
                "caption": "Wall time of the neighbour searches (exact: grows with images x texts) and of "
                "the list building (grows with images + texts) against size.",
            }
        )
    return {"tables": [t.to_dict() for t in tables], "plots": plots}
