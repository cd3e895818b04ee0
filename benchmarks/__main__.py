"""``python -m benchmarks``: run suites, list benchmarks, re-render tables and reports."""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path

import click

from benchmarks.publish import publish
from benchmarks.runner import (
    DEFAULT_DATA,
    DEFAULT_RESULTS,
    SCRATCH_RESULTS,
    check_results_folder,
    missing_requirements,
    run_suite,
)
from benchmarks.runner import resummarize as resummarize_results
from benchmarks.suites import get_suite, suite_names
from pillar_rerank.exceptions import PillarRerankError

_RESULTS = click.option(
    "--results-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_RESULTS,
    show_default=True,
    help="Where result JSONs go.",
)
_README = click.option(
    "--readme",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also rewrite the Results block of this README (between its markers).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output.")
def main(verbose: int) -> None:
    """pillar-rerank benchmarks: measured figures as JSON, tables and reports rendered from them."""
    logging.basicConfig(
        level=logging.WARNING - 10 * min(verbose, 2),
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )


def _refuse_foreign(results_dir: Path) -> None:
    """Exit 2 when the results folder holds JSON files no registered benchmark owns."""
    try:
        check_results_folder(results_dir, [*get_suite("smoke"), *get_suite("all")])
    except PillarRerankError as exc:
        err = click.ClickException(str(exc))
        err.exit_code = 2
        raise err from exc


@main.command()
@click.option("--suite", type=click.Choice(suite_names()), required=True, help="Which suite to run.")
@click.option("--only", multiple=True, help="Run only these benchmark names (repeatable).")
@_RESULTS
@click.option(
    "--data-root",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DATA,
    show_default=True,
    help="The caption_xenc data folder.",
)
@click.option("--quick", is_flag=True, help="Reduced sizes (recorded in each result).")
@click.option(
    "--timeout", type=click.FloatRange(min=1), default=None, help="Seconds per run (default: per benchmark)."
)
@_README
@click.option("--no-report", is_flag=True, help="Skip the HTML report.")
@click.option(
    "--resume",
    is_flag=True,
    help="Keep the runs of each existing result file whose parameters match a planned run (each "
    "keeps its own commit and date) and run only the others: a new seed or point, or what a stopped "
    "run left.",
)
@click.option(
    "--scratch",
    is_flag=True,
    help=f"Write to {SCRATCH_RESULTS} (git-ignored) instead of --results-dir; the default for --suite "
    "smoke and --quick, so trial figures never land beside the published ones.",
)
def run(suite, only, results_dir, data_root, quick, timeout, readme, no_report, resume, scratch):
    """Run a suite; then re-render the results README, report and (with --readme) the README block.

    Smoke and --quick runs go to the git-ignored scratch folder unless --results-dir is given.
    """
    ctx = click.get_current_context()
    explicit = ctx.get_parameter_source("results_dir") is not click.core.ParameterSource.DEFAULT
    if scratch or (not explicit and (suite == "smoke" or quick)):
        results_dir = SCRATCH_RESULTS
    if readme is not None and results_dir == SCRATCH_RESULTS:
        raise click.UsageError(
            "--readme publishes figures: run without --quick/--scratch (or give --results-dir)."
        )
    benches = get_suite(suite)
    if only:
        unknown = sorted(set(only) - {b.name for b in benches})
        if unknown:
            raise click.BadParameter(f"unknown in suite {suite!r}: {', '.join(unknown)}", param_hint="--only")
        benches = [b for b in benches if b.name in only]
    command = "python -m benchmarks " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    _refuse_foreign(results_dir)
    try:
        results = run_suite(
            benches,
            results_dir=results_dir,
            data_root=data_root,
            quick=quick,
            command=command,
            timeout_s=timeout,
            resume=resume,
        )
        written = publish(results_dir, readme=readme, html_report=not no_report)
    except PillarRerankError as exc:
        raise click.ClickException(str(exc)) from exc
    for res in results:
        click.echo(
            f"{res['suite']}/{res['name']}: {res['status']}"
            + (f" ({res['reason']})" if res["reason"] else "")
        )
    click.echo("wrote " + ", ".join(str(p) for p in written.values()))
    if any(r["status"] == "failed" for r in results):
        sys.exit(1)


@main.command(name="tables")
@_RESULTS
@_README
@click.option("--no-report", is_flag=True, help="Skip the HTML report.")
@click.option(
    "--resummarize", is_flag=True, help="First re-derive each stored result's tables and plots from its runs."
)
def tables(results_dir, readme, no_report, resummarize):
    """Re-render the results README, report and README block from stored JSONs (no running)."""
    _refuse_foreign(results_dir)
    try:
        if resummarize:
            resummarize_results(results_dir, [*get_suite("smoke"), *get_suite("all")])
        written = publish(results_dir, readme=readme, html_report=not no_report)
    except PillarRerankError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo("wrote " + ", ".join(str(p) for p in written.values()))


@main.command(name="list")
@click.option("--suite", type=click.Choice(suite_names()), default="all", show_default=True)
@click.option("--data-root", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_DATA)
def list_benchmarks(suite, data_root):
    """List benchmarks and whether they can run here."""
    for bench in get_suite(suite) if suite != "all" else [*get_suite("smoke"), *get_suite("all")]:
        why = missing_requirements(bench, data_root)
        click.echo(
            f"{bench.key:40s} {len(bench.runs())} run(s)  " + ("ready" if why is None else f"skip: {why}")
        )


if __name__ == "__main__":
    main()
