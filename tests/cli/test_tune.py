"""rerank tune: skipped grid points, the dev base, and the choice file as an input of baseline and fit."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from pillar_rerank.cli.main import cli

from pillar_rerank.baselines import apply_both, get_baseline
from pillar_rerank.baselines.tuning import split_dev, tune
from pillar_rerank.inputs import load_retrieval_set
from pillar_rerank.metrics import recall_metrics


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def dev_files(tmp_path):
    """A dev side of 34 images x 2 captions (the split gives 17 bank images, 34 bank captions)."""
    rng = np.random.default_rng(5)
    img = rng.standard_normal((34, 8)).astype(np.float32)
    t2i = np.repeat(np.arange(34), 2)
    txt = (img[t2i] + 0.9 * rng.standard_normal((68, 8))).astype(np.float32)
    np.save(tmp_path / "sims.npy", img @ txt.T)
    np.save(tmp_path / "map.npy", t2i)
    return ["--dev-sims", tmp_path / "sims.npy", "--dev-txt2img", tmp_path / "map.npy"]


def test_invalid_grid_points_are_skipped_and_the_finished_trials_kept(dev_files, tmp_path):
    """Issue 15 item 23: NNN k=128 with a bank of 34 queries aborted the whole sweep."""
    res = run("tune", "nnn", *dev_files, "--grid", "k=2,4,128", "--grid", "alpha=0.5", "-q",
              "-o", tmp_path / "choice.json")
    assert res.exit_code == 0, res.output
    assert 'skipped' in res.output and '"k": 128' in res.output
    doc = json.loads((tmp_path / "choice.json").read_text())
    assert [t["params"]["k"] for t in doc["trials"]] == [2, 4]
    assert [s["params"]["k"] for s in doc["skipped"]] == [128] and "k" in doc["skipped"][0]["reason"]
    res = run("tune", "nnn", *dev_files, "--grid", "k=128,256", "-q")
    assert res.exit_code == 2 and "every grid point" in res.output


def test_the_dev_base_is_shown_and_saved(dev_files, tmp_path):
    res = run("tune", "dsl", *dev_files, "-q", "-o", tmp_path / "c.json")
    assert res.exit_code == 0, res.output
    data = load_retrieval_set(sims=tmp_path / "sims.npy", txt_to_img=tmp_path / "map.npy")
    evaluation, _ = split_dev(data, seed=0)
    base = recall_metrics(evaluation.similarity(), evaluation.relevance)["RSUM"]
    assert f"base (no re-ranking)  RSUM {base:.2f}" in res.output
    assert json.loads((tmp_path / "c.json").read_text())["base_rsum"] == pytest.approx(base)


@pytest.mark.parametrize("per_direction", [False, True])
def test_choice_file_feeds_rerank_baseline(dev_files, tmp_path, per_direction):
    res = run("tune", "dsl", *dev_files, "-q", "-o", tmp_path / "c.json")
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "c.json").read_text())
    test = ["--sims", tmp_path / "sims.npy", "--txt2img", tmp_path / "map.npy"]
    flag = ["--per-direction"] if per_direction else []
    res = run("baseline", "dsl", *test, "--params-from", tmp_path / "c.json", *flag, "-o", tmp_path / "o.npz")
    assert res.exit_code == 0, res.output
    data = load_retrieval_set(sims=tmp_path / "sims.npy", txt_to_img=tmp_path / "map.npy")
    i2t = doc["best_params_i2t"] if per_direction else doc["best_params"]
    t2i = doc["best_params_t2i"] if per_direction else doc["best_params"]
    want = apply_both(get_baseline("dsl", **i2t), data, t2i_method=get_baseline("dsl", **t2i))
    with np.load(tmp_path / "o.npz") as z:
        np.testing.assert_allclose(z["i2t"], want.scores, rtol=1e-6)
        np.testing.assert_allclose(z["t2i"], want.t2i_scores, rtol=1e-6)
    res = run("baseline", "nnn", *test, "--params-from", tmp_path / "c.json", "-o", tmp_path / "x.npz")
    assert res.exit_code == 2 and "'dsl', not 'nnn'" in res.output


def test_tune_library_result_lists_skips(set_factory):
    dev = set_factory(12)
    result = tune("nnn", dev, grid={"k": [1, 1000]})
    assert [t["params"] for t in result.trials] == [{"k": 1}]
    assert result.skipped[0]["params"] == {"k": 1000}
