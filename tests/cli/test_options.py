"""The shared option helpers of cli/: one KEY=VALUE parser for every command."""

import click
import pytest
from click.testing import CliRunner
from pillar_rerank.cli import baseline, fit, options, tune
from pillar_rerank.cli.main import cli


@pytest.mark.parametrize("text, value", [
    ("3", 3), ("0.5", 0.5), ("1e-3", 1e-3), ("true", True), ("TRUE", True), ("False", False),
    ("none", None), ("None", None), ("null", None), ("NULL", None), ("abc", "abc"), (" 7 ", 7),
    ("[1, 2]", [1, 2]), ('{"i2t": 5, "t2i": 7}', {"i2t": 5, "t2i": 7}), ("cosine", "cosine"),
])
def test_parse_value(text, value):
    assert options.parse_value(text) == value


def test_one_key_value_parser_for_every_command():
    """Issue 18 part 4: fit parsed "none" as the string 'none', baseline as None."""
    assert not hasattr(baseline, "parse_value") or baseline.parse_value is options.parse_value
    assert fit.parse_params is options.parse_params
    callbacks = {p.name: p.callback for cmd in (baseline.baseline, tune.tune) for p in cmd.params
                 if p.name in ("params", "t2i_params")}
    assert callbacks and all(cb is options.key_values for cb in callbacks.values())
    assert fit.parse_params(("k=none", "m=NULL", "x=True"), option="--normalize-param") == {
        "k": None, "m": None, "x": True}


@pytest.mark.parametrize("pair", ["novalue", "=3", " =3"])
def test_malformed_pairs_are_usage_errors_naming_the_option(pair, tmp_path):
    with pytest.raises(click.BadParameter, match="KEY=VALUE"):
        options.parse_params((pair,), option="--param")
    res = CliRunner().invoke(cli, ["baseline", "dsl", "--param", pair, "--sims", "x.npy",
                                   "--captions-per-image", "1", "-o", str(tmp_path / "o.npz")])
    assert res.exit_code == 2 and "--param" in res.output, res.output


@pytest.mark.parametrize("tty", [False, True])
def test_progress_bar_only_on_a_terminal(monkeypatch, capsys, tty):
    """Issue 15 item 27: a bar on stderr when it is a terminal; silent in pipes and logs."""
    import sys

    from pillar_rerank.utils.progress import progress

    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty)
    assert list(progress(range(3), desc="work")) == [0, 1, 2]
    assert list(progress(range(3), desc="quiet", disable=True)) == [0, 1, 2]
    err = capsys.readouterr().err
    assert ("work" in err) == tty and "quiet" not in err


def test_cli_modules_import_siblings_relatively():
    """Issue 18 part 4: one import style in cli/ (siblings relative, the library absolute)."""
    import re
    from pathlib import Path

    folder = Path(options.__file__).parent
    mixed = {p.name for p in folder.glob("*.py")
             if re.search(r"^\s*from pillar_rerank\.cli(\.| import)", p.read_text(), flags=re.M)}
    assert not mixed, f"cli modules importing pillar_rerank.cli.* absolutely: {sorted(mixed)}"
