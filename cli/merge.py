"""``rerank merge``: join the shards of `rerank apply --shard` into one score matrix."""

from __future__ import annotations

import click

from .options import data_options, load_side, overwrite_option


@click.command("merge")
@click.argument("model_dir", type=click.Path(file_okay=False))
@click.argument("shards", nargs=-1, required=True, type=click.Path(dir_okay=False))
@data_options(help_side="the test side the shards were computed on")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Merged scores (.npy).")
@overwrite_option
def merge(model_dir: str, shards: tuple[str, ...], output: str, overwrite: bool, **kwargs) -> None:
    """Check that SHARDS are every share of one run of MODEL_DIR, exactly once, and merge them."""
    from pillar_rerank.checkpoint import check_output_outside_model_dir, model_dir_files
    from pillar_rerank.io import check_output_path, save_array
    from pillar_rerank.reranker import PillarReranker

    inputs = [*shards, *(v for v in kwargs.values() if isinstance(v, str)), *model_dir_files(model_dir)]
    check_output_outside_model_dir(output, model_dir)
    check_output_path(output, inputs=inputs, overwrite=overwrite)
    test = load_side(kwargs, name="test")
    model = PillarReranker.load(model_dir)
    scores = model.merge(test, list(shards))
    save_array(output, scores, inputs=inputs, overwrite=overwrite)
    click.echo(
        f"merged {len(shards)} shards into a {scores.shape[0]} x {scores.shape[1]} matrix; wrote {output}"
    )
