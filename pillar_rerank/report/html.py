"""A self-contained HTML page: inline CSS, PNGs as base64 data URIs, no external assets."""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

from pillar_rerank.io import atomic_path, check_output_path
from pillar_rerank.report.tables import Table
from pillar_rerank.typing import PathLikeStr

_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:24px auto;max-width:1160px;
color:#1f2328;line-height:1.45;padding:0 16px}
h1{font-size:1.7em;border-bottom:1px solid #d0d7de;padding-bottom:6px}
h2{font-size:1.35em;margin-top:2em;border-bottom:1px solid #d0d7de;padding-bottom:4px}
h3{font-size:1.1em;margin-top:1.6em}
table{border-collapse:collapse;margin:10px 0 4px;font-size:13px}
caption{text-align:left;font-weight:600;padding:4px 0}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#f6f8fa}
td.text,th.text{text-align:left}
tr:nth-child(even) td{background:#fbfcfd}
.notes{font-size:12px;color:#59636e;margin:2px 0 14px;max-width:1100px}
.meta{font-size:12px;color:#59636e}
.warn{background:#fff8c5;border:1px solid #d4a72c;padding:8px 12px;border-radius:6px}
.skipped{color:#9a6700}
.failed{color:#cf222e}
figure{margin:14px 0}
figure img{max-width:100%;border:1px solid #eaeef2}
figcaption{font-size:12px;color:#59636e}
.scroll{overflow-x:auto}
.toc{font-size:13px;background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:6px 12px}
.toc ul{margin:2px 0;padding-left:18px}
"""


@dataclass
class Figure:
    """A PNG with its caption."""

    caption: str
    png: bytes

    def to_html(self) -> str:
        data = base64.b64encode(self.png).decode("ascii")
        alt = html.escape(self.caption)
        return (
            f'<figure><img alt="{alt}" src="data:image/png;base64,{data}">'
            f"<figcaption>{alt}</figcaption></figure>"
        )


@dataclass
class Section:
    """A heading with paragraphs, tables and figures, in that order; sections nest one level."""

    heading: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    status: str = "ok"
    subsections: list[Section] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        """Stable id for in-page links, from the heading."""
        slug = re.sub(r"[^a-z0-9]+", "-", self.heading.lower()).strip("-")
        return f"s-{slug or 'section'}"

    def toc(self) -> str:
        """Nested list of in-page links to this section and its subsections."""
        link = f'<a href="#{self.anchor}">{html.escape(self.heading)}</a>'
        if not self.subsections:
            return f"<li>{link}</li>"
        return f"<li>{link}<ul>{''.join(s.toc() for s in self.subsections)}</ul></li>"

    def to_html(self, level: int = 2) -> str:
        cls = f' class="{self.status}"' if self.status in ("skipped", "failed") else ""
        parts = [f'<h{level} id="{self.anchor}"{cls}>{html.escape(self.heading)}</h{level}>']
        parts += [f'<p class="meta">{html.escape(p)}</p>' for p in self.paragraphs]
        parts += [f'<div class="scroll">{t.to_html()}</div>' for t in self.tables]
        parts += [f.to_html() for f in self.figures]
        parts += [s.to_html(min(level + 1, 4)) for s in self.subsections]
        return "\n".join(parts)


@dataclass
class Report:
    """The whole page."""

    title: str
    intro: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)

    @property
    def n_figures(self) -> int:
        def count(s: Section) -> int:
            return len(s.figures) + sum(count(c) for c in s.subsections)

        return sum(count(s) for s in self.sections)

    def to_html(self) -> str:
        body = [f"<h1>{html.escape(self.title)}</h1>"]
        body += [f"<p>{html.escape(p)}</p>" for p in self.intro]
        body += [f'<p class="warn">{html.escape(w)}</p>' for w in self.warnings]
        if len(self.sections) > 1 or any(s.subsections for s in self.sections):
            body.append(f'<nav class="toc"><ul>{"".join(s.toc() for s in self.sections)}</ul></nav>')
        body += [s.to_html() for s in self.sections]
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body)
            + "\n</body></html>\n"
        )

    def write(self, path: PathLikeStr, *, overwrite: bool = False, inputs: tuple = ()) -> Path:
        """Write the page atomically; never over an input, over an existing file only if asked."""
        out = check_output_path(path, inputs=inputs, overwrite=overwrite, name="report")
        with atomic_path(out) as tmp:
            tmp.write_text(self.to_html(), encoding="utf-8")
        return out
