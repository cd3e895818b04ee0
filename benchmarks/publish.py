"""Render stored results for people: results README, HTML report, the README's Results block.

Everything here reads the result JSONs and nothing else, so the published figures are always the
measured ones. The project README's block lives between :data:`START_MARKER` and
:data:`END_MARKER`; :func:`update_readme` rewrites only that block.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from pillar_rerank.exceptions import InputFileError, InvalidInputError
from pillar_rerank.io import atomic_path
from pillar_rerank.report import PROXY_NOTE, load_results, report_from_results
from pillar_rerank.report.build import diagnostics_tables
from pillar_rerank.report.tables import Table
from pillar_rerank.typing import PathLikeStr

SCRATCH_DIRS = ("tmp",)  # git-ignored trial runs, never published
START_MARKER = "<!-- results:start -->"
END_MARKER = "<!-- results:end -->"
RUN_COMMAND = "python -m benchmarks run --suite all --readme README.md"
RENDER_COMMAND = "python -m benchmarks tables --readme README.md"


def _write_text(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def _meta_line(res: dict[str, Any]) -> str:
    m, v, g = res["machine"], res["versions"], res["git"]
    runs = res["runs"]
    rss = max((r["peak_rss_mb"] or 0) for r in runs) if runs else 0
    return (
        f"*{res['date']} · {m.get('cpu_model')} ({m.get('usable_cores')}/{m.get('cpu_count')} cores), "
        f"{m.get('ram_gb')} GB RAM"
        + (f", {m['gpu']}" if m.get("gpu") else "")
        + f" · torch {v.get('torch')}, numpy {v.get('numpy')}, faiss {v.get('faiss')}"
        f" · commit `{str(g.get('commit'))[:10]}`"
        + (" (dirty)" if g.get("dirty") else "")
        + f" · {len(runs)} run(s), {sum(r['wall_s'] for r in runs):.1f} s, peak RSS {rss:,.0f} MB"
        + (" · quick configuration" if res["config"].get("quick") else "")
        + "*"
    )


def result_tables(res: dict[str, Any]) -> list[Table]:
    tables = [Table.from_dict(t) for t in res["tables"]]
    if res.get("diagnostics"):
        tables += diagnostics_tables(res["diagnostics"])
    return tables


def render_results_readme(results: list[dict[str, Any]]) -> str:
    """Markdown of every result, by suite: metadata line, description, tables; then skips."""
    lines = [
        "# Benchmark results",
        "",
        "Generated from the JSON files in this folder by `python -m benchmarks tables` (the runner "
        f"calls it after every run); do not edit by hand. Re-run: `{RUN_COMMAND}`. "
        "Plots: [report.html](report.html).",
        "",
    ]
    if any(r["suite"] == "accuracy" for r in results):
        lines += [f"> {PROXY_NOTE}", ""]
    suite = None
    for res in results:
        if res["suite"] != suite:
            suite = res["suite"]
            lines += [f"## {suite} suite", ""]
        lines.append(f"### {res['title']}")
        lines.append("")
        if res["status"] != "ok":
            lines += [f"**{res['status']}**: {res['reason']}", ""]
            continue
        if res["description"]:
            lines += [res["description"], ""]
        lines += [_meta_line(res), ""]
        for note in res["notes"]:
            if "\n" not in note:
                lines += [f"Note: {note}", ""]
        for t in result_tables(res):
            lines += [t.to_markdown(), ""]
    if not results:
        lines += ["No results yet.", ""]
    return "\n".join(lines).rstrip() + "\n"


def render_readme_block(results: list[dict[str, Any]], *, results_link: str = "benchmarks/results") -> str:
    """The README's short Results section (headline tables only), markers included."""
    lines = [
        START_MARKER,
        "",
        f"*Generated from `{results_link}/` by `{RENDER_COMMAND}` (re-run the benchmarks with "
        f"`{RUN_COMMAND}`); do not edit this block by hand.*",
        "",
    ]
    if any(r["suite"] == "accuracy" for r in results):
        lines += [f"> **{PROXY_NOTE}**", ""]
    headline = [
        (res, t) for res in results if res["status"] == "ok" for t in result_tables(res) if t.headline
    ]
    if not headline:
        lines += ["No headline results yet: run the benchmarks.", ""]
    for res, table in headline:
        lines += [
            table.to_markdown(heading="####"),
            f"<sub>{html.escape(res['date'][:10])}, {html.escape(str(res['machine'].get('cpu_model')))}, "
            f"commit {str(res['git'].get('commit'))[:10]}.</sub>",
            "",
        ]
    lines += [
        f"All tables, speed and scale figures: [{results_link}/README.md]({results_link}/README.md); "
        f"plots: [{results_link}/report.html]({results_link}/report.html).",
        "",
        END_MARKER,
    ]
    return "\n".join(lines)


def update_readme(readme: PathLikeStr, results: list[dict[str, Any]], **kwargs: Any) -> Path:
    """Rewrite only the block between the results markers of ``readme`` (atomically).

    Raises when the file or either marker is missing, or the markers are out of order, so a
    README without the block is never changed.
    """
    path = Path(readme)
    if not path.is_file():
        raise InputFileError(f"readme ({path}): file not found.")
    text = path.read_text(encoding="utf-8")
    start, end = text.find(START_MARKER), text.find(END_MARKER)
    if start < 0 or end < 0 or end < start or text.count(START_MARKER) != 1 or text.count(END_MARKER) != 1:
        raise InvalidInputError(
            f"readme ({path}): expected exactly one {START_MARKER!r} followed by one {END_MARKER!r}; "
            "add them where the Results section goes."
        )
    new = text[:start] + render_readme_block(results, **kwargs) + text[end + len(END_MARKER) :]
    if new != text:
        _write_text(path, new)
    return path


def publish(results_dir: PathLikeStr, *, readme: PathLikeStr | None = None, html_report: bool = True) -> dict:
    """Re-render ``results_dir/README.md`` (and ``report.html``, and the README block) from the JSONs."""
    root = Path(results_dir)
    results = load_results(root, exclude_dirs=SCRATCH_DIRS)
    written = {"results_readme": _write_text(root / "README.md", render_results_readme(results))}
    if html_report and results:
        page = report_from_results(root, exclude_dirs=SCRATCH_DIRS)
        written["report"] = page.write(root / "report.html", overwrite=True)
    if readme is not None:
        written["readme"] = update_readme(readme, results)
    return written
