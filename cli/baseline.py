"""``rerank baseline``: run a training-free re-ranker or normaliser on a score matrix.

Output format: ``--direction both`` (default) writes an ``.npz`` holding ``i2t`` and ``t2i``,
both image x text float32 arrays (load with ``np.load(path)``, no pickle): rank rows of ``i2t``
for image -> text and columns of ``t2i`` for text -> image. ``--direction i2t`` or ``t2i``
writes a single image x text ``.npy`` (for ``rerank eval A.npy --t2i-sims B.npy``).
"""

from __future__ import annotations

import json

import click
import numpy as np

from pillar_rerank.baselines import BASELINES, Bank, apply_both, describe, get_baseline
from pillar_rerank.baselines.bank import assemble_bank
from pillar_rerank.baselines.tuning import choice_params, load_choice
from pillar_rerank.exceptions import InvalidInputError
from pillar_rerank.inputs import RetrievalSet
from pillar_rerank.io import check_output_path, load_array, save_array, save_direction_pair

from .options import EXISTING_FILE, data_options, key_values, load_side, overwrite_option


def bank_options(func):
    """Bank inputs: score matrices per direction, or bank-side embeddings."""
    opts = [
        click.option("--bank-sims-i2t", type=EXISTING_FILE, default=None,
                     help="Bank images x test texts scores .npy (query bank of image -> text)."),
        click.option("--bank-sims-t2i", type=EXISTING_FILE, default=None,
                     help="Bank texts x test images scores .npy (query bank of text -> image)."),
        click.option("--bank-dual-sims", type=EXISTING_FILE, default=None,
                     help="Bank images x bank texts scores .npy (dual-bank Sinkhorn)."),
        click.option("--bank-intra-i2t", type=EXISTING_FILE, default=None,
                     help="Bank texts x test texts scores .npy (DBNorm gallery bank, image -> text)."),
        click.option("--bank-intra-t2i", type=EXISTING_FILE, default=None,
                     help="Bank images x test images scores .npy (DBNorm gallery bank, text -> image)."),
        click.option("--bank-image-emb", type=EXISTING_FILE, default=None,
                     help="Bank image embeddings .npy (with --bank-text-emb and test embeddings)."),
        click.option("--bank-text-emb", type=EXISTING_FILE, default=None,
                     help="Bank text embeddings .npy (with --bank-image-emb)."),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


# bank option (keyword) -> assemble_bank argument
BANK_OPTIONS = {"bank_image_emb": "image_embeddings", "bank_text_emb": "text_embeddings",
                "bank_sims_i2t": "i2t", "bank_sims_t2i": "t2i", "bank_dual_sims": "dual",
                "bank_intra_i2t": "i2t_intra", "bank_intra_t2i": "t2i_intra"}


def load_bank(kwargs: dict, target: RetrievalSet) -> tuple[Bank | None, list]:
    """Pop the bank options, load their files (memory-mapped) and assemble the bank for ``target``."""
    files = {arg: kwargs.pop(opt) for opt, arg in BANK_OPTIONS.items()}
    flags = {arg: "--" + opt.replace("_", "-") for opt, arg in BANK_OPTIONS.items()}
    arrays = {arg: None if path is None else load_array(path, name=flags[arg], mmap=True)
              for arg, path in files.items()}
    bank = assemble_bank(target, **arrays, flags=flags)
    return bank, [p for p in files.values() if p is not None]


def print_listing() -> None:
    header = f"{'name':<18}{'bank':<6}{'intra':<7}{'transductive':<14}description"
    click.echo(header)
    for name in BASELINES:
        info = describe(name)
        click.echo(f"{name:<18}{'yes' if info['needs_bank'] else 'no':<6}"
                   f"{'yes' if info['needs_intra_modal'] else 'no':<7}"
                   f"{'YES' if info['transductive'] else 'no':<14}{info['summary']}")


@click.command("baseline")
@click.argument("name", required=False, type=click.Choice(sorted(BASELINES)))
@click.option("--list", "list_methods", is_flag=True,
              help="List the methods: needs a bank? intra-modal scores? transductive?")
@data_options(help_side="test set")
@bank_options
@click.option("--param", "params", multiple=True, callback=key_values, metavar="NAME=VALUE",
              help="Method parameter, repeatable (checked against the method's parameter table).")
@click.option("--t2i-param", "t2i_params", multiple=True, callback=key_values, metavar="NAME=VALUE",
              help="Override a parameter for text -> image only (per-direction tuning), repeatable.")
@click.option("--params-from", type=EXISTING_FILE, default=None, metavar="CHOICE.json",
              help="Parameters chosen by `rerank tune NAME -o CHOICE.json` (its best_params); "
              "--param / --t2i-param still override them.")
@click.option("--per-direction", is_flag=True,
              help="With --params-from: image -> text takes best_params_i2t and text -> image "
              "best_params_t2i (each direction's own best) instead of the joint best_params.")
@click.option("--direction", type=click.Choice(["both", "i2t", "t2i"]), default="both", show_default=True,
              help="both: .npz with i2t and t2i arrays; i2t / t2i: one image x text .npy.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Output file (.npz for --direction both, else .npy).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@overwrite_option
def baseline(name, list_methods, params, t2i_params, params_from, per_direction, direction, output, quiet,
             overwrite, **kwargs):
    """Run training-free method NAME (see --list) and write the re-ranked scores.

    Transductive methods (dsl, mtfn_rr, k_reciprocal) use all test queries at once; report
    them apart from the others. Bank methods need the bank options: score files per direction,
    or bank-side embeddings together with the test set's embeddings.
    """
    if list_methods:
        print_listing()
        return
    if name is None:
        raise click.UsageError("give a method NAME (or --list).")
    if output is None:
        raise click.UsageError("give the output file with -o/--output.")
    want = ".npz" if direction == "both" else ".npy"
    if not output.endswith(want):
        raise click.BadParameter(f"--direction {direction} writes {want}; got {output!r}.",
                                 param_hint="-o/--output")
    if per_direction and params_from is None:
        raise click.UsageError("--per-direction needs --params-from CHOICE.json.")
    if params_from is not None:
        chosen = choice_params(load_choice(params_from, name=name), per_direction=per_direction)
        i2t_chosen, t2i_chosen = (chosen["i2t"], chosen["t2i"]) if per_direction else (chosen, chosen)
        t2i_params = {**t2i_chosen, **params, **t2i_params}
        params = {**i2t_chosen, **params}
        if t2i_params == params:
            t2i_params = {}
    method = get_baseline(name, **params)
    t2i_method = get_baseline(name, **{**params, **t2i_params}) if t2i_params else None
    inputs = [v for k, v in kwargs.items() if isinstance(v, str)] + ([params_from] if params_from else [])
    check_output_path(output, inputs=inputs, overwrite=overwrite)
    data = load_side(kwargs, name="test")
    bank, bank_files = load_bank(kwargs, data)
    if bank is None and describe(name)["needs_bank"]:
        raise InvalidInputError(
            f"rerank baseline {name}: needs a bank (other queries scored against the test gallery): give "
            "--bank-sims-i2t and --bank-sims-t2i, or --bank-image-emb and --bank-text-emb together with "
            "the test set's --image-emb and --text-emb (see `rerank baseline --list`)."
        )
    result = apply_both(method, data, bank, t2i_method=t2i_method, show_progress=not quiet)
    if direction == "both":
        save_direction_pair(output, result.scores, result.t2i_scores, inputs=inputs + bank_files,
                            overwrite=overwrite)
    else:
        matrix = result.scores if direction == "i2t" else result.t2i_scores
        save_array(output, np.asarray(matrix, dtype=np.float32), inputs=inputs + bank_files,
                   overwrite=overwrite)
    info = describe(name)
    if info["transductive"]:
        click.echo(f"note: {name} is transductive (it uses all test queries at once).", err=True)
    click.echo(json.dumps({"method": name, "params": method.get_params(),
                           "t2i_params": (t2i_method or method).get_params(), "direction": direction,
                           "output": output, "transductive": info["transductive"]}))
