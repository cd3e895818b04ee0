"""Make the top-level ``benchmarks`` package importable, and give tests a module of toy targets."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

TARGETS = textwrap.dedent("""
    import numpy as np

    from benchmarks import BenchmarkSkipped


    def allocate(*, mb, seed=None):
        block = np.ones(int(mb) * 2**20 // 8)
        return {"mb": mb, "sum": float(block.sum()), "seed": seed, "nested": {"x": 1.5}}


    def boom(**kwargs):
        raise RuntimeError("exploded on purpose")


    def skip(**kwargs):
        raise BenchmarkSkipped("needs a GPU")


    def not_a_dict(**kwargs):
        return [1, 2]


    def read_own_result(*, path, mb):
        # what the runner has written for this benchmark by the time this run starts
        import json
        import os

        if not os.path.exists(path):
            return {"runs_on_disk": 0, "notes": []}
        with open(path) as fh:
            data = json.load(fh)
        return {"runs_on_disk": len(data["runs"]), "notes": data["notes"]}


    def sleep_noting_pid(*, path):
        import os
        import time

        with open(path + ".tmp", "w") as fh:
            fh.write(str(os.getpid()))
        os.replace(path + ".tmp", path)
        time.sleep(60)


    def sleep(**kwargs):
        import time

        time.sleep(60)
""")


@pytest.fixture
def targets(tmp_path, monkeypatch):
    """Module ``bench_targets`` importable by the worker processes; returns its name."""
    folder = tmp_path / "targets"
    folder.mkdir()
    (folder / "bench_targets.py").write_text(TARGETS)
    monkeypatch.setenv("PYTHONPATH", str(folder))
    return "bench_targets"
