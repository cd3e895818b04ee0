import json

import numpy as np
import pytest
from click.testing import CliRunner
from pillar_rerank.cli.main import cli

TINY = {
    "n_pillars": 8,
    "list_len_i2t": 6,
    "list_len_t2i": 4,
    "graph_neighbors": 4,
    "intra_source": "second_order",
    "embed_dim": 32,
    "depth": 1,
    "num_heads": 4,
    "epochs": 1,
    "batch_size": 64,
    "eval_every": 1000,
    # these tests compare outputs bit for bit across batch splits (shards, caches, budgets): fp32,
    # since bf16 kernels (what "auto" picks on a CPU with native bf16) round per batch split
    "precision": "fp32",
}


def _write_side(folder, prefix, n_images, seed, cpi=3):
    rng = np.random.default_rng(seed)
    img = rng.normal(size=(n_images, 12))
    t2i = np.repeat(np.arange(n_images), cpi)
    txt = img[t2i] + 0.7 * rng.normal(size=(n_images * cpi, 12))
    sims = (img / np.linalg.norm(img, axis=1, keepdims=True)) @ (
        txt / np.linalg.norm(txt, axis=1, keepdims=True)
    ).T
    np.save(folder / f"{prefix}_sims.npy", sims.astype(np.float32))
    np.save(folder / f"{prefix}_t2i.npy", t2i)
    return [
        f"--{'' if prefix == 'train' else prefix + '-'}sims",
        str(folder / f"{prefix}_sims.npy"),
        f"--{'' if prefix == 'train' else prefix + '-'}txt2img",
        str(folder / f"{prefix}_t2i.npy"),
    ]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    (root / "cfg.json").write_text(json.dumps(TINY))
    train = _write_side(root, "train", 50, 0)
    dev = _write_side(root, "dev", 30, 1)
    test = _write_side(root, "test", 30, 2)
    test = [a.replace("--test-", "--") for a in test]
    result = CliRunner().invoke(
        cli, ["fit", *train, *dev, "--config", str(root / "cfg.json"), "-q", "-o", str(root / "model")]
    )
    assert result.exit_code == 0, result.output
    return root, train, dev, test


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_fit_writes_a_verified_model_dir(workspace):
    root, *_ = workspace
    assert {p.name for p in (root / "model").iterdir()} == {
        "weights.safetensors",
        "config.json",
        "manifest.json",
    }
    doc = json.loads((root / "model" / "config.json").read_text())
    assert doc["config"]["embed_dim"] == 32 and doc["config"]["depth"] == 1


def test_apply_matches_the_api_and_shards_merge(workspace):
    from pillar_rerank.inputs import load_retrieval_set
    from pillar_rerank.reranker import PillarReranker

    root, _, _, test = workspace
    r = run("apply", root / "model", *test, "-o", root / "out.npy")
    assert r.exit_code == 0, r.output
    got = np.load(root / "out.npy")
    data = load_retrieval_set(sims=root / "test_sims.npy", txt_to_img=root / "test_t2i.npy")
    # same model and data; results are bitwise repeatable at a fixed torch thread count, but differ
    # in the last ulp between thread counts (111 of 2700 entries, 1 vs 2 threads, measured), so a
    # thread-count change between the two calls (e.g. by another test) shows up here
    np.testing.assert_allclose(got, PillarReranker.load(root / "model").rerank(data), rtol=0, atol=1e-6)
    for i in range(2):
        r = run("apply", root / "model", *test, "--shard", f"{i}/2", "-o", root / f"part{i}.npz")
        assert r.exit_code == 0, r.output
    r = run("merge", root / "model", root / "part0.npz", root / "part1.npz", *test, "-o", root / "merged.npy")
    assert r.exit_code == 0, r.output
    np.testing.assert_allclose(np.load(root / "merged.npy"), got, rtol=0, atol=1e-6)
    r = run("merge", root / "model", root / "part0.npz", *test, "-o", root / "merged2.npy")
    assert r.exit_code == 2 and "1 of 2 shards missing" in r.output
    assert not (root / "merged2.npy").exists()


def test_an_npz_output_holds_one_matrix_per_direction(workspace):
    """apply/merge -o X.npz write rerank_both's two matrices, which `rerank eval` reads."""
    from pillar_rerank.inputs import load_retrieval_set
    from pillar_rerank.reranker import PillarReranker

    root, _, _, test = workspace
    r = run("apply", root / "model", *test, "-o", root / "both.npz")
    assert r.exit_code == 0, r.output
    with np.load(root / "both.npz", allow_pickle=False) as f:
        assert sorted(f.files) == ["i2t", "t2i"]
        i2t, t2i = f["i2t"], f["t2i"]
    data = load_retrieval_set(sims=root / "test_sims.npy", txt_to_img=root / "test_t2i.npy")
    want = PillarReranker.load(root / "model").rerank_both(data)
    np.testing.assert_allclose(i2t, want.scores, rtol=0, atol=1e-6)
    np.testing.assert_allclose(t2i, want.t2i_scores, rtol=0, atol=1e-6)
    assert not np.array_equal(i2t, t2i)
    for i in range(2):
        r = run("apply", root / "model", *test, "--shard", f"{i}/2", "-o", root / f"bpart{i}.npz")
        assert r.exit_code == 0, r.output
    parts = [root / "bpart1.npz", root / "bpart0.npz"]
    r = run("merge", root / "model", *parts, *test, "-o", root / "bmerged.npz")
    assert r.exit_code == 0, r.output
    with np.load(root / "bmerged.npz", allow_pickle=False) as f:
        np.testing.assert_allclose(f["i2t"], i2t, rtol=0, atol=1e-6)
    r = run("eval", root / "both.npz", "--txt2img", root / "test_t2i.npy")
    assert r.exit_code == 0, r.output


def test_refuses_to_overwrite(workspace):
    root, train, _, test = workspace
    r = run("fit", *train, "--config", root / "cfg.json", "-o", root / "model")
    assert r.exit_code == 3 and "already exists" in r.output
    (root / "taken.npy").write_bytes(b"keep")
    r = run("apply", root / "model", *test, "-o", root / "taken.npy")
    assert r.exit_code == 3 and "--overwrite" in r.output
    assert (root / "taken.npy").read_bytes() == b"keep"
    r = run("apply", root / "model", *test, "-o", root / "test_sims.npy", "--overwrite")
    assert r.exit_code == 3 and "input" in r.output


def test_mismatched_shapes_and_bad_options(workspace, tmp_path):
    root, train, _, _ = workspace
    np.save(tmp_path / "short.npy", np.arange(10))
    r = run(
        "apply",
        root / "model",
        "--sims",
        root / "test_sims.npy",
        "--txt2img",
        tmp_path / "short.npy",
        "-o",
        tmp_path / "o.npy",
    )
    assert r.exit_code == 2 and "txt2img" in r.output.lower() or "txt_to_img" in r.output
    r = run(
        "apply",
        root / "model",
        "--sims",
        root / "test_sims.npy",
        "--txt2img",
        root / "test_t2i.npy",
        "--shard",
        "3/2",
        "-o",
        tmp_path / "o.npy",
    )
    assert r.exit_code == 2 and "i/n" in r.output
    (tmp_path / "bad.json").write_text(json.dumps({**TINY, "lerning_rate": 1}))
    r = run("fit", *train, "--config", tmp_path / "bad.json", "-o", tmp_path / "m")
    assert r.exit_code == 2 and "lerning_rate" in r.output
    r = run("fit", *train, "--config", root / "cfg.json", "--list-len-t2i", "99", "-o", tmp_path / "m")
    assert r.exit_code == 2 and "list_len_t2i" in r.output
    assert not (tmp_path / "m").exists()


def test_corrupt_or_foreign_model_dirs(workspace, tmp_path):
    import shutil

    root, _, _, test = workspace
    bad = tmp_path / "bad"
    shutil.copytree(root / "model", bad)
    w = bad / "weights.safetensors"
    w.write_bytes(w.read_bytes()[:-8] + b"\0" * 8)
    r = run("apply", bad, *test, "-o", tmp_path / "o.npy")
    assert r.exit_code == 2 and "SHA-256" in r.output
    # a model dir whose (consistently checksummed) config is from another model size
    from pillar_rerank.checkpoint import load_model_dir, save_model_dir

    state, doc = load_model_dir(root / "model")
    doc["config"]["depth"] = 2
    save_model_dir(tmp_path / "foreign", state_dict=state, config=doc)
    r = run("apply", tmp_path / "foreign", *test, "-o", tmp_path / "o.npy")
    assert r.exit_code == 2 and "do not match the config" in r.output
    r = run("apply", tmp_path / "missing", *test, "-o", tmp_path / "o.npy")
    assert r.exit_code == 3
    assert not (tmp_path / "o.npy").exists()


def test_fit_resume_from_checkpoint(workspace, tmp_path):
    root, train, _, _ = workspace
    r = run(
        "fit",
        *train,
        "--config",
        root / "cfg.json",
        "-q",
        "--epochs",
        "2",
        "--checkpoint-dir",
        tmp_path / "ck",
        "-o",
        tmp_path / "m1",
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "ck" / "state.json").is_file()
    r = run(
        "fit",
        *train,
        "--config",
        root / "cfg.json",
        "-q",
        "--epochs",
        "2",
        "--checkpoint-dir",
        tmp_path / "ck",
        "--resume",
        "-o",
        tmp_path / "m2",
    )
    assert r.exit_code == 0, r.output
    from pillar_rerank.checkpoint import load_model_dir

    a, _ = load_model_dir(tmp_path / "m1")
    b, _ = load_model_dir(tmp_path / "m2")
    assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def test_fit_resume_without_a_checkpoint_starts_from_scratch(workspace, tmp_path):
    """The same `--resume` command works when the first run died before its first checkpoint."""
    root, train, _, _ = workspace
    args = [*train, "--config", root / "cfg.json", "-q", "--epochs", "1"]
    r = run("fit", *args, "--checkpoint-dir", tmp_path / "ck1", "-o", tmp_path / "m1")
    assert r.exit_code == 0, r.output
    r = run("fit", *args, "--checkpoint-dir", tmp_path / "ck2", "--resume", "-o", tmp_path / "m2")
    assert r.exit_code == 0, r.output
    from pillar_rerank.checkpoint import load_model_dir

    a, _ = load_model_dir(tmp_path / "m1")
    b, _ = load_model_dir(tmp_path / "m2")
    assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    assert "from scratch" in run("fit", "--help").output


def test_fit_overwrite_replaces_only_a_model_dir(workspace, tmp_path):
    """`-o DIR --overwrite` never deletes inputs kept in DIR; it does replace a previous model."""
    root, train, _, _ = workspace
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train_sims.npy", "train_t2i.npy"):
        (data / name).write_bytes((root / name).read_bytes())
    local = ["--sims", data / "train_sims.npy", "--txt2img", data / "train_t2i.npy"]
    args = [*local, "--config", root / "cfg.json", "-q", "--checkpoint-dir", tmp_path / "ck"]
    r = run("fit", *args, "-o", data, "--overwrite")
    assert r.exit_code == 3 and "holds the input" in r.output
    assert sorted(p.name for p in data.iterdir()) == ["train_sims.npy", "train_t2i.npy"]
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep")
    r = run("fit", *args, "-o", tmp_path / "notes", "--overwrite")
    assert r.exit_code == 3 and "not a pillar_rerank model directory" in r.output
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep"
    r = run("fit", *args, "-o", data / "model")
    assert r.exit_code == 0, r.output
    r = run("fit", *args, "-o", data / "model", "--overwrite", "--seed", "3")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in data.iterdir()) == ["model", "train_sims.npy", "train_t2i.npy"]
    assert json.loads((data / "model" / "config.json").read_text())["config"]["seed"] == 3
    r = run("fit", *args, "--checkpoint-dir", data / "model" / "ck", "-o", data / "model", "--overwrite")
    assert r.exit_code == 2 and "inside the model dir" in r.output


def test_apply_and_merge_refuse_outputs_inside_the_model_dir(workspace):
    root, _, _, test = workspace
    before = {p.name: p.read_bytes() for p in (root / "model").iterdir()}
    for target in ("weights.safetensors", "new.npy"):
        r = run("apply", root / "model", *test, "-o", root / "model" / target, "--overwrite")
        assert r.exit_code == 3 and "inside the model directory" in r.output
    r = run("merge", root / "model", root / "part0.npz", *test, "-o", root / "model" / "config.json",
            "--overwrite")
    assert r.exit_code == 3 and "inside the model directory" in r.output
    assert {p.name: p.read_bytes() for p in (root / "model").iterdir()} == before


def test_commands_are_listed_with_help():
    for name in ("fit", "apply", "merge", "cache", "demo"):
        r = run(name, "--help")
        assert r.exit_code == 0 and "Usage" in r.output


def test_cache_and_memory_budget_options(workspace, tmp_path):
    from safetensors.numpy import load_file

    root, train, dev, test = workspace
    cache = tmp_path / "cache"
    cache.mkdir()
    cfg = ["--config", root / "cfg.json", "-q"]
    r = run("fit", *train, *dev, *cfg, "--cache", cache, "--max-memory", "128MB", "-o", tmp_path / "m")
    assert r.exit_code == 0, r.output
    ref = load_file(root / "model" / "weights.safetensors")
    got = load_file(tmp_path / "m" / "weights.safetensors")
    assert all(np.array_equal(ref[k], got[k]) for k in ref)
    assert sorted(p.name.split("-")[0] for p in cache.iterdir()) == ["dev", "train"]

    assert run("apply", root / "model", *test, "-o", tmp_path / "plain.npy").exit_code == 0
    r = run("apply", root / "model", *test, "--cache", cache, "-o", tmp_path / "cached.npy")
    assert r.exit_code == 0, r.output
    assert np.array_equal(np.load(tmp_path / "plain.npy"), np.load(tmp_path / "cached.npy"))
    r = run("apply", root / "model", *test, "--cache", cache, "--shard", "1/2", "-o", tmp_path / "s1.npz")
    assert r.exit_code == 0, r.output

    empty = tmp_path / "empty"
    empty.mkdir()
    r = run("apply", root / "model", *test, "--cache", empty, "--shard", "0/2", "-o", tmp_path / "s0.npz")
    assert r.exit_code == 2 and "no complete cache of this test side" in r.output
    r = run("cache", root / "model", *test, "--cache", empty, "--max-memory", "100MB")
    assert r.exit_code == 0 and "cached the lists of 30 image and 90 text queries" in r.output
    assert len(list(empty.iterdir())) == 1
    for i in range(2):
        out = tmp_path / f"p{i}.npz"
        r = run("apply", root / "model", *test, "--cache", empty, "--shard", f"{i}/2", "-o", out)
        assert r.exit_code == 0, r.output
    parts = [tmp_path / "p0.npz", tmp_path / "p1.npz"]
    r = run("merge", root / "model", *parts, *test, "-o", tmp_path / "merged.npy")
    assert r.exit_code == 0, r.output
    assert np.array_equal(np.load(tmp_path / "merged.npy"), np.load(tmp_path / "plain.npy"))
    assert run("cache", root / "model", *test).exit_code == 2
    r = run("apply", root / "model", *test, "--max-memory", "lots", "-o", tmp_path / "x.npy")
    assert r.exit_code == 2 and "size such as 4GB" in r.output
    assert not (tmp_path / "x.npy").exists()


def test_fit_index_options_are_saved_in_the_config(workspace, tmp_path):
    root, train, dev, _ = workspace
    args = [*train, *dev, "--config", root / "cfg.json", "-q", "--index", "ivf"]
    r = run("fit", *args, "--index-param", "nlist=4", "--index-param", "nprobe=2", "-o", tmp_path / "m")
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "m" / "config.json").read_text())["config"]
    assert doc["neighbor_index"] == "ivf"
    assert doc["neighbor_index_params"] == {"nlist": 4, "nprobe": 2}
    r = run("fit", *args, "--index-param", "ef_search=8", "-o", tmp_path / "bad")
    assert r.exit_code == 2 and "unknown key(s) 'ef_search'" in r.output
    assert not (tmp_path / "bad").exists()


def test_cache_command_errors(workspace, tmp_path):
    root, _, _, test = workspace
    cache = tmp_path / "cache"
    cache.mkdir()
    r = run("cache", root / "model", "--sims", tmp_path / "missing.npy", "--captions-per-image", 3,
            "--cache", cache)
    assert r.exit_code == 3 and "missing.npy" in r.output
    sims = np.load(root / "test_sims.npy")
    sims[0, 0] = np.nan
    np.save(tmp_path / "nan.npy", sims)
    nan = ["--sims", tmp_path / "nan.npy", "--captions-per-image", 3]
    r = run("cache", root / "model", *nan, "--cache", cache)
    assert r.exit_code == 2 and "NaN" in r.output
    r = run("cache", tmp_path / "no_model", *test, "--cache", cache)
    assert r.exit_code == 3
    assert list(cache.iterdir()) == []
    (tmp_path / "a_file").write_text("x")
    r = run("cache", root / "model", *test, "--cache", tmp_path / "a_file")
    assert r.exit_code == 2 and "a_file" in r.output and "is a file" in r.output  # click's Path type
    assert (tmp_path / "a_file").read_text() == "x"


def test_cache_folder_is_created_when_missing(workspace, tmp_path):
    """Issue 15 item 28: `--cache DIR` had to exist already; it is created (with parents)."""
    root, _, _, test = workspace
    r = run("cache", root / "model", *test, "--cache", tmp_path / "new" / "cache")
    assert r.exit_code == 0, r.output
    assert any((tmp_path / "new" / "cache").iterdir())
    r = run("apply", root / "model", *test, "--cache", tmp_path / "other", "-o", tmp_path / "o.npy")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "other").is_dir()


def _intra_files(folder, prefix):
    """Image-image and text-text matrices of a side (cosines of its score rows / columns)."""
    s = np.load(folder / f"{prefix}_sims.npy").astype(np.float64)
    rows = s / np.linalg.norm(s, axis=1, keepdims=True)
    cols = s.T / np.linalg.norm(s.T, axis=1, keepdims=True)
    np.save(folder / f"{prefix}_ii.npy", (rows @ rows.T).astype(np.float32))
    np.save(folder / f"{prefix}_tt.npy", (cols @ cols.T).astype(np.float32))
    flag = "--" if prefix in ("train", "test") else f"--{prefix}-"
    return [f"{flag}image-sims", folder / f"{prefix}_ii.npy", f"{flag}text-sims", folder / f"{prefix}_tt.npy"]


def test_given_intra_modal_matrices_from_the_cli(workspace, tmp_path):
    """Issue 15 item 7: --image-sims/--text-sims (intra_source "given") in fit, apply, cache, merge."""
    from pillar_rerank.inputs import load_retrieval_set
    from pillar_rerank.reranker import PillarReranker

    root, train, dev, test = workspace
    intra = {p: _intra_files(root, p) for p in ("train", "dev", "test")}
    r = run("fit", *train, *intra["train"], *dev, *intra["dev"], "--config", root / "cfg.json",
            "--intra-source", "given", "-q", "-o", tmp_path / "m")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "m" / "config.json").read_text())["config"]["intra_source"] == "given"
    r = run("apply", tmp_path / "m", *test, *intra["test"], "-o", tmp_path / "out.npy")
    assert r.exit_code == 0, r.output
    data = load_retrieval_set(sims=root / "test_sims.npy", txt_to_img=root / "test_t2i.npy",
                              image_image=root / "test_ii.npy", text_text=root / "test_tt.npy")
    api = PillarReranker.load(tmp_path / "m").rerank(data)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), api, rtol=1e-5, atol=1e-6)
    r = run("cache", tmp_path / "m", *test, *intra["test"], "--cache", tmp_path / "c")
    assert r.exit_code == 0, r.output
    for i in range(2):
        r = run("apply", tmp_path / "m", *test, *intra["test"], "--cache", tmp_path / "c", "--shard",
                f"{i}/2", "-o", tmp_path / f"s{i}.npz")
        assert r.exit_code == 0, r.output
    r = run("merge", tmp_path / "m", tmp_path / "s0.npz", tmp_path / "s1.npz", *test, *intra["test"],
            "-o", tmp_path / "merged.npy")
    assert r.exit_code == 0, r.output
    np.testing.assert_allclose(np.load(tmp_path / "merged.npy"), np.load(tmp_path / "out.npy"), atol=1e-6)
    # without the matrices, a "given" model cannot build its lists: a usage error naming them
    r = run("apply", tmp_path / "m", *test, "-o", tmp_path / "missing.npy")
    assert r.exit_code == 2 and "given" in r.output, r.output
    # a wrong-shaped matrix is bad input
    r = run("apply", tmp_path / "m", *test, "--image-sims", root / "train_ii.npy", "--text-sims",
            root / "test_tt.npy", "-o", tmp_path / "bad.npy")
    assert r.exit_code == 2 and "image-image" in r.output, r.output


@pytest.mark.parametrize("per_direction", [False, True])
def test_fit_normalize_params_from_a_tuning_choice(workspace, tmp_path, per_direction):
    """Issue 15 item 23: `tune -o choice.json` feeds `fit --normalize-params-from` (was copied by hand)."""
    root, train, dev, _ = workspace
    res = run("tune", "dsl", *dev, "-q", "-o", tmp_path / "c.json")
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "c.json").read_text())
    flag = ["--per-direction"] if per_direction else []
    r = run("fit", *train, "--config", root / "cfg.json", "-q", "-o", tmp_path / "m",
            "--normalize-params-from", tmp_path / "c.json", *flag)
    assert r.exit_code == 0, r.output
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())["config"]
    assert cfg["normalize"] == "dsl"
    want = ({"i2t": doc["best_params_i2t"], "t2i": doc["best_params_t2i"]} if per_direction
            else doc["best_params"])
    assert cfg["normalize_params"] == want


def test_apply_with_a_tampered_cache_exits_2(workspace, tmp_path):
    """A same-size edit of a cached shard (NaN features) is an input error, never NaN scores."""
    root, _, _, test = workspace
    cache = tmp_path / "cache"
    cache.mkdir()
    assert run("cache", root / "model", *test, "--cache", cache).exit_code == 0
    shard = next(cache.glob("*/image-00000.safetensors"))
    blob = bytearray(shard.read_bytes())
    n = int.from_bytes(blob[:8], "little")
    begin = 8 + n + json.loads(blob[8:8 + n])["image.features"]["data_offsets"][0]
    blob[begin:begin + 4] = np.array([np.nan], dtype=np.float32).tobytes()
    shard.write_bytes(bytes(blob))
    r = run("apply", root / "model", *test, "--cache", cache, "-o", tmp_path / "out.npy")
    assert r.exit_code == 2, r.output
    assert "NaN or inf values in features" in r.output and "Rebuild" in r.output
    assert not (tmp_path / "out.npy").exists()


def test_fit_help_shows_every_option_with_help_and_default():
    """Issue 15 item 22: every option has help; config options show their default(s)."""
    from pillar_rerank.cli.fit import CONFIG_HELP, FLAG_NAMES, fit

    r = run("fit", "--help")
    assert r.exit_code == 0
    text = " ".join(r.output.split())
    assert "--preset [cpu|paper]" in text
    assert "[default: 30 (paper), 8 (cpu)]" in text and "[default: 768 (paper), 64 (cpu)]" in text
    assert "(7 images re-ranked at 8). [default: 8 (paper), 16 (cpu)]" in text
    for param in fit.params:
        assert param.help or param.name == "help", param.name
    for field in CONFIG_HELP:
        flag = "--" + FLAG_NAMES.get(field, field).replace("_", "-")
        assert flag in text


def test_fit_options_are_generated_from_the_config_constraints():
    import click
    from pillar_rerank.cli.fit import CONFIG_HELP, fit

    from pillar_rerank.config import LeaPRRConfig

    params = {p.name: p for p in fit.params}
    assert set(CONFIG_HELP) <= set(LeaPRRConfig.__dataclass_fields__)
    assert isinstance(params["intra_source"].type, click.Choice)
    assert set(params["intra_source"].type.choices) == set(LeaPRRConfig._constraints["intra_source"].values)
    assert params["depth"].type.max == LeaPRRConfig._constraints["depth"].high
    assert run("fit", "--depth", 65, "--sims", "x.npy", "-o", "m").exit_code == 2


def _write_embeddings(folder, prefix, n_images, seed, cpi=3):
    rng = np.random.default_rng(seed)
    img = rng.normal(size=(n_images, 12)).astype(np.float32)
    t2i = np.repeat(np.arange(n_images), cpi)
    txt = (img[t2i] + 0.7 * rng.normal(size=(n_images * cpi, 12))).astype(np.float32)
    np.save(folder / f"{prefix}_img.npy", img)
    np.save(folder / f"{prefix}_txt.npy", txt)
    np.save(folder / f"{prefix}_t2i.npy", t2i)
    p = "" if prefix == "train" else f"{prefix}-"
    return [f"--{p}image-emb", folder / f"{prefix}_img.npy", f"--{p}text-emb", folder / f"{prefix}_txt.npy",
            f"--{p}txt2img", folder / f"{prefix}_t2i.npy"]


def test_fit_says_what_it_starts_reports_the_dev_base_and_apply_warns(tmp_path):
    """Items 22, 25, 26: the start line names the configuration, a run-time estimate and the dev
    base RSUM are printed; applying the embedding-trained model to scores only warns."""
    from pillar_rerank.cli.fit import describe_start

    from pillar_rerank.config import preset

    line = describe_start(preset("paper", device="cpu"), None, sized=False)
    assert line.startswith("starting the paper preset (embed_dim 768, depth 2, 24 heads, 30 epochs")
    assert "--preset cpu" in line
    cpu_line = describe_start(preset("cpu", device="cpu"), "cpu", sized=False)
    assert "starting the cpu preset (embed_dim 64, depth 2, 4 heads, 8 epochs" in cpu_line
    assert "lists 32/16)" in cpu_line and "lists 32/8)" in line
    train = _write_embeddings(tmp_path, "train", 40, 0)
    dev = _write_embeddings(tmp_path, "dev", 20, 1)
    cfg = {**TINY, "intra_source": "auto", "eval_every": 2}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    r = run("fit", *train, *dev, "--config", tmp_path / "cfg.json", "--epochs", 2, "--device", "cpu",
            "-o", tmp_path / "m")
    assert r.exit_code == 0, r.output
    assert "starting a custom configuration (embed_dim 32, depth 1, 4 heads, 2 epochs" in r.output
    assert "estimated training time:" in r.output
    assert "(dev RSUM without re-ranking: " in r.output
    sims = _write_side(tmp_path, "test", 20, 2)
    sims = [a.replace("--test-", "--") for a in sims]
    r = run("apply", tmp_path / "m", *sims, "-o", tmp_path / "a.npy")
    assert r.exit_code == 0, r.output
    assert "warning: PillarReranker: the model was trained with intra-modal similarities from " \
        "embeddings" in r.output
    emb = [a.replace("--test-", "--") if isinstance(a, str) else a
           for a in _write_embeddings(tmp_path, "test", 20, 2)]
    r = run("apply", tmp_path / "m", *emb, "-o", tmp_path / "b.npy")
    assert r.exit_code == 0 and "warning:" not in r.output, r.output


def test_fit_score_fusion_option_is_saved(workspace, tmp_path):
    root, train, dev, _ = workspace
    doc = json.loads((root / "model" / "config.json").read_text())
    assert doc["config"]["score_fusion"] == "overwrite" and doc["fitted"]["fusion"] is None  # the paper's
    r = run("fit", *train, *dev, "--config", root / "cfg.json", "--score-fusion", "zscore", "-q",
            "-o", tmp_path / "m")
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "m" / "config.json").read_text())
    assert doc["config"]["score_fusion"] == "zscore"
    assert doc["fitted"]["fusion"]["selected"].startswith("dev RSUM")
    assert "score fusion, one matrix (rerank, .npy): i2t " in r.output and "per direction (.npz)" in r.output
    r = run("fit", *train, "--config", root / "cfg.json", "--score-fusion", "mean", "-o", tmp_path / "x")
    assert r.exit_code == 2 and "mean" in r.output


@pytest.mark.parametrize("tty", [False, True])
def test_apply_draws_a_progress_bar_on_a_terminal_only(workspace, tmp_path, monkeypatch, capsys, tty):
    """Issue 15 item 27: re-ranking shows its progress (stderr, a terminal only); -q keeps it quiet."""
    import sys

    from pillar_rerank.inputs import load_retrieval_set
    from pillar_rerank.reranker import PillarReranker

    root, *_ = workspace
    model = PillarReranker.load(root / "model")
    test = load_retrieval_set(sims=root / "test_sims.npy", txt_to_img=root / "test_t2i.npy")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty)
    shown = model.rerank(test, show_progress=True)
    assert ("re-ranking (i2t)" in capsys.readouterr().err) == tty
    quiet = model.rerank(test)
    assert "re-ranking" not in capsys.readouterr().err
    np.testing.assert_array_equal(shown, quiet)
    r = run("apply", root / "model", "--sims", root / "test_sims.npy", "--txt2img", root / "test_t2i.npy",
            "-q", "-o", tmp_path / "q.npy")
    assert r.exit_code == 0, r.output
    (tmp_path / "cache").mkdir()
    model.cache_inputs(test, tmp_path / "cache", show_progress=True)
    assert ("caching image lists" in capsys.readouterr().err) == tty
    r = run("cache", root / "model", "--sims", root / "test_sims.npy", "--txt2img", root / "test_t2i.npy",
            "-q", "--cache", tmp_path / "cache2")
    assert r.exit_code == 0, r.output
