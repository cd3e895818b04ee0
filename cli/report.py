"""``rerank report``: a self-contained HTML page from benchmark results or score matrices."""

from __future__ import annotations

from pathlib import Path

import click

from pillar_rerank.io import check_output_path, load_array, load_direction_pair
from pillar_rerank.report import report_from_results, report_from_scores

from .options import EXISTING_FILE, load_scores_file, overwrite_option


@click.command("report")
@click.argument("sources", nargs=-1, type=click.Path())
@click.option(
    "--sims",
    "sims",
    multiple=True,
    type=EXISTING_FILE,
    help="Image x text score matrix .npy, or the per-direction .npz of `rerank baseline` (repeat; the "
    "first is the base).",
)
@click.option(
    "--label", "labels", multiple=True, help="Name of each score matrix, in order (default: file name)."
)
@click.option("--txt2img", type=EXISTING_FILE, default=None, help="Caption -> image int map .npy.")
@click.option(
    "--captions-per-image",
    type=click.IntRange(min=1),
    default=None,
    help="Contiguous blocks of N captions per image (instead of --txt2img).",
)
@click.option(
    "--base", default=None, help="Label the rank changes are measured against (default: the first)."
)
@click.option(
    "--hub-k",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="k of the k-occurrence used for hubness.",
)
@click.option("--title", default=None, help="Page title.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="HTML file to write.")
@overwrite_option
def report(sources, sims, labels, txt2img, captions_per_image, base, hub_k, title, output, overwrite):
    """Write a self-contained HTML report (tables + PNG plots).

    SOURCES is a benchmark results folder (e.g. benchmarks/results; its tmp/ scratch folder is
    left out), or score matrices (.npy, or the .npz of `rerank baseline`; the same as --sims).
    With score matrices, give the ground truth (--txt2img or --captions-per-image); the page
    shows recall@K curves, the rank change of the true match against the base, and hubness
    before/after.
    """
    folders = [s for s in sources if Path(s).is_dir()]
    files = [s for s in sources if not Path(s).is_dir()] + list(sims)
    if folders and files:
        raise click.UsageError("give either a results folder or score matrices, not both.")
    if len(folders) > 1:
        raise click.UsageError("give one results folder.")
    if not folders and not files:
        raise click.UsageError("give a results folder or at least one score matrix (--sims).")
    inputs = [*files, *([txt2img] if txt2img else [])]
    check_output_path(output, inputs=inputs, overwrite=overwrite, name="report")  # before the work
    if folders:
        if labels or txt2img or captions_per_image or base:
            raise click.UsageError(
                "--label/--txt2img/--captions-per-image/--base only apply to score matrices."
            )
        page = report_from_results(folders[0], exclude_dirs=("tmp",), **({"title": title} if title else {}))
    else:
        if labels and len(labels) != len(files):
            raise click.UsageError(f"got {len(labels)} --label for {len(files)} score matrices.")
        names = list(labels) or [Path(f).stem for f in files]
        first = load_scores_file(files[0], txt2img=txt2img, captions_per_image=captions_per_image,
                                 name=names[0])
        methods = [(names[0], first.scores, first.t2i_scores)]
        for name, path in zip(names[1:], files[1:]):
            if Path(path).suffix == ".npz":  # per-direction scores of `rerank baseline`
                i2t, t2i = load_direction_pair(path, name=f"sims {name}")
                methods.append((name, i2t, t2i))
            else:
                methods.append((name, load_array(path, name=f"sims {name}", mmap=True), None))
        page = report_from_scores(
            methods,
            first.relevance,
            base=base,
            hub_k=hub_k,
            dataset=f"{first.n_images} x {first.n_texts}",
            **({"title": title} if title else {}),
        )
    out = page.write(output, overwrite=overwrite, inputs=inputs)
    click.echo(f"wrote {out} ({page.n_figures} figures)")
