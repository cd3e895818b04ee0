"""PNG figures of the report, drawn with matplotlib's Agg backend.

matplotlib is the optional ``report`` extra; it is imported only when a figure is drawn, and a
missing install raises :class:`MissingDependencyError` with the command that fixes it.
Every function returns the PNG bytes of one figure.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pillar_rerank.exceptions import EXIT_BAD_INPUT, PillarRerankError

DPI = 100
_DIRECTION_TITLES = {"i2t": "image → text", "t2i": "text → image"}


class MissingDependencyError(PillarRerankError, ImportError):
    """An optional dependency needed for the requested feature is not installed."""

    exit_code = EXIT_BAD_INPUT


def _pyplot():
    try:
        import matplotlib
    except ImportError as exc:
        raise MissingDependencyError(
            "report: plotting needs matplotlib, which is not installed; "
            "install it with pip install 'pillar-rerank[report]' (or pip install matplotlib)."
        ) from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _to_png(fig) -> bytes:
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _method_styles(methods: Sequence[Mapping[str, Any]], base: str | None) -> dict[str, dict]:
    """A stable colour and line style per method; the base is black, transductive dashed."""
    plt = _pyplot()
    cmap = plt.get_cmap("tab20" if len(methods) > 10 else "tab10")
    styles, i = {}, 0
    for m in methods:
        if m["name"] == base:
            styles[m["name"]] = {"color": "black", "linewidth": 2.2, "linestyle": "-"}
            continue
        dashed = "transductive" in str(m.get("group", "")).lower()
        styles[m["name"]] = {
            "color": cmap(i % cmap.N),
            "linewidth": 1.4,
            "linestyle": "--" if dashed else "-",
        }
        i += 1
    return styles


def recall_curves_png(payload: Mapping[str, Any]) -> bytes:
    """Recall@K against K (log axis) per method, one panel per direction."""
    plt = _pyplot()
    methods = payload["methods"]
    styles = _method_styles(methods, payload.get("base"))
    fig, axes = plt.subplots(
        1, 2, figsize=(11, 4.6 + 0.2 * (len(methods) // 4)), sharey=True, layout="constrained"
    )
    for ax, d in zip(axes, ("i2t", "t2i")):
        for m in methods:
            curve = m["directions"][d]["recall_curve"]
            ax.plot(
                curve["k"], curve["recall"], marker="o", markersize=3, label=m["name"], **styles[m["name"]]
            )
        ax.set_xscale("log")
        ax.set_xlabel("K")
        ax.set_title(f"{payload.get('dataset', '')}: {_DIRECTION_TITLES[d]}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("Recall@K (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(
        handles, labels, loc="outside lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False
    )
    return _to_png(fig)


def rank_change_png(payload: Mapping[str, Any]) -> bytes | None:
    """Diverging stacked bars: share of queries whose true match moved down, stayed, moved up.

    Returns ``None`` when the payload has no base method to compare with.
    """
    methods = [m for m in payload["methods"] if "rank_change" in m["directions"]["i2t"]]
    if not methods:
        return None
    plt = _pyplot()
    labels = payload["change_labels"]
    mid = labels.index("unchanged")
    n_down, n_up = mid, len(labels) - mid - 1
    colours = (
        [plt.get_cmap("Reds")(0.85 - 0.55 * i / max(1, n_down - 1)) for i in range(n_down)]
        + [(0.8, 0.8, 0.8, 1.0)]
        + [plt.get_cmap("Greens")(0.3 + 0.55 * i / max(1, n_up - 1)) for i in range(n_up)]
    )
    height = 1.9 + 0.38 * len(methods)
    fig, axes = plt.subplots(1, 2, figsize=(11, height), sharey=True, layout="constrained")
    names = [m["name"] for m in methods]
    y = np.arange(len(methods))[::-1]
    for ax, d in zip(axes, ("i2t", "t2i")):
        shares = (
            np.array(
                [
                    np.asarray(m["directions"][d]["rank_change"]["counts"], dtype=float)
                    / max(1, m["directions"][d]["rank_change"]["n_queries"])
                    for m in methods
                ]
            )
            * 100
        )
        # Bars start left of zero by the "down" share plus half of "unchanged" so they centre on 0.
        left = -(shares[:, :mid].sum(axis=1) + shares[:, mid] / 2)
        for j in range(len(labels)):
            ax.barh(
                y,
                shares[:, j],
                left=left,
                color=colours[j],
                edgecolor="white",
                linewidth=0.4,
                label=labels[j],
            )
            left = left + shares[:, j]
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(y, names, fontsize=8)
        ax.set_xlabel("% of queries (left: true match moved down, right: moved up)")
        ax.set_title(f"rank change vs {payload.get('base')}: {_DIRECTION_TITLES[d]}")
        ax.grid(True, axis="x", alpha=0.3)
    handles, leg = axes[0].get_legend_handles_labels()
    fig.legend(handles, leg, loc="outside lower center", ncol=6, fontsize=8, frameon=False)
    return _to_png(fig)


def hubness_png(payload: Mapping[str, Any]) -> bytes:
    """k-occurrence distribution per method (log scale) and its skewness, per direction."""
    plt = _pyplot()
    methods = payload["methods"]
    styles = _method_styles(methods, payload.get("base"))
    fig, axes = plt.subplots(
        2,
        2,
        figsize=(11, 4.6 + 0.28 * len(methods)),
        layout="constrained",
        gridspec_kw={"height_ratios": [4.2, 0.4 + 0.28 * len(methods)]},
    )
    for col, d in enumerate(("i2t", "t2i")):
        ax = axes[0, col]
        k = methods[0]["directions"][d]["hubness"]["k"]
        for m in methods:
            hist = np.asarray(m["directions"][d]["hubness"]["histogram"], dtype=float)
            # Share of gallery items with N_k >= x: smooth and comparable across many methods.
            ccdf = np.cumsum(hist[::-1])[::-1] / max(1.0, hist.sum())
            x = np.arange(1, ccdf.shape[0])
            ax.plot(x, ccdf[1:], drawstyle="steps-post", label=m["name"], **styles[m["name"]])
        ax.set_yscale("log")
        ax.set_xscale("log")
        ax.set_xlim(left=0.9)
        ax.set_xlabel(f"x = times a gallery item is in a query's top {k} (N_{k})")
        ax.set_ylabel(f"share of gallery items with N_{k} >= x")
        ax.set_title(f"hubness, {_DIRECTION_TITLES[d]} (gallery: {'texts' if d == 'i2t' else 'images'})")
        ax.grid(True, alpha=0.3)
        bar = axes[1, col]
        skews = [m["directions"][d]["hubness"]["skewness"] for m in methods]
        yy = np.arange(len(methods))[::-1]
        bar.barh(yy, skews, color=[styles[m["name"]]["color"] for m in methods])
        bar.set_yticks(yy, [m["name"] for m in methods], fontsize=8)
        bar.set_xlabel(f"skewness of N_{k} (lower: less hubness)")
        bar.grid(True, axis="x", alpha=0.3)
    axes[0, 0].legend(fontsize=7, ncol=2)
    return _to_png(fig)


def line_plot_png(spec: Mapping[str, Any]) -> bytes:
    """A generic line plot from a stored spec.

    ``spec`` holds ``title``, ``x_label``, ``y_label``, ``x`` (list) and ``series`` (name -> list
    of y values, ``None`` for a missing point), and optionally ``log_x`` / ``log_y``.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.2), layout="constrained")
    x = np.asarray(spec["x"], dtype=float)
    for name, values in spec["series"].items():
        yv = np.asarray([np.nan if v is None else v for v in values], dtype=float)
        ax.plot(x, yv, marker="o", label=name)
    if spec.get("log_x"):
        ax.set_xscale("log")
    if spec.get("log_y"):
        ax.set_yscale("log")
    if spec.get("hline") is not None:
        ax.axhline(float(spec["hline"]["y"]), color="red", linestyle=":", label=spec["hline"].get("label"))
    ax.set_xlabel(spec.get("x_label", ""))
    ax.set_ylabel(spec.get("y_label", ""))
    ax.set_title(spec.get("title", ""))
    ax.grid(True, which="both", alpha=0.3)
    fig.legend(loc="outside right upper", fontsize=8)
    return _to_png(fig)
