"""``rerank fit`` in one process against ``torchrun`` with several gloo processes, same machine.

The training and dev sides of a protocol of :mod:`benchmarks.leaprr_accuracy` (real COCO caption
proxy) are written as ``.npy`` files (embeddings and caption -> image maps), and the same
``rerank fit`` command runs once in one process with ``threads`` torch threads and once under
``torchrun --nproc_per_node processes`` with ``threads // processes`` threads each, so both use the
same cores. Reported: wall time of each command, the best dev RSUM each kept, and the largest
weight difference between the two models (the global batch and seed are the same, so they agree
up to floating-point rounding).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write(folder: Path, data, prefix: str) -> list[str]:
    flag = "" if prefix == "train" else f"{prefix}-"
    files = {"image-emb": data.image_embeddings, "text-emb": data.text_embeddings, "txt2img": data.txt_to_img}
    args = []
    for name, array in files.items():
        path = folder / f"{prefix}_{name}.npy"
        np.save(path, np.ascontiguousarray(array))
        args += [f"--{flag}{name}", str(path)]
    return args


def _fit(args: list[str], *, processes: int, threads: int) -> tuple[float, float, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = str(threads)
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                     "--master_addr", "127.0.0.1", "--master_port", str(_free_port())]
    start = time.perf_counter()
    proc = subprocess.run([*launcher, "-m", "pillar_rerank.cli.main", "fit", *args], capture_output=True,
                          text=True, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"rerank fit ({processes} processes) failed:\n{proc.stderr[-3000:]}")
    rsum = float(re.search(r"best dev RSUM: ([\d.]+)", proc.stdout).group(1))
    return seconds, rsum, proc.stdout


def run(*, protocol: str = "a", processes: int = 2, threads: int = 2, config: dict[str, Any] | None = None,
        root: str | None = None) -> dict[str, Any]:
    """Fit once in one process and once under torchrun; return times, dev RSUMs, weight difference."""
    from benchmarks.leaprr_accuracy import REDUCED, protocol_sets

    cfg = {**REDUCED, **(config or {}), "device": "cpu"}
    train, dev, _ = protocol_sets(protocol, root)
    with tempfile.TemporaryDirectory(prefix="ddp-fit-") as tmp:
        folder = Path(tmp)
        (folder / "config.json").write_text(json.dumps(cfg))
        args = [*_write(folder, train, "train"), *_write(folder, dev, "dev"), "--config",
                str(folder / "config.json"), "-q"]
        one_s, one_rsum, _ = _fit([*args, "-o", str(folder / "one")], processes=1, threads=threads)
        many_s, many_rsum, _ = _fit([*args, "-o", str(folder / "many")], processes=processes,
                                    threads=max(1, threads // processes))
        w1 = load_file(folder / "one" / "weights.safetensors")
        w2 = load_file(folder / "many" / "weights.safetensors")
        max_diff = max(float(np.abs(w1[k] - w2[k]).max()) for k in w1)
    return {
        "protocol": protocol,
        "train": [train.n_images, train.n_texts],
        "dev": [dev.n_images, dev.n_texts],
        "config": cfg,
        "threads_total": threads,
        "one_process": {"seconds": round(one_s, 1), "best_dev_rsum": one_rsum},
        f"{processes}_processes": {"seconds": round(many_s, 1), "best_dev_rsum": many_rsum},
        "speedup": round(one_s / many_s, 2),
        "max_weight_difference": max_diff,
        "load_average_at_end": list(os.getloadavg()),
    }
