"""Every example in ``examples/`` runs to completion on the bundled demo data (small settings)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
QUICK = ["--epochs", "1", "--train-images", "150"]
RUNS = {
    "normalise_two_tower.py": (["--methods", "nnn", "csls"], ["nnn", "csls", "RSUM"]),
    "fit_and_rerank.py": (QUICK, ["LeaPRR", "RSUM"]),
    "normalise_then_leaprr.py": (QUICK, ["NNN -> LeaPRR", "NNN -> LeaPRR (per direction)", "RSUM"]),
    "live_search.py": (QUICK, ["NNN -> LeaPRR", "R@10", "top-5"]),
    "sharded_rerank.py": ([*QUICK, "--shards", "3"], ["merged == one rerank call: True"]),
}


def test_every_example_is_covered():
    shipped = {p.name for p in EXAMPLES.glob("*.py")}
    # train_backbone_then_rerank.py trains five heads and LeaPRR on the shared COCO proxy data
    # (minutes, and data not bundled): it is exercised by the adapters benchmark instead.
    assert shipped - {"train_backbone_then_rerank.py"} == set(RUNS)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_example_runs(name, tmp_path):
    args, expected = RUNS[name]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for text in expected:
        assert text in proc.stdout, proc.stdout
