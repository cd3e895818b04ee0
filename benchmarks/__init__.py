"""pillar-rerank benchmarks: one runner, four suites, results as JSON, tables never typed by hand.

Run ``python -m benchmarks run --suite accuracy|speed|scale|all`` (``smoke`` is the tiny
synthetic suite CI runs). Each benchmark's figures go to ``benchmarks/results/<suite>/<name>.json``
with the machine, versions, commit, configuration, seed and date; the runner then re-renders
``benchmarks/results/README.md`` and ``benchmarks/results/report.html`` from every JSON there.
"""


class BenchmarkSkipped(Exception):  # noqa: N818 - reads as a state, like StopIteration
    """Raised by a benchmark function that cannot run here; the runner records the reason."""
