"""Run registered benchmarks in fresh processes and write one result JSON per benchmark.

The runner checks each benchmark's modules and data (skipping with a recorded reason when one is
missing), runs every point/seed as ``python -m benchmarks.worker`` so peak RSS is per run, wraps
the figures with the machine, versions, commit, configuration, seed and date, derives the
tables with the benchmark's summariser, validates the result against
:data:`pillar_rerank.report.results.RESULT_SCHEMA` and writes it atomically.

Slightly over ~400 lines: running, storing and checking result files in one place.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import datetime as _dt
import importlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.suites import Benchmark
from pillar_rerank.exceptions import InvalidInputError, PillarRerankError
from pillar_rerank.io import load_json, save_json
from pillar_rerank.report.results import RESULT_SCHEMA, validate_result
from pillar_rerank.report.tables import Table

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS = REPO_ROOT / "benchmarks" / "results"
SCRATCH_RESULTS = DEFAULT_RESULTS / "tmp"  # git-ignored: smoke and --quick runs
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "caption_xenc"
_DISTRIBUTIONS = {
    "torch": ("torch",),
    "numpy": ("numpy",),
    "scipy": ("scipy",),
    "faiss": ("faiss-cpu", "faiss-gpu-cu12", "faiss-gpu", "faiss"),
    "torch_geometric": ("torch-geometric", "torch_geometric"),
    "click": ("click",),
    "matplotlib": ("matplotlib",),
    "pillar_rerank": ("pillar-rerank",),
}


# --------------------------------------------------------------------------------------------
# metadata


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpu() -> str | None:
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    return ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))


def machine_info() -> dict[str, Any]:
    """CPU model and count, usable cores, RAM, GPU and platform of this machine."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        ram = None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable,
        "ram_gb": round(ram, 1) if ram else None,
        "gpu": _gpu(),
        "platform": platform.platform(),
        "threads_env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ},
    }


def versions() -> dict[str, str | None]:
    """Python and library versions (from package metadata; nothing is imported)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for key, dists in _DISTRIBUTIONS.items():
        out[key] = None
        for dist in dists:
            try:
                out[key] = importlib.metadata.version(dist)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return out


def git_info(root: Path = REPO_ROOT) -> dict[str, Any]:
    """Commit and whether tracked files differ from it (read-only git calls)."""

    def git(*args: str) -> str | None:
        try:
            res = subprocess.run(
                ["git", "--no-optional-locks", "-C", str(root), *args],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return res.stdout.strip() if res.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------
# running


def missing_requirements(bench: Benchmark, data_root: Path) -> str | None:
    """Why ``bench`` cannot run here (a missing module or data file), or None."""
    for module in bench.requires:
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            return f"module {module!r} is not available (not written yet, or its extra is not installed)."
    missing = [f for f in bench.data_files if not (data_root / f).exists()]
    if missing:
        return f"shared data not found under {data_root}: {', '.join(missing)}."
    return None


def _raise_on_sigterm() -> Any:
    """Make SIGTERM (a plain ``kill``) raise SystemExit in the main thread, as Ctrl-C raises
    KeyboardInterrupt, so the worker's process group is killed on the way out instead of being
    left running; returns the handler to restore (None off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    return signal.SIG_DFL if previous is None else previous


def run_isolated(target: str, params: dict[str, Any], *, timeout_s: float) -> dict[str, Any]:
    """Run ``target(**params)`` in a fresh interpreter and return the worker's record.

    The child's output is relayed line by line to this process's log (so hours-long runs show
    progress with ``-v``) and its last lines are kept for the failure reason.
    """
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec_path.write_text(json.dumps({"target": target, "params": params}))
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
            "MPLBACKEND": "Agg",
            "BENCHMARK_LOG_LEVEL": str(logging.getLogger().getEffectiveLevel()),
        }
        tail: collections.deque[str] = collections.deque(maxlen=15)
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.worker", str(spec_path), str(out_path)],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: a kill also reaches its children
        )

        def kill_group() -> None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout_s, kill_group)
        timer.start()
        on_term = _raise_on_sigterm()
        try:
            for line in proc.stdout:
                tail.append(line.rstrip())
                logger.info("  | %s", line.rstrip())
            proc.wait()
        finally:
            timed_out = not timer.is_alive() and proc.returncode != 0
            timer.cancel()
            if proc.poll() is None:  # interrupted (Ctrl-C, kill): do not leave the run behind
                kill_group()
                proc.wait()
            if on_term is not None:
                signal.signal(signal.SIGTERM, on_term)
        if timed_out:
            return {
                "status": "failed",
                "reason": f"timed out after {timeout_s:.0f} s.",
                "traceback": "\n".join(tail),
            }
        if out_path.exists() and proc.returncode == 0:
            return load_json(out_path, name="worker output")
        reason = tail[-1] if tail else f"exit status {proc.returncode}"
        if proc.returncode < 0:
            reason = f"killed by signal {-proc.returncode} (out of memory?)"
        return {"status": "failed", "reason": reason, "traceback": "\n".join(tail)}


def default_summary(runs: list[dict[str, Any]], bench: Benchmark) -> dict[str, Any]:
    """One row per run: its varying parameters, then every scalar figure (nested keys dotted)."""

    def flat(prefix: str, obj: Any, out: dict[str, Any]) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                flat(f"{prefix}.{k}" if prefix else str(k), v, out)
        elif isinstance(obj, (int, float, str, bool)) or obj is None:
            out[prefix] = obj

    varying = [k for k in runs[0]["params"] if len({json.dumps(r["params"].get(k)) for r in runs}) > 1]
    records = []
    for r in runs:
        rec = {k: r["params"].get(k) for k in varying}
        flat("", r["figures"], rec)
        rec["wall s"] = r["wall_s"]
        rec["peak RSS MB"] = r["peak_rss_mb"]
        records.append(rec)
    return {"tables": [Table.from_records(bench.title, records, digits=2).to_dict()]}


def take_diagnostics(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Move a ``diagnostics`` payload out of the runs' figures (stored once, at the top level)."""
    found = [
        r["figures"].pop("diagnostics") for r in runs if isinstance(r["figures"].get("diagnostics"), dict)
    ]
    return found[0] if found else None


def summarize_runs(bench: Benchmark, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Tables, plots and notes of ``runs`` from the benchmark's summariser (or the default one)."""
    return _call(bench.summarize, runs, bench) if bench.summarize else default_summary(runs, bench)


def resummarize(results_dir: Path, benchmarks: Sequence[Benchmark]) -> list[Path]:
    """Re-derive the tables and plots of stored results from their runs with today's summarisers.

    Only results of registered benchmarks that have runs are touched; figures are not re-measured.
    """
    registry = {(b.suite, b.name): b for b in benchmarks}
    written = []
    for path in sorted(Path(results_dir).rglob("*.json")):
        if SCRATCH_RESULTS.name in path.relative_to(results_dir).parts[:-1]:
            continue
        data = load_json(path, name="result")
        bench = registry.get((data.get("suite"), data.get("name"))) if isinstance(data, dict) else None
        if data.get("schema") != RESULT_SCHEMA or bench is None or not data.get("runs"):
            continue
        summary = summarize_runs(bench, data["runs"])
        data["tables"], data["plots"] = summary.get("tables", []), summary.get("plots", [])
        validate_result(data, source=str(path))
        written.append(save_json(path, data, overwrite=True))
    return written


def foreign_results(results_dir: Path, benchmarks: Sequence[Benchmark]) -> list[str]:
    """JSON files under ``results_dir`` the runner does not own, each with the reason.

    The runner owns ``<suite>/<name>.json`` of every registered benchmark, holding a result of
    the current schema for that suite and name. Anything else (an older script's output, a
    hand-made file, a result of an unregistered benchmark) would be silently left out of the
    tables and the report, so it is listed here; the scratch folder is not looked at.
    """
    root = Path(results_dir)
    owned = {(b.suite, b.name) for b in benchmarks}
    found = []
    for path in sorted(root.rglob("*.json")) if root.is_dir() else []:
        rel = path.relative_to(root)
        if SCRATCH_RESULTS.name in rel.parts[:-1] or path.name.startswith("."):
            continue
        try:
            data = load_json(path, name="result")
        except PillarRerankError as exc:
            found.append(f"{rel} (unreadable: {exc})")
            continue
        if not isinstance(data, dict) or data.get("schema") != RESULT_SCHEMA:
            found.append(f"{rel} (not a runner result: no {RESULT_SCHEMA!r} schema)")
        elif (data.get("suite"), data.get("name")) not in owned:
            found.append(f"{rel} (benchmark {data.get('suite')}/{data.get('name')} is not registered)")
        elif rel.parts != (data["suite"], f"{data['name']}.json"):
            found.append(f"{rel} (a result of {data['suite']}/{data['name']} belongs in "
                         f"{data['suite']}/{data['name']}.json)")
    return found


def check_results_folder(results_dir: Path, benchmarks: Sequence[Benchmark]) -> None:
    """Refuse a results folder holding JSON files the runner does not own (see :func:`foreign_results`)."""
    foreign = foreign_results(results_dir, benchmarks)
    if foreign:
        raise InvalidInputError(
            f"results folder {results_dir} holds JSON files the benchmark runner does not own, which "
            "the tables and report would silently leave out: " + "; ".join(foreign) + ". Register "
            "their benchmark in benchmarks/suites.py and re-run it, or move them out of the folder."
        )


def _call(target: str, *args: Any) -> Any:
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)(*args)


def run_benchmark(
    bench: Benchmark,
    *,
    results_dir: Path,
    data_root: Path,
    quick: bool = False,
    command: str = "",
    meta: dict[str, Any] | None = None,
    timeout_s: float | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Run one benchmark (all its points and seeds) and write its result JSON; returns it.

    With ``resume``, the runs of the existing result file whose parameters equal a planned run's
    are kept (each with its own commit and date) instead of run again.
    """
    meta = meta or {"machine": machine_info(), "versions": versions(), "git": git_info()}
    run_params = bench.runs(quick=quick)
    if bench.data_files:
        run_params = [{**p, bench.data_param: str(data_root)} for p in run_params]
    finished = _finished_runs(bench, results_dir, quick) if resume else {}
    result: dict[str, Any] = {
        "schema": RESULT_SCHEMA,
        "suite": bench.suite,
        "name": bench.name,
        "title": bench.title,
        "description": bench.description,
        "status": "ok",
        "reason": None,
        "date": now_utc(),
        "command": command,
        "seed": (bench.seeds or (None,))[0],
        "config": {
            "target": bench.target,
            "quick": quick,
            "seeds": list(bench.seeds or []),
            "runs": run_params,
        },
        **meta,
        "runs": [],
        "tables": [],
        "plots": [],
        "diagnostics": None,
        "notes": [],
    }
    if quick:
        result["notes"].append("Quick (reduced) configuration: see config.runs for the exact sizes.")
    reason = missing_requirements(bench, data_root)
    if reason is None:
        # A run that fails or skips is recorded and the other runs go on: a partial result
        # (status "failed", its reason the first failure) still keeps every measured run.
        problems: dict[str, list[str]] = {"failed": [], "skipped": []}
        # kept runs first, so that the file written after each new run holds all of them
        to_run = []
        for params in run_params:
            kept = finished.get(_params_key(params))
            if kept is None:
                to_run.append(params)
                continue
            logger.info("keeping %s %s from %s", bench.key, params, kept["git"].get("commit"))
            result["runs"].append(kept)
            result["notes"].append(
                f"run {json.dumps(params, default=str)} kept from the earlier result of "
                f"{kept['date']} (commit {kept['git'].get('commit')}, dirty {kept['git'].get('dirty')})."
            )
        for params in to_run:
            logger.info("running %s %s", bench.key, params)
            record = run_isolated(bench.target, params, timeout_s=timeout_s or bench.timeout_s)
            if record["status"] != "ok":
                problems[record["status"]].append(record["reason"])
                result["notes"].append(
                    f"run {json.dumps(params, default=str)} {record['status']}: {record['reason']}"
                )
                if record.get("traceback"):
                    result["notes"].append(record["traceback"][-4000:])
                continue
            result["runs"].append(
                {
                    "params": params,
                    "figures": record["figures"],
                    "wall_s": record["wall_s"],
                    "peak_rss_mb": record["peak_rss_mb"],
                    "start_rss_mb": record["start_rss_mb"],
                }
            )
            done = len(result["runs"]) + len(problems["failed"]) + len(problems["skipped"])
            if done < len(run_params):
                # hours-long suites: what has finished is on disk if the rest is stopped
                progress = copy.deepcopy(result)
                progress["notes"].append(
                    f"Written while running: {done} of {len(run_params)} runs finished when this file was "
                    "saved; the runner rewrites it after each run, so a file that still carries this note "
                    "comes from a run that was stopped before the rest finished.")
                _summarize_and_save(bench, progress, None, results_dir)
        if problems["failed"]:
            result["status"], reason = "failed", problems["failed"][0]
        elif not result["runs"]:
            result["status"], reason = "skipped", problems["skipped"][0]
    else:
        result["status"] = "skipped"
    return _summarize_and_save(bench, result, reason, results_dir)


def _params_key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def _finished_runs(bench: Benchmark, results_dir: Path, quick: bool) -> dict[str, dict[str, Any]]:
    """The runs of ``bench``'s existing result file by their parameters, each with its provenance.

    Only a file of the same target and mode (quick or not) counts; a run keeps the ``git`` and
    ``date`` it already carries (kept before) or else those of its file.
    """
    path = results_dir / bench.suite / f"{bench.name}.json"
    if not path.exists():
        return {}
    old = validate_result(load_json(path, name="result"), source=str(path))
    if old["config"].get("target") != bench.target or bool(old["config"].get("quick")) != quick:
        return {}
    return {_params_key(r["params"]): {**r, "git": r.get("git", old["git"]),
                                       "date": r.get("date", old["date"])} for r in old["runs"]}


def _summarize_and_save(bench: Benchmark, result: dict[str, Any], reason: str | None,
                        results_dir: Path) -> dict[str, Any]:
    """Tables of ``result``'s runs, then the validated result JSON written atomically; returns it."""
    if result["runs"]:
        result["diagnostics"] = take_diagnostics(result["runs"])
        try:
            summary = summarize_runs(bench, result["runs"])
        except Exception as exc:  # noqa: BLE001 - a broken summariser must not lose the figures
            logger.exception("summarising %s failed", bench.key)
            result["status"] = "failed"
            reason = reason or f"summary failed: {type(exc).__name__}: {exc}"
        else:
            result["tables"], result["plots"] = summary.get("tables", []), summary.get("plots", [])
            result["notes"] += summary.get("notes", [])
            result["diagnostics"] = summary.get("diagnostics") or result["diagnostics"]
    result["reason"] = reason
    result["date"] = now_utc()
    validate_result(json.loads(json.dumps(result, default=str)), source=bench.key)
    out = results_dir / bench.suite / f"{bench.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and load_json(out, name="result").get("schema") != RESULT_SCHEMA:
        raise InvalidInputError(f"{out} exists and is not a benchmark-runner result; refusing to overwrite "
                                "it: move it out of the results folder first.")
    if result["status"] == "skipped" and out.exists():
        old = load_json(out, name="result")
        if isinstance(old, dict) and old.get("status") == "ok":
            logger.warning("%s skipped (%s); keeping the earlier result in %s", bench.key, reason, out)
            return result
    save_json(out, result, overwrite=True)
    log = logger.info if result["status"] == "ok" else logger.warning
    log("%s: %s%s", bench.key, result["status"], f" ({reason})" if reason else "")
    return result


def run_suite(
    benchmarks: Sequence[Benchmark],
    *,
    results_dir: Path = DEFAULT_RESULTS,
    data_root: Path = DEFAULT_DATA,
    quick: bool = False,
    command: str = "",
    timeout_s: float | None = None,
    resume: bool = False,
) -> list[dict[str, Any]]:
    """Run benchmarks in order; metadata is gathered once and shared."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    meta = {"machine": machine_info(), "versions": versions(), "git": git_info()}
    return [
        run_benchmark(
            b,
            results_dir=results_dir,
            data_root=Path(data_root),
            quick=quick,
            command=command,
            meta=meta,
            timeout_s=timeout_s,
            resume=resume,
        )
        for b in benchmarks
    ]
