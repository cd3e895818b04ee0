"""Tampered, truncated and mismatched model directories and checkpoints give a clear error.

``rerank apply`` on a damaged model directory, and ``rerank fit --resume`` on a damaged training
checkpoint, must exit 2 (bad input) or 3 (I/O) with one ``Error:`` line naming the problem:
never a traceback, never an unpickled object, never a silently wrong output. Beyond the plain
corruptions (a flipped byte, a truncated file: caught by the manifest's SHA-256), an attacker may
also rewrite ``manifest.json`` to match the files they planted; those cases test what the
loaders do with the content itself.
"""

from __future__ import annotations

import hashlib
import json
import pickle  # reliability: allow - used only to *write* a hostile file the loader must refuse
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from pillar_rerank.cli.main import COMMANDS, cli

torch = pytest.importorskip("torch")
if not all(__import__("importlib").util.find_spec(f"pillar_rerank.cli.{m}") for m in ("fit", "apply")):
    pytest.skip("rerank fit/apply do not exist yet", allow_module_level=True)
assert "fit" in COMMANDS and "apply" in COMMANDS

TINY = ["--epochs", 1, "--batch-size", 16, "--embed-dim", 8, "--depth", 1, "--num-heads", 2,
        "--n-pillars", 4, "--list-len-i2t", 4, "--list-len-t2i", 4, "--device", "cpu", "--seed", 0, "-q"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_clean_error(res, codes=(2, 3)):
    assert res.exit_code in codes, (res.exit_code, res.output, res.exception)
    assert isinstance(res.exception, SystemExit), f"raw exception escaped: {res.exception!r}"
    assert "Traceback" not in res.output
    assert len([line for line in res.output.splitlines() if line.startswith("Error")]) == 1, res.output


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tamper")
    rng = np.random.default_rng(1)
    img = rng.standard_normal((16, 6)).astype(np.float32)
    t2i = np.repeat(np.arange(16), 2)
    txt = (img[t2i] + rng.standard_normal((32, 6))).astype(np.float32)
    np.save(d / "sims.npy", img @ txt.T)
    np.save(d / "other.npy", (img @ txt.T)[:, ::-1].copy())
    res = invoke("fit", "--sims", d / "sims.npy", "--captions-per-image", 2, "-o", d / "model",
                 "--checkpoint-dir", d / "ckpt", "--checkpoint-every", 1, *TINY)
    assert res.exit_code == 0, res.output
    return d


@pytest.fixture
def work(trained, tmp_path) -> Path:
    d = tmp_path / "w"
    shutil.copytree(trained, d)
    return d


def _rewrite_manifest(model: Path) -> None:
    """What an attacker does after planting files: make the manifest agree with them."""
    manifest = json.loads((model / "manifest.json").read_text())
    for name in manifest["files"]:
        data = (model / name).read_bytes()
        manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (model / "manifest.json").write_text(json.dumps(manifest))


def _safetensors_bytes(header: dict, body: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


def _tamper(model: Path, kind: str, other: Path) -> None:
    weights, config, manifest = model / "weights.safetensors", model / "config.json", model / "manifest.json"
    if kind == "flipped byte in weights":
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0x01
        weights.write_bytes(bytes(data))
    elif kind == "truncated weights":
        weights.write_bytes(weights.read_bytes()[:100])
    elif kind == "empty weights":
        weights.write_bytes(b"")
    elif kind == "weights deleted":
        weights.unlink()
    elif kind == "manifest deleted":
        manifest.unlink()
    elif kind == "manifest not JSON":
        manifest.write_text("{not json")
    elif kind == "manifest is a list":
        manifest.write_text("[1, 2]")
    elif kind == "manifest future format":
        doc = json.loads(manifest.read_text())
        doc["format_version"] = 99
        manifest.write_text(json.dumps(doc))
    elif kind == "manifest files not a table":
        doc = json.loads(manifest.read_text())
        doc["files"] = "weights.safetensors"
        manifest.write_text(json.dumps(doc))
    elif kind == "config edited":
        config.write_text(config.read_text().replace('"depth": 1', '"depth": 3'))
    elif kind == "weights from another model":
        shutil.copy(other / "weights.safetensors", weights)
    # --- the attacker also rewrites the manifest ---------------------------------------------
    elif kind == "pickle planted as weights (+manifest)":
        weights.write_bytes(pickle.dumps({"x": 1}))  # a real attack would carry a payload
        _rewrite_manifest(model)
    elif kind == "torch.save file as weights (+manifest)":
        torch.save({"w": torch.zeros(2)}, weights)
        _rewrite_manifest(model)
    elif kind == "safetensors header claims a huge tensor (+manifest)":
        weights.write_bytes(_safetensors_bytes(
            {"i2t.x": {"dtype": "F32", "shape": [10**6, 10**6], "data_offsets": [0, 4 * 10**12]}}))
        _rewrite_manifest(model)
    elif kind == "safetensors header length past the file (+manifest)":
        weights.write_bytes(struct.pack("<Q", 2**60) + b"{}")
        _rewrite_manifest(model)
    elif kind == "weights with wrong shapes (+manifest)":
        from safetensors.torch import load_file, save_file
        state = load_file(str(weights))
        save_file({k: torch.zeros(*(s + 1 for s in v.shape)) for k, v in state.items()}, str(weights))
        _rewrite_manifest(model)
    elif kind == "weights missing a tensor (+manifest)":
        from safetensors.torch import load_file, save_file
        state = load_file(str(weights))
        state.pop(sorted(state)[0])
        save_file(state, str(weights))
        _rewrite_manifest(model)
    elif kind == "config not JSON (+manifest)":
        config.write_text("{oops")
        _rewrite_manifest(model)
    elif kind == "config unknown key (+manifest)":
        doc = json.loads(config.read_text())
        doc["config"]["no_such_field"] = 1
        config.write_text(json.dumps(doc))
        _rewrite_manifest(model)
    elif kind == "config wrong type (+manifest)":
        doc = json.loads(config.read_text())
        doc["config"]["depth"] = "two"
        config.write_text(json.dumps(doc))
        _rewrite_manifest(model)
    elif kind == "config of another estimator (+manifest)":
        doc = json.loads(config.read_text())
        doc["estimator"] = "SomethingElse"
        config.write_text(json.dumps(doc))
        _rewrite_manifest(model)
    elif kind == "config is a list (+manifest)":
        config.write_text("[]")
        _rewrite_manifest(model)
    elif kind in FIELD_TAMPERING:
        target = manifest if kind.startswith("manifest") else config
        doc = json.loads(target.read_text())
        FIELD_TAMPERING[kind][0](doc)
        target.write_text(json.dumps(doc))
        if target == config:
            _rewrite_manifest(model)
    else:  # pragma: no cover
        raise AssertionError(kind)


def _set(*path_and_value):
    *path, value = path_and_value

    def edit(doc):
        for key in path[:-1]:
            doc = doc[key]
        doc[path[-1]] = value

    return edit


def _drop(*path):
    def edit(doc):
        for key in path[:-1]:
            doc = doc[key]
        del doc[path[-1]]

    return edit


# issue 15, item 13: one field of manifest.json or config.json malformed (config.json with its
# checksum rewritten); each gives exit 2 and a message naming the file and the field.
FIELD_TAMPERING = {
    "config without fitted (+manifest)": (_drop("fitted"), "config.json lacks the field 'fitted'"),
    "config fitted is a list (+manifest)": (_set("fitted", []), "'fitted' must be an object"),
    "config count not a number (+manifest)": (_set("fitted", "n_images_in", "abc"), "'n_images_in'"),
    "config count a float (+manifest)": (_set("fitted", "n_texts_in", 1.5), "'n_texts_in'"),
    "config count negative (+manifest)": (_set("fitted", "n_images_in", -3), "'n_images_in'"),
    "config fitted lacks a count (+manifest)": (_drop("fitted", "n_texts_in"),
                                                "lacks the field 'n_texts_in'"),
    "config history not an object (+manifest)": (_set("fitted", "history", [1]), "'history'"),
    "config lacks a config field (+manifest)": (_drop("config", "depth"), "config lacks the field 'depth'"),
    "config extra top-level field (+manifest)": (_set("surprise", 1), "unknown field 'surprise'"),
    "config format_version a string (+manifest)": (_set("format_version", "1"), "format_version"),
    "config embed_dim 1e9 (+manifest)": (_set("config", "embed_dim", 10**9), "in the range [1, 16384]"),
    "config a model too large for memory (+manifest)": (
        lambda doc: (_set("config", "embed_dim", 16384)(doc), _set("config", "depth", 64)(doc)), "GiB"),
    "manifest entry not an object": (_set("files", "config.json", "x"), "files['config.json']"),
    "manifest entry with an extra key": (_set("files", "config.json", "x", 1), "files['config.json']"),
    "manifest bytes not a number": (_set("files", "config.json", "bytes", "12"), "['config.json'].bytes"),
    "manifest sha256 not a digest": (_set("files", "config.json", "sha256", 5), ".sha256"),
    "manifest names a file outside": (_set("files", "../sims.npy", {"sha256": "0" * 64, "bytes": 1}),
                                      "'../sims.npy'"),
    "manifest extra field": (_set("extra", 1), "unknown field 'extra'"),
    "manifest format_version true": (_set("format_version", True), "format_version"),
}


MODEL_TAMPERING = [
    "flipped byte in weights", "truncated weights", "empty weights", "weights deleted", "manifest deleted",
    "manifest not JSON", "manifest is a list", "manifest future format", "manifest files not a table",
    "config edited", "weights from another model",
    "pickle planted as weights (+manifest)", "torch.save file as weights (+manifest)",
    "safetensors header claims a huge tensor (+manifest)",
    "safetensors header length past the file (+manifest)",
    "weights with wrong shapes (+manifest)", "weights missing a tensor (+manifest)",
    "config not JSON (+manifest)", "config unknown key (+manifest)", "config wrong type (+manifest)",
    "config of another estimator (+manifest)", "config is a list (+manifest)",
    *FIELD_TAMPERING,
]


@pytest.fixture(scope="module")
def other_model(trained, tmp_path_factory) -> Path:
    """A second model of a different size (its weights do not fit the first one's config)."""
    d = tmp_path_factory.mktemp("other")
    res = invoke("fit", "--sims", trained / "sims.npy", "--captions-per-image", 2, "-o", d / "model",
                 "--checkpoint-dir", d / "ckpt", *TINY[:-5], "--embed-dim", 4, "--device", "cpu", "--seed", 1,
                 "-q")
    assert res.exit_code == 0, res.output
    return d / "model"


@pytest.mark.parametrize("kind", MODEL_TAMPERING)
def test_apply_refuses_a_tampered_model_dir(kind, work, other_model):
    _tamper(work / "model", kind, other_model)
    res = invoke("apply", work / "model", "--sims", work / "sims.npy", "--captions-per-image", 2,
                 "-o", work / "out.npy")
    assert_clean_error(res)
    assert "model" in res.output
    assert not (work / "out.npy").exists()
    if kind in FIELD_TAMPERING:
        assert res.exit_code == 2
        assert FIELD_TAMPERING[kind][1] in res.output.replace("\n", " "), res.output
        assert ("manifest.json" if kind.startswith("manifest") else "config.json") in res.output


def test_apply_output_of_an_untampered_model_is_finite(work):
    res = invoke("apply", work / "model", "--sims", work / "sims.npy", "--captions-per-image", 2,
                 "-o", work / "out.npy")
    assert res.exit_code == 0, res.output
    assert np.isfinite(np.load(work / "out.npy", allow_pickle=False)).all()


def test_apply_with_nan_weights_does_not_write_nan_scores(work):
    """Weights holding NaN (a diverged run, or planted with a matching manifest) must not turn into
    a NaN score matrix on disk: either a clear error or finite scores."""
    from safetensors.torch import load_file, save_file
    weights = work / "model" / "weights.safetensors"
    state = load_file(str(weights))
    save_file({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state.items()},
              str(weights))
    _rewrite_manifest(work / "model")
    res = invoke("apply", work / "model", "--sims", work / "sims.npy", "--captions-per-image", 2,
                 "-o", work / "out.npy")
    if res.exit_code == 0:
        assert np.isfinite(np.load(work / "out.npy", allow_pickle=False)).all(), "NaN scores written"
    else:
        assert_clean_error(res)


CHECKPOINT_TAMPERING = ["state.json deleted", "state.json not JSON", "state.json truncated",
                        "tensors flipped byte", "tensors deleted", "future format", "other data"]


@pytest.mark.parametrize("kind", CHECKPOINT_TAMPERING)
def test_resume_refuses_a_tampered_checkpoint(kind, work):
    ckpt = work / "ckpt"
    state = ckpt / "state.json"
    doc = json.loads(state.read_text())
    tensors = ckpt / doc["tensors_file"]
    sims = work / "sims.npy"
    if kind == "state.json deleted":
        state.unlink()
    elif kind == "state.json not JSON":
        state.write_text("{")
    elif kind == "state.json truncated":
        state.write_text(state.read_text()[: len(state.read_text()) // 2])
    elif kind == "tensors flipped byte":
        data = bytearray(tensors.read_bytes())
        data[-5] ^= 0xFF
        tensors.write_bytes(bytes(data))
    elif kind == "tensors deleted":
        tensors.unlink()
    elif kind == "future format":
        doc["format_version"] = 99
        state.write_text(json.dumps(doc))
    elif kind == "other data":
        sims = work / "other.npy"
    res = invoke("fit", "--sims", sims, "--captions-per-image", 2, "-o", work / "resumed",
                 "--checkpoint-dir", ckpt, "--resume", *TINY)
    assert_clean_error(res)
    assert "checkpoint" in res.output
    assert not (work / "resumed").exists()


def test_fit_refuses_an_absurd_model_size(trained, tmp_path):
    """`--embed-dim 1000000000` used to try to allocate the model (RuntimeError, exit 1): it is
    refused with the memory it needs (issue 15, item 14)."""
    args = list(TINY)
    args[args.index("--embed-dim") + 1] = 10**9
    args[args.index("--num-heads") + 1] = 1
    res = invoke("fit", "--sims", trained / "sims.npy", "--captions-per-image", 2, "-o", tmp_path / "m",
                 *args)
    assert_clean_error(res, codes=(2,))
    assert "--embed-dim" in res.output and "1<=x<=16384" in res.output  # beyond any useful size
    # within the bounds but beyond this machine's memory: refused with the memory it needs
    args[args.index("--embed-dim") + 1] = 16384
    res = invoke("fit", "--sims", trained / "sims.npy", "--captions-per-image", 2, "-o", tmp_path / "m",
                 *args, "--depth", 64)
    assert_clean_error(res, codes=(2,))
    assert "GiB of float32 weights" in res.output and "--embed-dim" in res.output
    assert not (tmp_path / "m").exists()
