"""`rerank train-backbone`: the two-step flow on files, exit codes and messages for bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from pillar_rerank.cli.main import cli


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP spin-waits on shared cores (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.normal(size=(20, 6)).astype("float32")
    txt = (np.repeat(img, 2, axis=0) + 0.4 * rng.normal(size=(40, 6))).astype("float32")
    paths = {}
    for name, arr in {
        "img": img,
        "txt": txt,
        "t2i": np.repeat(np.arange(20), 2),
        "dev_img": img[:10],
        "dev_txt": txt[:20],
        "short_t2i": np.repeat(np.arange(20), 2)[:30],
        "odd_t2i": np.repeat(np.arange(10), 4),
    }.items():
        paths[name] = str(tmp_path / f"{name}.npy")
        np.save(paths[name], arr)
    return paths


def base_args(files, out, loss="infonce"):
    return [
        "train-backbone",
        "--loss",
        loss,
        "--image-features",
        files["img"],
        "--text-features",
        files["txt"],
        "--txt2img",
        files["t2i"],
        "--embed-dim",
        "8",
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "-o",
        str(out),
    ]


def test_train_then_eval(files, tmp_path):
    out = tmp_path / "model"
    args = base_args(files, out) + [
        "--dev-image-features",
        files["dev_img"],
        "--dev-text-features",
        files["dev_txt"],
        "--dev-captions-per-image",
        "2",
        "--head",
        "mlp",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "best epoch" in result.output and "RSUM=" in result.output
    assert {p.name for p in out.iterdir()} >= {
        "model",
        "scores",
        "scores_train",
        "scores_dev",
    }
    assert np.load(out / "scores_train" / "sims.npy").shape == (20, 40)
    manifest = json.loads((out / "scores" / "manifest.json").read_text())
    assert manifest["n_images"] == 10 and manifest["data"] == "dev"  # export defaults to the dev side
    ev = CliRunner().invoke(
        cli, ["eval", str(out / "scores" / "sims.npy"), "--txt2img", str(out / "scores" / "txt2img.npy")]
    )
    assert ev.exit_code == 0, ev.output
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 3 and "already holds a model" in again.output
    assert CliRunner().invoke(cli, args + ["--overwrite"]).exit_code == 0


def test_distill_from_teacher_and_export_side(files, tmp_path):
    teacher = tmp_path / "teacher"
    assert CliRunner().invoke(cli, base_args(files, teacher)).exit_code == 0
    student = tmp_path / "student"
    args = base_args(files, student, loss="distill") + [
        "--teacher",
        str(teacher),
        "--param",
        "teacher_scale=2.0",
        "--export-image-features",
        files["dev_img"],
        "--export-text-features",
        files["dev_txt"],
        "--export-captions-per-image",
        "2",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert json.loads((student / "model" / "config.json").read_text())["class"] == "ShrinkTrainer"
    assert np.load(student / "scores" / "sims.npy").shape == (10, 20)


@pytest.mark.parametrize(
    "change,code,message",
    [
        (["--txt2img", "short_t2i"], 2, "one entry per caption"),
        (["--txt2img", "odd_t2i"], 2, "n_images=20"),
        (["--image-features", "missing"], 3, "not found"),
    ],
)
def test_bad_inputs_exit_codes(files, tmp_path, change, code, message):
    args = base_args(files, tmp_path / "m")
    flag, key = change
    args[args.index(flag) + 1] = files.get(key, str(tmp_path / "missing.npy"))
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_usage_errors(files, tmp_path):
    both = base_args(files, tmp_path / "m") + ["--captions-per-image", "2"]
    result = CliRunner().invoke(cli, both)
    assert result.exit_code == 2 and "exactly one of --txt2img or --captions-per-image" in result.output
    listwise = CliRunner().invoke(cli, base_args(files, tmp_path / "m", loss="listwise"))
    assert listwise.exit_code == 2 and "weight" in listwise.output
    ok = CliRunner().invoke(
        cli, base_args(files, tmp_path / "m2", loss="listwise") + ["--param", "weight=0.3"]
    )
    assert ok.exit_code == 0, ok.output
    bad_param = CliRunner().invoke(cli, base_args(files, tmp_path / "m3") + ["--param", "oops"])
    assert bad_param.exit_code == 2 and "KEY=VALUE" in bad_param.output
    distill = CliRunner().invoke(cli, base_args(files, tmp_path / "m4", loss="distill"))
    assert distill.exit_code == 2 and "teacher" in distill.output


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_overwrite_with_an_input_inside_the_run_changes_nothing(files, tmp_path):
    """Issue 15.17: every output is checked against every input before anything is written."""
    run = tmp_path / "run"
    assert CliRunner().invoke(cli, base_args(files, run)).exit_code == 0
    before = _snapshot(run)
    side = run / "scores_train"
    args = base_args(files, run) + ["--overwrite"]
    for flag, path in (
        ("--image-features", side / "image_emb.npy"),
        ("--text-features", side / "text_emb.npy"),
        ("--txt2img", side / "txt2img.npy"),
    ):
        args[args.index(flag) + 1] = str(path)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 3, result.output
    assert "input" in result.output and "Traceback" not in result.output
    assert _snapshot(run) == before


def test_inapplicable_head_option_is_a_usage_error(files, tmp_path):
    """--hidden-dim without an MLP head was silently ignored; now exit 2 naming the field."""
    result = CliRunner().invoke(cli, base_args(files, tmp_path / "m") + ["--hidden-dim", "16"])
    assert result.exit_code == 2 and "hidden_dim" in result.output
    assert not (tmp_path / "m").exists()


def test_overwrite_converts_a_previous_version_run_folder(files, tmp_path):
    """A run folder of the previous version (model files at its top) is replaced by model/."""
    import shutil
    from pathlib import Path

    run = tmp_path / "run"
    run.mkdir()
    legacy = Path(__file__).parents[1] / "adapters" / "fixtures" / "legacy_v1" / "two_tower"
    for name in ("model.safetensors", "trainer.json"):
        shutil.copy(legacy / name, run / name)
    refused = CliRunner().invoke(cli, base_args(files, run))
    assert refused.exit_code == 3 and "already holds a model" in refused.output
    result = CliRunner().invoke(cli, base_args(files, run) + ["--overwrite"])
    assert result.exit_code == 0, result.output
    assert not (run / "model.safetensors").exists() and (run / "model" / "weights.safetensors").is_file()
