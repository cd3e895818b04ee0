"""Packaging: every package folder is declared, and a built wheel has the right layout and data."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _declared_packages() -> set[str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return {line.strip() for line in cfg["options"]["packages"].splitlines() if line.strip()}


def _package_folders() -> set[str]:
    found = set()
    for base, dotted in ((ROOT / "pillar_rerank", "pillar_rerank"), (ROOT / "cli", "pillar_rerank.cli")):
        for init in base.rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            rel = init.parent.relative_to(base).parts
            found.add(".".join((dotted, *rel)))
    return found


def test_every_package_folder_is_listed_in_setup_cfg():
    missing = _package_folders() - _declared_packages()
    assert not missing, f"add to setup.cfg [options] packages: {sorted(missing)}"
    assert "pillar_rerank.cli" in _declared_packages()


def test_wheel_layout_and_demo_data(tmp_path):  # ~5 s
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(ROOT / "pillar_rerank", src / "pillar_rerank", ignore=ignore)
    shutil.copytree(ROOT / "cli", src / "cli", ignore=ignore)
    out = tmp_path / "dist"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "-q", "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheel = next(out.glob("pillar_rerank-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "pillar_rerank/cli/main.py" in names and "pillar_rerank/cli/eval.py" in names
    assert not any(n.startswith("cli/") for n in names)
    for data_file in ("demo_train.npz", "demo_test.npz", "ATTRIBUTION.md", "LICENSE-DATA", "README.md"):
        assert f"pillar_rerank/datasets/{data_file}" in names
    assert "pillar_rerank/metrics/evaluate.py" in names
