"""``rerank apply``: re-rank a test side with a trained LeaPRR model."""

from __future__ import annotations

import time

import click

from .options import (
    data_options,
    echo_warnings,
    input_building_options,
    load_side,
    overwrite_option,
    prepare_cache_dir,
)


def parse_shard(ctx, param, value: str | None) -> tuple[int, int] | None:
    """``i/n`` with 0 <= i < n."""
    if value is None:
        return None
    i, sep, n = value.partition("/")
    try:
        index, count = int(i), int(n)
    except ValueError:
        index, count = -1, 0
    if not sep or count < 1 or not 0 <= index < count:
        raise click.BadParameter(f"expected i/n with 0 <= i < n (e.g. 0/4); got {value!r}.")
    return index, count


def write_scores(model, test, output: str, *, inputs, overwrite: bool, shards=None, **rerank_options) -> None:
    """``model``'s re-ranked ``test`` (or its merged ``shards``) written as ``output``'s suffix says:
    ``.npz`` one matrix per direction, otherwise one matrix (the mean of both directions)."""
    from pathlib import Path

    from pillar_rerank.io import save_array, save_direction_pair

    if Path(output).suffix == ".npz":
        both = (model.rerank_both(test, **rerank_options) if shards is None
                else model.merge_both(test, shards))
        save_direction_pair(output, both.scores, both.t2i_scores, inputs=inputs, overwrite=overwrite)
    else:
        scores = model.rerank(test, **rerank_options) if shards is None else model.merge(test, shards)
        save_array(output, scores, inputs=inputs, overwrite=overwrite)


@click.command("apply")
@click.argument("model_dir", type=click.Path(file_okay=False))
@data_options(help_side="test side")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="Re-ranked scores: .npy, one image x text matrix (the mean of the two directions, the "
    "paper's); .npz, one matrix per direction (i2t, t2i, as `rerank baseline` writes: keeps a "
    "normaliser's directions apart). With --shard: the shard file (.npz).",
)
@click.option(
    "--shard",
    callback=parse_shard,
    default=None,
    help="Re-rank only share i of n of the queries (i/n); join shards with `rerank merge`.",
)
@click.option("--device", type=str, default=None, help="cpu, cuda or cuda:N.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar (one is drawn on a terminal only).")
@input_building_options
@overwrite_option
def apply(
    model_dir: str,
    output: str,
    shard: tuple[int, int] | None,
    device: str | None,
    quiet: bool,
    max_memory: str | None,
    cache_dir: str | None,
    overwrite: bool,
    **kwargs,
) -> None:
    """Re-rank the test side with MODEL_DIR; write the new scores atomically.

    The output's suffix chooses the form: ``.npy`` one matrix (mean of both directions),
    ``.npz`` one matrix per direction (``rerank eval`` reads both).
    """
    from pillar_rerank.checkpoint import check_output_outside_model_dir, model_dir_files
    from pillar_rerank.io import check_output_path
    from pillar_rerank.reranker import PillarReranker

    inputs = [*(v for v in kwargs.values() if isinstance(v, str)), *model_dir_files(model_dir)]
    check_output_outside_model_dir(output, model_dir)
    check_output_path(output, inputs=inputs, overwrite=overwrite)
    cache_dir = prepare_cache_dir(cache_dir)
    test = load_side(kwargs, name="test")
    model = PillarReranker.load(model_dir, device=device)
    start = time.perf_counter()
    with echo_warnings():
        if shard is None:
            write_scores(model, test, output, inputs=inputs, overwrite=overwrite, max_memory=max_memory,
                         cache_dir=cache_dir, show_progress=not quiet)
            what = f"{test.n_images} image and {test.n_texts} text queries"
        else:
            result = model.rerank_shard(test, *shard, max_memory=max_memory, cache_dir=cache_dir,
                                        show_progress=not quiet)
            result.save(output, overwrite=overwrite, inputs=inputs)
            what = (
                f"shard {shard[0]}/{shard[1]}: {len(set(result.i2t_rows.tolist()))} image and "
                f"{len(set(result.t2i_cols.tolist()))} text queries"
            )
    click.echo(f"re-ranked {what} in {time.perf_counter() - start:.1f} s; wrote {output}")
