"""``rerank tune``: pick a training-free method's main hyper-parameter on the dev side only."""

from __future__ import annotations

import json

import click

from pillar_rerank.baselines import BASELINES
from pillar_rerank.baselines.tuning import tune as tune_method
from pillar_rerank.io import check_output_path, save_json

from .baseline import bank_options, load_bank
from .options import data_options, key_values, load_side, overwrite_option, parse_value


def parse_grid(ctx, param, values) -> dict | None:
    """``--grid name=v1,v2,...`` (repeatable) into ``{name: [values]}``."""
    if not values:
        return None
    out = {}
    for item in values:
        key, sep, rest = item.partition("=")
        if not sep or not key.strip() or not rest.strip():
            raise click.BadParameter(f"expected NAME=V1,V2,...; got {item!r}.", ctx=ctx, param=param)
        out[key.strip()] = [parse_value(v) for v in rest.split(",")]
    return out


@click.command("tune")
@click.argument("name", type=click.Choice(sorted(BASELINES)))
@data_options("dev", help_side="development set")
@bank_options
@click.option("--grid", multiple=True, callback=parse_grid, metavar="NAME=V1,V2,...",
              help="Values to sweep (default: the method's main hyper-parameter grid).")
@click.option("--param", "params", multiple=True, callback=key_values, metavar="NAME=VALUE",
              help="Fixed method parameter, repeatable.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the dev split (used when no bank is given).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write the choice and every trial to this JSON file; `rerank baseline NAME "
              "--params-from FILE` and `rerank fit --normalize-params-from FILE` read it.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@overwrite_option
def tune(name, grid, params, seed, output, quiet, overwrite, **kwargs):
    """Sweep NAME's main hyper-parameter on the development set and report the best RSUM.

    With bank options the bank is taken against the dev gallery; without, the dev set is split
    by images into an evaluated half and a bank half. The evaluation set is never touched. The
    base RSUM (no re-ranking) of the evaluated part is shown; grid points invalid for this bank
    (e.g. NNN's k above the number of bank queries) are skipped and listed.

    The -o file holds best_params (best RSUM), best_params_i2t / best_params_t2i (best
    R@1+R@5+R@10 of each direction) and every trial; use it with `rerank baseline NAME
    --params-from FILE [--per-direction]` or `rerank fit --normalize-params-from FILE`.
    """
    inputs = [v for v in kwargs.values() if isinstance(v, str)]
    if output is not None:
        check_output_path(output, inputs=inputs, overwrite=overwrite)
    dev = load_side(kwargs, "dev", name="dev")
    bank, _ = load_bank(kwargs, dev)
    result = tune_method(name, dev, bank=bank, grid=grid, fixed=params, seed=seed, show_progress=not quiet)
    click.echo(f"{name}: {result.protocol}")
    click.echo(f"   base (no re-ranking)  RSUM {result.base_rsum:.2f}")
    for trial in result.trials:
        marker = "*" if trial["params"].items() <= result.best_params.items() else " "
        click.echo(f" {marker} {json.dumps(trial['params'])}  RSUM {trial['RSUM']:.2f}")
    for skip in result.skipped:
        click.echo(f" - {json.dumps(skip['params'])}  skipped: {skip['reason']}")
    if result.best_rsum < result.base_rsum:
        click.echo(f"warning: no grid point beats the base RSUM {result.base_rsum:.2f} on the dev set.",
                   err=True)
    click.echo(json.dumps({"method": name, "best_params": result.best_params, "best_rsum": result.best_rsum,
                           "best_params_i2t": result.best_params_i2t,
                           "best_params_t2i": result.best_params_t2i}))
    if output is not None:
        save_json(output, result.to_dict(), inputs=inputs, overwrite=overwrite)
