"""``rerank baseline`` and ``rerank tune``: outputs, listing and error paths."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from pillar_rerank.cli.main import cli

from pillar_rerank.baselines import NNN, apply_both, get_baseline


@pytest.fixture
def files(tmp_path, set_factory):
    test = set_factory(16, min_caps=2, max_caps=2, d=8, shuffle=False)
    bank = set_factory(20, min_caps=2, max_caps=2, d=8, shuffle=False)
    paths = {}
    for key, arr in {
        "sims": test.scores, "img": test.image_embeddings, "txt": test.text_embeddings,
        "map": test.txt_to_img, "b_i2t": bank.image_embeddings @ test.text_embeddings.T,
        "b_t2i": bank.text_embeddings @ test.image_embeddings.T,
        "b_img": bank.image_embeddings, "b_txt": bank.text_embeddings,
    }.items():
        paths[key] = str(tmp_path / f"{key}.npy")
        np.save(paths[key], arr)
    return paths, test


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_list_shows_flags():
    res = run("baseline", "--list")
    assert res.exit_code == 0
    lines = res.output.splitlines()
    line = next(row for row in lines if row.startswith("dsl"))
    assert "YES" in line and "dsl" in line
    assert any(row.startswith("nnn") and " yes " in row for row in lines)


def test_both_directions_npz(files, tmp_path):
    paths, test = files
    out = tmp_path / "out.npz"
    res = run("baseline", "nnn", "--sims", paths["sims"], "--txt2img", paths["map"],
              "--bank-sims-i2t", paths["b_i2t"], "--bank-sims-t2i", paths["b_t2i"],
              "--param", "k=3", "--param", "alpha=0.5", "-o", str(out))
    assert res.exit_code == 0, res.output
    with np.load(out, allow_pickle=False) as z:
        expected = apply_both(NNN(k=3, alpha=0.5), test.with_scores(test.scores),
                              _bank(paths))
        np.testing.assert_allclose(z["i2t"], expected.scores, atol=1e-5)
        np.testing.assert_allclose(z["t2i"], expected.t2i_scores, atol=1e-5)
    assert json.loads(res.output.strip().splitlines()[-1])["params"]["k"] == 3


def _bank(paths):
    from pillar_rerank.baselines import Bank
    return Bank(i2t=np.load(paths["b_i2t"]), t2i=np.load(paths["b_t2i"]))


def test_single_direction_npy_and_embedding_bank(files, tmp_path):
    paths, _ = files
    out = tmp_path / "t2i.npy"
    res = run("baseline", "dbnorm", "--image-emb", paths["img"], "--text-emb", paths["txt"],
              "--captions-per-image", "2", "--bank-image-emb", paths["b_img"],
              "--bank-text-emb", paths["b_txt"], "--direction", "t2i", "-o", str(out))
    assert res.exit_code == 0, res.output
    assert np.load(out).shape == (16, 32)


def test_transductive_note(files, tmp_path):
    paths, _ = files
    res = run("baseline", "dsl", "--sims", paths["sims"], "--txt2img", paths["map"], "-o",
              str(tmp_path / "d.npz"))
    assert res.exit_code == 0
    assert "transductive" in res.output


@pytest.mark.parametrize("args, code, message", [
    (["nope"], 2, "Invalid value for"),
    (["nnn", "--param", "k"], 2, "expected KEY=VALUE"),
    (["nnn", "--param", "k=0"], 2, "'k' parameter of NNN"),
    (["nnn", "--param", "zeta=1"], 2, "has no parameter 'zeta'"),
])
def test_usage_errors(files, tmp_path, args, code, message):
    paths, _ = files
    res = run("baseline", *args, "--sims", paths["sims"], "--txt2img", paths["map"],
              "--bank-sims-i2t", paths["b_i2t"], "--bank-sims-t2i", paths["b_t2i"],
              "-o", str(tmp_path / "o.npz"))
    assert res.exit_code == code, res.output
    assert message in res.output


def test_wrong_bank_gallery_and_missing_bank(files, tmp_path):
    paths, _ = files
    bad = tmp_path / "bad.npy"
    np.save(bad, np.load(paths["b_i2t"])[:, :-3])
    res = run("baseline", "nnn", "--sims", paths["sims"], "--txt2img", paths["map"],
              "--bank-sims-i2t", str(bad), "--bank-sims-t2i", paths["b_t2i"], "-o", str(tmp_path / "o.npz"))
    assert res.exit_code == 2 and "gallery columns" in res.output
    res = run("baseline", "nnn", "--sims", paths["sims"], "--txt2img", paths["map"],
              "-o", str(tmp_path / "o.npz"))
    assert res.exit_code == 2 and "needs a bank" in res.output and "--bank-sims-i2t" in res.output


def test_output_safety(files, tmp_path):
    paths, _ = files
    common = ["baseline", "dsl", "--sims", paths["sims"], "--txt2img", paths["map"]]
    res = run(*common, "--direction", "i2t", "-o", paths["sims"])
    assert res.exit_code == 3 and "input" in res.output
    existing = tmp_path / "e.npz"
    existing.write_bytes(b"keep")
    res = run(*common, "-o", str(existing))
    assert res.exit_code == 3 and "--overwrite" in res.output
    assert existing.read_bytes() == b"keep"
    assert run(*common, "-o", str(existing), "--overwrite").exit_code == 0
    res = run(*common, "-o", str(tmp_path / "x.npy"))
    assert res.exit_code == 2 and ".npz" in res.output
    res = run(*common, "--direction", "i2t", "-o", str(tmp_path / "missing" / "x.npy"))
    assert res.exit_code == 3


def test_tune_command(files, tmp_path):
    paths, _ = files
    out = tmp_path / "choice.json"
    res = run("tune", "inverted_softmax", "--dev-sims", paths["sims"], "--dev-txt2img", paths["map"],
              "--grid", "beta=1,10", "-o", str(out))
    assert res.exit_code == 0, res.output
    choice = json.loads(out.read_text())
    assert choice["best_params"]["beta"] in (1, 10) and len(choice["trials"]) == 2
    res = run("tune", "inverted_softmax", "--dev-sims", paths["sims"], "--dev-txt2img", paths["map"],
              "--grid", "gamma=1")
    assert res.exit_code == 2 and "no parameter 'gamma'" in res.output
    assert get_baseline("inverted_softmax", beta=choice["best_params"]["beta"])


def test_t2i_param_override(files, tmp_path):
    paths, test = files
    out = tmp_path / "t2i.npy"
    res = run("baseline", "nnn", "--sims", paths["sims"], "--txt2img", paths["map"],
              "--bank-sims-i2t", paths["b_i2t"], "--bank-sims-t2i", paths["b_t2i"],
              "--param", "k=3", "--t2i-param", "k=5", "--direction", "t2i", "-o", str(out))
    assert res.exit_code == 0, res.output
    expected = NNN(k=5).fit(np.load(paths["b_t2i"])).rerank(test.scores.T).T
    np.testing.assert_allclose(np.load(out), expected, atol=1e-5)
    assert json.loads(res.output.strip().splitlines()[-1])["t2i_params"]["k"] == 5


def test_bank_method_without_a_bank_names_the_options(tmp_path):
    """Issue 15 item 28: `NNN.fit: needs bank scores ... got None` named no option."""
    np.save(tmp_path / "s.npy", np.eye(4, 8, dtype=np.float32))
    res = CliRunner().invoke(cli, ["baseline", "nnn", "--sims", str(tmp_path / "s.npy"),
                                   "--captions-per-image", "2", "-o", str(tmp_path / "o.npz")])
    assert res.exit_code == 2, res.output
    assert "--bank-sims-i2t" in res.output and "--bank-image-emb" in res.output
    assert "got None" not in res.output
