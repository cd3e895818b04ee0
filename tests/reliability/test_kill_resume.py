"""Kill ``rerank fit`` with SIGKILL at several points, resume, and compare with an uninterrupted run.

Each scenario starts ``rerank fit`` (tiny configuration, synthetic ``.npy`` inputs, a checkpoint
after every step) in a subprocess, kills it with SIGKILL at a chosen point, then reruns it with
``--resume`` (the same command every time, even when it died before its first checkpoint: then
training starts from scratch) until the model directory
exists, possibly killing it again. The final ``weights.safetensors`` must equal, tensor by tensor
and bit for bit, those of an uninterrupted run with the same seed; at every kill point the model
directory is absent or complete (its manifest verifies) and the checkpoint is loadable; at the
end no temporary file is left anywhere in the work folder.

Set ``RELIABILITY_KILL_OUT=path.json`` to write what happened at each kill point.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

try:
    from pillar_rerank.cli.fit import fit as _fit_command

    from pillar_rerank.checkpoint import STATE_FILE, verify_model_dir
except ImportError as exc:  # pragma: no cover - until the trainer with checkpoints exists
    pytest.skip(f"rerank fit with resumable checkpoints is not available: {exc}", allow_module_level=True)

if not {"resume", "checkpoint_every", "checkpoint_dir"} <= {p.name for p in _fit_command.params}:
    pytest.skip("rerank fit has no --resume/--checkpoint-every/--checkpoint-dir options",
                allow_module_level=True)

pytestmark = pytest.mark.slow  # about a dozen `rerank fit` processes: minutes on 2 shared cores

N_IMAGES, CAPS, DIM = 24, 2, 8
BATCH, EPOCHS = 8, 2
TOTAL_STEPS = EPOCHS * -(-N_IMAGES * CAPS // BATCH)  # 12
RUN_TIMEOUT = 300  # seconds for one process; a hang fails instead of blocking the suite


def _write_inputs(folder: Path) -> None:
    rng = np.random.default_rng(11)
    for side, n in (("train", N_IMAGES), ("dev", 12)):
        img = rng.standard_normal((n, DIM)).astype(np.float32)
        t2i = np.repeat(np.arange(n), CAPS)
        txt = (img[t2i] + rng.standard_normal((n * CAPS, DIM))).astype(np.float32)
        np.save(folder / f"{side}_img.npy", img)
        np.save(folder / f"{side}_txt.npy", txt)
        np.save(folder / f"{side}_map.npy", t2i)


def _fit_args(inputs: Path, model_dir: Path, ckpt_dir: Path, *, resume: bool) -> list[str]:
    args = [sys.executable, "-m", "pillar_rerank.cli.main", "fit",
            "--image-emb", inputs / "train_img.npy", "--text-emb", inputs / "train_txt.npy",
            "--txt2img", inputs / "train_map.npy",
            "--dev-image-emb", inputs / "dev_img.npy", "--dev-text-emb", inputs / "dev_txt.npy",
            "--dev-txt2img", inputs / "dev_map.npy",
            "-o", model_dir, "--checkpoint-dir", ckpt_dir, "--checkpoint-every", "1",
            "--epochs", EPOCHS, "--batch-size", BATCH, "--eval-every", 4, "--embed-dim", 8, "--depth", 1,
            "--num-heads", 2, "--n-pillars", 4, "--list-len-i2t", 4, "--list-len-t2i", 4,
            "--device", "cpu", "--seed", 5, "-q"]
    if resume:
        args.append("--resume")
    return [str(a) for a in args]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    return env


def _checkpoint_step(ckpt_dir: Path) -> int | None:
    try:
        return int(json.loads((ckpt_dir / STATE_FILE).read_text())["global_step"])
    except (OSError, ValueError, KeyError):
        return None


def _run_to_end(inputs: Path, model_dir: Path, ckpt_dir: Path, *, resume: bool = True
                ) -> subprocess.CompletedProcess:
    proc = subprocess.run(_fit_args(inputs, model_dir, ckpt_dir, resume=resume), capture_output=True,
                          text=True, env=_env(), timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _run_and_kill(inputs: Path, model_dir: Path, ckpt_dir: Path, point: dict) -> dict:
    """Start ``fit --resume`` (a checkpoint may not exist yet) and SIGKILL it at ``point``.

    ``point`` is ``{"step": n}`` (once the checkpoint reaches step n), ``{"delay": s}`` (s seconds
    after start), or ``{"during_write": prefix}`` (as soon as a temporary ``prefix*.tmp`` file or
    folder appears in the checkpoint folder or beside the model dir: mid atomic write).
    """
    proc = subprocess.Popen(_fit_args(inputs, model_dir, ckpt_dir, resume=True), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    start = time.monotonic()
    killed_at = None
    try:
        while proc.poll() is None:
            elapsed = time.monotonic() - start
            assert elapsed < RUN_TIMEOUT, "rerank fit did not finish (hang?)"
            step = _checkpoint_step(ckpt_dir)
            hit = ("delay" in point and elapsed >= point["delay"]) or (
                "step" in point and step is not None and step >= point["step"]) or (
                "during_write" in point and _writing(point["during_write"], ckpt_dir, model_dir.parent))
            if hit:
                proc.send_signal(signal.SIGKILL)
                killed_at = {"elapsed_s": round(elapsed, 2), "checkpoint_step_seen": step}
                break
            time.sleep(0.002 if "during_write" in point else 0.02)
    finally:
        proc.wait(timeout=60)
        if proc.stderr is not None:
            proc.stderr.close()
    return {"point": point, "killed": killed_at is not None, **(killed_at or {}),
            "exit": proc.returncode, "checkpoint_step_after": _checkpoint_step(ckpt_dir),
            "model_dir_written": model_dir.exists()}


def _writing(prefix: str, *folders: Path) -> bool:
    """True while a temporary file or folder whose name starts with ``prefix`` exists."""
    try:
        return any(p.name.startswith(prefix) and p.name.endswith(".tmp")
                   for folder in folders if folder.is_dir() for p in folder.iterdir())
    except FileNotFoundError:  # renamed away while listing
        return False


def _assert_consistent_after_kill(model_dir: Path, ckpt_dir: Path) -> None:
    """Never a half-written output: the model dir is absent or verifies; state.json parses."""
    if model_dir.exists():
        verify_model_dir(model_dir)
    if (ckpt_dir / STATE_FILE).exists():
        doc = json.loads((ckpt_dir / STATE_FILE).read_text())
        assert (ckpt_dir / doc["tensors_file"]).is_file()


def _weights(model_dir: Path) -> dict[str, bytes]:
    tensors = safetensors_torch.load_file(str(model_dir / "weights.safetensors"))
    return {k: v.contiguous().numpy().tobytes() + str(v.dtype).encode() + str(tuple(v.shape)).encode()
            for k, v in tensors.items()}


def _leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.name.endswith((".tmp", ".old")) or ".tmp" in p.name)


# Each scenario is a sequence of runs, each killed at its point; then one run to the end.
SCENARIOS = {
    "before first checkpoint (1 s)": [{"delay": 1.0}],
    "epoch boundary (step 6)": [{"step": 6}],
    "twice: steps 3 and 9": [{"step": 3}, {"step": 9}],
    "during a checkpoint write": [{"step": 3}, {"during_write": ".tensors-"}],
    "during the model-dir write": [{"step": TOTAL_STEPS - 1}, {"during_write": ".model."}],
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kill_resume")
    _write_inputs(folder)
    return folder


@pytest.fixture(scope="module")
def reference(workdir):
    model_dir = workdir / "reference" / "model"
    model_dir.parent.mkdir()
    _run_to_end(workdir, model_dir, workdir / "reference" / "ckpt", resume=False)
    return _weights(model_dir)


RESULTS: list[dict] = []


@pytest.fixture(scope="module", autouse=True)
def _write_results():
    yield
    out = os.environ.get("RELIABILITY_KILL_OUT")
    if out:
        Path(out).write_text(json.dumps(RESULTS, indent=2) + "\n")


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_sigkill_then_resume_gives_identical_weights(scenario, workdir, reference):
    run_dir = workdir / scenario.replace(" ", "_").replace(":", "").replace("(", "").replace(")", "")
    run_dir.mkdir()
    model_dir, ckpt_dir = run_dir / "model", run_dir / "ckpt"
    kills = []
    for point in SCENARIOS[scenario]:
        if model_dir.exists():
            break
        kills.append(_run_and_kill(workdir, model_dir, ckpt_dir, point))
        _assert_consistent_after_kill(model_dir, ckpt_dir)
    if not model_dir.exists():
        _run_to_end(workdir, model_dir, ckpt_dir)
    got = _weights(model_dir)
    equal = got.keys() == reference.keys() and all(got[k] == reference[k] for k in got)
    leftovers = _leftovers(run_dir)
    RESULTS.append({"scenario": scenario, "kills": kills, "bitwise_equal": equal, "leftover_tmp": leftovers})
    assert any(k["killed"] for k in kills), f"the run finished before any kill point: {kills}"
    assert equal, f"weights differ from the uninterrupted run after {kills}"
    assert not leftovers, f"temporary files left behind: {leftovers}"
