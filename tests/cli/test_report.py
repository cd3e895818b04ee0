import json
import re

import numpy as np
import pytest
from click.testing import CliRunner
from pillar_rerank.cli.main import cli


@pytest.fixture
def score_files(tmp_path, rng):
    t2i = np.repeat(np.arange(20), 2)
    base = rng.standard_normal((20, 40)).astype(np.float32)
    better = (base + 2.0 * (np.arange(20)[:, None] == t2i[None, :])).astype(np.float32)
    paths = {"base": tmp_path / "base.npy", "better": tmp_path / "better.npy", "map": tmp_path / "map.npy"}
    np.save(paths["base"], base)
    np.save(paths["better"], better)
    np.save(paths["map"], t2i)
    return paths


def invoke(*args):
    return CliRunner().invoke(cli, ["report", *map(str, args)])


def test_scores_to_html(score_files, tmp_path):
    out = tmp_path / "r.html"
    res = invoke(
        "--sims",
        score_files["base"],
        "--sims",
        score_files["better"],
        "--label",
        "plain",
        "--label",
        "reranked",
        "--txt2img",
        score_files["map"],
        "--hub-k",
        "5",
        "-o",
        out,
    )
    assert res.exit_code == 0, res.output
    assert "3 figures" in res.output
    html = out.read_text()
    assert "reranked" in html and html.count("data:image/png;base64,") == 3


def test_positional_score_files_and_overwrite(score_files, tmp_path):
    out = tmp_path / "r.html"
    args = (score_files["base"], "--captions-per-image", "2", "-o", out)
    assert invoke(*args).exit_code == 0
    again = invoke(*args)
    assert again.exit_code == 3 and "--overwrite" in again.output
    assert invoke(*args, "--overwrite").exit_code == 0


def _skipped_result(name):
    from pillar_rerank.report.results import RESULT_SCHEMA

    return {
        "schema": RESULT_SCHEMA,
        "suite": "speed",
        "name": name,
        "title": f"Bench {name}",
        "description": "",
        "status": "skipped",
        "reason": "module 'x' is not available.",
        "date": "2026-01-01T00:00:00+00:00",
        "command": "python -m benchmarks run",
        "seed": None,
        "config": {},
        "machine": {},
        "versions": {},
        "git": {},
        "runs": [],
        "tables": [],
        "plots": [],
        "diagnostics": None,
        "notes": [],
    }


def test_results_folder(tmp_path):
    (tmp_path / "res" / "speed").mkdir(parents=True)
    (tmp_path / "res" / "speed" / "a.json").write_text(json.dumps(_skipped_result("a")))
    (tmp_path / "res" / "other.json").write_text("{}")  # not a result: ignored
    out = tmp_path / "r.html"
    res = invoke(tmp_path / "res", "-o", out)
    assert res.exit_code == 0, res.output
    assert "Bench a (skipped)" in out.read_text()


@pytest.mark.parametrize(
    "extra, code, fragment",
    [
        ((), 2, "give a results folder or at least one score matrix"),
        (("--label", "a"), 2, "--label"),
    ],
)
def test_usage_errors(extra, code, fragment, tmp_path):
    res = (
        invoke(*extra, "-o", tmp_path / "r.html")
        if not extra
        else invoke(tmp_path, *extra, "-o", tmp_path / "r.html")
    )
    assert res.exit_code == code and fragment in res.output


def test_bad_inputs(score_files, tmp_path):
    missing = invoke("--sims", tmp_path / "nope.npy", "--captions-per-image", "2", "-o", tmp_path / "r.html")
    assert missing.exit_code == 3 and "not found" in missing.output
    np.save(tmp_path / "short.npy", np.zeros((20, 7), dtype=np.float32))
    wrong = invoke(
        score_files["base"],
        tmp_path / "short.npy",
        "--txt2img",
        score_files["map"],
        "-o",
        tmp_path / "r.html",
    )
    assert wrong.exit_code == 2 and "shape" in wrong.output
    no_map = invoke(score_files["base"], "-o", tmp_path / "r.html")
    assert no_map.exit_code == 2 and "txt_to_img" in no_map.output
    (tmp_path / "empty").mkdir()
    empty = invoke(tmp_path / "empty", "-o", tmp_path / "r.html")
    assert empty.exit_code == 2 and "no benchmark result" in empty.output
    bad = tmp_path / "bad"
    (bad / "x").mkdir(parents=True)
    (bad / "x" / "r.json").write_text(
        json.dumps({"schema": "pillar-rerank/benchmark-result/1", "suite": "x"})
    )
    assert invoke(bad, "-o", tmp_path / "r.html").exit_code == 2


@pytest.mark.parametrize("first", ["npy", "npz"])
def test_baseline_npz_is_reported_per_direction(score_files, tmp_path, first):
    """Issue 15 item 24: the per-direction .npz of `rerank baseline` was refused."""
    base = score_files["base"]
    res = CliRunner().invoke(cli, ["baseline", "dsl", "--sims", str(base), "--txt2img",
                                   str(score_files["map"]),
                                   "-o", str(tmp_path / "dsl.npz")])
    assert res.exit_code == 0, res.output
    files = [base, tmp_path / "dsl.npz"] if first == "npy" else [tmp_path / "dsl.npz", base]
    out = tmp_path / "r.html"
    res = invoke(*files, "--txt2img", score_files["map"], "-o", out)
    assert res.exit_code == 0, res.output
    html = out.read_text()
    from pillar_rerank.inputs import Relevance
    from pillar_rerank.metrics import recall_metrics

    with np.load(tmp_path / "dsl.npz") as z:
        m = recall_metrics(z["i2t"], Relevance(np.load(score_files["map"]), 20), t2i_scores=z["t2i"])
    row = " ".join(f"{m[k]:.1f}" for k in ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5",
                                           "t2i_R@10", "RSUM"))
    cells = " ".join(re.findall(r"<td[^>]*>([^<]*)</td>", html))
    assert row in cells, (row, cells[:400])  # the t2i half comes from the t2i array, not from i2t
