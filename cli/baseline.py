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
from pillar_rerank.baselines.bank import bank_from_embedding_arrays
from pillar_rerank.exceptions import InvalidInputError
from pillar_rerank.inputs import RetrievalSet
from pillar_rerank.io import atomic_path, check_output_path, load_array, save_array

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


def load_bank(kwargs: dict, target: RetrievalSet) -> tuple[Bank | None, list]:
    """Pop the bank options, build the :class:`Bank` and check it against ``target``."""
    img, txt = kwargs.pop("bank_image_emb"), kwargs.pop("bank_text_emb")
    files = {k: kwargs.pop(k) for k in ("bank_sims_i2t", "bank_sims_t2i", "bank_dual_sims",
                                         "bank_intra_i2t", "bank_intra_t2i")}
    used = [p for p in [img, txt, *files.values()] if p is not None]
    if img is not None or txt is not None:
        if img is None or txt is None:
            raise InvalidInputError("bank: give both --bank-image-emb and --bank-text-emb.")
        if any(files.values()):
            raise InvalidInputError("bank: give bank embeddings or bank score files, not both.")
        if not target.has_embeddings:
            raise InvalidInputError("bank: --bank-image-emb/--bank-text-emb need the test set's "
                                    "--image-emb/--text-emb too.")
        bank = bank_from_embedding_arrays(load_array(img, name="bank image embeddings", mmap=True),
                                          load_array(txt, name="bank text embeddings", mmap=True),
                                          target.image_embeddings, target.text_embeddings)
        return bank.check_against(target), used
    if not used:
        return None, used
    arrays = {k: (load_array(p, name=k.replace("_", "-"), mmap=True) if p else None)
              for k, p in files.items()}
    dual = arrays["bank_dual_sims"]
    bank = Bank(i2t=arrays["bank_sims_i2t"], t2i=arrays["bank_sims_t2i"],
                i2t_dual=dual, t2i_dual=None if dual is None else dual.T,
                i2t_intra=arrays["bank_intra_i2t"], t2i_intra=arrays["bank_intra_t2i"])
    return bank.check_against(target), used


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
@click.option("--direction", type=click.Choice(["both", "i2t", "t2i"]), default="both", show_default=True,
              help="both: .npz with i2t and t2i arrays; i2t / t2i: one image x text .npy.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Output file (.npz for --direction both, else .npy).")
@overwrite_option
def baseline(name, list_methods, params, t2i_params, direction, output, overwrite, **kwargs):
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
    method = get_baseline(name, **params)
    t2i_method = get_baseline(name, **{**params, **t2i_params}) if t2i_params else None
    inputs = [v for k, v in kwargs.items() if isinstance(v, str)]
    check_output_path(output, inputs=inputs, overwrite=overwrite)
    data = load_side(kwargs, name="test")
    bank, bank_files = load_bank(kwargs, data)
    result = apply_both(method, data, bank, t2i_method=t2i_method)
    if direction == "both":
        out = check_output_path(output, inputs=inputs + bank_files, overwrite=overwrite)
        with atomic_path(out) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, i2t=np.asarray(result.scores, dtype=np.float32),
                     t2i=np.asarray(result.t2i_scores, dtype=np.float32))
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
