"""Every ``rerank`` subcommand uses the documented exit codes and protects files.

Exit codes (``pillar_rerank.exceptions``): 0 ok, 1 internal error, 2 bad usage or input, 3 I/O.
For each registered subcommand (``cli.main.COMMANDS``; one whose module does not exist yet is
skipped with a reason) and a minimal valid argument set:

* a valid run exits 0 and writes its output;
* a missing input file exits 3 and the message names the file;
* an unknown option exits 2;
* an input with NaN exits 2;
* an existing output is left untouched (exit 3) unless ``--overwrite`` is given;
* an output that is an input (or, for folder outputs, a folder holding the inputs; for commands
  reading a model, any path inside the model directory) is refused, even with ``--overwrite``,
  and the input is untouched.

Failures are always one ``Error:`` line without a traceback.
"""

from __future__ import annotations

import hashlib
import importlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from pillar_rerank.cli.main import COMMANDS, cli

N_IMAGES, CAPS, DIM = 16, 2, 6
TINY_FIT = ["--epochs", 1, "--batch-size", 16, "--embed-dim", 8, "--depth", 1, "--num-heads", 2,
            "--n-pillars", 4, "--list-len-i2t", 4, "--list-len-t2i", 4, "--device", "cpu", "--seed", 0, "-q"]


def command_available(name: str) -> bool:
    module = COMMANDS[name].split(":")[0]
    try:
        importlib.import_module(f"pillar_rerank.cli.{module}")
    except ModuleNotFoundError as exc:
        if exc.name == f"pillar_rerank.cli.{module}":
            return False
        raise
    return True


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_fails_cleanly(res, code: int) -> None:
    assert res.exit_code == code, (res.exit_code, res.output, res.exception)
    assert isinstance(res.exception, SystemExit), f"raw exception escaped: {res.exception!r}"
    assert "Traceback" not in res.output
    assert len([line for line in res.output.splitlines() if line.startswith("Error")]) == 1, res.output


def snapshot(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` (relative names)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@dataclass(frozen=True)
class Spec:
    """A minimal valid invocation of one subcommand, with its main input and output."""

    args: Callable[[Path, Path], list]  # (inputs folder, output path) -> argv after the name
    input: str  # an input file (relative to the inputs folder) the command reads
    output: str  # output name; a folder when output_is_dir
    output_is_dir: bool = False
    needs: tuple[str, ...] = ()  # "model", "shards"
    nan_input: str = "sims.npy"  # the file replaced by one holding NaN for the bad-input check


def _sims(d: Path) -> list:
    return ["--sims", d / "sims.npy", "--captions-per-image", CAPS]


SPECS: dict[str, Spec] = {
    "eval": Spec(lambda d, o: [d / "sims.npy", "--captions-per-image", CAPS, "--json", o],
                 "sims.npy", "out.json"),
    "fit": Spec(lambda d, o: [*_sims(d), "-o", o, *TINY_FIT], "sims.npy", "model_out", output_is_dir=True),
    "apply": Spec(lambda d, o: [d / "model", *_sims(d), "-o", o], "sims.npy", "reranked.npy",
                  needs=("model",)),
    "merge": Spec(lambda d, o: [d / "model", d / "shard0.npz", d / "shard1.npz", *_sims(d), "-o", o],
                  "shard1.npz", "merged.npy", needs=("model", "shards")),
    "baseline": Spec(lambda d, o: ["dsl", *_sims(d), "--direction", "i2t", "-o", o], "sims.npy", "dsl.npy"),
    "tune": Spec(lambda d, o: ["dsl", "--dev-sims", d / "sims.npy", "--dev-captions-per-image", CAPS,
                               "-o", o], "sims.npy", "tune.json"),
    "train-backbone": Spec(lambda d, o: ["--loss", "infonce", "--image-features", d / "img.npy",
                                         "--text-features", d / "txt.npy", "--captions-per-image", CAPS,
                                         "--embed-dim", 4, "--epochs", 1, "--batch-size", 16,
                                         "--device", "cpu", "-o", o],
                           "img.npy", "backbone_out", output_is_dir=True, nan_input="img.npy"),
    "report": Spec(lambda d, o: [*_sims(d), "-o", o], "sims.npy", "report.html"),
}

# Commands deliberately without a valid-run spec, and where they are covered instead.
NO_SPEC = {"demo": "trains on the bundled data (minutes); its output check is "
                   "test_demo_refuses_a_non_empty_output_folder_before_training",
           "cache": "writes into an existing cache folder and reuses a matching cache by design (no "
                    "-o output to protect); its exit codes are checked in tests/cli/test_fit_apply.py::"
                    "test_cache_command_errors"}

def _spec_or_skip(name: str) -> Spec:
    if not command_available(name):
        module = COMMANDS[name].split(":")[0]
        pytest.skip(f"rerank {name}: module pillar_rerank.cli.{module} does not exist yet")
    if name in NO_SPEC:
        pytest.skip(f"rerank {name}: {NO_SPEC[name]}")
    if name not in SPECS:
        pytest.skip(f"rerank {name}: no minimal argument set in SPECS yet")
    spec = SPECS[name]
    for need in spec.needs:
        for dep in {"model": ("fit",), "shards": ("apply",)}[need]:
            if not command_available(dep):
                pytest.skip(f"rerank {name} needs a {need} made by rerank {dep}, which does not exist yet")
    return spec


@pytest.fixture(scope="module")
def inputs_template(tmp_path_factory) -> Path:
    """Input files shared (by copy) by every test: sims, map, features, and a model and shards."""
    d = tmp_path_factory.mktemp("exit_inputs")
    rng = np.random.default_rng(3)
    img = rng.standard_normal((N_IMAGES, DIM)).astype(np.float32)
    t2i = np.repeat(np.arange(N_IMAGES), CAPS)
    txt = (img[t2i] + 0.8 * rng.standard_normal((N_IMAGES * CAPS, DIM))).astype(np.float32)
    np.save(d / "img.npy", img)
    np.save(d / "txt.npy", txt)
    np.save(d / "map.npy", t2i)
    np.save(d / "sims.npy", img @ txt.T)
    if command_available("fit"):
        res = invoke("fit", *_sims(d), "-o", d / "model", "--checkpoint-dir", d / "model.ckpt", *TINY_FIT)
        assert res.exit_code == 0, res.output
        shutil.rmtree(d / "model.ckpt", ignore_errors=True)
    if command_available("apply") and (d / "model").is_dir():
        for i in range(2):
            res = invoke("apply", d / "model", *_sims(d), "--shard", f"{i}/2", "-o", d / f"shard{i}.npz")
            assert res.exit_code == 0, res.output
    return d


@pytest.fixture
def inputs(inputs_template, tmp_path) -> Path:
    d = tmp_path / "inputs"
    shutil.copytree(inputs_template, d)
    return d


NAMES = list(COMMANDS)


@pytest.mark.parametrize("name", NAMES)
def test_help_exits_0_and_unknown_option_exits_2(name):
    if not command_available(name):
        pytest.skip(f"rerank {name}: module does not exist yet")
    assert invoke(name, "--help").exit_code == 0
    res = invoke(name, "--no-such-option")
    assert_fails_cleanly(res, 2)
    assert "--no-such-option" in res.output


def test_unknown_command_exits_2():
    assert_fails_cleanly(invoke("no-such-command"), 2)


@pytest.mark.parametrize("name", NAMES)
def test_valid_run_exits_0_then_refuses_to_overwrite_its_output(name, inputs, tmp_path):
    spec = _spec_or_skip(name)
    out = tmp_path / spec.output
    before = snapshot(inputs)
    res = invoke(name, *spec.args(inputs, out))
    assert res.exit_code == 0, res.output
    assert out.is_dir() if spec.output_is_dir else out.is_file()
    assert snapshot(inputs) == before  # inputs untouched
    assert not [p.name for p in out.parent.iterdir() if ".tmp" in p.name]  # no temporary leftovers
    written = snapshot(tmp_path)
    res = invoke(name, *spec.args(inputs, out))  # the same run again, without --overwrite
    assert_fails_cleanly(res, 3)
    assert spec.output in res.output and "overwrite" in res.output
    assert snapshot(tmp_path) == written
    res = invoke(name, *spec.args(inputs, out), "--overwrite")
    assert res.exit_code == 0, res.output
    assert not [p.name for p in out.parent.iterdir() if ".tmp" in p.name or ".old" in p.name]


@pytest.mark.parametrize("name", NAMES)
def test_missing_input_exits_3_and_names_the_file(name, inputs, tmp_path):
    spec = _spec_or_skip(name)
    (inputs / spec.input).unlink()
    res = invoke(name, *spec.args(inputs, tmp_path / spec.output))
    assert_fails_cleanly(res, 3)
    assert spec.input in res.output
    assert not (tmp_path / spec.output).exists()


@pytest.mark.parametrize("name", [n for n, s in SPECS.items() if "model" in s.needs])
def test_missing_input_folder_for_model_commands_exits_3(name, inputs, tmp_path):
    spec = _spec_or_skip(name)
    shutil.rmtree(inputs / "model")
    res = invoke(name, *spec.args(inputs, tmp_path / spec.output))
    assert_fails_cleanly(res, 3)
    assert "model" in res.output


@pytest.mark.parametrize("name", NAMES)
def test_nan_input_exits_2(name, inputs, tmp_path):
    spec = _spec_or_skip(name)
    arr = np.load(inputs / spec.nan_input)
    arr[0, 0] = np.nan
    np.save(inputs / spec.nan_input, arr)
    res = invoke(name, *spec.args(inputs, tmp_path / spec.output))
    assert_fails_cleanly(res, 2)
    assert "NaN" in res.output or "finite" in res.output


@pytest.mark.parametrize("name", [n for n, s in SPECS.items() if not s.output_is_dir])
def test_existing_output_file_is_untouched_without_overwrite(name, inputs, tmp_path):
    spec = _spec_or_skip(name)
    out = tmp_path / spec.output
    out.write_bytes(b"precious")
    before = snapshot(tmp_path)
    res = invoke(name, *spec.args(inputs, out))
    assert_fails_cleanly(res, 3)
    assert spec.output in res.output and "overwrite" in res.output
    assert snapshot(tmp_path) == before


def _over_input_cases():
    cases = []
    for name in NAMES:
        spec = SPECS.get(name)
        if spec is None:
            cases.append(pytest.param(name, "input-file", id=f"{name}-input-file"))
            continue
        cases.append(pytest.param(name, "input-file", id=f"{name}-input-file"))
        if spec.output_is_dir:
            cases.append(pytest.param(name, "folder-with-inputs", id=f"{name}-folder-with-inputs"))
        if "model" in spec.needs:
            cases.append(pytest.param(name, "model-file", id=f"{name}-model-file"))
            cases.append(pytest.param(name, "inside-model-dir", id=f"{name}-inside-model-dir"))
    return cases


@pytest.mark.parametrize("name, kind", _over_input_cases())
def test_never_writes_over_an_input(name, kind, inputs):
    spec = _spec_or_skip(name)
    if kind == "input-file":
        target = inputs / spec.input  # e.g. -o sims.npy --overwrite
    elif kind == "folder-with-inputs":
        target = inputs  # e.g. -o the folder that holds sims.npy --overwrite
    elif kind == "model-file":
        target = inputs / "model" / "weights.safetensors"
    else:  # a new file inside the model directory being read
        target = inputs / "model" / "new.npy"
    before = snapshot(inputs)
    res = invoke(name, *spec.args(inputs, target), "--overwrite")
    if kind == "folder-with-inputs":
        # writing new files into the folder is fine; removing or changing an input is not
        after = snapshot(inputs)
        assert {k: after.get(k) for k in before} == before, f"rerank {name} damaged inputs in {target}"
        if res.exit_code != 0 or name == "fit":  # a model dir replaces only a previous model dir
            assert_fails_cleanly(res, 3)
        return
    assert res.exit_code != 0, f"rerank {name} wrote over its input {target.name}: {res.output}"
    # 3 from the library's output check; 2 where click's Path(file_okay=False) rejects a file first
    assert_fails_cleanly(res, 2 if res.exit_code == 2 else 3)
    assert snapshot(inputs) == before


def _is_temporary(path: Path, root: Path) -> bool:
    """A file written in a temporary place: a ``.tmp`` name or inside a ``.tmp`` folder."""
    try:
        parts = path.resolve().relative_to(root.resolve()).parts
    except ValueError:
        return True  # outside the test folder (caches, logs): not an output of the command
    return any(".tmp" in part for part in parts)


@pytest.mark.parametrize("name", NAMES)
def test_outputs_are_written_to_a_temporary_name_then_renamed(name, inputs, tmp_path, monkeypatch):
    """Every file the command opens for writing under the test folder is a temporary one.

    Python-level writes (``open``, ``Path.write_*``, ``np.save``, matplotlib) go through
    ``io.open``, which is watched here; native writers (safetensors) are not seen.
    """
    import builtins
    import io

    spec = _spec_or_skip(name)
    real_open = io.open
    direct: list[str] = []
    seen: list[str] = []

    def watching_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, Path)) and any(c in mode for c in "wax+"):
            seen.append(str(file))
            if not _is_temporary(Path(file), tmp_path):
                direct.append(str(Path(file).resolve().relative_to(tmp_path.resolve())))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(io, "open", watching_open)
    monkeypatch.setattr(builtins, "open", watching_open)
    out = tmp_path / spec.output
    res = invoke(name, *spec.args(inputs, out))
    assert res.exit_code == 0, res.output
    assert seen, "the watcher saw no write at all; it no longer observes the command's writes"
    assert not direct, f"rerank {name} wrote these files in place (not via a temporary + rename): {direct}"


def test_demo_refuses_a_non_empty_output_folder_before_training(tmp_path):
    if not command_available("demo"):
        pytest.skip("rerank demo: module does not exist yet")
    out = tmp_path / "demo_out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    before = snapshot(tmp_path)
    res = invoke("demo", "-o", out, "--epochs", 1, "-q")
    assert_fails_cleanly(res, 3)
    assert "demo_out" in res.output and "overwrite" in res.output
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("location", ["/proc", "/sys"])
@pytest.mark.parametrize("name", NAMES)
def test_unwritable_output_location_exits_3_before_any_work(name, location, inputs, monkeypatch):
    """Issue 15 item 11: an unwritable output folder gave a traceback and exit 1, after the work.

    Every output location is probed (a temporary file created and removed) before inputs are
    read or anything is trained; the failure is an I/O error (3) naming the folder.
    """
    spec = _spec_or_skip(name)
    if not Path(location).is_dir():
        pytest.skip(f"{location} does not exist on this system")
    from pillar_rerank.cli import baseline as baseline_command

    import pillar_rerank.reranker as reranker_module
    from pillar_rerank.baselines import tuning as tuning_module

    def no_work(*args, **kwargs):
        raise AssertionError("the command started work before checking that its output can be written")

    monkeypatch.setattr(reranker_module.PillarReranker, "fit", no_work)
    monkeypatch.setattr(reranker_module.PillarReranker, "rerank", no_work)
    monkeypatch.setattr(baseline_command, "apply_both", no_work)
    monkeypatch.setattr(tuning_module, "apply_both", no_work)
    out = Path(location) / f"pillar_rerank_{spec.output}"
    res = invoke(name, *spec.args(inputs, out))
    assert_fails_cleanly(res, 3)
    assert location in res.output and "cannot write" in res.output, res.output
