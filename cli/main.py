"""``rerank``: the command group and the single place library errors become exit codes.

Exit codes (every subcommand): 0 ok, 1 internal error (bug; traceback kept), 2 bad usage or bad
input, 3 I/O failure, 130 interrupted (Ctrl-C). See :mod:`pillar_rerank.exceptions`.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from pillar_rerank._validation import reset_spellings, use_spellings
from pillar_rerank._version import __version__
from pillar_rerank.exceptions import EXIT_INTERRUPTED, PillarRerankError

# command name -> "module:attribute" inside pillar_rerank.cli; imported only when used.
COMMANDS: dict[str, str] = {
    "demo": "demo:demo",
    "eval": "eval:eval_command",
    "fit": "fit:fit",
    "apply": "apply:apply",
    "merge": "merge:merge",
    "cache": "cache:cache",
    "baseline": "baseline:baseline",
    "tune": "tune:tune",
    "train-backbone": "train_backbone:train_backbone",
    "report": "report:report",
    "import-reference": "import_reference:import_reference",
    "search": "search:search",
}


# Python spelling -> command-line flag, so library messages name the option the user typed.
CLI_SPELLINGS = {
    "overwrite=True": "--overwrite",
    "txt_to_img": "--txt2img",
    "n_pillars": "--n-pillars",
    "list_len_i2t": "--list-len-i2t",
    "list_len_t2i": "--list-len-t2i",
    "embed_dim": "--embed-dim",
    "num_heads": "--num-heads",
    "batch_size": "--batch-size",
    "captions_per_image": "--captions-per-image",
}


class CommandError(click.ClickException):
    """A library error shown as one line, with the exit code its class chose."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class RerankGroup(click.Group):
    """Loads subcommands lazily and maps PillarRerankError to a one-line message + exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if self._load(name) is not None]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return self._load(name)

    @staticmethod
    def _load(name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(f"pillar_rerank.cli.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"pillar_rerank.cli.{module_name}":
                return None
            raise
        return getattr(module, attr)

    def invoke(self, ctx: click.Context):
        token = use_spellings(CLI_SPELLINGS)
        try:
            return super().invoke(ctx)
        except PillarRerankError as exc:
            raise CommandError(str(exc), exc.exit_code) from exc
        except KeyboardInterrupt:
            # click's own handling prints "Aborted!" and exits 1; the shell convention is 128 + SIGINT
            click.echo("\nAborted!", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        finally:
            reset_spellings(token)


@click.group(cls=RerankGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="rerank")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """Re-rank image-text retrieval scores from any backbone.

    Inputs are .npy files: an image x text similarity matrix (or the two embedding matrices)
    and the caption -> image map (--txt2img MAP.npy or --captions-per-image N).

    Exit codes: 0 ok, 1 internal error, 2 bad usage or input, 3 I/O failure, 130 Ctrl-C.
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="rerank")


if __name__ == "__main__":  # pragma: no cover
    main()
