import json

import numpy as np
import pytest
from click.testing import CliRunner
from pillar_rerank.cli.main import cli

from pillar_rerank.metrics import Qrels, evaluate
from pillar_rerank.metrics.qrels import save_graded_pairs


@pytest.fixture
def files(tmp_path, set_factory):
    data = set_factory(20, min_caps=1, max_caps=4)
    paths = {
        "sims": tmp_path / "sims.npy", "map": tmp_path / "map.npy", "img": tmp_path / "img.npy",
        "txt": tmp_path / "txt.npy",
    }
    np.save(paths["sims"], data.scores)
    np.save(paths["map"], data.txt_to_img)
    np.save(paths["img"], data.image_embeddings)
    np.save(paths["txt"], data.text_embeddings)
    return data, paths


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_table_and_json_match_evaluate(files, tmp_path):
    data, p = files
    out = tmp_path / "out.json"
    res = run("eval", p["sims"], "--txt2img", p["map"], "--json", out)
    assert res.exit_code == 0, res.output
    want = evaluate(data)
    lines = res.output.splitlines()
    assert lines[0].startswith("sims.npy: 20 images x") and "(1-4 per image)" in lines[0]
    assert lines[1].split() == ["R@1", "R@5", "R@10", "medr", "meanr"]
    assert lines[2].split()[1] == f"{want['i2t_R@1']:.2f}"
    assert f"{want['RSUM']:.2f}" in lines[4]
    assert "lower gallery index ranks first" in res.output
    payload = json.loads(out.read_text())
    assert payload["metrics"] == pytest.approx(want) and payload["n_images"] == 20


def test_embeddings_folds_and_metric_selection(files):
    data, p = files
    res = run("eval", "--image-emb", p["img"], "--text-emb", p["txt"], "--txt2img", p["map"],
              "--folds", "2", "-m", "i2t_R@1", "-m", "t2i_mAP@R")
    assert res.exit_code == 0, res.output
    want = evaluate(data, metrics=["i2t_R@1", "t2i_mAP@R"], folds=2)
    assert "mean over 2 folds" in res.output
    row = next(line for line in res.output.splitlines() if line.startswith("i2t"))
    assert row.split()[1] == f"{want['i2t_R@1']:.2f}"


def test_captions_per_image_and_extended_files(tmp_path, rng):
    scores = rng.random((12, 24)).astype(np.float16)
    np.save(tmp_path / "s.npy", scores)
    Qrels.from_lists([[2 * i, 2 * i + 1, (2 * i + 5) % 24] for i in range(12)], 24).save(tmp_path / "pi.npz")
    Qrels.from_lists([[j // 2] for j in range(24)], 12).save(tmp_path / "pt.npz")
    save_graded_pairs(tmp_path / "g.npz", [0, 1, 2], [0, 2, 5], [5.0, 3.0, 1.0])
    res = run("eval", tmp_path / "s.npy", "--captions-per-image", "2",
              "--positives-i2t", tmp_path / "pi.npz", "--positives-t2i", tmp_path / "pt.npz",
              "--graded", tmp_path / "g.npz", "--json", tmp_path / "o.json")
    assert res.exit_code == 0, res.output
    header = res.output.splitlines()[1].split()
    assert header[-3:] == ["mAP@R", "R-P", "NDCG@10"]
    metrics = json.loads((tmp_path / "o.json").read_text())["metrics"]
    assert metrics["t2i_mAP@R"] == pytest.approx(metrics["t2i_R@1"])


def test_t2i_sims_and_demo(files, tmp_path):
    data, p = files
    np.save(tmp_path / "t2i.npy", -data.scores)
    res = run("eval", p["sims"], "--txt2img", p["map"], "--t2i-sims", tmp_path / "t2i.npy", "-m", "t2i_R@1")
    assert res.exit_code == 0
    assert f"{evaluate(-data.scores, data.relevance)['t2i_R@1']:.2f}" in res.output
    demo = run("eval", "--demo", "test")
    assert demo.exit_code == 0 and "demo_test: 1000 images x 4000 captions" in demo.output
    assert "363.43" in demo.output or "363.45" in demo.output  # BLAS-dependent tie, see test_demo


def _n(p):
    return len(np.load(p["map"]))


def _bad(tmp_path, name, array):
    np.save(tmp_path / name, array, allow_pickle=array.dtype == object)
    return tmp_path / name


@pytest.mark.parametrize("make_args, code, fragment", [
    (lambda t, p: ["eval", p["sims"], "--txt2img", _bad(t, "m.npy", np.zeros(3, int))], 2,
     "one entry per caption"),
    (lambda t, p: ["eval", p["sims"], "--captions-per-image", "7"], 2, "captions_per_image=7"),
    (lambda t, p: ["eval", _bad(t, "n.npy", np.full((20, 4), np.nan)), "--captions-per-image", "1"], 2,
     "NaN/inf"),
    (lambda t, p: ["eval", _bad(t, "i.npy", np.ones((20, 20), int)), "--captions-per-image", "1"], 2,
     "dtype int64"),
    (lambda t, p: ["eval", _bad(t, "o.npy", np.array([[1.0]], dtype=object)), "--captions-per-image", "1"], 2,
     "object (pickled)"),
    (lambda t, p: ["eval", _bad(t, "e.npy", np.zeros((0, 4), np.float32)), "--captions-per-image", "1"], 2,
     "non-empty"),
    (lambda t, p: ["eval", _bad(t, "v.npy", np.zeros(5, np.float32)), "--captions-per-image", "1"], 2,
     "2-D array"),
    (lambda t, p: ["eval", p["sims"], "--txt2img", _bad(t, "r.npy", np.full(_n(p), 25))], 2,
     "point past n_images=20"),
    (lambda t, p: ["eval", p["sims"], "--txt2img", _bad(t, "c.npy", np.zeros(_n(p), int))], 2,
     "images have no caption (first: image 1)"),
    (lambda t, p: ["eval", p["sims"], "--txt2img", _bad(t, "f.npy", np.zeros(_n(p)))], 2,
     "integer array"),
    (lambda t, p: ["eval", "--image-emb", p["img"], "--captions-per-image", "1",
                   "--text-emb", _bad(t, "d.npy", np.zeros((5, 3), np.float32))], 2, "captions_per_image=1"),
    (lambda t, p: ["eval", p["sims"], "--txt2img", p["map"],
                   "--t2i-sims", _bad(t, "t.npy", np.zeros((2, 2)))], 2, "--t2i-sims"),
    (lambda t, p: ["eval", p["sims"], "--txt2img", p["map"], "--folds", "3"], 2,
     "n_images=20 is not 3 folds"),
    (lambda t, p: ["eval", p["sims"], "--txt2img", p["map"], "-m", "i2t_P@5"], 2,
     "is not supported; supported"),
    (lambda t, p: ["eval", p["sims"], "--txt2img", p["map"], "--positives-i2t", p["sims"]], 2,
     "--positives-i2t"),
    (lambda t, p: ["eval", p["sims"], "--txt2img", p["map"], "--graded", p["map"]], 2, "--graded"),
    (lambda t, p: ["eval", t / "missing.npy", "--txt2img", p["map"]], 3, "file not found"),
    (lambda t, p: ["eval", p["sims"], "--txt2img", p["map"], "--json", p["map"]], 3,
     "refusing to write over the input file"),
    (lambda t, p: ["eval", p["sims"], "--txt2img", p["map"], "--json", p["sims"], "--overwrite"], 3,
     "refusing to write over the input file"),
    (lambda t, p: ["eval", p["sims"]], 2, "exactly one of --txt2img"),
    (lambda t, p: ["eval", p["sims"], "--image-emb", p["img"], "--captions-per-image", "1"], 2, "not both"),
    (lambda t, p: ["eval", "--captions-per-image", "1"], 2, "give a SIMS.npy matrix"),
    (lambda t, p: ["eval", "--demo", "test", "--captions-per-image", "1"], 2, "--demo takes no data"),
    (lambda t, p: ["eval", p["sims"], "--captions-per-image", "0"], 2, "0"),
])
def test_every_input_error_exits_non_zero_with_a_named_problem(files, tmp_path, make_args, code, fragment):
    _, p = files
    res = run(*make_args(tmp_path, p))
    assert res.exit_code == code, res.output
    assert fragment in res.output
    assert "Traceback" not in res.output


def test_existing_json_needs_overwrite(files, tmp_path):
    _, p = files
    out = tmp_path / "o.json"
    out.write_text("{}")
    res = run("eval", p["sims"], "--txt2img", p["map"], "--json", out)
    assert res.exit_code == 3 and "pass --overwrite" in res.output and out.read_text() == "{}"
    assert run("eval", p["sims"], "--txt2img", p["map"], "--json", out, "--overwrite").exit_code == 0
    assert "metrics" in json.loads(out.read_text())


def test_direction_pair_npz_from_rerank_baseline(tmp_path):
    """The .npz that `rerank baseline --direction both` writes evaluates both directions."""
    import numpy as np
    from click.testing import CliRunner
    from pillar_rerank.cli.main import cli

    from pillar_rerank.inputs import Relevance
    from pillar_rerank.metrics.recall import recall_metrics

    rng = np.random.default_rng(0)
    i2t = rng.standard_normal((12, 24)).astype(np.float32)
    t2i = rng.standard_normal((12, 24)).astype(np.float32)
    np.savez(tmp_path / "pair.npz", i2t=i2t, t2i=t2i)
    expected = recall_metrics(i2t, Relevance.from_captions_per_image(12, 2), t2i_scores=t2i)
    result = CliRunner().invoke(cli, ["eval", str(tmp_path / "pair.npz"), "--captions-per-image", "2",
                                      "--json", str(tmp_path / "out.json")])
    assert result.exit_code == 0, result.output
    import json

    got = json.loads((tmp_path / "out.json").read_text())
    flat = got.get("metrics", got)
    assert abs(flat["RSUM"] - expected["RSUM"]) < 1e-9

    np.savez(tmp_path / "bad.npz", scores=i2t)
    bad = CliRunner().invoke(cli, ["eval", str(tmp_path / "bad.npz"), "--captions-per-image", "2"])
    assert bad.exit_code == 2 and "'i2t' and 't2i'" in bad.output
