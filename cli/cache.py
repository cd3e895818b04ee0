"""``rerank cache``: build a test side's LeaPRR inputs once, for sharded or repeated ``apply``."""

from __future__ import annotations

import time

import click

from .options import data_options, input_building_options, load_side, prepare_cache_dir


@click.command("cache")
@click.argument("model_dir", type=click.Path(file_okay=False))
@data_options(help_side="test side")
@input_building_options
@click.option("--device", type=str, default=None, help="cpu, cuda or cuda:N (of the neighbour searches).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar (one is drawn on a terminal only).")
def cache(
    model_dir: str, max_memory: str | None, cache_dir: str | None, device: str | None, quiet: bool,
    **kwargs,
) -> None:
    """Search neighbours and build every list of the test side with MODEL_DIR's settings, into --cache.

    Run it once before `rerank apply --shard i/n --cache DIR` jobs, which then only read the cache.
    An existing cache of the same inputs and settings is checked and reused.
    """
    from pillar_rerank.exceptions import InvalidParameterError
    from pillar_rerank.reranker import PillarReranker

    if cache_dir is None:
        raise InvalidParameterError("rerank cache: --cache DIR is required (created if missing).")
    cache_dir = prepare_cache_dir(cache_dir)
    test = load_side(kwargs, name="test")
    model = PillarReranker.load(model_dir, device=device)
    start = time.perf_counter()
    lists = model.cache_inputs(test, cache_dir, max_memory=max_memory, show_progress=not quiet)
    size = sum(rec["bytes"] for rec in lists.manifest["files"].values())
    click.echo(
        f"cached the lists of {lists.n_images} image and {lists.n_texts} text queries in "
        f"{time.perf_counter() - start:.1f} s: {lists.path} ({size / 2**20:.1f} MiB)"
    )
