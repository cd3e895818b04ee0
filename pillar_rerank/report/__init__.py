"""Reports for people: tables, diagnostics and a self-contained HTML page with PNG plots.

``rerank report RESULTS_DIR`` renders every benchmark result JSON; ``rerank report --sims ...``
compares raw score matrices. Plotting needs the optional ``report`` extra (matplotlib).
"""

from pillar_rerank.report.build import (
    PROXY_NOTE,
    diagnostics_figures,
    diagnostics_tables,
    report_from_results,
    report_from_scores,
)
from pillar_rerank.report.diagnostics import ScoreDiagnostics, diagnose, diagnostics_payload, k_occurrence
from pillar_rerank.report.html import Figure, Report, Section
from pillar_rerank.report.plots import MissingDependencyError
from pillar_rerank.report.results import RESULT_SCHEMA, load_results, validate_result
from pillar_rerank.report.tables import Table, format_cell, spread

__all__ = [
    "PROXY_NOTE",
    "RESULT_SCHEMA",
    "Figure",
    "MissingDependencyError",
    "Report",
    "ScoreDiagnostics",
    "Section",
    "Table",
    "diagnose",
    "diagnostics_figures",
    "diagnostics_payload",
    "diagnostics_tables",
    "format_cell",
    "k_occurrence",
    "load_results",
    "report_from_results",
    "report_from_scores",
    "spread",
    "validate_result",
]
