import click
import pytest
from click.testing import CliRunner
from pillar_rerank.cli import main as cli_main

from pillar_rerank import __version__
from pillar_rerank.exceptions import EXIT_BAD_INPUT, EXIT_IO, InputFileError, InvalidInputError


def test_version_and_help_list_commands():
    res = CliRunner().invoke(cli_main.cli, ["--version"])
    assert res.exit_code == 0 and __version__ in res.output
    res = CliRunner().invoke(cli_main.cli, ["--help"])
    assert res.exit_code == 0 and "Exit codes" in res.output
    assert "eval" in res.output.split("Commands:")[1]
    for name in cli_main.cli.list_commands(None):
        assert name in cli_main.COMMANDS


def test_unknown_command_is_a_usage_error():
    res = CliRunner().invoke(cli_main.cli, ["frobnicate"])
    assert res.exit_code == 2 and "No such command" in res.output


@pytest.mark.parametrize("error, code", [(InvalidInputError("bad shape"), EXIT_BAD_INPUT),
                                         (InputFileError("gone"), EXIT_IO)])
def test_library_errors_become_one_line_and_their_exit_code(monkeypatch, error, code):
    @click.command("boom")
    def boom():
        raise error

    monkeypatch.setitem(cli_main.COMMANDS, "boom", "eval:eval_command")
    monkeypatch.setattr(cli_main.RerankGroup, "_load",
                        staticmethod(lambda name: boom if name == "boom" else None))
    res = CliRunner().invoke(cli_main.cli, ["boom"])
    assert res.exit_code == code
    assert res.output.strip() == f"Error: {error}"


def test_bugs_keep_their_traceback(monkeypatch):
    @click.command("bug")
    def bug():
        raise KeyError("internal")

    monkeypatch.setattr(cli_main.RerankGroup, "_load", staticmethod(lambda name: bug))
    res = CliRunner().invoke(cli_main.cli, ["bug"])
    assert res.exit_code == 1 and isinstance(res.exception, KeyError)


def test_ctrl_c_exits_130(monkeypatch):
    """Issue 15 item 18: Ctrl-C exited 1 ("Aborted!"); the shell convention is 128 + SIGINT = 130."""
    @click.command("slow")
    def slow():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_main.RerankGroup, "_load", staticmethod(lambda name: slow))
    res = CliRunner().invoke(cli_main.cli, ["slow"])
    assert res.exit_code == 130, (res.exit_code, res.output)
    assert "Aborted" in res.output and "Traceback" not in res.output


def test_messages_name_cli_flags_not_python_arguments(tmp_path):
    """Issue 15 item 28: "pass --overwrite (overwrite=True)" and "txt_to_img" named Python internals."""
    import numpy as np

    np.save(tmp_path / "s.npy", np.eye(3, 6, dtype=np.float32))
    np.save(tmp_path / "m.npy", np.array([0, 0, 1, 1, 2, -1]))
    (tmp_path / "out.json").write_text("{}")
    res = CliRunner().invoke(cli_main.cli, ["eval", str(tmp_path / "s.npy"), "--captions-per-image", "2",
                                            "--json", str(tmp_path / "out.json")])
    assert res.exit_code == 3 and "pass --overwrite to replace it" in res.output, res.output
    assert "overwrite=True" not in res.output
    res = CliRunner().invoke(cli_main.cli, ["eval", str(tmp_path / "s.npy"), "--txt2img",
                                            str(tmp_path / "m.npy")])
    assert res.exit_code == 2 and "--txt2img (" in res.output, res.output
    res = CliRunner().invoke(cli_main.cli, ["eval", str(tmp_path / "s.npy"), "--txt2img",
                                            str(tmp_path / "missing.npy")])
    assert res.exit_code == 3 and "--txt2img (" in res.output and "txt_to_img" not in res.output, res.output
