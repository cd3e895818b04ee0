"""Assemble reports: from a folder of benchmark results, or from raw score matrices."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pillar_rerank.exceptions import InvalidInputError
from pillar_rerank.inputs import Relevance
from pillar_rerank.report import plots
from pillar_rerank.report.diagnostics import diagnose, diagnostics_payload
from pillar_rerank.report.html import Figure, Report, Section
from pillar_rerank.report.results import load_results
from pillar_rerank.report.tables import Table
from pillar_rerank.typing import PathLikeStr

logger = logging.getLogger(__name__)

PROXY_NOTE = (
    "The COCO figures come from a caption-based stand-in (../shared/data/caption_xenc): the "
    "gallery 'images' are captions embedded by a second text encoder, not image features. "
    "Use them to compare re-rankers, not as image-text retrieval results."
)


def _recall_at(curve: Mapping[str, list], k: int) -> float | None:
    ks = curve["k"]
    return curve["recall"][ks.index(k)] if k in ks else None


def diagnostics_tables(payload: Mapping[str, Any]) -> list[Table]:
    """Recall, rank-change and hubness tables from a diagnostics payload."""
    recall_rows, change_rows, hub_rows = [], [], []
    for m in payload["methods"]:
        dirs = m["directions"]
        row: dict[str, Any] = {"method": m["name"], "group": m["group"]}
        total = 0.0
        for d in ("i2t", "t2i"):
            for k in (1, 5, 10):
                val = _recall_at(dirs[d]["recall_curve"], k)
                row[f"{d} R@{k}"] = val
                total += val or 0.0
        row["RSUM"] = total
        recall_rows.append(row)
        hub = {"method": m["name"]}
        for d in ("i2t", "t2i"):
            h = dirs[d]["hubness"]
            hub[f"{d} skew N{h['k']}"] = h["skewness"]
            hub[f"{d} max N{h['k']}"] = h["max"]
            hub[f"{d} anti-hubs %"] = 100 * h["antihub_fraction"]
        hub_rows.append(hub)
        if "rank_change" in dirs["i2t"]:
            ch = {"method": m["name"]}
            for d in ("i2t", "t2i"):
                rc = dirs[d]["rank_change"]
                n = max(1, rc["n_queries"])
                ch[f"{d} up %"] = 100 * rc["improved"] / n
                ch[f"{d} same %"] = 100 * rc["unchanged"] / n
                ch[f"{d} down %"] = 100 * rc["worsened"] / n
                ch[f"{d} net into top-1"] = rc["into_top1"] - rc["out_of_top1"]
            change_rows.append(ch)
    name = payload.get("dataset", "")
    tables = [Table.from_records(f"Recall@K, {name}", recall_rows)]
    if change_rows:
        tables.append(
            Table.from_records(
                f"Rank of the true match vs {payload.get('base')}, {name}",
                change_rows,
                notes="up/same/down: share of queries whose best true match moved up, stayed, moved down; "
                "net into top-1: queries gained at rank 1 minus queries lost from it.",
            )
        )
    k = payload["methods"][0]["directions"]["i2t"]["hubness"]["k"]
    tables.append(
        Table.from_records(
            f"Hubness (k-occurrence in the top {k}), {name}",
            hub_rows,
            digits=2,
            notes=f"skew: skewness of N{k} over gallery items (0 = no hubs); max: the biggest hub's count; "
            "anti-hubs: gallery items that are in no query's top list.",
        )
    )
    return tables


def diagnostics_figures(payload: Mapping[str, Any]) -> list[Figure]:
    """The three diagnostic plots of a payload (rank change only when there is a base)."""
    name = payload.get("dataset", "")
    figs = [
        Figure(
            f"Recall@K curves per method, {name} (dashed: transductive).", plots.recall_curves_png(payload)
        )
    ]
    change = plots.rank_change_png(payload)
    if change is not None:
        figs.append(
            Figure(
                f"Rank change of the true match after re-ranking, vs {payload.get('base')}, "
                f"{name}: share of queries per change bin.",
                change,
            )
        )
    figs.append(
        Figure(
            f"Hubness before/after: k-occurrence distribution and skewness, {name}.",
            plots.hubness_png(payload),
        )
    )
    return figs


def _describe(result: Mapping[str, Any]) -> list[str]:
    machine = result.get("machine", {})
    versions = result.get("versions", {})
    git = result.get("git", {})
    lines = []
    if result.get("description"):
        lines.append(result["description"])
    cpu = f"{machine.get('cpu_model', '?')} ({machine.get('cpu_count', '?')} cores)"
    lines.append(
        f"{result['date']} · {cpu}, {machine.get('ram_gb', '?')} GB RAM"
        + (f", GPU {machine['gpu']}" if machine.get("gpu") else "")
        + f" · torch {versions.get('torch', '?')}, numpy {versions.get('numpy', '?')}, "
        f"faiss {versions.get('faiss', '?')} · commit {str(git.get('commit', '?'))[:10]}"
        + (" (dirty)" if git.get("dirty") else "")
        + (f" · seed {result['seed']}" if result.get("seed") is not None else "")
    )
    runs = result.get("runs", [])
    if runs:
        wall = sum(r["wall_s"] for r in runs)
        rss = max((r["peak_rss_mb"] or 0) for r in runs)
        lines.append(
            f"{len(runs)} isolated run(s), {wall:.1f} s in all, peak RSS {rss:,.0f} MB · "
            f"command: {result.get('command', '')}"
        )
    lines += list(result.get("notes", []))
    return lines


def result_section(result: Mapping[str, Any]) -> Section:
    """One benchmark's section: metadata, tables, line plots and diagnostics."""
    status = result["status"]
    heading = result.get("title") or result["name"]
    if status != "ok":
        return Section(f"{heading} ({status})", [f"{status}: {result.get('reason')}"], status=status)
    sec = Section(heading, _describe(result))
    sec.tables = [Table.from_dict(t) for t in result.get("tables", [])]
    for spec in result.get("plots", []):
        sec.figures.append(Figure(spec.get("caption") or spec.get("title", ""), plots.line_plot_png(spec)))
    diag = result.get("diagnostics")
    if diag:
        sec.tables += diagnostics_tables(diag)
        sec.figures += diagnostics_figures(diag)
    return sec


def report_from_results(
    root: PathLikeStr, *, title: str = "pillar-rerank benchmark report", exclude_dirs: tuple[str, ...] = ()
) -> Report:
    """A report of every benchmark result JSON under ``root`` (but ``exclude_dirs``), by suite."""
    results = load_results(root, exclude_dirs=exclude_dirs)
    if not results:
        raise InvalidInputError(f"results ({root}): no benchmark result JSON files found.")
    report = Report(
        title,
        intro=[
            f"{len(results)} benchmark result(s) from {root}; every figure on "
            "this page is read from those files."
        ],
    )
    if any(r["suite"] == "accuracy" for r in results):
        report.warnings.append(PROXY_NOTE)
    suites: dict[str, Section] = {}
    for res in results:
        suite = suites.setdefault(res["suite"], Section(f"{res['suite']} suite"))
        suite.subsections.append(result_section(res))
    report.sections = list(suites.values())
    return report


def report_from_scores(
    methods: Sequence[tuple[str, np.ndarray, np.ndarray | None]],
    relevance: Relevance,
    *,
    base: str | None = None,
    dataset: str = "scores",
    hub_k: int = 10,
    title: str = "pillar-rerank score report",
) -> Report:
    """A report comparing score matrices on one retrieval set.

    Parameters
    ----------
    methods : sequence of (label, scores, t2i_scores or None)
        Score matrices of shape (n_images, n_texts); the first is the base unless ``base`` names
        another.
    relevance : Relevance
        Ground truth shared by all matrices.
    base : str, optional
        Label of the matrix the rank changes are measured against.
    """
    if not methods:
        raise InvalidInputError("report: expected at least one score matrix; got none.")
    labels = [m[0] for m in methods]
    if len(set(labels)) != len(labels):
        raise InvalidInputError(f"report: labels must be unique; got {labels}.")
    base = labels[0] if base is None else base
    if base not in labels:
        raise InvalidInputError(f"report: base {base!r} is not one of the labels {labels}.")
    results = []
    for label, scores, t2i in methods:
        logger.info("report: diagnosing %s", label)
        results.append(
            diagnose(
                scores,
                relevance,
                name=label,
                t2i_scores=t2i,
                hub_k=hub_k,
                group="base" if label == base else "method",
            )
        )
    payload = diagnostics_payload(results, dataset=dataset, base=base if len(results) > 1 else None)
    sec = Section(
        f"{dataset}: {relevance.n_images} images x {relevance.n_texts} texts",
        [f"base: {base}; hubness over each query's top {hub_k}; ties ranked by lower gallery index."],
    )
    sec.tables = diagnostics_tables(payload)
    sec.figures = diagnostics_figures(payload)
    return Report(title, sections=[sec])
