"""``rerank demo``: fit -> apply -> eval of LeaPRR on the bundled COCO-proxy data."""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np

#: The reduced configuration the demo trains by default (fits a few minutes on 2 CPU cores).
DEMO_CONFIG = {
    "embed_dim": 64,
    "depth": 2,
    "num_heads": 4,
    "epochs": 4,
    "batch_size": 128,
    "lr": 0.6,  # chosen on the demo's dev split (0.05 / 0.2 / 0.6 tried), never on the test side
    "eval_every": 25,
}
#: Share of the bundled training side's images held out as the dev side.
DEV_FRACTION = 0.2


def _table(rows: dict[str, dict[str, float]]) -> str:
    keys = ["i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "RSUM"]
    head = f"{'':<12}" + "".join(f"{k:>10}" for k in keys)
    lines = [head] + [f"{name:<12}" + "".join(f"{m[k]:>10.1f}" for k in keys) for name, m in rows.items()]
    return "\n".join(lines)


@click.command("demo")
@click.option("--full", is_flag=True, help="Use the paper's configuration (hours on a CPU).")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Override the number of epochs.")
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder to save the model (OUTPUT/model) and re-ranked scores (OUTPUT/scores.npy).",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
def demo(full: bool, epochs: int | None, output: str | None, quiet: bool, overwrite: bool) -> None:
    """Train LeaPRR on the bundled training side, re-rank the bundled test side, print recalls."""
    from pillar_rerank.checkpoint import check_model_dir_target
    from pillar_rerank.config import LeaPRRConfig
    from pillar_rerank.datasets import load_demo
    from pillar_rerank.exceptions import InputFileError
    from pillar_rerank.io import check_output_path, save_array
    from pillar_rerank.metrics.recall import recall_metrics
    from pillar_rerank.reranker import PillarReranker

    out = Path(output) if output else None
    if out is not None and out.exists() and any(out.iterdir()) and not overwrite:
        raise InputFileError(f"output ({out}): folder is not empty; pass --overwrite to replace its files.")
    if out is not None and out.is_dir():  # refuse now, not after minutes of training
        check_model_dir_target(out / "model", overwrite=overwrite)
        check_output_path(out / "scores.npy", overwrite=overwrite)
    data = load_demo()
    full_train, test = data["train"], data["test"]
    cut = int(round(full_train.n_images * (1 - DEV_FRACTION)))
    train = full_train.subset_images(np.arange(cut), name="demo-train")
    dev = full_train.subset_images(np.arange(cut, full_train.n_images), name="demo-dev")
    overrides = {} if full else dict(DEMO_CONFIG)
    if epochs is not None:
        overrides["epochs"] = epochs
    config = LeaPRRConfig().replace(**overrides)
    label = "paper configuration" if full else "REDUCED demo configuration (not the paper's)"
    click.echo(
        f"LeaPRR demo, {label}: "
        + ", ".join(
            f"{k}={getattr(config, k)}"
            for k in (
                "n_pillars",
                "list_len_i2t",
                "list_len_t2i",
                "embed_dim",
                "depth",
                "num_heads",
                "epochs",
                "batch_size",
                "lr",
                "seed",
            )
        )
    )
    click.echo(
        f"train {train.n_images} x {train.n_texts}, dev {dev.n_images} x {dev.n_texts} "
        f"(last {DEV_FRACTION:.0%} of the bundled training images), test {test.n_images} x {test.n_texts}"
    )
    start = time.perf_counter()
    model = PillarReranker(config).fit(train, dev, verbose=not quiet)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    scores = model.rerank(test)
    apply_s = time.perf_counter() - start
    base = recall_metrics(test.similarity(), test.relevance)
    new = recall_metrics(scores, test.relevance)
    click.echo(
        f"fit {fit_s:.1f} s (best dev RSUM {model.history_.get('best_rsum', float('nan')):.1f}), "
        f"re-rank {apply_s:.1f} s"
    )
    click.echo(_table({"base": base, "LeaPRR": new}))
    click.echo(f"RSUM change on the test side: {new['RSUM'] - base['RSUM']:+.1f}")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        model.save(out / "model", overwrite=overwrite)
        save_array(out / "scores.npy", scores, overwrite=overwrite)
        click.echo(f"wrote {out / 'model'} and {out / 'scores.npy'}")
