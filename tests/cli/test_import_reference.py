"""``rerank import-reference``: sizes read from the weights, safe loading, exit codes (issue 15, item 8)."""

from __future__ import annotations

import pickle  # reliability: allow - used only to *write* a hostile file the importer must refuse

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from pillar_rerank.cli.main import cli

from pillar_rerank.checkpoint import load_model_dir
from pillar_rerank.config import LeaPRRConfig
from pillar_rerank.model.network import MutualRerankNetwork
from pillar_rerank.model.reference import to_reference_state_dict

SIZE = LeaPRRConfig(n_pillars=4, embed_dim=32, depth=2, num_heads=4, mlp_ratio=2.0)


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A checkpoint laid out like the reference's checkpoint_best.pth (fp16 state dict)."""
    d = tmp_path_factory.mktemp("ref")
    net = MutualRerankNetwork.from_config(SIZE, generator=torch.Generator().manual_seed(3))
    torch.save({"epoch": 2, "state_dict": to_reference_state_dict(net.state_dict()), "recall": {"rsum": 1.0}},
               d / "checkpoint_best.pth")
    rng = np.random.default_rng(0)
    img = rng.standard_normal((12, 6)).astype(np.float32)
    txt = img[np.repeat(np.arange(12), 2)] + 0.3 * rng.standard_normal((24, 6)).astype(np.float32)
    np.save(d / "sims.npy", (img @ txt.T).astype(np.float32))
    return d, net


def test_imports_with_sizes_read_from_the_weights(reference, tmp_path):
    d, net = reference
    r = run("import-reference", d / "checkpoint_best.pth", "-o", tmp_path / "m", "--num-heads", 4,
            "--list-len-i2t", 6, "--list-len-t2i", 4, "--graph-neighbors", 4)
    assert r.exit_code == 0, r.output
    assert "n_pillars=4, embed_dim=32, depth=2, num_heads=4" in r.output
    state, doc = load_model_dir(tmp_path / "m")
    cfg = doc["config"]
    assert (cfg["n_pillars"], cfg["embed_dim"], cfg["depth"], cfg["mlp_ratio"]) == (4, 32, 2, 2.0)
    lists = (cfg["num_heads"], cfg["list_len_i2t"], cfg["list_len_t2i"], cfg["graph_neighbors"])
    assert lists == (4, 6, 4, 4)
    assert cfg["reference_thresholds"] is True and cfg["reference_fp16"] is False
    for k, v in net.state_dict().items():
        assert torch.equal(state[k], v.half().float()), k
    r = run("apply", tmp_path / "m", "--sims", d / "sims.npy", "--captions-per-image", 2,
            "-o", tmp_path / "o.npy")
    assert r.exit_code == 0, r.output
    assert np.isfinite(np.load(tmp_path / "o.npy")).all()


def test_paper_heads_by_default_and_a_clear_error_when_they_do_not_fit(reference, tmp_path):
    d, _ = reference
    r = run("import-reference", d / "checkpoint_best.pth", "-o", tmp_path / "m")
    assert r.exit_code == 2 and "--num-heads" in r.output and "embed_dim=32" in r.output, r.output
    assert not (tmp_path / "m").exists()
    net = MutualRerankNetwork.from_config(SIZE.replace(embed_dim=48, num_heads=24))
    torch.save({"state_dict": to_reference_state_dict(net.state_dict())}, tmp_path / "c.pth")
    r = run("import-reference", tmp_path / "c.pth", "-o", tmp_path / "m2", "--reference-fp16")
    assert r.exit_code == 0, r.output
    assert "num_heads=24 (paper default)" in r.output
    _, doc = load_model_dir(tmp_path / "m2")
    assert doc["config"]["reference_fp16"] is True and doc["config"]["list_len_i2t"] == 32


def test_bad_inputs_exit_2_or_3_and_write_nothing(reference, tmp_path):
    d, _ = reference
    out = tmp_path / "m"
    r = run("import-reference", tmp_path / "missing.pth", "-o", out)
    assert r.exit_code == 3 and "not found" in r.output
    (tmp_path / "text.pth").write_text("not a checkpoint")
    r = run("import-reference", tmp_path / "text.pth", "-o", out)
    assert r.exit_code == 2 and "weights_only=True" in r.output
    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"state_dict": pickle.Pickler}))  # a class: refused
    r = run("import-reference", tmp_path / "evil.pth", "-o", out)
    assert r.exit_code == 2, r.output
    torch.save({"state_dict": {"encoder.weight": torch.zeros(2)}}, tmp_path / "other.pth")
    r = run("import-reference", tmp_path / "other.pth", "-o", out)
    assert r.exit_code == 2 and "model_i2t" in r.output
    r = run("import-reference", d / "checkpoint_best.pth", "-o", out, "--num-heads", 4, "--num-heads", 5)
    assert r.exit_code == 2  # 5 does not divide embed_dim=32
    assert not out.exists()
    out.mkdir()
    (out / "keep.txt").write_text("x")
    r = run("import-reference", d / "checkpoint_best.pth", "-o", out, "--num-heads", 4, "--overwrite")
    assert r.exit_code == 3 and (out / "keep.txt").read_text() == "x"
