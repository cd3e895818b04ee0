"""Run one benchmark call in this (fresh) process and write its figures, time and peak RSS.

Used by :mod:`benchmarks.runner` as ``python -m benchmarks.worker SPEC.json OUT.json``; SPEC
holds ``{"target": "module:function", "params": {...}}``. Starting a new interpreter per run is
what makes ``ru_maxrss`` (the process's high-water mark) a per-benchmark figure.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks import BenchmarkSkipped
from benchmarks.memory import current_rss_mb, peak_rss_mb


def resolve(target: str):
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def execute(spec: dict[str, Any]) -> dict[str, Any]:
    """Import the target, call it with ``params`` and measure it."""
    try:
        func = resolve(spec["target"])
    except ModuleNotFoundError as exc:
        return {"status": "skipped", "reason": f"module {exc.name!r} is not available ({exc})."}
    start_rss = current_rss_mb()
    t0 = time.perf_counter()
    try:
        figures = func(**spec["params"])
    except BenchmarkSkipped as exc:
        return {"status": "skipped", "reason": str(exc)}
    except Exception as exc:  # noqa: BLE001 - recorded in the result, the suite goes on
        return {
            "status": "failed",
            "reason": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(limit=20),
        }
    wall = time.perf_counter() - t0
    if not isinstance(figures, dict):
        return {
            "status": "failed",
            "reason": f"{spec['target']} returned {type(figures).__name__}, not a dict.",
        }
    return {
        "status": "ok",
        "figures": figures,
        "wall_s": wall,
        "peak_rss_mb": peak_rss_mb(),
        "start_rss_mb": start_rss,
    }


def _json_default(obj: Any) -> Any:
    """numpy scalars and arrays (duck-typed, so this module need not import numpy)."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serialisable")


def main(argv: list[str]) -> int:
    spec_path, out_path = argv
    level = int(os.environ.get("BENCHMARK_LOG_LEVEL", logging.WARNING))
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    spec = json.loads(Path(spec_path).read_text())
    out = execute(spec)
    try:
        text = json.dumps(out, default=_json_default)
    except (TypeError, ValueError) as exc:
        text = json.dumps({"status": "failed", "reason": f"figures are not JSON-serialisable: {exc}"})
    # The runner reads this file only after the process exits, so a plain write is enough here.
    Path(out_path).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
