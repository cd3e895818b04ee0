"""Result tables: one JSON-ready structure, rendered as Markdown or HTML.

Benchmarks store their tables in this structure inside their result JSON, so the Markdown in
``benchmarks/results/README.md``, the README's "Results" block and the HTML report are all
rendered from the same stored figures and never typed by hand.

A cell is a number, a string, ``None`` (shown as an en dash) or a spread
``{"mean": m, "std": s, "n": n}`` (shown as ``m ± s``).
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pillar_rerank.exceptions import InvalidInputError

Cell = Any


def spread(values: Iterable[float]) -> dict[str, float]:
    """Mean, sample standard deviation and count of ``values`` as a table cell."""
    vals = [float(v) for v in values]
    if not vals:
        raise InvalidInputError("spread: expected at least one value; got none.")
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return {"mean": mean, "std": std, "n": len(vals)}


def format_cell(value: Cell, digits: int = 1) -> str:
    """Text of one cell (floats with ``digits`` decimals, spreads as ``mean ± std``)."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping) and "mean" in value:
        text = f"{float(value['mean']):.{digits}f} ± {float(value.get('std', 0.0)):.{digits}f}"
        return text
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if value != 0 and abs(value) < 10 ** (-digits):
            return f"{value:.2g}"
        return f"{value:,.{digits}f}" if abs(value) >= 10_000 else f"{value:.{digits}f}"
    return str(value)


@dataclass
class Table:
    """A titled table of cells.

    Parameters
    ----------
    title : str
    columns : list of str
    rows : list of list
        One list of cells per row, in column order.
    notes : str, optional
        Shown under the table (configuration, caveats).
    digits : int, default=1
        Decimals of float cells.
    headline : bool, default=False
        Also shown in the README's short "Results" section.
    """

    title: str
    columns: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    notes: str | None = None
    digits: int = 1
    headline: bool = False

    def __post_init__(self) -> None:
        for i, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise InvalidInputError(
                    f"table {self.title!r}: row {i} has {len(row)} cells; expected {len(self.columns)} "
                    f"({', '.join(self.columns)})."
                )

    @classmethod
    def from_records(
        cls,
        title: str,
        records: Sequence[Mapping[str, Cell]],
        *,
        columns: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> Table:
        """Build from dicts; ``columns`` defaults to the keys in first-seen order."""
        if columns is None:
            seen: dict[str, None] = {}
            for rec in records:
                seen.update(dict.fromkeys(rec))
            columns = list(seen)
        return cls(
            title=title,
            columns=list(columns),
            rows=[[rec.get(c) for c in columns] for rec in records],
            **kwargs,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "columns": list(self.columns),
            "rows": [list(r) for r in self.rows],
            "notes": self.notes,
            "digits": self.digits,
            "headline": self.headline,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Table:
        try:
            return cls(
                title=str(data["title"]),
                columns=list(data["columns"]),
                rows=[list(r) for r in data.get("rows", [])],
                notes=data.get("notes"),
                digits=int(data.get("digits", 1)),
                headline=bool(data.get("headline", False)),
            )
        except (KeyError, TypeError) as exc:
            raise InvalidInputError(
                f"table: expected keys 'title', 'columns', 'rows'; got {data!r:.200}."
            ) from exc

    def numeric_columns(self) -> list[bool]:
        """Whether each column holds only numbers (right-aligned) rather than text."""

        def is_num(c: Cell) -> bool:
            return (
                c is None
                or (isinstance(c, (int, float)) and not isinstance(c, bool))
                or (isinstance(c, Mapping) and "mean" in c)
            )

        return [bool(self.rows) and all(is_num(r[i]) for r in self.rows) for i in range(len(self.columns))]

    def formatted_rows(self) -> list[list[str]]:
        return [[format_cell(c, self.digits) for c in row] for row in self.rows]

    def to_markdown(self, *, heading: str | None = "####") -> str:
        """GitHub Markdown: optional heading, the table, then the notes in italics."""

        def esc(text: str) -> str:
            return text.replace("|", "\\|").replace("\n", " ")

        lines = [f"{heading} {self.title}", ""] if heading else []
        lines.append("| " + " | ".join(esc(c) for c in self.columns) + " |")
        numeric = self.numeric_columns()
        lines.append("|" + "|".join(" ---: " if num else " --- " for num in numeric) + "|")
        for row in self.formatted_rows():
            lines.append("| " + " | ".join(esc(c) for c in row) + " |")
        if self.notes:
            lines += ["", f"*{esc(self.notes)}*"]
        return "\n".join(lines) + "\n"

    def to_html(self) -> str:
        """An HTML ``<table>`` with caption and notes (all text escaped)."""
        align = ["" if num else ' class="text"' for num in self.numeric_columns()]
        head = "".join(f"<th{a}>{html.escape(c)}</th>" for a, c in zip(align, self.columns))
        body = "".join(
            "<tr>" + "".join(f"<td{a}>{html.escape(c)}</td>" for a, c in zip(align, row)) + "</tr>"
            for row in self.formatted_rows()
        )
        notes = f'<p class="notes">{html.escape(self.notes)}</p>' if self.notes else ""
        return (
            f"<table><caption>{html.escape(self.title)}</caption><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>{notes}"
        )
