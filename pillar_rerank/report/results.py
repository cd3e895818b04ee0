"""The benchmark result file: its schema, a validator and a loader.

``benchmarks/`` writes one JSON per benchmark under ``benchmarks/results/<suite>/<name>.json``;
``rerank report`` and the results README read them back through this module. Keys:

=============  ==========================================================================
schema         :data:`RESULT_SCHEMA`
suite, name    where it belongs; ``title`` and ``description`` for people
status         ``"ok"``, ``"skipped"`` (``reason`` says why) or ``"failed"`` (``reason``: error)
date           ISO 8601 UTC time the benchmark finished
command        the command line that produced it
seed           the seed (or ``None``), ``config``: every parameter it ran with
machine        CPU model and count, RAM, GPU, platform
versions       python, torch, numpy, scipy, faiss, torch-geometric, pillar-rerank
git            ``{"commit": ..., "dirty": bool}``
runs           one entry per isolated process: ``params``, ``figures``, ``wall_s``,
               ``peak_rss_mb``, ``start_rss_mb``
tables         list of :class:`~pillar_rerank.report.tables.Table` dicts
plots          list of line-plot specs (see :func:`~pillar_rerank.report.plots.line_plot_png`)
diagnostics    ``None`` or a :func:`~pillar_rerank.report.diagnostics.diagnostics_payload`
notes          list of strings
=============  ==========================================================================
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pillar_rerank.exceptions import InputFileError, InvalidInputError
from pillar_rerank.io import load_json
from pillar_rerank.report.tables import Table
from pillar_rerank.typing import PathLikeStr

RESULT_SCHEMA = "pillar-rerank/benchmark-result/1"
STATUSES = ("ok", "skipped", "failed")
REQUIRED_KEYS: dict[str, type | tuple[type, ...]] = {
    "schema": str,
    "suite": str,
    "name": str,
    "title": str,
    "description": str,
    "status": str,
    "reason": (str, type(None)),
    "date": str,
    "command": str,
    "seed": (int, type(None)),
    "config": dict,
    "machine": dict,
    "versions": dict,
    "git": dict,
    "runs": list,
    "tables": list,
    "plots": list,
    "diagnostics": (dict, type(None)),
    "notes": list,
}
RUN_KEYS: dict[str, type | tuple[type, ...]] = {
    "params": dict,
    "figures": dict,
    "wall_s": (int, float),
    "peak_rss_mb": (int, float, type(None)),
    "start_rss_mb": (int, float, type(None)),
}
SUITE_ORDER = ("accuracy", "speed", "scale", "smoke")


def validate_result(data: Any, *, source: str = "result") -> dict[str, Any]:
    """Check a loaded result against the schema; returns it, raises naming the first problem."""
    if not isinstance(data, dict):
        raise InvalidInputError(f"{source}: expected a JSON object; got {type(data).__name__}.")
    if data.get("schema") != RESULT_SCHEMA:
        raise InvalidInputError(f"{source}: expected schema {RESULT_SCHEMA!r}; got {data.get('schema')!r}.")
    for key, kind in REQUIRED_KEYS.items():
        if key not in data:
            raise InvalidInputError(f"{source}: missing key {key!r}.")
        if not isinstance(data[key], kind):
            raise InvalidInputError(f"{source}: key {key!r} has type {type(data[key]).__name__}.")
    if data["status"] not in STATUSES:
        raise InvalidInputError(f"{source}: status must be one of {STATUSES}; got {data['status']!r}.")
    if data["status"] != "ok" and not data["reason"]:
        raise InvalidInputError(f"{source}: a {data['status']} result must give its reason.")
    for i, run in enumerate(data["runs"]):
        for key, kind in RUN_KEYS.items():
            if not isinstance(run, dict) or key not in run or not isinstance(run[key], kind):
                raise InvalidInputError(f"{source}: run {i} lacks a valid {key!r}.")
    for t in data["tables"]:
        Table.from_dict(t)
    return data


def is_result(data: Any) -> bool:
    return isinstance(data, dict) and data.get("schema") == RESULT_SCHEMA


def load_results(root: PathLikeStr, *, exclude_dirs: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Every result JSON under ``root`` (recursively), validated, in suite then name order.

    JSON files that are not benchmark results are ignored, and so are sub-folders named in
    ``exclude_dirs`` (e.g. a scratch folder); a result that fails validation is an error naming
    the file.
    """
    base = Path(root)
    if not base.is_dir():
        raise InputFileError(f"results ({base}): expected a folder of benchmark JSON files; not a folder.")
    out = []
    for path in sorted(base.rglob("*.json")):
        if path.name.startswith(".") or set(path.relative_to(base).parts[:-1]) & set(exclude_dirs):
            continue
        data = load_json(path, name="result")
        if is_result(data):
            out.append(validate_result(data, source=f"result ({path})"))
    order = {s: i for i, s in enumerate(SUITE_ORDER)}
    out.sort(key=lambda r: (order.get(r["suite"], len(order)), r["suite"], r["name"]))
    return out
