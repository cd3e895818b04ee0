import pytest

from pillar_rerank.exceptions import InvalidInputError
from pillar_rerank.report.tables import Table, format_cell, spread


def test_format_cell():
    assert format_cell(None) == "–"
    assert format_cell(3) == "3"
    assert format_cell(12345) == "12,345"
    assert format_cell(1.25, 1) == "1.2"
    assert format_cell(0.0001, 2) == "0.0001"
    assert format_cell(True) == "yes"
    assert format_cell({"mean": 1.234, "std": 0.05, "n": 3}, 2) == "1.23 ± 0.05"


def test_spread():
    s = spread([1.0, 2.0, 3.0])
    assert s["mean"] == 2.0 and s["std"] == pytest.approx(1.0) and s["n"] == 3
    assert spread([4.0])["std"] == 0.0
    with pytest.raises(InvalidInputError):
        spread([])


def test_markdown_and_html_rendering():
    t = Table.from_records(
        "T <1>", [{"method": "a|b", "R@1": 1.0}, {"method": "<c>", "R@1": None}], notes="n & m", headline=True
    )
    md = t.to_markdown()
    assert "#### T <1>" in md and "| a\\|b | 1.0 |" in md and "| --- | ---: |" in md and "*n & m*" in md
    html = t.to_html()
    assert "&lt;c&gt;" in html and "<c>" not in html and "n &amp; m" in html
    again = Table.from_dict(t.to_dict())
    assert again.to_markdown() == md and again.headline


def test_row_length_is_checked():
    with pytest.raises(InvalidInputError, match="row 0 has 1 cells"):
        Table("t", ["a", "b"], [[1]])
    with pytest.raises(InvalidInputError, match="expected keys"):
        Table.from_dict({"rows": []})
