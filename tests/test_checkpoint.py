"""Model directories replace only what is ours, atomically, with normal permissions."""

import os
import stat

import pytest
import torch

from pillar_rerank import checkpoint
from pillar_rerank.checkpoint import (
    TrainingCheckpoint,
    check_model_dir_target,
    check_output_outside_model_dir,
    load_model_dir,
    save_model_dir,
    verify_model_dir,
)
from pillar_rerank.exceptions import InputFileError

STATE = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}


def save(path, value=0.0, **kwargs):
    return save_model_dir(path, state_dict={"w": STATE["w"] + value}, config={"estimator": "x"}, **kwargs)


def test_refuses_a_folder_that_is_not_a_model_dir_even_with_overwrite(tmp_path):
    (tmp_path / "sims.npy").write_bytes(b"input")
    with pytest.raises(InputFileError, match="not a pillar_rerank model directory"):
        save(tmp_path, overwrite=True)
    assert (tmp_path / "sims.npy").read_bytes() == b"input"
    assert sorted(p.name for p in tmp_path.parent.iterdir() if p.name.startswith(f".{tmp_path.name}.")) == []


def test_refuses_a_model_dir_holding_other_files_or_an_input(tmp_path):
    save(tmp_path / "m")
    (tmp_path / "m" / "notes.txt").write_text("mine")
    with pytest.raises(InputFileError, match="not part of the model.*notes.txt"):
        save(tmp_path / "m", overwrite=True)
    assert (tmp_path / "m" / "notes.txt").read_text() == "mine"
    (tmp_path / "m" / "notes.txt").unlink()
    with pytest.raises(InputFileError, match="holds the input"):
        check_model_dir_target(tmp_path / "m", overwrite=True, inputs=[tmp_path / "m" / "config.json"])
    with pytest.raises(InputFileError, match="already exists"):
        save(tmp_path / "m")
    (tmp_path / "f").write_text("a file")
    with pytest.raises(InputFileError, match="not a directory"):
        save(tmp_path / "f", overwrite=True)


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2-exchange", "two-renames"])
def test_overwrite_replaces_a_previous_model_dir_and_leaves_nothing_behind(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(checkpoint, "_exchange", lambda a, b: False)
    save(tmp_path / "m", 0.0)
    save(tmp_path / "m", 1.0, overwrite=True)
    state, _ = load_model_dir(tmp_path / "m")
    assert torch.equal(state["w"], STATE["w"] + 1.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_empty_folder_may_be_replaced(tmp_path):
    (tmp_path / "m").mkdir()
    save(tmp_path / "m", overwrite=True)
    verify_model_dir(tmp_path / "m")


def test_model_dir_gets_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        save(tmp_path / "m")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m").stat().st_mode) == 0o755
    for f in (tmp_path / "m").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f.name


def test_save_removes_stale_temporaries_of_its_own_naming_only(tmp_path):
    killed = tmp_path / ".m.abcd_123.tmp"  # what a SIGKILL during an earlier save leaves
    killed.mkdir()
    (killed / "weights.safetensors").write_bytes(b"partial")
    killed_mid_write = tmp_path / ".m.ijkl_789.tmp"  # killed inside safetensors' own write
    killed_mid_write.mkdir()
    (killed_mid_write / ".tmpGeoSCl").write_bytes(b"half a tensor file")
    foreign = tmp_path / ".m.efgh_456.tmp"  # same pattern, but holds a file that is not ours
    foreign.mkdir()
    (foreign / "data.npy").write_bytes(b"keep")
    other = tmp_path / ".mx.abcd_123.tmp"  # another model's name
    other.mkdir()
    save(tmp_path / "m")
    assert not killed.exists() and not killed_mid_write.exists()
    assert (foreign / "data.npy").read_bytes() == b"keep"
    assert other.is_dir()


def test_training_checkpoint_removes_stale_temporaries(tmp_path):
    ckpt = TrainingCheckpoint(tmp_path)
    stale = [tmp_path / ".tensors-000000003-123.safetensors.abcd_123.tmp",
             tmp_path / ".state.json.zz99_aa0.tmp"]
    keep = [tmp_path / "notes.tmp", tmp_path / ".tensors-x.tmp"]
    for p in (*stale, *keep):
        p.write_bytes(b"x")
    assert ckpt.is_empty()
    ckpt.save({"t": torch.zeros(2)}, {"global_step": 4})
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in keep)
    assert not ckpt.is_empty()
    tensors, state = ckpt.load()
    assert state["global_step"] == 4 and torch.equal(tensors["t"], torch.zeros(2))


def test_outputs_inside_a_model_dir_are_refused(tmp_path):
    save(tmp_path / "m")
    for out in (tmp_path / "m" / "weights.safetensors", tmp_path / "m" / "new.npy", tmp_path / "m"):
        with pytest.raises(InputFileError, match="inside the model directory"):
            check_output_outside_model_dir(out, tmp_path / "m")
    check_output_outside_model_dir(tmp_path / "out.npy", tmp_path / "m")


def test_identical_saves_are_byte_identical(tmp_path):
    """safetensors writes its metadata from a hash map (random key order): the header is
    re-serialised sorted, so saving the same model twice gives the same bytes (issue 15, item 19)."""
    from safetensors.torch import load_file, safe_open

    state = {"b": torch.ones(3, dtype=torch.float16), "a": torch.arange(5.0)}
    paths = [tmp_path / f"m{i}" for i in range(8)]  # 8 saves: 2**-7 odds that random order agrees
    for p in paths:
        save_model_dir(p, state_dict=state, config={"estimator": "x"}, extra={"bank": {"z": torch.zeros(2)}})
    for name in ("weights.safetensors", "config.json", "manifest.json", "bank.safetensors"):
        first = (paths[0] / name).read_bytes()
        assert all((p / name).read_bytes() == first for p in paths[1:]), name
    raw = (paths[0] / "weights.safetensors").read_bytes()
    assert raw.index(b'"format_version"') < raw.index(b'"package_version"')
    loaded = load_file(str(paths[0] / "weights.safetensors"))
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)
    with safe_open(str(paths[0] / "weights.safetensors"), "pt") as fh:
        assert fh.metadata() == {"format_version": "1", "package_version": checkpoint.__version__}
