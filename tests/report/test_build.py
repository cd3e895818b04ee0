import base64
import re
import sys

import numpy as np
import pytest

from pillar_rerank.exceptions import InputFileError, InvalidInputError
from pillar_rerank.inputs import Relevance
from pillar_rerank.report import MissingDependencyError, report_from_scores

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def embedded_pngs(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


@pytest.fixture
def two_methods(rng):
    rel = Relevance(np.repeat(np.arange(30), 3), 30)
    base = rng.standard_normal((30, 90)).astype(np.float32)
    better = base + 2.0 * (np.arange(30)[:, None] == rel.txt_to_img[None, :])
    return rel, [("base", base, None), ("better", better.astype(np.float32), None)]


def test_report_from_scores_is_self_contained(two_methods, tmp_path):
    rel, methods = two_methods
    page = report_from_scores(methods, rel, dataset="toy")
    html = page.to_html()
    pngs = embedded_pngs(html)
    assert len(pngs) == 3 == page.n_figures  # recall curves, rank change, hubness
    assert all(p.startswith(PNG_MAGIC) for p in pngs)
    assert not re.search(r'(src|href)="(?!data:|#)', html)  # no external assets
    assert "Rank of the true match vs base" in html and "Hubness" in html
    out = page.write(tmp_path / "r.html")
    assert out.read_text(encoding="utf-8") == html
    with pytest.raises(InputFileError, match="exists"):
        page.write(tmp_path / "r.html")


def test_single_matrix_has_no_rank_change(two_methods):
    rel, methods = two_methods
    page = report_from_scores(methods[:1], rel)
    assert page.n_figures == 2


def test_bad_arguments(two_methods):
    rel, methods = two_methods
    with pytest.raises(InvalidInputError, match="unique"):
        report_from_scores([methods[0], methods[0]], rel)
    with pytest.raises(InvalidInputError, match="base 'nope'"):
        report_from_scores(methods, rel, base="nope")
    with pytest.raises(InvalidInputError, match="better scores"):
        report_from_scores([methods[0], ("better", methods[1][1][:, :5], None)], rel)


def test_missing_matplotlib_is_a_clear_error(two_methods, monkeypatch):
    rel, methods = two_methods
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingDependencyError, match=r"pillar-rerank\[report\]"):
        report_from_scores(methods, rel)
