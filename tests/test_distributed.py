"""``rerank fit`` under torchrun (2 gloo processes on CPU) matches a single-process fit."""

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

TINY = {
    "n_pillars": 4,
    "list_len_i2t": 6,
    "list_len_t2i": 4,
    "graph_neighbors": 4,
    "intra_source": "second_order",
    "embed_dim": 16,
    "depth": 1,
    "num_heads": 2,
    "epochs": 2,
    "batch_size": 16,
    "eval_every": 1000,
    "device": "cpu",
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
    flag = "" if prefix == "train" else prefix + "-"
    return [
        f"--{flag}sims",
        str(folder / f"{prefix}_sims.npy"),
        f"--{flag}txt2img",
        str(folder / f"{prefix}_t2i.npy"),
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    return env


def _fit(args, nproc: int):
    launcher = [sys.executable]
    if nproc > 1:
        launcher += ["-m", "torch.distributed.run", "--nproc_per_node", str(nproc)]
        launcher += ["--master_addr", "127.0.0.1", "--master_port", str(_free_port())]
    start = time.perf_counter()
    proc = subprocess.run(
        [*launcher, "-m", "pillar_rerank.cli.main", "fit", *args],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=240,
    )
    return proc, time.perf_counter() - start


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    (root / "cfg.json").write_text(json.dumps(TINY))
    # 49 images x 3 captions = 147 items: 9 full batches and a last one of 3 (shares 1 and 2).
    train = _write_side(root, "train", 49, 0)
    dev = _write_side(root, "dev", 30, 1)
    return root, [*train, *dev, "--config", str(root / "cfg.json"), "-q"]


def test_two_process_gloo_fit_matches_one_process(data):
    root, args = data
    single, t1 = _fit([*args, "-o", str(root / "m1")], nproc=1)
    assert single.returncode == 0, single.stderr
    (root / "cache").mkdir()  # rank 0 builds the input caches, rank 1 reads them
    double, t2 = _fit([*args, "-o", str(root / "m2"), "--cache", str(root / "cache")], nproc=2)
    assert double.returncode == 0, double.stderr
    assert sorted(p.name.split("-")[0] for p in (root / "cache").iterdir()) == ["dev", "train"]
    w1 = load_file(root / "m1" / "weights.safetensors")
    w2 = load_file(root / "m2" / "weights.safetensors")
    assert w1.keys() == w2.keys()
    for name in w1:
        assert torch.allclose(w1[name], w2[name], atol=1e-5), name
    rsum = [float(re.search(r"best dev RSUM: ([\d.]+)", p.stdout).group(1)) for p in (single, double)]
    assert abs(rsum[0] - rsum[1]) < 1e-2
    # only rank 0 reports and writes
    assert double.stdout.count("kept the best dev RSUM") == 1
    print(f"1 process: {t1:.1f} s, RSUM {rsum[0]:.2f}; 2 processes: {t2:.1f} s, RSUM {rsum[1]:.2f}")


def test_global_batch_must_divide_by_world_size(data):
    root, args = data
    proc, _ = _fit([*args, "--batch-size", "15", "-o", str(root / "m3")], nproc=2)
    assert proc.returncode != 0
    assert "divisible by the number of processes (2)" in proc.stderr
    assert not (root / "m3").exists()


def test_sharded_apply_as_a_torchrun_job_merges_to_the_single_process_result(data):
    root, args = data
    fit, _ = _fit([*args, "-o", str(root / "m_apply")], nproc=1)
    assert fit.returncode == 0, fit.stderr
    test = _write_side(root, "test", 20, 3)
    test = [a.replace("--test-", "--") for a in test]
    cli = [sys.executable, "-m", "pillar_rerank.cli.main"]
    model = str(root / "m_apply")
    plain = subprocess.run([*cli, "apply", model, *test, "-o", str(root / "plain.npy")],
                           capture_output=True, text=True, env=_env(), timeout=120)
    assert plain.returncode == 0, plain.stderr
    apply = " ".join([*cli, "apply", model, *test, "--shard", "$RANK/$WORLD_SIZE", "-o",
                      str(root / "part_$RANK.npz")])
    job = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(_free_port()), "--no-python", "bash", "-c", apply],
        capture_output=True, text=True, env=_env(), timeout=120,
    )
    assert job.returncode == 0, job.stderr
    parts = sorted(str(p) for p in root.glob("part_*.npz"))
    assert len(parts) == 2
    merged = subprocess.run([*cli, "merge", model, *parts, *test, "-o", str(root / "merged.npy")],
                            capture_output=True, text=True, env=_env(), timeout=120)
    assert merged.returncode == 0, merged.stderr
    assert np.array_equal(np.load(root / "merged.npy"), np.load(root / "plain.npy"))


def _kill_processes_mentioning(text: str) -> None:
    import signal

    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            try:
                os.kill(int(proc.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_killed_torchrun_fit_resumes_to_the_uninterrupted_result(data):
    """SIGKILL the whole 2-process job mid-training, rerun it with --resume under torchrun."""
    import signal

    from pillar_rerank.checkpoint import STATE_FILE

    root, args = data
    steps = 2 * -(-147 // 16)  # epochs x batches per epoch
    ref, _ = _fit([*args, "-o", str(root / "r_ref")], nproc=2)
    assert ref.returncode == 0, ref.stderr
    ckpt = root / "r_kill.ckpt"
    cmd = [*args, "-o", str(root / "r_kill"), "--checkpoint-dir", str(ckpt), "--checkpoint-every", "1"]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                "127.0.0.1", "--master_port", str(_free_port()), "-m", "pillar_rerank.cli.main", "fit"]
    job = subprocess.Popen([*launcher, *cmd], env=_env(), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    step = 0
    while time.monotonic() < deadline and job.poll() is None:
        try:
            step = int(json.loads((ckpt / STATE_FILE).read_text())["global_step"])
        except (OSError, ValueError, KeyError):
            step = 0
        if step >= 3:
            # the agent and its workers (torchrun may start them in their own sessions)
            os.killpg(job.pid, signal.SIGKILL)
            _kill_processes_mentioning(str(root / "r_kill"))
            break
        time.sleep(0.05)
    job.wait(timeout=60)
    assert 3 <= step < steps and not (root / "r_kill").exists(), "the job was not killed mid-training"
    resumed, _ = _fit([*cmd, "--resume"], nproc=2)
    assert resumed.returncode == 0, resumed.stderr
    w_ref = load_file(root / "r_ref" / "weights.safetensors")
    w_res = load_file(root / "r_kill" / "weights.safetensors")
    for name in w_ref:
        assert torch.equal(w_ref[name], w_res[name]), name
