"""Static scan: no unpickling, no code execution from data, no hard-coded CUDA.

Walks the AST of every Python file in ``pillar_rerank/``, ``cli/``, ``benchmarks/`` and
``examples/`` and fails with ``file:line: reason`` for each of:

* importing ``pickle``, ``cPickle``, ``dill``, ``cloudpickle``, ``joblib``, ``shelve`` or
  ``marshal``, or calling anything from them;
* ``np.load`` / ``numpy.load`` without ``allow_pickle=False`` (the numpy default differs between
  versions, so it must be explicit) or with anything but the literal ``False``;
* ``torch.load`` without ``weights_only=True``;
* ``yaml.load`` / ``yaml.load_all`` / ``yaml.unsafe_load`` / ``yaml.full_load`` without a safe
  loader (``Loader=yaml.SafeLoader`` / ``CSafeLoader``);
* the builtins ``eval``, ``exec`` and ``compile`` and ``__import__`` of a non-literal;
* hard-coded ``.cuda()`` calls and ``device="cuda"`` literals in calls.

A line may opt out with a trailing ``# reliability: allow`` comment (none does today).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("pillar_rerank", "cli", "benchmarks", "examples")
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}
ALLOW_MARK = "# reliability: allow"


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


def _dotted(node: ast.AST) -> str | None:
    """``a.b.c`` for a Name/Attribute chain, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def _has_double_star(call: ast.Call) -> bool:
    return any(kw.arg is None for kw in call.keywords)


def _is_const(node: ast.expr | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


class _Scanner(ast.NodeVisitor):
    def __init__(self, path: str, lines: list[str]) -> None:
        self.path = path
        self.lines = lines
        self.findings: list[Finding] = []
        # local aliases: name -> fully qualified module or object ("np" -> "numpy")
        self.aliases: dict[str, str] = {}

    # -- helpers -------------------------------------------------------------------------
    def _add(self, node: ast.AST, reason: str) -> None:
        line = getattr(node, "lineno", 0)
        text = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        if ALLOW_MARK in text:
            return
        self.findings.append(Finding(self.path, line, reason))

    def _qualified(self, node: ast.AST) -> str | None:
        dotted = _dotted(node)
        if dotted is None:
            return None
        head, _, rest = dotted.partition(".")
        head = self.aliases.get(head, head)
        return f"{head}.{rest}" if rest else head

    # -- imports -------------------------------------------------------------------------
    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            top = alias.name.split(".")[0]
            if top in PICKLE_MODULES:
                self._add(node, f"imports {alias.name!r} (unpickling / code execution from data)")
            self.aliases[(alias.asname or alias.name).split(".")[0]] = (
                alias.name if alias.asname else alias.name.split(".")[0])
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        top = module.split(".")[0]
        if top in PICKLE_MODULES:
            self._add(node, f"imports from {module!r} (unpickling / code execution from data)")
        for alias in node.names:
            if alias.name in PICKLE_MODULES:
                self._add(node, f"imports {alias.name!r} from {module!r}")
            self.aliases[alias.asname or alias.name] = f"{module}.{alias.name}" if module else alias.name
        self.generic_visit(node)

    # -- calls ---------------------------------------------------------------------------
    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = self._qualified(func)
        if name is not None:
            self._check_named_call(node, name)
        if isinstance(func, ast.Attribute) and func.attr == "cuda":
            self._add(node, "hard-coded .cuda() (resolve devices with pillar_rerank.utils.resolve_device)")
        for kw in node.keywords:
            if kw.arg == "device" and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str) \
                    and kw.value.value.startswith("cuda"):
                self._add(node, f"hard-coded device={kw.value.value!r}")
        self.generic_visit(node)

    def _check_named_call(self, node: ast.Call, name: str) -> None:
        top = name.split(".")[0]
        if top in PICKLE_MODULES:
            self._add(node, f"calls {name}() (unpickling)")
            return
        if name in ("numpy.load", "np.load"):
            value = _keyword(node, "allow_pickle")
            if value is None and not _has_double_star(node):
                self._add(node, "np.load without allow_pickle=False")
            elif value is not None and not _is_const(value, False):
                self._add(node, "np.load with allow_pickle not the literal False")
        elif name == "torch.load":
            value = _keyword(node, "weights_only")
            if not _is_const(value, True):
                self._add(node, "torch.load without weights_only=True")
        elif name in ("yaml.load", "yaml.load_all"):
            loader = _keyword(node, "Loader")
            if loader is None and len(node.args) >= 2:
                loader = node.args[1]
            dotted = _dotted(loader) if loader is not None else None
            if dotted is None or dotted.split(".")[-1] not in SAFE_YAML_LOADERS:
                self._add(node, f"{name} without a SafeLoader (use yaml.safe_load)")
        elif name in ("yaml.unsafe_load", "yaml.unsafe_load_all", "yaml.full_load", "yaml.full_load_all"):
            self._add(node, f"{name} (use yaml.safe_load)")
        elif name in ("eval", "exec", "compile", "builtins.eval", "builtins.exec"):
            if name == "compile" and self.aliases.get("compile"):  # e.g. re.compile imported as compile
                return
            self._add(node, f"calls {name}() (code execution)")
        elif name == "__import__" and not (node.args and isinstance(node.args[0], ast.Constant)):
            self._add(node, "__import__ of a computed name")


def _python_files() -> list[Path]:
    files: list[Path] = []
    for folder in SCANNED:
        base = ROOT / folder
        if base.is_dir():
            files.extend(p for p in sorted(base.rglob("*.py")) if ".venv" not in p.parts)
    return files


def scan_source(source: str, path: str = "<string>") -> list[Finding]:
    """Findings for one file's source text."""
    tree = ast.parse(source, filename=path)
    scanner = _Scanner(path, source.splitlines())
    scanner.visit(tree)
    return scanner.findings


def test_package_has_no_unsafe_loading_or_hardcoded_cuda():
    files = _python_files()
    assert any(p.parts[-2:] == ("pillar_rerank", "io.py") for p in files), "scan found no package files"
    findings: list[Finding] = []
    for path in files:
        findings.extend(scan_source(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT))))
    assert not findings, "unsafe loading / hard-coded CUDA:\n" + "\n".join(map(str, findings))


# The scanner itself must catch what it claims to catch (a scan that finds nothing proves little).
@pytest.mark.parametrize("source, expected", [
    ("import pickle\n", "imports 'pickle'"),
    ("import cloudpickle as cp\ncp.loads(b'')\n", "cloudpickle"),
    ("from pickle import loads\n", "imports from 'pickle'"),
    ("import numpy as np\nnp.load('x.npy')\n", "np.load without allow_pickle=False"),
    ("import numpy as np\nnp.load('x.npy', allow_pickle=True)\n", "allow_pickle not the literal False"),
    ("import numpy\nnumpy.load('x.npy', allow_pickle=flag)\n", "allow_pickle not the literal False"),
    ("from numpy import load\nload('x.npy')\n", "np.load without allow_pickle=False"),
    ("import torch\ntorch.load('m.pt')\n", "torch.load without weights_only=True"),
    ("import torch\ntorch.load('m.pt', weights_only=False)\n", "torch.load without weights_only=True"),
    ("import yaml\nyaml.load(s)\n", "without a SafeLoader"),
    ("import yaml\nyaml.load(s, Loader=yaml.Loader)\n", "without a SafeLoader"),
    ("import yaml\nyaml.unsafe_load(s)\n", "use yaml.safe_load"),
    ("eval('1+1')\n", "calls eval()"),
    ("exec(code)\n", "calls exec()"),
    ("x = t.cuda()\n", "hard-coded .cuda()"),
    ("x = torch.zeros(3, device='cuda')\n", "hard-coded device='cuda'"),
])
def test_scanner_flags_unsafe_patterns(source, expected):
    findings = scan_source(source)
    assert findings, f"scanner missed: {source!r}"
    assert any(expected in f.reason for f in findings), [str(f) for f in findings]


@pytest.mark.parametrize("source", [
    "import numpy as np\nnp.load('x.npy', allow_pickle=False)\n",
    "import numpy as np\nnp.load('x.npy', mmap_mode='r', allow_pickle=False)\n",
    "import torch\ntorch.load('m.pt', weights_only=True, map_location='cpu')\n",
    "import yaml\nyaml.load(s, Loader=yaml.SafeLoader)\nyaml.safe_load(s)\n",
    "import re\nre.compile('x')\n",
    "model.eval()\n",
    "x = t.to(device)\n",
    "if device.type == 'cuda': pass\n",
    "import numpy as np\nnp.load('x.npy', allow_pickle=False)  # comment\n",
    "import pickle  # reliability: allow\n",
])
def test_scanner_accepts_safe_patterns(source):
    assert scan_source(source) == []


def test_torch_floor_excludes_the_weights_only_bypass():
    """Issue 15 item 19: torch < 2.6's ``torch.load(weights_only=True)`` can run code (CVE-2025-32434)."""
    import configparser
    import re
    from pathlib import Path

    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).resolve().parents[2] / "setup.cfg")
    torch_req = [r for r in cfg["options"]["install_requires"].split("\n") if r.strip().startswith("torch")]
    assert torch_req, "setup.cfg has no torch requirement"
    floor = re.search(r">=\s*(\d+)\.(\d+)", torch_req[0])
    assert floor and (int(floor[1]), int(floor[2])) >= (2, 6), torch_req[0]
